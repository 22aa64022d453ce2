"""2-D pooling over NCHW images, `MaxPool` and `AvgPool`, both made by one factory: `pool2d`.

Each pooling is a forward function `(x, kernel, stride, padding) -> (y, saved)` and
a module-level backward right below it. Max-pooling keeps the int64 argmax
indices from `aten.max_pool2d_with_indices` (one per output, not a float mask
of the input) and routes each cotangent back with
`aten.max_pool2d_with_indices_backward`, so ties go where torch sends them (the
first maximum of each window). Average pooling keeps nothing but shapes. Both
backward kernels read only the input's shape, so the VJPs keep a zero-stride
stand-in for it instead of the input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import FnnError, ShapeError
from . import _checks
from .conv import IntPair, out_size, pair

__all__ = ["MaxPool", "AvgPool", "pool2d"]

aten = torch.ops.aten

Window = tuple[list[int], list[int], list[int]]
"""kernel, stride, padding: what aten's pooling kernels take."""
PoolForward = Callable[[torch.Tensor, Window], tuple[torch.Tensor, Any]]


def pool2d(
    name: str,
    forward: PoolForward,
    backward: Callable[[Any, torch.Tensor], tuple[Params, torch.Tensor]],
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
) -> Layer:
    """A parameter-free sliding-window layer over NCHW images.

    `forward(x, (kernel, stride, padding))` returns `(y, saved)`; the VJP is
    `backward((saved, x_stand_in, y.shape, window), dy)`, where `x_stand_in`
    has `x`'s shape, dtype and device but no data (zero strides).

    Example:
        >>> init, apply = pool2d("MaxPool", max_pool_forward, max_pool_backward, 2, None, 0)
        >>> init(fnn.random.key(0), (-1, 3, 8, 8))[0]
        (-1, 3, 4, 4)
    """
    kernel = pair(name, "kernel_size", kernel_size)
    strides = kernel if stride is None else pair(name, "stride", stride)
    pads = pair(name, "padding", padding, minimum=0)
    if pads[0] > kernel[0] // 2 or pads[1] > kernel[1] // 2:
        raise FnnError(f"{name}: padding {padding!r} must be at most half the kernel size {kernel}")
    window: Window = (list(kernel), list(strides), list(pads))

    def out_hw(h: int, w: int) -> tuple[int, int]:
        return out_size(h, kernel[0], strides[0], 2 * pads[0]), out_size(
            w, kernel[1], strides[1], 2 * pads[1]
        )

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        shape = _checks.input_shape(name, input_shape)
        if len(shape) != 4:
            raise ShapeError(f"{name}: expected an NCHW input shape (N, C, H, W), got {shape}")
        hw = out_hw(*shape[2:])
        if min(hw) < 1:
            raise ShapeError(
                f"{name}: input of spatial size {shape[2:]} is smaller than the window {kernel}"
            )
        return (*shape[:2], *hw), {}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        if params:
            _checks.no_params(name, params)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
            _checks.float_input(name, x)
            raise ShapeError(
                f"{name}: expected an NCHW input (N, C, H, W), got shape {tuple(x.shape)}"
            )
        if min(out_hw(x.shape[2], x.shape[3])) < 1:
            raise ShapeError(
                f"{name}: input of spatial size {tuple(x.shape[2:])} is smaller than the window {kernel}"
            )
        y, saved = forward(x, window)
        stand_in = torch.empty_strided(x.shape, (0, 0, 0, 0), dtype=x.dtype, device=x.device)
        return y, VJP(backward, (saved, stand_in, y.shape, window))

    return declare(init, apply, LayerInfo(name))


PoolResiduals = tuple[Any, torch.Tensor, torch.Size, Window]


def _check_dy(name: str, residuals: PoolResiduals, dy: torch.Tensor) -> torch.Tensor:
    _, x, y_shape, _ = residuals
    if not isinstance(dy, torch.Tensor) or dy.shape != y_shape or dy.dtype is not x.dtype:
        _checks.cotangent_like(name, dy, y_shape, x)
    return dy


def MaxPool(kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> Layer:
    """The maximum over each `kernel_size` window, as `torch.nn.MaxPool2d`.

    The output height is `H' = ⌊(H + 2·ph − kh) / sh⌋ + 1`, and likewise the width. Of tied
    maxima, the first in the window gets the gradient, as in torch.

    Args:
        kernel_size: window size `k` or `(kh, kw)`.
        stride: step `s` or `(sh, sw)` between windows; default `kernel_size`.
        padding: `p` or `(ph, pw)` added on each side, at most half the kernel; it counts
            as −∞.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, (N, C, H, W))` gives
            `(N, C, H', W')` and `{}`; `apply({}, x)`, `x` of shape `(N, C, H, W)`, gives
            `(y, vjp)` with `y` of shape `(N, C, H', W')`; `vjp(dy)`, `dy` of `y`'s shape, gives
            `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: a size that is not an int or a pair of ints.
        FnnError: a size out of range, or padding over half the kernel.
        ShapeError: (from `init` and `apply`) an input that is not `(N, C, H, W)`, or
            smaller than the window.

    Example:
        >>> init, apply = MaxPool(2)
        >>> y, vjp = apply({}, torch.arange(16.0).reshape(1, 1, 4, 4))
        >>> y
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
        >>> vjp(torch.ones_like(y))[1][0, 0]
        tensor([[0., 0., 0., 0.],
                [0., 1., 0., 1.],
                [0., 0., 0., 0.],
                [0., 1., 0., 1.]])
    """
    return pool2d("MaxPool", max_pool_forward, max_pool_backward, kernel_size, stride, padding)


def max_pool_forward(x: torch.Tensor, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
    """`(y, argmax indices)`: the indices are int64, one per output element, `h·W + w` in its plane.

    On CPU, aten's channels-last kernel is 3–4× faster than its NCHW one, even with
    the copies in and out (measured on the digits CNN's and 32×32 shapes), and its
    values and indices are the same; the result keeps the input's layout.
    """
    if x.is_cpu and x.is_contiguous():
        y, indices = aten.max_pool2d_with_indices(
            x.contiguous(memory_format=_CHANNELS_LAST), *window, [1, 1], False
        )
        return y.contiguous(), indices.contiguous()
    # torch.ops.aten has no type annotations: its ops return Any
    return aten.max_pool2d_with_indices(x, *window, [1, 1], False)  # type: ignore[no-any-return]


_CHANNELS_LAST = torch.channels_last


# y = max over each window of x   ⇒   dx[argmax] += dy   (every other input gets 0)
@backward
def max_pool_backward(residuals: PoolResiduals, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    indices, x, _, window = residuals
    _check_dy("MaxPool", residuals, dy)
    return {}, aten.max_pool2d_with_indices_backward(dy, x, *window, [1, 1], False, indices)


def AvgPool(kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> Layer:
    """The mean over each `kernel_size` window, as `torch.nn.AvgPool2d`.

    The output height is `H' = ⌊(H + 2·ph − kh) / sh⌋ + 1`, and likewise the width.

    Args:
        kernel_size: window size `k` or `(kh, kw)`.
        stride: step `s` or `(sh, sw)` between windows; default `kernel_size`.
        padding: `p` or `(ph, pw)` zeros added on each side, at most half the kernel;
            counted in the mean (torch's `count_include_pad=True`).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, (N, C, H, W))` gives
            `(N, C, H', W')` and `{}`; `apply({}, x)`, `x` of shape `(N, C, H, W)`, gives
            `(y, vjp)` with `y` of shape `(N, C, H', W')`; `vjp(dy)`, `dy` of `y`'s shape, gives
            `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: a size that is not an int or a pair of ints.
        FnnError: a size out of range, or padding over half the kernel.
        ShapeError: (from `init` and `apply`) an input that is not `(N, C, H, W)`, or
            smaller than the window.

    Example:
        >>> init, apply = AvgPool(2)
        >>> y, vjp = apply({}, torch.arange(16.0).reshape(1, 1, 4, 4))
        >>> y
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
        >>> vjp(torch.ones_like(y))[1][0, 0, 0]
        tensor([0.2500, 0.2500, 0.2500, 0.2500])
    """
    return pool2d("AvgPool", avg_pool_forward, avg_pool_backward, kernel_size, stride, padding)


def avg_pool_forward(x: torch.Tensor, window: Window) -> tuple[torch.Tensor, None]:
    """`(y, None)`: the mean needs nothing saved but shapes."""
    return aten.avg_pool2d(x, *window, False, True, None), None


# y = mean over each window of x   ⇒   dx = Σ over the windows holding x of dy / (kh·kw)
@backward
def avg_pool_backward(residuals: PoolResiduals, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _, x, _, window = residuals
    _check_dy("AvgPool", residuals, dy)
    return {}, aten.avg_pool2d_backward(dy, x, *window, False, True, None)
