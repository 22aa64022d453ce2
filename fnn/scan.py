"""`scan(cell)`: run a cell layer over the time axis of a sequence, carrying its state.

As JAX's `lax.scan`, for layers: the cell's `apply(params, (carry, x_t))` gives
`((carry, y_t), vjp)`; `scan(cell)` runs it for t = 0 … T−1 on `xs` of shape (N, T, C)
and stacks the `y_t` into `ys` (N, T, …). Its VJP walks time in reverse, handing each
step's VJP the cotangent of its carry and of its `y_t`, and sums the cell's parameter
gradients over time:

    (carry_T, ys), vjp = scan(cell).apply(params, (carry0, xs))
    dparams, (dcarry0, dxs) = vjp((dcarry_T, dys))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import random, tree
from .core import (
    VJP,
    Key,
    Layer,
    LayerInfo,
    Params,
    Shapes,
    backprop,
    backward,
    declare,
    layer_info,
    per_example_rule,
    rules_of,
)
from .errors import FnnError, FnnTypeError, KeyArrayError, ShapeError, describe, with_context

__all__ = [
    "scan",
    "scan_backward",
]


def scan(cell: Layer, reverse: bool = False) -> Layer:
    """Run `cell` over the time axis: `(carry0, xs) -> (carry_T, ys)`, batch first.

    The cell is an ordinary layer whose `apply(params, (carry, x_t))` returns
    `((carry, y_t), vjp)`, `x_t` of shape (N, C) and `carry` any pytree of tensors (a
    tensor, or a tuple such as LSTM's `(h, c)`); its `vjp((dcarry, dy_t))` gives
    `(dparams, (dcarry_prev, dx_t))`. Every step uses the same params.

    Shapes in `init` follow the stax convention with the batch axis `-1`: the carry's
    shape is given as the carry is built (one shape such as `(-1, H)`, or a list of them
    for a tuple carry: `[(-1, H), (-1, H)]`), and the cell's `init` receives
    `[carry_shape, (-1, C)]` and must return `[carry_shape, y_shape]`.

    Args:
        cell: the `Layer` run at every step (e.g. `fnn.layers.LSTMCell(H)`, or your own).
        reverse: walk time from T−1 down to 0 (the backward direction of a bidirectional
            layer); `ys[:, t]` is still the output of step t.

    Returns:
        `Layer(init, apply)` whose params are the cell's. `init(key, [carry_shape,
            (-1, T, C)])` gives `([carry_shape, (-1, T, *y_shape[1:])], params)`.
            `apply(params, (carry0, xs), **kwargs)`, `xs` of shape (N, T, C), gives
            `((carry_T, ys), vjp)`, `ys` of shape (N, T, …) (stored time-major, so `ys`
            may be a non-contiguous view); a `key=` is split into one key per step, other
            keywords go to every step. `vjp((dcarry_T, dys))` gives
            `(dparams, (dcarry0, dxs))`, `dparams` the sum over time of the cell's
            parameter gradients, `dxs` of `xs`'s shape. The VJP's memory-freeing variant
            frees each step's residuals as soon as its backward step has run.

    Raises:
        FnnTypeError: `cell` is not a `Layer`, or its `apply` does not return
            `((carry, y_t), vjp)`.
        ShapeError: the input is not `(carry0, xs)` with `xs` of shape (N, T ≥ 1, …), or a
            cotangent is not `(dcarry_T, dys)` with `dys` of `ys`'s time length; a cell's own
            error is prefixed with `scan step t`.

    Example:
        >>> init, apply = fnn.scan(L.RNNCell(4))
        >>> out_shape, params = init(fnn.random.key(0), [(-1, 4), (-1, 5, 3)])
        >>> out_shape
        [(-1, 4), (-1, 5, 4)]
        >>> (h, ys), vjp = apply(params, (torch.zeros(2, 4), torch.randn(2, 5, 3)))
        >>> h.shape, ys.shape
        (torch.Size([2, 4]), torch.Size([2, 5, 4]))
        >>> dparams, (dh0, dxs) = vjp((torch.zeros(2, 4), torch.ones(2, 5, 4)))
        >>> dxs.shape
        torch.Size([2, 5, 3])
    """
    if not (isinstance(cell, tuple) and len(cell) == 2 and all(map(callable, cell))):
        hint = " (did you forget the call, e.g. LSTMCell(8)?)" if callable(cell) else ""
        raise FnnTypeError(f"scan: expected a cell Layer (init, apply), got {describe(cell)}{hint}")
    if not isinstance(reverse, bool):
        raise FnnTypeError(f"scan: reverse must be a bool, got {reverse!r}")
    cell_init, cell_apply = cell
    cell_info = layer_info(cell)
    name = f"scan({cell_info.name})"

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shapes, Params]:
        shapes: Any = input_shape
        if not (
            isinstance(shapes, (list, tuple))
            and len(shapes) == 2
            and _is_shape(shapes[1])
            and len(shapes[1]) >= 2
        ):
            raise ShapeError(
                f"{name}: expected input shapes [carry_shape, (-1, T, C)], got {input_shape!r}"
            )
        carry_shape, xs_shape = shapes
        steps = xs_shape[1]
        try:
            out, params = cell_init(
                key, [carry_shape, (xs_shape[0], *xs_shape[2:])], dtype=dtype, device=device
            )
        except FnnError as error:
            raise with_context(error, name) from None
        if not (isinstance(out, (list, tuple)) and len(out) == 2):
            raise FnnTypeError(
                f"{name}: the cell's init must return [carry_shape, y_shape], got {out!r}"
            )
        return [out[0], _with_time(out[1], steps)], params

    def apply(
        params: Params, x: Any, *, key: Key | None = None, **kwargs: Any
    ) -> tuple[tuple[Any, Any], VJP]:
        if not (isinstance(x, (tuple, list)) and len(x) == 2):
            raise ShapeError(f"{name}: expected an input (carry0, xs), got {describe(x)}")
        carry, xs = x
        if not isinstance(xs, torch.Tensor) or xs.ndim < 2 or xs.shape[1] == 0:
            got = tuple(xs.shape) if isinstance(xs, torch.Tensor) else describe(xs)
            raise ShapeError(
                f"{name}: expected xs of shape (N, T, ...) with T ≥ 1 time steps, got {got}"
            )
        steps = xs.shape[1]
        keys = None
        if key is not None:
            try:
                keys = random.split(key, steps)
            except KeyArrayError as error:
                raise KeyArrayError(f"{name}: bad key: {error}") from None
        vjps: list[Any] = [None] * steps
        ys: list[Any] = [None] * steps
        x_steps = xs.unbind(1)  # one call for all the per-step views
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            step_kwargs = dict(kwargs, key=keys[t]) if keys is not None else kwargs
            try:
                out = cell_apply(params, (carry, x_steps[t]), **step_kwargs)
            except FnnError as error:
                raise with_context(error, f"{name} step {t}") from None
            if not (type(out) is tuple and len(out) == 2 and _is_pair(out[0])):
                raise FnnTypeError(
                    f"{name}: the cell's apply must return ((carry, y_t), vjp), got {describe(out)}"
                )
            (carry, ys[t]), vjps[t] = out
        return (carry, _stack(ys)), VJP(scan_backward, (tuple(vjps), reverse))

    info = LayerInfo(name, kind="wrapper", children=(cell,), keywords=cell_info.keywords)
    return declare(init, apply, info)


def _is_shape(shape: object) -> bool:
    return isinstance(shape, (tuple, list)) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    )


def _is_pair(x: object) -> bool:
    return (type(x) is tuple or isinstance(x, (tuple, list))) and len(x) == 2


def _with_time(shape: Any, steps: int) -> Any:
    """`(-1, …)` → `(-1, T, …)`, through a list of shapes for a pytree `y_t`."""
    if _is_shape(shape) and len(shape) >= 1:
        return (shape[0], steps, *shape[1:])
    if isinstance(shape, (list, tuple)):
        return [_with_time(s, steps) for s in shape]
    raise FnnTypeError(f"scan: the cell's init gave a y_shape that is not a shape: {shape!r}")


def _stack(items: Sequence[Any]) -> Any:
    """Stack per-step outputs (tensors or pytrees) on a new time axis 1, stored time-major."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(list(items), 0).transpose(0, 1)
    leaves, treedef = tree.flatten(first)
    columns = [tree.leaves(item) for item in items]
    stacked = [torch.stack([c[i] for c in columns], 0).transpose(0, 1) for i in range(len(leaves))]
    return tree.unflatten(treedef, stacked)


def _unstack(dys: Any, steps: int) -> list[Any]:
    """The per-step slices `dys[:, t]` of a tensor or pytree, for t = 0 … T−1."""
    if isinstance(dys, torch.Tensor):
        return list(dys.unbind(1))
    leaves, treedef = tree.flatten(dys)
    columns = [leaf.unbind(1) for leaf in leaves]
    return [tree.unflatten(treedef, [c[t] for c in columns]) for t in range(steps)]


def _consumes(vjp: Any) -> bool:
    """Whether a step's VJP declares a memory-freeing variant (else it is simply called)."""
    backward_fn = getattr(vjp, "backward", None)
    rules = rules_of(backward_fn)
    return rules is not None and rules.consume is not None


def _is_flat(grads: Any) -> bool:
    """Whether `grads` is a flat dict of tensors (a cell's params: the common case)."""
    return type(grads) is dict and all(type(g) is torch.Tensor for g in grads.values())


def _accumulate(total: Any, grads: Any, owned: bool, flat: bool) -> Any:
    """`total + grads`, adding in place once `total` holds tensors made here (`owned`);
    `flat`: both are flat dicts of tensors with the same keys, so no tree walk is needed."""
    if total is None:
        return grads
    if flat:
        if owned:
            for k, t in total.items():
                t.add_(grads[k])
            return total
        return {k: torch.add(t, grads[k]) for k, t in total.items()}
    if owned:
        return tree.map(torch.Tensor.add_, total, grads)
    return tree.map(torch.add, total, grads)


def _walk(
    vjps: list[Any], reverse: bool, dy: Any, mode: str, need_dx: bool = True
) -> tuple[Params, tuple[Any, Any]]:
    """The scan VJP: the steps' VJPs in reverse order of the forward, emptying `vjps`.

    `mode` is "call" (each `vjp(...)`), "consume" (`backprop`, freeing each step's residuals
    once used) or "per_example" (each step's per-example rule)."""
    if not (isinstance(dy, (tuple, list)) and len(dy) == 2):
        raise ShapeError(f"scan VJP: expected a cotangent (dcarry_T, dys), got {describe(dy)}")
    dcarry, dys = dy
    del dy
    steps = len(vjps)
    for leaf in tree.leaves(dys):
        if not isinstance(leaf, torch.Tensor) or leaf.ndim < 2 or leaf.shape[1] != steps:
            got = tuple(leaf.shape) if isinstance(leaf, torch.Tensor) else describe(leaf)
            raise ShapeError(
                f"scan VJP: expected dys of shape (N, {steps}, ...) like ys, got {got}"
            )
    dxs: list[Any] = [None] * steps
    dy_steps = _unstack(dys, steps)
    del dys
    total: Any = None
    flat = False
    for i, t in enumerate(range(steps) if reverse else range(steps - 1, -1, -1)):
        vjp = vjps[t]
        vjps[t] = None
        cotangent = (dcarry, dy_steps[t])
        dy_steps[t] = None
        del dcarry
        try:
            if mode == "consume" and _consumes(vjp):
                box = [vjp, cotangent]
                del vjp, cotangent
                out = backprop(box, True)
            elif mode == "per_example":
                out = per_example_rule(vjp)(vjp.residuals, cotangent, True)
            else:  # (consume: this step's residuals go with `vjp`, replaced next step)
                out = vjp(cotangent)
        except FnnError as error:
            raise with_context(error, f"scan step {t}") from None
        if not (type(out) is tuple and len(out) == 2 and _is_pair(out[1])):
            raise FnnTypeError(
                f"scan step {t}: the cell's VJP must return (dparams, (dcarry, dx_t)), "
                f"got {describe(out)}"
            )
        grads, (dcarry, dxs[t]) = out
        if i == 0:
            flat = _is_flat(grads)
        elif flat and not (_is_flat(grads) and grads.keys() == total.keys()):
            flat = False  # a cell whose gradients change form: the tree walk checks them
        total = _accumulate(total, grads, i > 1, flat)
    del need_dx  # dx_t comes with dcarry from each step; the cells decide what it costs
    return total, (dcarry, _stack(dxs))


@backward
def scan_backward(residuals: tuple[tuple[VJP, ...], bool], dy: Any) -> tuple[Params, Any]:
    """
    (c_t, y_t) = f(c_{t−1}, x_t)   ⇒   walk t = T−1 … 0: (dθ_t, (dc_{t−1}, dx_t)) = vjp_t((dc_t, dy_t)),  dθ = Σ_t dθ_t
    """
    vjps, reverse = residuals
    return _walk(list(vjps), reverse, dy, "call")


@scan_backward.consumer
def _scan_consume(box: list[Any], need_dx: bool) -> tuple[Params, Any]:
    """`scan_backward` for `fnn.core.backprop`: each step's VJP is dropped once it has run."""
    dy = box.pop()
    vjps, reverse = box.pop()
    pending = list(vjps)
    del vjps  # `pending` now holds the only reference to each step's VJP
    return _walk(pending, reverse, dy, "consume", need_dx)


# per example: the steps' rules, summed over time (each dθ_t leaf keeps the batch axis)
@scan_backward.per_example_rule
def _scan_per_example(
    residuals: tuple[tuple[VJP, ...], bool], dy: Any, need_dx: bool
) -> tuple[Params, Any]:
    vjps, reverse = residuals
    return _walk(list(vjps), reverse, dy, "per_example", need_dx)


def _step_vjps(residuals: tuple[tuple[VJP, ...], bool]) -> tuple[VJP, ...]:
    return residuals[0]


scan_backward.holds_children(_step_vjps)
