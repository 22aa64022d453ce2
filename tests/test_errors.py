"""The error catalogue: every bad call gets a clear fnn error naming where and what was expected.

Each row is `(id, bad call, error class, message prefix, fragments)`: the call must
raise that class (every fnn error is a `ValueError`; wrong types are also
`TypeError`s), its message must start with the prefix (the layer's path in the
model, e.g. "serial[2] Dense:") and contain every fragment. docs/reliability.md
lists the same catalogue.
"""

from __future__ import annotations

import math

import pytest
import torch

import fnn
from fnn import layers as L
from fnn.errors import FnnError, FnnTypeError, KeyArrayError, ShapeError, TreeError

K = fnn.random.key(0)
X = torch.ones(5, 3)
X64 = X.double()
XI = torch.ones(5, 3, dtype=torch.int64)
XMETA = torch.ones(5, 3, device="meta")
IMG = torch.ones(2, 3, 8, 8)


def dense_params(out=2, inp=3, **kw):
    return L.Dense(out, **kw).init(K, (-1, inp))[1]


def mlp():
    """serial[0] Dense(4) · serial[1] Relu · serial[2] Dense(2), on 3 features."""
    model = fnn.serial(L.Dense(4), L.Relu(), L.Dense(2))
    return model, model.init(K, (-1, 3))[1]


def with_leaf(tree, value, *path):
    tree = fnn.tree.map(lambda t: t, tree)  # a copy of the containers
    node = tree
    for p in path[:-1]:
        node = node[p]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return tree


_DELETE = object()


def dense_vjp(out=2, x=X):
    return L.Dense(out).apply(dense_params(out, x.shape[-1]), x)[1]


def act_vjp(layer, x=X):
    return layer.apply({}, x)[1]


def serial_apply(params_fn=None, x=X, **kw):
    model, params = mlp()
    return model.apply(params_fn(params) if params_fn else params, x, **kw)


def serial_vjp(dy):
    model, params = mlp()
    return model.apply(params, X)[1](dy)


def nested_apply(x):
    inner = fnn.serial(L.Dense(4), L.Tanh())
    model = fnn.serial(L.Relu(), inner, L.Dense(2))
    return model.apply(model.init(K, (-1, 3))[1], x)


def residual_apply(x_branch):
    model = fnn.serial(L.FanOut(2), fnn.parallel(L.Dense(3), L.Identity()), L.FanInSum())
    params = model.init(K, (-1, 3))[1]
    params = with_leaf(params, x_branch, "1", "0", "weight")
    return model.apply(params, X)


def sgd_update(params, grads, state=None, **kw):
    opt = fnn.optim.sgd(lr=0.1, momentum=0.9, **kw)
    return opt.update(params, grads, state if state is not None else opt.init(params))


def adam_update(params, grads, make=None, state=None):
    opt = (make or fnn.optim.adam)(1e-3)
    return opt.update(params, grads, state if state is not None else opt.init(params))


W = {"w": torch.ones(2, 3)}

# (id, call, error class, message prefix, fragments)
CASES = [
    # ------------------------------------------------------------ wrong rank or feature size
    (
        "Dense input features",
        lambda: L.Dense(2).apply(dense_params(), torch.ones(5, 4)),
        ShapeError,
        "Dense:",
        ["expected input of shape (..., 3)", "(5, 4)"],
    ),
    (
        "Dense input rank 0",
        lambda: L.Dense(2).apply(dense_params(), torch.tensor(1.0)),
        ShapeError,
        "Dense:",
        ["(..., 3)", "()"],
    ),
    (
        "serial path to Dense",
        lambda: serial_apply(x=torch.ones(5, 7)),
        ShapeError,
        "serial[0] Dense:",
        ["(..., 3)", "(5, 7)"],
    ),
    (
        "nested serial path",
        lambda: nested_apply(torch.ones(5, 6)),
        ShapeError,
        "serial[1] serial[0] Dense:",
        ["(..., 3)", "(5, 6)"],
    ),
    (
        "parallel path",
        lambda: residual_apply(torch.ones(4, 3)),
        ShapeError,
        "serial[1] parallel[0] Dense:",
        ["params['weight'] has shape (4, 3)", "expected (3, in_features)"],
    ),
    (
        "Softmax dim out of range",
        lambda: L.Softmax(dim=2).apply({}, torch.ones(2, 3)),
        ShapeError,
        "Softmax:",
        ["dim=2", "rank 2"],
    ),
    (
        "LogSoftmax dim out of range",
        lambda: L.LogSoftmax(dim=2).apply({}, torch.ones(2, 3)),
        ShapeError,
        "LogSoftmax:",
        ["dim=2", "rank 2"],
    ),
    (
        "Flatten rank 0",
        lambda: L.Flatten().apply({}, torch.tensor(1.0)),
        ShapeError,
        "Flatten:",
        ["start_dim=1", "rank 0"],
    ),
    (
        "Reshape size",
        lambda: L.Reshape((4,)).apply({}, X),
        ShapeError,
        "Reshape:",
        ["(5, 3)", "(4,)"],
    ),
    (
        "FanInSum shapes",
        lambda: L.FanInSum().apply({}, (X, torch.ones(5, 4))),
        ShapeError,
        "FanInSum:",
        ["same shape", "(5, 3)", "(5, 4)"],
    ),
    (
        "FanInSum not a tuple",
        lambda: L.FanInSum().apply({}, X),
        ShapeError,
        "FanInSum:",
        ["tuple of tensors"],
    ),
    (
        "FanInConcat shapes",
        lambda: L.FanInConcat(1).apply({}, (X, torch.ones(4, 3))),
        ShapeError,
        "FanInConcat:",
        ["cannot concatenate", "(5, 3)", "(4, 3)"],
    ),
    (
        "parallel input count",
        lambda: fnn.parallel(L.Relu(), L.Relu()).apply({}, (X,)),
        ShapeError,
        "parallel:",
        ["tuple of 2 inputs"],
    ),
    (
        "cross_entropy logits rank",
        lambda: fnn.losses.cross_entropy(torch.ones(5), torch.zeros(5, dtype=torch.long)),
        ShapeError,
        "cross_entropy:",
        ["(N, C)", "(5,)"],
    ),
    (
        "cross_entropy labels shape",
        lambda: fnn.losses.cross_entropy(torch.ones(5, 2), torch.zeros(4, dtype=torch.long)),
        ShapeError,
        "cross_entropy:",
        ["(4,)", "expected (5,)"],
    ),
    (
        "cross_entropy label range",
        lambda: fnn.losses.cross_entropy(torch.ones(5, 2), torch.full((5,), 7)),
        FnnError,
        "cross_entropy:",
        ["[0, 2)"],
    ),
    (
        "mse shapes",
        lambda: fnn.losses.mse(torch.ones(5, 2), torch.ones(5, 1)),
        ShapeError,
        "mse:",
        ["(5, 1)", "(5, 2)"],
    ),
    (
        "bce shapes",
        lambda: fnn.losses.bce_with_logits(torch.ones(5), torch.ones(4)),
        ShapeError,
        "bce_with_logits:",
        ["(4,)", "(5,)"],
    ),
    # ------------------------------------------------------------ init shapes
    (
        "Dense init zero features",
        lambda: L.Dense(2).init(K, (-1, 0)),
        ShapeError,
        "Dense:",
        ["≥ 1"],
    ),
    ("Dense init rank 0 shape", lambda: L.Dense(2).init(K, ()), ShapeError, "Dense:", ["rank ≥ 1"]),
    (
        "init -1 not in batch",
        lambda: L.Dense(2).init(K, (3, -1)),
        ShapeError,
        "Dense:",
        ["-1 only for the batch"],
    ),
    (
        "init float in shape",
        lambda: L.Dense(2).init(K, (-1, 2.5)),
        ShapeError,
        "Dense:",
        ["tuple of ints", "2.5"],
    ),
    (
        "serial init path",
        lambda: fnn.serial(L.Relu(), L.Dense(2)).init(K, None),
        ShapeError,
        "serial[0] Relu:",
        ["tuple of ints", "None"],
    ),
    (
        "parallel init shapes",
        lambda: fnn.parallel(L.Relu(), L.Relu()).init(K, (-1, 3)),
        ShapeError,
        "parallel:",
        ["list of 2 input shapes"],
    ),
    (
        "FanInSum init shapes",
        lambda: L.FanInSum().init(K, [(-1, 3), (-1, 4)]),
        ShapeError,
        "FanInSum:",
        ["same shape"],
    ),
    (
        "Reshape init",
        lambda: L.Reshape((4,)).init(K, (-1, 3)),
        ShapeError,
        "Reshape:",
        ["cannot reshape"],
    ),
    (
        "init dtype int",
        lambda: L.Dense(2).init(K, (-1, 3), dtype=torch.int64),
        FnnTypeError,
        "Dense:",
        ["floating-point torch.dtype", "int64"],
    ),
    (
        "init dtype str",
        lambda: L.Dense(2).init(K, (-1, 3), dtype="float32"),
        FnnTypeError,
        "Dense:",
        ["floating-point torch.dtype"],
    ),
    (
        "misspelt keyword",
        lambda: fnn.value_and_grad(fnn.serial(L.Dense(2), L.Dropout(0.5)).apply, fnn.losses.mse)(
            fnn.serial(L.Dense(2), L.Dropout(0.5)).init(K, (-1, 3))[1],
            torch.ones(4, 3),
            torch.zeros(4, 2),
            rng=K,
        ),
        FnnError,
        "value_and_grad: unexpected keyword rng=",
        ["takes key=, state=, train="],
    ),
    (
        "init bad device",
        lambda: L.Dense(2).init(K, (-1, 3), device="nope"),
        FnnError,
        "Dense:",
        ["device", "'nope'"],
    ),
    # ------------------------------------------------------------ dtype mismatch
    (
        "Dense float64 input",
        lambda: L.Dense(2).apply(dense_params(), X64),
        FnnError,
        "Dense:",
        ["float64", "float32"],
    ),
    (
        "serial float64 input",
        lambda: serial_apply(x=X64),
        FnnError,
        "serial[0] Dense:",
        ["float64", "float32"],
    ),
    (
        "Dense bias dtype",
        lambda: L.Dense(2).apply(with_leaf(dense_params(), torch.zeros(2).double(), "bias"), X),
        FnnError,
        "Dense:",
        ["params['bias']", "float64"],
    ),
    (
        "FanInSum dtypes",
        lambda: L.FanInSum().apply({}, (X, X64)),
        FnnError,
        "FanInSum:",
        ["one dtype"],
    ),
    (
        "FanInConcat dtypes",
        lambda: L.FanInConcat().apply({}, (X, X64)),
        FnnError,
        "FanInConcat:",
        ["one dtype"],
    ),
    ("mse target dtype", lambda: fnn.losses.mse(X, X64), FnnError, "mse:", ["float64", "float32"]),
    (
        "bce target dtype",
        lambda: fnn.losses.bce_with_logits(X, X64),
        FnnError,
        "bce_with_logits:",
        ["float64"],
    ),
    (
        "update grads dtype",
        lambda: fnn.update(W, {"w": torch.ones(2, 3).double()}),
        FnnError,
        "update:",
        ["params['w']", "float64", "float32"],
    ),
    (
        "sgd grads dtype",
        lambda: sgd_update(W, {"w": torch.ones(2, 3).double()}),
        FnnError,
        "sgd:",
        ["params['w']", "float64"],
    ),
    # ------------------------------------------------------------ device mismatch (meta stands in for a GPU)
    (
        "Dense input on meta",
        lambda: L.Dense(2).apply(dense_params(), XMETA),
        FnnError,
        "Dense:",
        ["device meta", "cpu"],
    ),
    (
        "Dense params on meta",
        lambda: L.Dense(2).apply(fnn.tree.map(lambda t: t.to("meta"), dense_params()), X),
        FnnError,
        "Dense:",
        ["meta", "cpu"],
    ),
    (
        "serial params on meta",
        lambda: serial_apply(lambda p: fnn.tree.map(lambda t: t.to("meta"), p)),
        FnnError,
        "serial[0] Dense:",
        ["meta"],
    ),
    (
        "Dense bias on meta",
        lambda: L.Dense(2).apply(
            with_leaf(dense_params(), torch.zeros(2, device="meta"), "bias"), X
        ),
        FnnError,
        "Dense:",
        ["params['bias']", "meta"],
    ),
    (
        "FanInSum devices",
        lambda: L.FanInSum().apply({}, (X, XMETA)),
        FnnError,
        "FanInSum:",
        ["device"],
    ),
    ("mse target device", lambda: fnn.losses.mse(X, XMETA), FnnError, "mse:", ["meta", "cpu"]),
    (
        "cross_entropy labels device",
        lambda: fnn.losses.cross_entropy(X, torch.zeros(5, dtype=torch.long, device="meta")),
        FnnError,
        "cross_entropy:",
        ["labels are on meta", "cpu"],
    ),
    (
        "update grads device",
        lambda: fnn.update(W, {"w": torch.ones(2, 3, device="meta")}),
        FnnError,
        "update:",
        ["params['w']", "meta"],
    ),
    # ------------------------------------------------------------ params trees
    (
        "Dense missing bias",
        lambda: L.Dense(2).apply(with_leaf(dense_params(), _DELETE, "bias"), X),
        TreeError,
        "Dense:",
        ["missing ['bias']"],
    ),
    (
        "Dense extra leaf",
        lambda: L.Dense(2).apply(with_leaf(dense_params(), torch.ones(1), "scale"), X),
        TreeError,
        "Dense:",
        ["unexpected ['scale']"],
    ),
    (
        "Dense(bias=False) given bias",
        lambda: L.Dense(2, bias=False).apply(dense_params(), X),
        TreeError,
        "Dense:",
        ["unexpected ['bias']"],
    ),
    (
        "Dense params None",
        lambda: L.Dense(2).apply(None, X),
        TreeError,
        "Dense:",
        ["dict", "NoneType"],
    ),
    (
        "Dense weight not a tensor",
        lambda: L.Dense(2).apply({"weight": [[1.0] * 3] * 2, "bias": torch.ones(2)}, X),
        FnnTypeError,
        "Dense:",
        ["tensors", "list"],
    ),
    (
        "Dense weight wrong out",
        lambda: L.Dense(2).apply({"weight": torch.ones(3, 3), "bias": torch.ones(3)}, X),
        ShapeError,
        "Dense:",
        ["params['weight'] has shape (3, 3)", "expected (2, in_features)"],
    ),
    (
        "Dense weight 1-D",
        lambda: L.Dense(2).apply({"weight": torch.ones(3), "bias": torch.ones(2)}, X),
        ShapeError,
        "Dense:",
        ["params['weight'] has shape (3,)"],
    ),
    (
        "Dense bias wrong shape",
        lambda: L.Dense(2).apply(with_leaf(dense_params(), torch.ones(5), "bias"), X),
        ShapeError,
        "Dense:",
        ["params['bias'] has shape (5,)", "expected (2,)"],
    ),
    (
        "Dense bias broadcastable",
        lambda: L.Dense(2).apply(with_leaf(dense_params(), torch.ones(1), "bias"), X),
        ShapeError,
        "Dense:",
        ["params['bias'] has shape (1,)", "expected (2,)"],
    ),
    (
        "serial wrong weight shape",
        lambda: serial_apply(lambda p: with_leaf(p, torch.ones(3, 4), "2", "weight")),
        ShapeError,
        "serial[2] Dense:",
        ["params['weight'] has shape (3, 4)"],
    ),
    (
        "serial missing layer params",
        lambda: serial_apply(lambda p: with_leaf(p, _DELETE, "2")),
        TreeError,
        "serial[2] Dense:",
        ["missing ['weight', 'bias']"],
    ),
    (
        "serial unexpected key",
        lambda: serial_apply(lambda p: with_leaf(p, {}, "7")),
        TreeError,
        "serial:",
        ["unexpected params keys ['7']"],
    ),
    (
        "serial params not a dict",
        lambda: serial_apply(lambda p: [p["0"], p["1"], p["2"]]),
        TreeError,
        "serial:",
        ["dict with keys ['0', '1', '2']", "list"],
    ),
    (
        "Relu given params",
        lambda: L.Relu().apply({"w": torch.ones(1)}, X),
        TreeError,
        "Relu:",
        ["takes no parameters"],
    ),
    (
        "serial Relu given params",
        lambda: serial_apply(lambda p: with_leaf(p, {"w": torch.ones(1)}, "1")),
        TreeError,
        "serial[1] Relu:",
        ["takes no parameters"],
    ),
    # ------------------------------------------------------------ cotangents given to VJPs
    (
        "Dense VJP shape",
        lambda: dense_vjp()(torch.ones(5, 3)),
        ShapeError,
        "Dense VJP:",
        ["(5, 2)", "(5, 3)"],
    ),
    (
        "Dense VJP dtype",
        lambda: dense_vjp()(torch.ones(5, 2).double()),
        FnnError,
        "Dense VJP:",
        ["float32", "float64"],
    ),
    (
        "Dense VJP int",
        lambda: dense_vjp()(torch.ones(5, 2, dtype=torch.int64)),
        FnnTypeError,
        "Dense VJP:",
        ["int64"],
    ),
    (
        "Dense VJP not a tensor",
        lambda: dense_vjp()([1.0, 2.0]),
        FnnTypeError,
        "Dense VJP:",
        ["cotangent tensor", "list"],
    ),
    (
        "Relu VJP shape",
        lambda: act_vjp(L.Relu())(torch.ones(5)),
        ShapeError,
        "Relu VJP:",
        ["(5, 3)", "(5,)"],
    ),
    (
        "Tanh VJP dtype",
        lambda: act_vjp(L.Tanh())(X64),
        FnnError,
        "Tanh VJP:",
        ["float32", "float64"],
    ),
    (
        "LogSoftmax VJP shape",
        lambda: act_vjp(L.LogSoftmax())(torch.ones(3, 5)),
        ShapeError,
        "LogSoftmax VJP:",
        ["(5, 3)"],
    ),
    (
        "serial VJP path",
        lambda: serial_vjp(torch.ones(5, 3)),
        ShapeError,
        "serial[2] Dense VJP:",
        ["(5, 2)", "(5, 3)"],
    ),
    (
        "serial VJP not a tensor",
        lambda: serial_vjp(None),
        FnnTypeError,
        "serial[2] Dense VJP:",
        ["NoneType"],
    ),
    (
        "parallel VJP count",
        lambda: fnn.parallel(L.Relu(), L.Relu()).apply({}, (X, X))[1]((X,)),
        ShapeError,
        "parallel VJP:",
        ["tuple of 2 cotangents"],
    ),
    (
        "FanOut VJP count",
        lambda: L.FanOut(2).apply({}, X)[1]((X, X, X)),
        ShapeError,
        "FanOut VJP:",
        ["2 cotangents"],
    ),
    (
        "FanInSum VJP shape",
        lambda: L.FanInSum().apply({}, (X, X))[1](torch.ones(5)),
        ShapeError,
        "FanInSum VJP:",
        ["(5, 3)"],
    ),
    (
        "Dropout VJP shape",
        lambda: L.Dropout(0.5).apply({}, X, key=K)[1](torch.ones(5, 2)),
        ShapeError,
        "Dropout VJP:",
        ["(5, 3)", "(5, 2)"],
    ),
    (
        "Flatten VJP size",
        lambda: L.Flatten().apply({}, torch.ones(2, 3, 4))[1](torch.ones(2, 5)),
        ShapeError,
        "Flatten VJP:",
        ["(2, 12)", "(2, 5)"],
    ),
    (
        "loss VJP not scalar",
        lambda: fnn.losses.mse(X, X)[1](torch.ones(3)),
        ShapeError,
        "mse VJP:",
        ["scalar cotangent", "(3,)"],
    ),
    (
        "mse VJP none shape",
        lambda: fnn.losses.mse(X, X, reduction="none")[1](torch.ones(3)),
        ShapeError,
        "mse VJP:",
        ["loss's shape (5, 3)", "(3,)"],
    ),
    (
        "cross_entropy VJP none shape",
        lambda: fnn.losses.cross_entropy(X, torch.zeros(5, dtype=torch.long), reduction="none")[1](
            torch.ones(5, 3)
        ),
        ShapeError,
        "cross_entropy VJP:",
        ["loss's shape (5,)", "(5, 3)"],
    ),
    (
        "loss VJP not a number",
        lambda: fnn.losses.cross_entropy(torch.ones(5, 2), torch.zeros(5, dtype=torch.long))[1](
            "1"
        ),
        FnnTypeError,
        "cross_entropy VJP:",
        ["str"],
    ),
    # ------------------------------------------------------------ Dropout rate
    *[
        (
            f"Dropout rate {rate!r}",
            (lambda rate=rate: L.Dropout(rate)),
            FnnError,
            "Dropout:",
            ["[0, 1]", repr(rate)],
        )
        for rate in (-0.1, 1.5, math.nan, "0.5", True, None)
    ],
    # ------------------------------------------------------------ integer inputs where floats are needed
    (
        "Dense int input",
        lambda: L.Dense(2).apply(dense_params(), XI),
        FnnTypeError,
        "Dense:",
        ["floating-point", "int64"],
    ),
    (
        "serial int input",
        lambda: serial_apply(x=XI),
        FnnTypeError,
        "serial[0] Dense:",
        ["floating-point"],
    ),
    *[
        (
            f"{name} int input",
            (lambda layer=layer: layer.apply({}, XI)),
            FnnTypeError,
            f"{name}:",
            ["floating-point"],
        )
        for name, layer in [
            ("Relu", L.Relu()),
            ("Tanh", L.Tanh()),
            ("Sigmoid", L.Sigmoid()),
            ("LeakyRelu", L.LeakyRelu()),
            ("Elu", L.Elu()),
            ("Gelu", L.Gelu()),
            ("Softplus", L.Softplus()),
            ("Softmax", L.Softmax()),
            ("LogSoftmax", L.LogSoftmax()),
            ("Identity", L.Identity()),
            ("Dropout", L.Dropout(0.5)),
        ]
    ],
    (
        "mse int prediction",
        lambda: fnn.losses.mse(XI, X),
        FnnTypeError,
        "mse:",
        ["floating-point prediction"],
    ),
    (
        "mse int target",
        lambda: fnn.losses.mse(X, XI),
        FnnTypeError,
        "mse:",
        ["floating-point target"],
    ),
    (
        "cross_entropy int logits",
        lambda: fnn.losses.cross_entropy(XI, torch.zeros(5, dtype=torch.long)),
        FnnTypeError,
        "cross_entropy:",
        ["floating-point prediction"],
    ),
    (
        "cross_entropy float labels",
        lambda: fnn.losses.cross_entropy(X, torch.zeros(5)),
        FnnTypeError,
        "cross_entropy:",
        ["integer labels", "float32"],
    ),
    (
        "cross_entropy int32 labels",
        lambda: fnn.losses.cross_entropy(X, torch.zeros(5, dtype=torch.int32)),
        FnnTypeError,
        "cross_entropy:",
        ["int64"],
    ),
    (
        "bce int target",
        lambda: fnn.losses.bce_with_logits(X, XI),
        FnnTypeError,
        "bce_with_logits:",
        ["floating-point"],
    ),
    (
        "Dense list input",
        lambda: L.Dense(2).apply(dense_params(), [[1.0, 2.0, 3.0]]),
        FnnTypeError,
        "Dense:",
        ["tensor input", "list"],
    ),
    # ------------------------------------------------------------ keys that are not keys
    (
        "serial key int",
        lambda: serial_apply(key=5),
        KeyArrayError,
        "serial:",
        ["bad key", "fnn.random key", "int"],
    ),
    (
        "serial key float tensor",
        lambda: serial_apply(key=torch.ones(2)),
        KeyArrayError,
        "serial:",
        ["bad key", "float32"],
    ),
    (
        "serial key wrong shape",
        lambda: serial_apply(key=torch.zeros(3, dtype=torch.int64)),
        KeyArrayError,
        "serial:",
        ["bad key", "(3,)"],
    ),
    (
        "serial init key",
        lambda: fnn.serial(L.Dense(2)).init(3, (-1, 3)),
        KeyArrayError,
        "serial:",
        ["bad key"],
    ),
    (
        "parallel key",
        lambda: fnn.parallel(L.Relu()).apply({}, (X,), key="k"),
        KeyArrayError,
        "parallel:",
        ["bad key", "str"],
    ),
    (
        "Dropout key",
        lambda: L.Dropout(0.5).apply({}, X, key=torch.ones(3)),
        KeyArrayError,
        "Dropout:",
        ["bad key", "(3,)"],
    ),
    (
        "Dense init key",
        lambda: L.Dense(2).init("k", (-1, 3)),
        KeyArrayError,
        "",
        ["fnn.random key", "str"],
    ),
    ("random.split", lambda: fnn.random.split(3), KeyArrayError, "", ["fnn.random key", "int"]),
    (
        "random.uniform",
        lambda: fnn.random.uniform(torch.ones(2), (3,)),
        KeyArrayError,
        "",
        ["fnn.random key"],
    ),
    (
        "random.key seed",
        lambda: fnn.random.key(1.5),
        KeyArrayError,
        "fnn.random.key:",
        ["int", "float"],
    ),
    ("disk key", lambda: fnn.data.disk(3, 5), KeyArrayError, "", ["fnn.random key"]),
    # ------------------------------------------------------------ trees in update and optimizers
    (
        "update missing leaf",
        lambda: fnn.update({"w": X, "b": X}, {"w": X}),
        TreeError,
        "update: grads tree",
        ["missing keys ['b']"],
    ),
    (
        "update extra leaf",
        lambda: fnn.update({"w": X}, {"w": X, "b": X}),
        TreeError,
        "update: grads tree",
        ["unexpected keys ['b']"],
    ),
    (
        "update leaf shape",
        lambda: fnn.update({"w": X}, {"w": torch.ones(3)}),
        TreeError,
        "update: grads tree",
        ["['w']", "(5, 3)", "(3,)"],
    ),
    (
        "update broadcastable grad",
        lambda: fnn.update({"w": X}, {"w": torch.ones(1, 3)}),
        TreeError,
        "update: grads tree",
        ["['w']", "(1, 3)"],
    ),
    (
        "update grad not a tensor",
        lambda: fnn.update({"w": X}, {"w": 0.5}),
        FnnTypeError,
        "update:",
        ["params['w']", "float"],
    ),
    (
        "update nested path",
        lambda: fnn.update(mlp()[1], with_leaf(mlp()[1], torch.ones(2), "2", "weight")),
        TreeError,
        "update: grads tree",
        ["['2']['weight']", "(2, 4)", "(2,)"],
    ),
    ("update lr negative", lambda: fnn.update(W, W, lr=-1.0), FnnError, "update:", ["lr", "-1.0"]),
    ("update lr str", lambda: fnn.update(W, W, lr="0.1"), FnnError, "update:", ["lr"]),
    (
        "sgd grads tree",
        lambda: sgd_update({"w": X}, {"v": X}),
        TreeError,
        "sgd:",
        ["missing keys ['w']"],
    ),
    (
        "sgd grads shape",
        lambda: sgd_update({"w": X}, {"w": torch.ones(3)}),
        TreeError,
        "sgd:",
        ["['w']", "(3,)"],
    ),
    (
        "sgd state of other params",
        lambda: sgd_update(
            {"w": X}, {"w": X}, fnn.optim.sgd(0.1, momentum=0.9).init({"w": X, "b": X})
        ),
        FnnError,
        "sgd:",
        ["state", "init(params)"],
    ),
    (
        "adam grads tree",
        lambda: adam_update({"w": X}, {"v": X}),
        TreeError,
        "adam:",
        ["missing keys ['w']"],
    ),
    (
        "adam grads dtype",
        lambda: adam_update({"w": X}, {"w": X64}),
        FnnError,
        "adam:",
        ["params['w']", "float64"],
    ),
    (
        "adamw grads shape",
        lambda: adam_update({"w": X}, {"w": torch.ones(3)}, fnn.optim.adamw),
        TreeError,
        "adamw:",
        ["['w']", "(3,)"],
    ),
    (
        "adam state not a state",
        lambda: adam_update({"w": X}, {"w": X}, state={"step": 0}),
        FnnError,
        "adam:",
        ["state"],
    ),
    (
        "adam betas",
        lambda: fnn.optim.adam(lr=0.1, betas=(1.5, 0.9)),
        FnnError,
        "adam:",
        ["betas", "1.5"],
    ),
    ("adam eps", lambda: fnn.optim.adam(eps=-1.0), FnnError, "adam:", ["eps"]),
    ("rmsprop lr", lambda: fnn.optim.rmsprop(lr=-1.0), FnnError, "rmsprop:", ["lr"]),
    (
        "adagrad lr_decay",
        lambda: fnn.optim.adagrad(lr=0.1, lr_decay=-1.0),
        FnnError,
        "adagrad:",
        ["lr_decay"],
    ),
    (
        "sgd momentum",
        lambda: fnn.optim.sgd(lr=0.1, momentum=-0.5),
        FnnError,
        "sgd:",
        ["momentum", "-0.5"],
    ),
    ("sgd lr", lambda: fnn.optim.sgd(lr=-0.1), FnnError, "sgd:", ["lr"]),
    ("sgd nesterov", lambda: fnn.optim.sgd(lr=0.1, nesterov=True), FnnError, "sgd:", ["nesterov"]),
    # ------------------------------------------------------------ constructor arguments and the rest
    ("serial empty", lambda: fnn.serial(), FnnError, "serial:", ["at least one layer"]),
    (
        "serial uncalled layer",
        lambda: fnn.serial(L.Dense(2), L.Relu),
        FnnTypeError,
        "serial[1]:",
        ["expected a Layer", "Relu()"],
    ),
    (
        "parallel not a layer",
        lambda: fnn.parallel(3),
        FnnTypeError,
        "parallel[0]:",
        ["expected a Layer", "int"],
    ),
    (
        "Dense out_features 0",
        lambda: L.Dense(0),
        FnnError,
        "Dense:",
        ["out_features", "positive int", "0"],
    ),
    ("Dense out_features float", lambda: L.Dense(2.5), FnnError, "Dense:", ["positive int", "2.5"]),
    ("FanOut 0", lambda: L.FanOut(0), FnnError, "FanOut:", ["positive int"]),
    ("Reshape bad shape", lambda: L.Reshape((0, 3)), ShapeError, "Reshape:", ["positive ints"]),
    (
        "LeakyRelu slope",
        lambda: L.LeakyRelu("a"),
        FnnTypeError,
        "LeakyRelu:",
        ["negative_slope", "number"],
    ),
    ("Elu alpha", lambda: L.Elu(None), FnnTypeError, "Elu:", ["alpha", "number"]),
    ("Softplus beta", lambda: L.Softplus(beta="2"), FnnTypeError, "Softplus:", ["beta", "number"]),
    ("Gelu approximate", lambda: L.Gelu("fast"), FnnError, "Gelu:", ["'none' or 'tanh'", "fast"]),
    (
        "loss reduction",
        lambda: fnn.losses.mse(X, X, reduction="avg"),
        FnnError,
        "mse:",
        ["reduction", "avg"],
    ),
    (
        "value_and_grad given a layer",
        lambda: fnn.value_and_grad(L.Dense(2), fnn.losses.mse),
        FnnTypeError,
        "value_and_grad:",
        ["layer.apply"],
    ),
    (
        "value_and_grad loss not 0-d",
        lambda: fnn.value_and_grad(
            mlp()[0].apply, lambda p, t: fnn.losses.mse(p, t, reduction="none")
        )(mlp()[1], X, torch.ones(5, 2)),
        FnnError,
        "value_and_grad:",
        ["0-d", "(5, 2)"],
    ),
    (
        "random shape negative",
        lambda: fnn.random.normal(K, (-1, 2)),
        FnnError,
        "fnn.random:",
        ["non-negative", "-1"],
    ),
    (
        "random bernoulli p",
        lambda: fnn.random.bernoulli(K, 1.5, (3,)),
        FnnError,
        "fnn.random.bernoulli:",
        ["[0, 1]"],
    ),
    (
        "random permutation n",
        lambda: fnn.random.permutation(K, -1),
        FnnError,
        "fnn.random.permutation:",
        ["-1"],
    ),
    (
        "random split num",
        lambda: fnn.random.split(K, 0),
        FnnError,
        "fnn.random.split:",
        ["positive int"],
    ),
    ("disk n", lambda: fnn.data.disk(K, -1), FnnError, "disk:", ["non-negative", "-1"]),
    (
        "one_hot labels",
        lambda: fnn.data.one_hot(torch.tensor([0, 3]), 2),
        FnnError,
        "one_hot:",
        ["[0, 2)"],
    ),
    (
        "batches size",
        lambda: list(fnn.data.batches(None, X, batch_size=0)),
        FnnError,
        "batches:",
        ["batch_size"],
    ),
    (
        "tree.unflatten count",
        lambda: fnn.tree.unflatten(fnn.tree.structure({"a": 1}), [1, 2]),
        TreeError,
        "unflatten:",
        ["1 leaves", "got 2"],
    ),
    (
        "tree.map mismatch",
        lambda: fnn.tree.map(lambda a, b: a, {"a": 1}, {"b": 1}),
        TreeError,
        "tree.map:",
        ["missing keys ['a']"],
    ),
    (
        "io.save lambda",
        lambda: fnn.io.save("unused.fnn", {"f": lambda: 0}),
        FnnTypeError,
        "fnn.io.save:",
        ["['f']", "function"],
    ),
]


def _conv_cases():
    """Conv, pooling and norm layers (written beside this catalogue): their bad arguments."""
    if not all(hasattr(L, n) for n in ("Conv", "MaxPool", "AvgPool", "LayerNorm")):
        return []
    conv_params = L.Conv(4, 3).init(K, (-1, 3, 8, 8))[1]
    return [
        ("Conv kernel 0", lambda: L.Conv(4, 0), FnnError, "Conv:", ["kernel_size", "0"]),
        ("Conv kernel negative", lambda: L.Conv(4, (3, -1)), FnnError, "Conv:", ["kernel_size"]),
        ("Conv stride 0", lambda: L.Conv(4, 3, stride=0), FnnError, "Conv:", ["stride", "0"]),
        ("Conv stride float", lambda: L.Conv(4, 3, stride=1.5), FnnTypeError, "Conv:", ["stride"]),
        ("Conv dilation 0", lambda: L.Conv(4, 3, dilation=0), FnnError, "Conv:", ["dilation"]),
        ("Conv groups", lambda: L.Conv(4, 3, groups=3), FnnError, "Conv:", ["divisible by groups"]),
        ("Conv out_channels", lambda: L.Conv(0, 3), FnnError, "Conv:", ["out_channels"]),
        ("MaxPool kernel 0", lambda: L.MaxPool(0), FnnError, "MaxPool:", ["kernel_size"]),
        ("MaxPool stride 0", lambda: L.MaxPool(2, stride=0), FnnError, "MaxPool:", ["stride"]),
        ("AvgPool kernel negative", lambda: L.AvgPool(-2), FnnError, "AvgPool:", ["kernel_size"]),
        (
            "AvgPool stride negative",
            lambda: L.AvgPool(2, stride=-1),
            FnnError,
            "AvgPool:",
            ["stride"],
        ),
        (
            "Conv input rank",
            lambda: L.Conv(4, 3).apply(conv_params, torch.ones(2, 3, 8)),
            ShapeError,
            "Conv:",
            ["NCHW"],
        ),
        (
            "Conv input channels",
            lambda: L.Conv(4, 3).apply(conv_params, torch.ones(2, 5, 8, 8)),
            ShapeError,
            "Conv:",
            ["5"],
        ),
        (
            "Conv float64 input",
            lambda: L.Conv(4, 3).apply(conv_params, IMG.double()),
            FnnError,
            "Conv:",
            ["float64"],
        ),
        (
            "Conv input on meta",
            lambda: L.Conv(4, 3).apply(conv_params, IMG.to("meta")),
            FnnError,
            "Conv:",
            ["meta"],
        ),
        (
            "Conv int input",
            lambda: L.Conv(4, 3).apply(conv_params, IMG.long()),
            FnnTypeError,
            "Conv:",
            ["floating-point"],
        ),
        (
            "Conv weight shape",
            lambda: L.Conv(4, 3).apply(
                with_leaf(conv_params, torch.ones(4, 3, 2, 2), "weight"), IMG
            ),
            ShapeError,
            "Conv:",
            ["params['weight'] has shape (4, 3, 2, 2)"],
        ),
        (
            "Conv missing bias",
            lambda: L.Conv(4, 3).apply(with_leaf(conv_params, _DELETE, "bias"), IMG),
            TreeError,
            "Conv:",
            ["bias"],
        ),
        (
            "Conv VJP shape",
            lambda: L.Conv(4, 3).apply(conv_params, IMG)[1](torch.ones(2, 4, 5, 5)),
            ShapeError,
            "Conv VJP:",
            ["(2, 4, 6, 6)"],
        ),
        (
            "MaxPool small input",
            lambda: L.MaxPool(3).apply({}, torch.ones(1, 1, 2, 2)),
            ShapeError,
            "MaxPool:",
            ["smaller than the window"],
        ),
        (
            "MaxPool int input",
            lambda: L.MaxPool(2).apply({}, IMG.long()),
            FnnTypeError,
            "MaxPool:",
            ["floating-point"],
        ),
        (
            "AvgPool VJP shape",
            lambda: L.AvgPool(2).apply({}, IMG)[1](torch.ones(2, 3, 3, 3)),
            ShapeError,
            "AvgPool VJP:",
            ["(2, 3, 4, 4)"],
        ),
        (
            "serial Conv path",
            lambda: fnn.serial(L.Conv(4, 3), L.Relu(), L.MaxPool(2)).apply(
                {"0": conv_params, "1": {}, "2": {}}, torch.ones(2, 3, 8)
            ),
            ShapeError,
            "serial[0] Conv:",
            ["NCHW"],
        ),
        (
            "LayerNorm features",
            lambda: L.LayerNorm().apply(L.LayerNorm().init(K, (-1, 3))[1], torch.ones(5, 4)),
            ShapeError,
            "LayerNorm:",
            ["4"],
        ),
        (
            "LayerNorm int input",
            lambda: L.LayerNorm().apply(L.LayerNorm().init(K, (-1, 3))[1], XI),
            FnnTypeError,
            "LayerNorm:",
            ["floating-point"],
        ),
    ]


ALL = CASES + _conv_cases()


@pytest.mark.parametrize("case", ALL, ids=[c[0] for c in ALL])
def test_bad_call_gives_a_clear_error(case, tmp_path, monkeypatch):
    _, call, kind, prefix, fragments = case
    monkeypatch.chdir(tmp_path)
    with pytest.raises(kind) as info:
        call()
    error = info.value
    message = str(error)
    assert isinstance(error, ValueError) and isinstance(error, FnnError), type(error)
    if issubclass(kind, FnnTypeError):
        assert isinstance(error, TypeError)
    assert message.startswith(prefix), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message and "at::" not in message and "aten::" not in message


def test_the_catalogue_is_large_and_covers_every_category():
    ids = " ".join(c[0] for c in ALL).lower()
    assert len(ALL) >= 130
    for word in (
        "rank",
        "dtype",
        "meta",
        "missing",
        "extra",
        "vjp",
        "dropout rate",
        "int input",
        "key",
        "update",
        "sgd",
    ):
        assert word in ids, word


def test_errors_are_cheap_to_tell_apart():
    """The classes form one hierarchy under ValueError, and wrong types are TypeErrors too."""
    for kind in (
        FnnError,
        ShapeError,
        TreeError,
        FnnTypeError,
        KeyArrayError,
        fnn.io.CheckpointError,
    ):
        assert issubclass(kind, ValueError) and issubclass(kind, FnnError)
    assert issubclass(FnnTypeError, TypeError) and issubclass(KeyArrayError, TypeError)


def test_an_error_in_a_deep_model_reads_as_a_path():
    block = fnn.serial(L.Dense(4), L.Relu(), L.Dense(4))
    model = fnn.serial(L.Dense(4), fnn.serial(block, L.Tanh()), L.Dense(2))
    _, params = model.init(K, (-1, 3))
    params["1"]["0"]["2"]["weight"] = torch.ones(5, 4)
    with pytest.raises(
        ShapeError, match=r"^serial\[1\] serial\[0\] serial\[2\] Dense: params\['weight'\]"
    ):
        model.apply(params, X)


def test_an_error_keeps_no_torch_traceback():
    """Checks raise `from None`: the user sees fnn's message, not a chained torch one."""
    with pytest.raises(FnnError) as info:
        serial_apply(lambda p: with_leaf(p, torch.ones(2).double(), "2", "bias"))
    assert info.value.__cause__ is None
    assert str(info.value).startswith("serial[2] Dense: params['bias']")


def test_checks_do_not_reject_good_inputs():
    """Batched, unbatched (…, features) and empty inputs pass the checks."""
    model, params = mlp()
    for x in (torch.ones(5, 3), torch.ones(2, 5, 3), torch.ones(0, 3), torch.ones(3)):
        y, vjp = model.apply(params, x)
        assert y.shape == x.shape[:-1] + (2,)
        _, dx = vjp(torch.ones_like(y))
        assert dx.shape == x.shape


def test_docs_list_every_case():
    """docs/reliability.md's catalogue has a row for every case here."""
    import pathlib

    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    missing = [c[0] for c in ALL if f"| {c[0]} |" not in doc]
    assert not missing, missing


# ------------------------------------------------------------ losses: torch.nn.functional's options
def _loss_cases():
    ce, labels = fnn.losses.cross_entropy, torch.zeros(5, dtype=torch.long)
    return [
        (
            "cross_entropy label -1",
            lambda: ce(X, torch.tensor([0, -1, 0, 0, 0])),
            FnnError,
            "cross_entropy:",
            ["[0, 3)", "got -1"],
        ),
        (
            "cross_entropy -100 not ignored",
            lambda: ce(X, torch.full((5,), -100), ignore_index=0),
            FnnError,
            "cross_entropy:",
            ["ignore_index (0)", "got -100"],
        ),
        (
            "cross_entropy ignore_index type",
            lambda: ce(X, labels, ignore_index=1.5),
            FnnTypeError,
            "cross_entropy:",
            ["ignore_index", "float"],
        ),
        (
            "cross_entropy K-dim labels shape",
            lambda: ce(torch.ones(2, 3, 4, 4), torch.zeros(2, 4, dtype=torch.long)),
            ShapeError,
            "cross_entropy:",
            ["(2, 4)", "expected (2, 4, 4)"],
        ),
        (
            "cross_entropy unbatched labels shape",
            lambda: ce(torch.ones(3), torch.zeros(1, dtype=torch.long)),
            ShapeError,
            "cross_entropy:",
            ["(1,)", "expected ()"],
        ),
        (
            "cross_entropy weight shape",
            lambda: ce(X, labels, weight=torch.ones(4)),
            ShapeError,
            "cross_entropy:",
            ["weight", "(3,)", "(4,)"],
        ),
        (
            "cross_entropy weight dtype",
            lambda: ce(X, labels, weight=torch.ones(3).double()),
            FnnError,
            "cross_entropy:",
            ["weight", "float64", "float32"],
        ),
        (
            "cross_entropy label_smoothing",
            lambda: ce(X, labels, label_smoothing=1.5),
            FnnError,
            "cross_entropy:",
            ["[0, 1]", "1.5"],
        ),
        (
            "cross_entropy probabilities dtype",
            lambda: ce(X, X64),
            FnnError,
            "cross_entropy:",
            ["float64", "float32"],
        ),
        (
            "cross_entropy missing dtype kernel",
            lambda: ce(X.to(torch.float8_e4m3fn), labels),
            FnnTypeError,
            "cross_entropy:",
            ["no kernel", "float8_e4m3fn"],
        ),
        (
            "nll labels shape",
            lambda: fnn.losses.nll(X, torch.zeros(4, dtype=torch.long)),
            ShapeError,
            "nll:",
            ["(4,)", "expected (5,)"],
        ),
        (
            "nll label range",
            lambda: fnn.losses.nll(X, torch.full((5,), 3)),
            FnnError,
            "nll:",
            ["[0, 3)", "got 3"],
        ),
        (
            "nll float labels",
            lambda: fnn.losses.nll(X, torch.zeros(5)),
            FnnTypeError,
            "nll:",
            ["int64", "float32"],
        ),
        (
            "nll VJP none shape",
            lambda: fnn.losses.nll(X, labels, "none")[1](torch.ones(5, 3)),
            ShapeError,
            "nll VJP:",
            ["loss's shape (5,)", "(5, 3)"],
        ),
        (
            "multi_margin p",
            lambda: fnn.losses.multi_margin(X, labels, p=3),
            FnnError,
            "multi_margin:",
            ["1 or 2", "3"],
        ),
        (
            "multi_margin input rank",
            lambda: fnn.losses.multi_margin(torch.ones(2, 3, 4), labels),
            ShapeError,
            "multi_margin:",
            ["(N, C) or (C,)", "(2, 3, 4)"],
        ),
        (
            "multi_margin label range",
            lambda: fnn.losses.multi_margin(X, torch.full((5,), 3)),
            FnnError,
            "multi_margin:",
            ["[0, 3)"],
        ),
        (
            "multi_margin weight shape",
            lambda: fnn.losses.multi_margin(X, labels, weight=torch.ones(5)),
            ShapeError,
            "multi_margin:",
            ["(3,)", "(5,)"],
        ),
        (
            "multi_margin margin type",
            lambda: fnn.losses.multi_margin(X, labels, margin="1"),
            FnnTypeError,
            "multi_margin:",
            ["margin", "str"],
        ),
        (
            "bce weight shape",
            lambda: fnn.losses.bce_with_logits(X, X, weight=torch.ones(4)),
            ShapeError,
            "bce_with_logits:",
            ["(4,)", "(5, 3)"],
        ),
        (
            "bce pos_weight dtype",
            lambda: fnn.losses.bce_with_logits(X, X, pos_weight=torch.ones(3).double()),
            FnnError,
            "bce_with_logits:",
            ["pos_weight", "float64"],
        ),
        (
            "bce weight list",
            lambda: fnn.losses.bce_with_logits(X, X, weight=[1.0, 2.0, 3.0]),
            FnnTypeError,
            "bce_with_logits:",
            ["weight", "list"],
        ),
        (
            "l1 shapes",
            lambda: fnn.losses.l1(torch.ones(5, 2), torch.ones(5, 1)),
            ShapeError,
            "l1:",
            ["(5, 1)", "(5, 2)"],
        ),
        (
            "l1 VJP not scalar",
            lambda: fnn.losses.l1(X, X)[1](torch.ones(3)),
            ShapeError,
            "l1 VJP:",
            ["scalar cotangent"],
        ),
        (
            "smooth_l1 beta",
            lambda: fnn.losses.smooth_l1(X, X, beta=-1.0),
            FnnError,
            "smooth_l1:",
            ["beta", ">= 0", "-1.0"],
        ),
        (
            "huber delta",
            lambda: fnn.losses.huber(X, X, delta=0.0),
            FnnError,
            "huber:",
            ["delta", "> 0"],
        ),
        (
            "huber delta type",
            lambda: fnn.losses.huber(X, X, delta="1"),
            FnnTypeError,
            "huber:",
            ["delta", "str"],
        ),
        (
            "huber target dtype",
            lambda: fnn.losses.huber(X, X64),
            FnnError,
            "huber:",
            ["float64", "float32"],
        ),
        (
            "kl_div reduction",
            lambda: fnn.losses.kl_div(X, X, "batch"),
            FnnError,
            "kl_div:",
            ["batchmean", "'batch'"],
        ),
        (
            "mse reduction batchmean",
            lambda: fnn.losses.mse(X, X, "batchmean"),
            FnnError,
            "mse:",
            ["'batchmean'"],
        ),
        (
            "kl_div log_target",
            lambda: fnn.losses.kl_div(X, X, log_target=1),
            FnnTypeError,
            "kl_div:",
            ["bool", "int"],
        ),
        (
            "kl_div VJP int cotangent",
            lambda: fnn.losses.kl_div(X, X, "none")[1](XI),
            FnnTypeError,
            "kl_div VJP:",
            ["floating-point cotangent"],
        ),
    ]


LOSS_CASES = _loss_cases()


@pytest.mark.parametrize("case", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_bad_loss_call_gives_a_clear_error(case, tmp_path, monkeypatch):
    test_bad_call_gives_a_clear_error(case, tmp_path, monkeypatch)


def test_docs_list_every_loss_case():
    import pathlib

    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    missing = [c[0] for c in LOSS_CASES if f"| {c[0]} |" not in doc]
    assert not missing, missing
