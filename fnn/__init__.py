"""fnn: a functional neural-network library on PyTorch tensors with hand-written VJPs.

A layer is a pair of pure functions `init(key, input_shape)` and
`apply(params, x) -> (y, vjp)`; the `vjp` is a module-level backward function
plus explicit residuals. No autograd anywhere.

    >>> import fnn
    >>> from fnn import layers as L
    >>> init, apply = fnn.serial(L.Dense(25), L.Relu(), L.Dense(2))
    >>> _, params = init(fnn.random.key(0), (-1, 2))
"""

from . import data, errors, initializers, layers, losses, optim, random, testing, tree
from . import debug, io
from . import distributed
from . import state
from . import per_example
from .combinators import parallel, serial
from .core import VJP, Key, Layer, Params, PyTree, Shape
from .errors import FnnError
from .grad import value_and_grad
from .state import init_state
from .per_example import per_example_grads
from .update import update
from . import rules
from .rules import with_vjp
from .remat import remat
from .summary import graph_repr, summary

__version__ = "0.1.0"

__all__ = [
    "Layer",
    "VJP",
    "Params",
    "PyTree",
    "Shape",
    "Key",
    "FnnError",
    "serial",
    "parallel",
    "value_and_grad",
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
    "summary",
    "graph_repr",
]
