"""Fan-out and fan-in: layers with several outputs or several inputs.

`FanOut(n)` copies its input to n outputs, so its VJP sums the n cotangents;
`FanInSum()` adds its inputs, so its VJP hands the cotangent to each of them;
`FanInConcat(axis)` joins along an axis, so its VJP splits the cotangent.
Multi-input layers take a tuple of tensors and a list of shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import FnnError, FnnTypeError, ShapeError, describe
from . import _checks

__all__ = [
    "FanOut",
    "FanInSum",
    "FanInConcat",
    "fan_out_backward",
    "fan_in_sum_backward",
    "fan_in_concat_backward",
]


def _input_shapes(name: str, shapes: Any) -> list[Shape]:
    if (
        not isinstance(shapes, (list, tuple))
        or not shapes
        or not all(isinstance(s, (list, tuple)) for s in shapes)
    ):
        raise ShapeError(f"{name}: expected a list of input shapes, got {shapes!r}")
    return [_checks.input_shape(name, s, min_rank=0) for s in shapes]


def _inputs(name: str, xs: Any) -> tuple[torch.Tensor, ...]:
    if not isinstance(xs, (tuple, list)) or not xs:
        raise ShapeError(f"{name}: expected a tuple of tensors, got {describe(xs)}")
    if not all(isinstance(x, torch.Tensor) for x in xs):  # the same class as Dense's
        raise FnnTypeError(f"{name}: expected a tuple of tensors, got {describe(xs)}")
    return tuple(xs)


def _same_dtype(name: str, xs: tuple[torch.Tensor, ...]) -> None:
    if any(xi.dtype != xs[0].dtype or xi.device != xs[0].device for xi in xs):
        raise FnnError(
            f"{name}: all inputs must have one dtype and device, got {[(xi.dtype, str(xi.device)) for xi in xs]}"
        )


def FanOut(num: int) -> Layer:
    """Copy the input to `num` outputs: `x ↦ (x, x, …)`.

    Args:
        num: number of outputs, ≥ 1.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives a list of `num` copies
            of `shape` and `{}`; `apply({}, x)` gives `(ys, vjp)` with `ys` a tuple of `num`
            tensors of `x`'s shape; `vjp(dys)`, a tuple of `num` cotangents of `x`'s shape,
            gives `({}, dx)` with `dx` their sum.

    Raises:
        FnnError: `num` is not a positive int.
        FnnTypeError: (from `apply`) an input that is not a tensor.
        ShapeError: (from the VJP) cotangents of the wrong number or shape.

    Example:
        >>> init, apply = FanOut(2)
        >>> init(fnn.random.key(0), (-1, 3))[0]
        [(-1, 3), (-1, 3)]
        >>> ys, vjp = apply({}, torch.ones(1, 3))
        >>> vjp((torch.ones(1, 3), torch.ones(1, 3)))
        ({}, tensor([[2., 2., 2.]]))
    """
    _checks.positive_int("FanOut", "num", num)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shapes, Params]:
        del key, dtype, device
        return [_checks.input_shape("FanOut", input_shape, min_rank=0)] * num, {}

    def apply(
        params: Params, x: torch.Tensor, **kwargs: Any
    ) -> tuple[tuple[torch.Tensor, ...], VJP]:
        del kwargs
        _checks.no_params("FanOut", params)
        if not isinstance(x, torch.Tensor):
            raise FnnTypeError(f"FanOut: expected a tensor input, got {describe(x)}")
        return (x,) * num, VJP(fan_out_backward, (num, x.shape))

    return declare(init, apply, LayerInfo("FanOut"))


@backward
def fan_out_backward(
    residuals: tuple[int, torch.Size], dy: Sequence[torch.Tensor]
) -> tuple[Params, torch.Tensor]:
    """(y₁ … yₙ) = (x … x)   ⇒   dx = Σᵢ dyᵢ"""
    num, shape = residuals
    if not isinstance(dy, (tuple, list)) or len(dy) != num:
        raise ShapeError(f"FanOut VJP: expected a tuple of {num} cotangents, got {describe(dy)}")
    for d in dy:
        _checks.cotangent("FanOut", d, shape)
    dx = dy[0]
    for d in dy[1:]:
        dx = dx + d
    return {}, dx


def FanInSum() -> Layer:
    """Add the inputs: `(x₁, x₂, …) ↦ x₁ + x₂ + …` (all of one shape).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, [shape, shape, …])` gives `shape`
            and `{}`; `apply({}, xs)`, a tuple of tensors of one shape, gives `(y, vjp)` with
            `y` of that shape; `vjp(dy)` gives `({}, dxs)` with `dxs` a tuple holding `dy`
            once per input.

    Raises:
        ShapeError: (from `init` and `apply`) inputs that are not a list of shapes (a tuple
            of tensors) of one shape.

    Example:
        >>> init, apply = FanInSum()
        >>> init(fnn.random.key(0), [(-1, 3), (-1, 3)])[0]
        (-1, 3)
        >>> y, vjp = apply({}, (torch.ones(1, 3), torch.ones(1, 3)))
        >>> y, len(vjp(y)[1])
        (tensor([[2., 2., 2.]]), 2)
    """

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        shapes = _input_shapes("FanInSum", input_shape)
        if any(s != shapes[0] for s in shapes):
            raise ShapeError(f"FanInSum: all inputs must have the same shape, got {shapes}")
        return shapes[0], {}

    def apply(params: Params, x: Sequence[torch.Tensor], **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        _checks.no_params("FanInSum", params)
        xs = _inputs("FanInSum", x)
        if any(xi.shape != xs[0].shape for xi in xs):
            raise ShapeError(
                f"FanInSum: all inputs must have the same shape, got {[tuple(xi.shape) for xi in xs]}"
            )
        _same_dtype("FanInSum", xs)
        y = xs[0]
        for xi in xs[1:]:
            y = y + xi
        return y, VJP(fan_in_sum_backward, (len(xs), xs[0].shape))

    return declare(init, apply, LayerInfo("FanInSum"))


@backward
def fan_in_sum_backward(
    residuals: tuple[int, torch.Size], dy: torch.Tensor
) -> tuple[Params, tuple[torch.Tensor, ...]]:
    """y = Σᵢ xᵢ   ⇒   dxᵢ = dy"""
    num, shape = residuals
    _checks.cotangent("FanInSum", dy, shape)
    return {}, (dy,) * num


def FanInConcat(axis: int = 1) -> Layer:
    """Concatenate the inputs along `axis`, as `torch.cat`.

    Args:
        axis: the axis to join along; default 1, features or channels.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, [shape₁, shape₂, …])`, shapes equal
            except on `axis`, gives the joined shape and `{}`; `apply({}, xs)`, a tuple of
            such tensors, gives `(y, vjp)`; `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dxs)`
            with `dxs` a tuple of tensors of the inputs' shapes.

    Raises:
        ShapeError: (from `init` and `apply`) inputs that do not agree except on `axis`.
        FnnError: (from `apply`) inputs of different dtypes or devices.

    Example:
        >>> init, apply = FanInConcat()
        >>> init(fnn.random.key(0), [(-1, 3), (-1, 2)])[0]
        (-1, 5)
        >>> y, vjp = apply({}, (torch.ones(4, 3), torch.ones(4, 2)))
        >>> y.shape, [dx.shape for dx in vjp(y)[1]]
        (torch.Size([4, 5]), [torch.Size([4, 3]), torch.Size([4, 2])])
    """

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        shapes = _input_shapes("FanInConcat", input_shape)
        rank = len(shapes[0])
        if not -rank <= axis < rank or any(len(s) != rank for s in shapes):
            raise ShapeError(f"FanInConcat: axis {axis} does not fit input shapes {shapes}")
        ax = axis % rank
        rest = [s[:ax] + s[ax + 1 :] for s in shapes]
        if any(r != rest[0] for r in rest):
            raise ShapeError(f"FanInConcat: inputs must agree except on axis {axis}, got {shapes}")
        total = sum(s[ax] for s in shapes) if all(s[ax] >= 0 for s in shapes) else -1
        return shapes[0][:ax] + (total,) + shapes[0][ax + 1 :], {}

    def apply(params: Params, x: Sequence[torch.Tensor], **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        _checks.no_params("FanInConcat", params)
        xs = _inputs("FanInConcat", x)
        _same_dtype("FanInConcat", xs)
        try:
            y = torch.cat(xs, axis)
        except (RuntimeError, IndexError):
            raise ShapeError(
                f"FanInConcat: cannot concatenate shapes {[tuple(xi.shape) for xi in xs]} on axis {axis}"
            ) from None
        return y, VJP(fan_in_concat_backward, (axis, tuple(xi.shape[axis] for xi in xs), y.shape))

    return declare(init, apply, LayerInfo("FanInConcat"))


@backward
def fan_in_concat_backward(
    residuals: tuple[int, tuple[int, ...], torch.Size], dy: torch.Tensor
) -> tuple[Params, tuple[torch.Tensor, ...]]:
    """y = concat(x₁ … xₙ)   ⇒   (dx₁ … dxₙ) = split(dy)"""
    axis, sizes, shape = residuals
    _checks.cotangent("FanInConcat", dy, shape)
    return {}, tuple(torch.split(dy, list(sizes), axis))


fan_out_backward.example_wise()
fan_in_sum_backward.example_wise()


# concatenation: example-wise unless it joins along the batch axis
@fan_in_concat_backward.per_example_rule
def _concat_per_example(
    residuals: tuple[int, tuple[int, ...], torch.Size], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, tuple[torch.Tensor, ...]]:
    del need_dx
    axis, _, shape = residuals
    if axis % len(shape) == 0:
        raise FnnError(
            "FanInConcat: joining along the batch axis mixes examples; per-example "
            "gradients are not defined"
        )
    return fan_in_concat_backward.function(residuals, dy)  # type: ignore[no-any-return]
