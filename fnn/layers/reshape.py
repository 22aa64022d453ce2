"""Layers that only change a tensor's shape: `Flatten` and `Reshape`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import FnnTypeError, ShapeError
from . import _checks

__all__ = [
    "Flatten",
    "Reshape",
    "flatten_backward",
    "reshape_backward",
]


def Flatten(start_dim: int = 1, end_dim: int = -1) -> Layer:
    """Merge the axes `start_dim` to `end_dim` into one, as `torch.nn.Flatten(start_dim, end_dim)`.

    The default keeps the batch axis: `(N, d1, d2, …) → (N, d1·d2·…)`. Negative axes count
    from the end; a 0-d input is flattened as a 1-d one, as in torch.

    Args:
        start_dim: the first axis to merge.
        end_dim: the last axis to merge (included).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives the flattened shape
            (`-1` where the batch axis is merged) and `{}`; `apply({}, x)` gives `(y, vjp)`
            with `y` the flattened `x`; `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with
            `dx` of `x`'s shape.

    Raises:
        FnnTypeError: `start_dim` or `end_dim` is not an int.
        ShapeError: (from `init` and `apply`) an input without those axes, or `start_dim`
            after `end_dim`.

    Example:
        >>> init, apply = Flatten()
        >>> init(fnn.random.key(0), (-1, 3, 4, 4))[0]
        (-1, 48)
        >>> y, vjp = apply({}, torch.ones(2, 3, 4, 4))
        >>> y.shape, vjp(y)[1].shape
        (torch.Size([2, 48]), torch.Size([2, 3, 4, 4]))
        >>> Flatten(0, 1).init(fnn.random.key(0), (-1, 3, 4))[0]
        (-1, 4)
    """
    _checks.axis_arg("Flatten", "start_dim", start_dim)
    _checks.axis_arg("Flatten", "end_dim", end_dim)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        shape = _checks.input_shape("Flatten", input_shape, min_rank=0)
        start, end = _flatten_axes(start_dim, end_dim, shape)
        merged = shape[start : end + 1] or (1,)
        size = -1 if -1 in merged else math.prod(merged)
        return shape[:start] + (size,) + shape[end + 1 :], {}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        _checks.no_params("Flatten", params)
        if not isinstance(x, torch.Tensor):
            raise FnnTypeError(f"Flatten: expected a tensor input, got {_checks.describe(x)}")
        start, end = _flatten_axes(start_dim, end_dim, tuple(x.shape))
        y = x.flatten(start, end)
        return y, VJP(flatten_backward, (tuple(x.shape), tuple(y.shape), start == 0 and end > 0))

    return declare(init, apply, LayerInfo("Flatten"))


def _flatten_axes(start_dim: int, end_dim: int, shape: Shape) -> tuple[int, int]:
    start = _checks.axis("Flatten", "start_dim", start_dim, len(shape))
    end = _checks.axis("Flatten", "end_dim", end_dim, len(shape))
    if start > end:
        raise ShapeError(
            f"Flatten: start_dim={start_dim} comes after end_dim={end_dim} for an input of shape "
            f"{shape}"
        )
    return start, end


@backward
def flatten_backward(
    residuals: tuple[Shape, Shape, bool], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = flatten(x)   ⇒   dx = reshape(dy, x.shape)"""
    x_shape, y_shape, _ = residuals
    if not isinstance(dy, torch.Tensor) or dy.shape != y_shape:
        _checks.cotangent("Flatten", dy, y_shape)
    return {}, dy.reshape(x_shape)


@flatten_backward.per_example_rule
def _flatten_per_example(
    residuals: tuple[Shape, Shape, bool], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor]:
    del need_dx
    x_shape, _, merges_batch = residuals
    if merges_batch or not x_shape:
        raise ShapeError(
            f"Flatten: on an input of shape {x_shape} the batch axis is merged with others, so "
            "the output mixes examples and per-example gradients are not defined"
        )
    return flatten_backward.function(residuals, dy)  # type: ignore[no-any-return]


def Reshape(shape: Sequence[int]) -> Layer:
    """Reshape each example to `shape` (the batch axis is kept): `(N, …) → (N, *shape)`.

    Args:
        shape: the shape of each example, positive ints; one entry may be `-1`, inferred as
            in `torch.reshape`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, (N, …))` gives `(N, *shape)` and
            `{}`; `apply({}, x)` gives `(y, vjp)` with `y` of shape `(N, *shape)`; `vjp(dy)`,
            `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        ShapeError: `shape` is not positive ints with at most one `-1`; (from `init` and
            `apply`) examples whose size does not fit `shape`.

    Example:
        >>> Reshape((1, 8, 8)).init(fnn.random.key(0), (-1, 64))[0]
        (-1, 1, 8, 8)
    """
    target = tuple(shape)
    if not all(isinstance(d, int) and (d >= 1 or d == -1) for d in target) or target.count(-1) > 1:
        raise ShapeError(f"Reshape: shape must be positive ints with at most one -1, got {shape!r}")

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        in_shape = _checks.input_shape("Reshape", input_shape, min_rank=1)
        size = math.prod(in_shape[1:])
        known = math.prod(d for d in target if d != -1)
        if (-1 in target and size % known) or (-1 not in target and size != known):
            raise ShapeError(
                f"Reshape: cannot reshape examples of shape {in_shape[1:]} to {target}"
            )
        out = tuple(size // known if d == -1 else d for d in target)
        return (in_shape[0], *out), {}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        _checks.no_params("Reshape", params)
        if not isinstance(x, torch.Tensor) or x.ndim < 1:
            raise ShapeError(
                f"Reshape: expected a tensor with a batch axis, got {_checks.describe(x)}"
            )
        try:
            y = x.reshape(x.shape[0], *target)
        except RuntimeError:
            raise ShapeError(
                f"Reshape: cannot reshape input of shape {tuple(x.shape)} to (batch, *{target})"
            ) from None
        return y, VJP(reshape_backward, ("Reshape", tuple(x.shape)))

    return declare(init, apply, LayerInfo("Reshape"))


@backward
def reshape_backward(residuals: tuple[str, Shape], dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = reshape(x)   ⇒   dx = reshape(dy, x.shape)"""
    name, x_shape = residuals
    if (
        not isinstance(dy, torch.Tensor)
        or dy.numel() != math.prod(x_shape)
        or dy.shape[:1] != x_shape[:1]
    ):
        raise ShapeError(
            f"{name} VJP: expected a cotangent with batch {x_shape[:1]} and {math.prod(x_shape)} "
            f"elements, got {_checks.describe(dy)}"
        )
    return {}, dy.reshape(x_shape)


reshape_backward.example_wise()
