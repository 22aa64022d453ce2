"""fnn: a functional neural-network library on PyTorch tensors with hand-written VJPs.

A layer is a pair of pure functions `init(key, input_shape)` and
`apply(params, x) -> (y, vjp)`; the `vjp` is a module-level backward function
plus explicit residuals. No autograd anywhere.

    >>> import fnn
    >>> from fnn import layers as L
    >>> init, apply = fnn.serial(L.Dense(25), L.Relu(), L.Dense(2))
    >>> _, params = init(fnn.random.key(0), (-1, 2))
"""

from . import (
    core,
    data,
    debug,
    distributed,
    errors,
    initializers,
    io,
    layers,
    losses,
    optim,
    per_example,
    random,
    rules,
    state,
    testing,
    tree,
)
from .combinators import parallel, serial
from .core import (
    VJP,
    ApplyFn,
    BackwardFn,
    InitFn,
    Key,
    Layer,
    Params,
    PyTree,
    Shape,
    Shapes,
)
from .errors import FnnError
from .grad import value_and_grad
from .per_example import per_example_grads
from .remat import remat
from .rules import with_vjp
from .scan import scan
from .state import init_state
from .summary import graph_repr, summary
from .tie import tie
from .train import TrainStep, train_step
from .update import update

__version__ = "0.1.0"

__all__ = [
    "Layer",
    "VJP",
    "Params",
    "PyTree",
    "Shape",
    "Shapes",
    "Key",
    "InitFn",
    "ApplyFn",
    "BackwardFn",
    "FnnError",
    "core",
    "serial",
    "parallel",
    "value_and_grad",
    "train_step",
    "TrainStep",
    "init_state",
    "state",
    "per_example_grads",
    "update",
    "random",
    "tree",
    "layers",
    "losses",
    "optim",
    "initializers",
    "testing",
    "data",
    "errors",
    "io",
    "debug",
    "distributed",
    "per_example",
    "rules",
    "with_vjp",
    "remat",
    "scan",
    "summary",
    "graph_repr",
    "tie",
]
