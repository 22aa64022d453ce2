"""Model summary: a table of every layer's output shape, parameters and residual bytes.

`summary(layer, input_shape)` runs the model once on a small random batch and reads
what each layer's VJP keeps alive; `graph_repr(layer)` draws a composite model as an
indented tree. Neither changes anything: both only call `init` and `apply`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from . import random
from .core import VJP, Layer, Shapes, layer_info, layer_name
from .errors import FnnTypeError, ShapeError, describe
from .state import init_state

__all__ = ["summary", "graph_repr"]

_COMBINATORS = ("serial", "parallel")


def _check_layer(where: str, layer: Any) -> None:
    if not (isinstance(layer, tuple) and len(layer) == 2 and all(map(callable, layer))):
        hint = " (did you forget the call, e.g. Relu()?)" if callable(layer) else ""
        raise FnnTypeError(
            f"{where}: expected a Layer (init, apply) pair, got {describe(layer)}{hint}"
        )


def _children(layer: Layer) -> tuple[Layer, ...] | None:
    info = layer_info(layer)
    return info.children if info.kind in _COMBINATORS else None


def graph_repr(layer: Layer) -> str:
    """An indented tree of a composite model: one line per layer, children below their combinator.

    Args:
        layer: any `Layer`; `serial` and `parallel` show their children.

    Returns:
        The tree as a string, one line per layer (`[i] Name`); `print` it.

    Raises:
        FnnTypeError: `layer` is not a `Layer`.

    Example:
        >>> block = fnn.serial(L.FanOut(2), fnn.parallel(L.Dense(4), L.Identity()), L.FanInSum())
        >>> print(fnn.graph_repr(fnn.serial(L.Dense(4), block, L.Relu())))
        serial
        ├── [0] Dense
        ├── [1] serial
        │   ├── [0] FanOut
        │   ├── [1] parallel
        │   │   ├── [0] Dense
        │   │   └── [1] Identity
        │   └── [2] FanInSum
        └── [2] Relu
    """
    _check_layer("graph_repr", layer)
    lines = [layer_name(layer)]

    def walk(node: Layer, prefix: str) -> None:
        children = _children(node) or ()
        for i, child in enumerate(children):
            last = i == len(children) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}[{i}] {layer_name(child)}")
            walk(child, prefix + ("    " if last else "│   "))

    walk(layer, "")
    return "\n".join(lines)


def _storages(tree: Any, found: dict[int, int], skip: set[int]) -> None:
    """Add every tensor storage under `tree` (tuples, lists, dicts, VJPs) to `found`: ptr → bytes."""
    if isinstance(tree, torch.Tensor):
        storage = tree.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and storage.nbytes():
            found[ptr] = storage.nbytes()
    elif isinstance(tree, Mapping):
        for value in tree.values():
            _storages(value, found, skip)
    elif isinstance(tree, (tuple, list)):  # VJP is a NamedTuple: its residuals are walked too
        for value in tree:
            _storages(value, found, skip)


def _param_count(params: Any) -> int:
    count = 0
    leaves = [params]
    while leaves:
        leaf = leaves.pop()
        if isinstance(leaf, torch.Tensor):
            count += leaf.numel()
        elif isinstance(leaf, Mapping):
            leaves += list(leaf.values())
        elif isinstance(leaf, (tuple, list)):
            leaves += list(leaf)
    return count


def _batch(key: Any, shape: Shapes, batch: int, dtype: torch.dtype) -> Any:
    if isinstance(shape, list):
        keys = random.split(key, len(shape))
        return tuple(_batch(k, s, batch, dtype) for k, s in zip(keys, shape))
    if not isinstance(shape, tuple) or not shape or not all(isinstance(d, int) for d in shape):
        raise ShapeError(
            f"summary: expected an input shape as a tuple of ints (or a list of them), got {shape!r}"
        )
    size = tuple(batch if d == -1 else d for d in shape)
    if not dtype.is_floating_point:  # indices (Embedding): 0 is valid for any table
        return torch.zeros(size, dtype=dtype)
    return random.normal(key, size, dtype=dtype)


def _rows(
    layer: Layer,
    params: Any,
    vjp: VJP,
    shape: Any,
    path: str,
    dtype: torch.dtype,
    out: list[list[Any]],
) -> Shapes:
    """Append `[path, name, out_shape, n_params, vjp]` rows, depth first; return the output shape.

    `shape` is a shape, or a list or tuple of them for `parallel` (nested for nested ones)."""
    children = _children(layer)
    name = layer_name(layer)
    row: list[Any] = [path, name, None, _param_count(params), vjp]
    out.append(row)
    if children is None:
        out_shape, _ = layer.init(random.key(0), shape, dtype=dtype)
        row[2] = out_shape
        return out_shape
    child_vjps = vjp.residuals[0]
    shapes: list[Shapes] = []
    for i, child in enumerate(children):
        child_params = params.get(str(i), {}) if isinstance(params, Mapping) else {}
        child_shape = shape if name == "serial" else shape[i]
        child_out = _rows(
            child, child_params, child_vjps[i], child_shape, _child_path(path, name, i), dtype, out
        )
        if name == "serial":
            shape = child_out
        else:
            shapes.append(child_out)
    out_shape = shape if name == "serial" else shapes
    row[2] = out_shape
    return out_shape


def _child_path(path: str, kind: str, i: int) -> str:
    """`serial[1]` for the root's children, then `serial[1].parallel[0]` and so on."""
    return f"{kind}[{i}]" if not path else f"{path}.{kind}[{i}]"


def _residual_bytes(
    layer: Layer,
    params: Any,
    input_shape: Shapes,
    batch: int,
    dtype: torch.dtype,
    input_dtype: torch.dtype,
) -> tuple[list[list[Any]], list[int]]:
    x = _batch(random.key(1), input_shape, batch, input_dtype)
    state = init_state(layer, input_shape, dtype=dtype)
    if state:  # running statistics (BatchNorm): run it as in training
        _, vjp, _ = layer.apply(params, x, state=state, train=True)
    else:
        _, vjp = layer.apply(params, x)
    rows: list[list[Any]] = []
    _rows(layer, params, vjp, input_shape, "", dtype, rows)
    skip: dict[int, int] = {}
    _storages(params, skip, set())
    per_row = []
    for row in rows:
        found: dict[int, int] = {}
        _storages(row[4].residuals, found, set(skip))
        per_row.append(sum(found.values()))
    return rows, per_row


def summary(
    layer: Layer,
    input_shape: Shapes,
    *,
    dtype: torch.dtype = torch.float32,
    input_dtype: torch.dtype | None = None,
) -> str:
    """A table of each layer's path, type, output shape, parameter count and residual bytes.

    The model is initialised with key 0 and run on small random batches; nothing is
    changed. "residual B/example" is the bytes the layer's VJP keeps alive per example:
    distinct tensor storages, each counted once however many views of it are kept,
    without parameters and tensors of fixed size (a feedback matrix); a layer's input
    counts when its VJP keeps it (Dense keeps `x`). A combinator's row covers its children,
    each storage once, so children's rows may add up to more than their parent's. Paths
    name each layer by its parents: `serial[1].parallel[0]`.

    Args:
        layer: any `Layer`.
        input_shape: the model's input shape, e.g. `(-1, in_features)` (`-1`: any batch
            size), or a list of shapes for several inputs.
        dtype: floating dtype of the params (and of the inputs, by default).
        input_dtype: the inputs' dtype when it is not `dtype`: an integer dtype (indices
            for a model that starts with `Embedding`) feeds zeros.

    Returns:
        The table as a string, with a `(model)` row, one row per layer, and a total; `print` it.

    Raises:
        FnnTypeError: `layer` is not a `Layer`, `dtype` is not a floating dtype, or
            `input_dtype` is not a dtype.
        ShapeError: `input_shape` is not a tuple of ints (or a list of them).

    Example:
        >>> print(fnn.summary(fnn.serial(L.Dense(25), L.Relu(), L.Dense(2)), (-1, 2)))
        path       type    output shape  params  residual B/example
        (model)    serial  (-1, 2)          127                 108
        serial[0]  Dense   (-1, 25)          75                   8
        serial[1]  Relu    (-1, 25)           0                 100
        serial[2]  Dense   (-1, 2)           52                 100
        total                               127                 108
    """
    _check_layer("summary", layer)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise FnnTypeError(f"summary: dtype must be a floating torch.dtype, got {describe(dtype)}")
    input_dtype = dtype if input_dtype is None else input_dtype
    if not isinstance(input_dtype, torch.dtype):
        raise FnnTypeError(
            f"summary: input_dtype must be a torch.dtype, got {describe(input_dtype)}"
        )
    _batch(random.key(1), input_shape, 2, input_dtype)  # checks the shape
    _, params = layer.init(random.key(0), input_shape, dtype=dtype)
    rows, bytes2 = _residual_bytes(layer, params, input_shape, 2, dtype, input_dtype)
    _, bytes3 = _residual_bytes(layer, params, input_shape, 3, dtype, input_dtype)
    table = [("path", "type", "output shape", "params", "residual B/example")]
    for row, b2, b3 in zip(rows, bytes2, bytes3):
        table.append(
            (row[0] or "(model)", row[1], _shape_str(row[2]), str(row[3]), str(max(b3 - b2, 0)))
        )
    table.append(("total", "", "", str(rows[0][3]), str(max(bytes3[0] - bytes2[0], 0))))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    lines = []
    for r in table:
        left = "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths[:3]))
        right = "  ".join(cell.rjust(w) for cell, w in zip(r[3:], widths[3:]))
        lines.append(f"{left}  {right}".rstrip())
    return "\n".join(lines)


def _shape_str(shape: Any) -> str:
    if isinstance(shape, list):
        return "[" + ", ".join(_shape_str(s) for s in shape) + "]"
    return str(tuple(shape))
