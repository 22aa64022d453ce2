"""Layers that only change a tensor's shape: `Flatten` and `Reshape`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import ShapeError
from . import _checks

__all__ = ["Flatten", "Reshape"]


def Flatten() -> Layer:
    """`(N, d1, d2, …) → (N, d1·d2·…)`, keeping the batch axis (as `torch.nn.Flatten`).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, (N, d1, d2, …))` gives
            `(N, d1·d2·…)` and `{}`; `apply({}, x)` gives `(y, vjp)` with `y` of shape
            `(N, d1·d2·…)`; `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of
            `x`'s shape.

    Raises:
        ShapeError: (from `init` and `apply`) an input without a batch axis.

    Example:
        >>> init, apply = Flatten()
        >>> init(fnn.random.key(0), (-1, 3, 4, 4))[0]
        (-1, 48)
        >>> y, vjp = apply({}, torch.ones(2, 3, 4, 4))
        >>> y.shape, vjp(y)[1].shape
        (torch.Size([2, 48]), torch.Size([2, 3, 4, 4]))
    """

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        shape = _checks.input_shape("Flatten", input_shape, min_rank=1)
        return (shape[0], math.prod(shape[1:])), {}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        _checks.no_params("Flatten", params)
        if not isinstance(x, torch.Tensor) or x.ndim < 1:
            raise ShapeError(
                f"Flatten: expected a tensor with a batch axis, got {_checks.describe(x)}"
            )
        y = x.reshape(x.shape[0], math.prod(x.shape[1:]))
        return y, VJP(reshape_backward, ("Flatten", tuple(x.shape)))

    return declare(init, apply, LayerInfo("Flatten"))


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


# y = reshape(x)   ⇒   dx = reshape(dy, x.shape)
@backward
def reshape_backward(residuals: tuple[str, Shape], dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
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
