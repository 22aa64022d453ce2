"""n-D pooling over (N, C, *spatial) inputs: `MaxPool`, `AvgPool` and `AdaptiveAvgPool`, all
made by one factory, `_pool`.

The dimension follows the kernel (the output size for `AdaptiveAvgPool`): an int is 2-D,
a tuple of 1, 2 or 3 ints is 1-D, 2-D or 3-D; unbatched inputs `(C, *spatial)` are
accepted, as in torch. 1-D pooling runs as 2-D pooling over a height of 1 (as torch's
`max_pool1d` does), so each pooling is two aten kernels (2-D and 3-D) and their
module-level backward right below them.

Max-pooling keeps the int64 argmax indices from `aten.max_pool2d_with_indices` (one per
output, not a float mask of the input) and routes each cotangent back with
`aten.max_pool2d_with_indices_backward`, so ties go where torch sends them (the first
maximum of each window). Average pooling keeps nothing but shapes. The backward kernels
read only the input's shape, so the VJPs keep a zero-stride stand-in for it instead of
the input. Every pooling is example-wise (row n of the output depends on row n of the
input only), so `fnn.per_example_grads` uses its VJP as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core import VJP, Backward, Key, Layer, LayerInfo, Params, Shapes, backward, declare
from ..errors import FnnError, FnnTypeError, ShapeError
from . import _checks
from .conv import Size, kernel_tuple, layout, ntuple

__all__ = [
    "MaxPool",
    "AvgPool",
    "AdaptiveAvgPool",
    "max_pool_backward",
    "avg_pool_backward",
    "adaptive_avg_pool_backward",
    "max_pool_forward",
    "avg_pool_forward",
    "adaptive_avg_pool_forward",
]

aten = torch.ops.aten

PoolForward = Callable[[torch.Tensor, tuple[Any, ...]], tuple[Any, Any]]
"""`forward(x, config) -> (y, saved)`, `x` of shape (N, C, H, W) or (N, C, D, H, W)."""


def _pool(
    name: str,
    n: int,
    out_spatial: Callable[[Sequence[int]], tuple[int, ...]],
    forward: PoolForward,
    backward_fn: Backward,
    config: tuple[Any, ...],
    two_outputs: bool = False,
) -> Layer:
    """A parameter-free layer pooling the `n` last axes of `(N, C, *spatial)` or `(C, *spatial)`.

    `forward(x, config)` sees a batched input of 2 or 3 spatial axes (a 1-D input gets a
    height of 1, which `config` must already include) and returns `(y, saved)`; `y` is a
    tensor, or `(y, indices)` with `two_outputs`. The VJP is
    `backward_fn((saved, x_stand_in, y_shape, config, out_shape, x_shape, name), dy)`: the
    stand-in has the lifted input's shape but no data, `y_shape` is the lifted output's,
    `out_shape` the one returned."""

    def checked_out(shape: Sequence[int]) -> tuple[int, ...]:
        if len(shape) not in (n + 1, n + 2):
            raise ShapeError(
                f"{name}: expected {layout(n)} for {n}-D pooling, got shape {tuple(shape)}"
            )
        out = out_spatial(shape[-n:])
        if min(out) < 1:
            raise ShapeError(
                f"{name}: input of spatial size {tuple(shape[-n:])} is smaller than the window "
                f"(output {out})"
            )
        return out

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shapes, Params]:
        del key, dtype, device
        shape = _checks.input_shape(name, input_shape)
        out = (*shape[:-n], *checked_out(shape))
        return ([out, out] if two_outputs else out), {}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[Any, VJP]:
        del kwargs
        if params:
            _checks.no_params(name, params)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != n + 2:
            _checks.float_input(name, x)
            if x.ndim != n + 1:
                checked_out(x.shape)
        xk = x.unsqueeze(0) if x.ndim == n + 1 else x
        if n == 1:
            xk = xk.unsqueeze(2)
        try:
            y, saved = forward(xk, config)
        except RuntimeError:  # torch's output-size check: say it in the layer's terms
            checked_out(x.shape)
            raise
        y_shape = y[0].shape if two_outputs else y.shape
        out_shape = (*x.shape[:-n], *y_shape[-n:])
        if out_shape != y_shape:
            y = (y[0].view(out_shape), y[1].view(out_shape)) if two_outputs else y.view(out_shape)
        stand_in = torch.empty_strided(xk.shape, (0,) * xk.ndim, dtype=x.dtype, device=x.device)
        return y, VJP(backward_fn, (saved, stand_in, y_shape, config, out_shape, x.shape, name))

    return declare(init, apply, LayerInfo(name))


PoolResiduals = tuple[
    Any, torch.Tensor, torch.Size, tuple[Any, ...], tuple[int, ...], torch.Size, str
]


def _lifted(residuals: PoolResiduals, dy: Any) -> torch.Tensor:
    """`dy` in the lifted output's shape (what the aten backward kernels take), or an error."""
    _, x, y_shape, _, out_shape, _, name = residuals
    if not isinstance(dy, torch.Tensor) or dy.shape != out_shape or dy.dtype is not x.dtype:
        _checks.cotangent_like(name, dy, out_shape, x)
    lifted: torch.Tensor = dy.reshape(y_shape) if y_shape != out_shape else dy
    return lifted


def _unlifted(residuals: PoolResiduals, dx: torch.Tensor) -> tuple[Params, torch.Tensor]:
    x_shape = residuals[5]
    return {}, dx.reshape(x_shape) if dx.shape != x_shape else dx


def _window(
    name: str,
    kernel_size: Size,
    stride: Size | None,
    padding: Size,
    dilation: Size = 1,
) -> tuple[int, list[int], list[int], list[int], list[int]]:
    """`(n, kernel, stride, padding, dilation)` checked as torch does, lifted to 2-D for n = 1."""
    kernel = kernel_tuple(name, kernel_size)
    n = len(kernel)
    strides = kernel if stride is None else ntuple(name, "stride", stride, n)
    pads = ntuple(name, "padding", padding, n, minimum=0)
    dilations = ntuple(name, "dilation", dilation, n)
    if any(p > k // 2 for p, k in zip(pads, kernel)):
        raise FnnError(f"{name}: padding {padding!r} must be at most half the kernel size {kernel}")
    lift = [1] if n == 1 else []
    return (
        n,
        lift + list(kernel),
        lift + list(strides),
        [0] * len(lift) + list(pads),
        lift + list(dilations),
    )


def _window_out(
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    ceil_mode: bool,
    spatial: Sequence[int],
) -> tuple[int, ...]:
    """Output size of a pooling window (torch's `pooling_output_shape`), per axis."""
    out = []
    for size, k, s, p, d in zip(spatial, kernel[-len(spatial) :], stride[-len(spatial) :],
                                padding[-len(spatial) :], dilation[-len(spatial) :]):  # fmt: skip
        length = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (length - 1) * s >= size + p:
            length -= 1  # the last window must start inside the input or its left padding
        out.append(length)
    return tuple(out)


def _flag(name: str, what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise FnnTypeError(f"{name}: {what} must be True or False, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------
# Max pooling


def MaxPool(
    kernel_size: Size,
    stride: Size | None = None,
    padding: Size = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Layer:
    """The maximum over each window, as `torch.nn.MaxPool1d`, `MaxPool2d` or `MaxPool3d`.

    The kernel's length gives the dimension: an int is 2-D over `(N, C, H, W)`; a tuple of
    1, 2 or 3 ints is 1-D over `(N, C, L)`, 2-D, or 3-D over `(N, C, D, H, W)`; unbatched
    inputs `(C, *spatial)` are accepted. Each output length is
    `L' = ⌊(L + 2·p − d·(k − 1) − 1) / s⌋ + 1` (⌈·⌉ with `ceil_mode`, as long as the last
    window starts inside the input or its left padding). Of tied maxima, the first in the
    window gets the gradient, as in torch.

    Args:
        kernel_size: window size: an int (2-D) or a tuple of 1, 2 or 3 ints.
        stride: step between windows, an int or a tuple of one per axis; default `kernel_size`.
        padding: −∞ added on each side, at most half the kernel; an int or a tuple.
        dilation: spacing between window elements, an int or a tuple.
        ceil_mode: round the output length up instead of down (a last partial window).
        return_indices: also return the argmax of each window, as torch does: the output
            becomes `(y, indices)`, `indices` int64 of `y`'s shape holding each maximum's
            flat position in its input plane (`h·W + w`). The VJP then takes a pair
            `(dy, dindices)` and ignores `dindices` (indices are integers: no gradient;
            `None` is accepted).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, (N, C, *spatial))` gives
            `(N, C, *spatial')` (a list of two such shapes with `return_indices`) and `{}`;
            `apply({}, x)` gives `(y, vjp)`, `y` of shape `(N, C, *spatial')` (or the pair);
            `vjp(dy)` gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: a size that is not an int or a tuple of the kernel's length, or a
            flag that is not a bool.
        FnnError: a size out of range, or padding over half the kernel.
        ShapeError: (from `init` and `apply`) an input that is not `(N, C, *spatial)` or
            `(C, *spatial)`, or smaller than the window.

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
        >>> (y, indices), vjp = MaxPool((3,), return_indices=True).apply({}, torch.tensor([[1.0, 5, 2, 0, 4, 3]]))
        >>> y, indices
        (tensor([[5., 4.]]), tensor([[1, 4]]))
        >>> vjp((torch.ones(1, 2), None))[1]
        tensor([[0., 1., 0., 0., 1., 0.]])
    """
    n, kernel, strides, pads, dilations = _window("MaxPool", kernel_size, stride, padding, dilation)
    ceil = _flag("MaxPool", "ceil_mode", ceil_mode)
    indices = _flag("MaxPool", "return_indices", return_indices)
    window = (kernel, strides, pads, dilations, ceil, indices)

    def out_spatial(spatial: Sequence[int]) -> tuple[int, ...]:
        return _window_out(kernel, strides, pads, dilations, ceil, spatial)

    return _pool("MaxPool", n, out_spatial, max_pool_forward, max_pool_backward, window, indices)


def max_pool_forward(x: torch.Tensor, window: tuple[Any, ...]) -> tuple[Any, torch.Tensor]:
    """`(y, argmax indices)`, or `((y, indices), indices)` with `return_indices`: the indices
    are int64, one per output element, the flat position in its plane (`h·W + w`).

    On CPU, aten's 2-D channels-last kernel is 3–4× faster than its NCHW one, even with
    the copies in and out (measured on the digits CNN's and 32×32 shapes), and its
    values and indices are the same; the result keeps the input's layout. (The
    channels-last copy is made by permutes, which `torch.func.vmap` supports.)
    """
    kernel, stride, padding, dilation, ceil, return_indices = window
    if len(kernel) == 3:
        y, indices = aten.max_pool3d_with_indices(x, kernel, stride, padding, dilation, ceil)
    elif x.is_cpu and x.is_contiguous():
        y, indices = aten.max_pool2d_with_indices(
            x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
            kernel, stride, padding, dilation, ceil,
        )  # fmt: skip
        y, indices = y.contiguous(), indices.contiguous()
    else:
        y, indices = aten.max_pool2d_with_indices(x, kernel, stride, padding, dilation, ceil)
    return ((y, indices) if return_indices else y), indices


@backward
def max_pool_backward(residuals: PoolResiduals, dy: Any) -> tuple[Params, torch.Tensor]:
    """y = max over each window of x   ⇒   dx[argmax] += dy   (every other input gets 0)"""
    indices, x, _, window, _, _, name = residuals
    kernel, stride, padding, dilation, ceil, return_indices = window
    if return_indices:  # the cotangent of (y, indices): that of the indices is ignored
        if not isinstance(dy, (tuple, list)) or len(dy) != 2:
            raise FnnTypeError(
                f"{name} VJP: with return_indices=True the output is (y, indices), so the "
                f"cotangent must be a pair (dy, dindices) (dindices is ignored), got {type(dy).__name__}"
            )
        dy = dy[0]
    dy = _lifted(residuals, dy)
    kernel_fn = (
        aten.max_pool3d_with_indices_backward
        if len(kernel) == 3
        else aten.max_pool2d_with_indices_backward
    )
    dx = kernel_fn(dy, x, kernel, stride, padding, dilation, ceil, indices)
    return _unlifted(residuals, dx)


max_pool_backward.example_wise()


# ---------------------------------------------------------------------------------------
# Average pooling


def AvgPool(
    kernel_size: Size,
    stride: Size | None = None,
    padding: Size = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Layer:
    """The mean over each window, as `torch.nn.AvgPool1d`, `AvgPool2d` or `AvgPool3d`.

    The dimension follows the kernel, and the output size the formula, as for `MaxPool`
    (without dilation); unbatched inputs are accepted.

    Args:
        kernel_size: window size: an int (2-D) or a tuple of 1, 2 or 3 ints.
        stride: step between windows, an int or a tuple of one per axis; default `kernel_size`.
        padding: zeros added on each side, at most half the kernel; an int or a tuple.
        ceil_mode: round the output length up instead of down (a last partial window).
        count_include_pad: whether the padding zeros count in each window's divisor.
        divisor_override: divide every window's sum by this instead (2-D and 3-D only, as
            torch's `AvgPool1d` has no such option).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, (N, C, *spatial))` gives
            `(N, C, *spatial')` and `{}`; `apply({}, x)` gives `(y, vjp)`, `y` of shape
            `(N, C, *spatial')`; `vjp(dy)` gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: a size that is not an int or a tuple of the kernel's length, or a
            flag that is not a bool.
        FnnError: a size out of range, padding over half the kernel, or a
            `divisor_override` that is not a positive int (or given for 1-D pooling).
        ShapeError: (from `init` and `apply`) an input that is not `(N, C, *spatial)` or
            `(C, *spatial)`, or smaller than the window.

    Example:
        >>> init, apply = AvgPool(2)
        >>> y, vjp = apply({}, torch.arange(16.0).reshape(1, 1, 4, 4))
        >>> y
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
        >>> vjp(torch.ones_like(y))[1][0, 0, 0]
        tensor([0.2500, 0.2500, 0.2500, 0.2500])
        >>> AvgPool((3,), stride=2, padding=1, count_include_pad=False).apply({}, torch.ones(1, 4))[0]
        tensor([[1., 1.]])
    """
    n, kernel, strides, pads, _ = _window("AvgPool", kernel_size, stride, padding)
    ceil = _flag("AvgPool", "ceil_mode", ceil_mode)
    count_pad = _flag("AvgPool", "count_include_pad", count_include_pad)
    if divisor_override is not None:
        if n == 1:
            raise FnnError(
                "AvgPool: divisor_override is for 2-D and 3-D pooling (torch's AvgPool1d has none)"
            )
        _checks.positive_int("AvgPool", "divisor_override", divisor_override)
    window = (kernel, strides, pads, ceil, count_pad, divisor_override)
    ones = [1] * len(kernel)

    def out_spatial(spatial: Sequence[int]) -> tuple[int, ...]:
        return _window_out(kernel, strides, pads, ones, ceil, spatial)

    return _pool("AvgPool", n, out_spatial, avg_pool_forward, avg_pool_backward, window)


def avg_pool_forward(x: torch.Tensor, window: tuple[Any, ...]) -> tuple[torch.Tensor, None]:
    """`(y, None)`: the mean needs nothing saved but shapes.

    torch has no 3-D kernel for bfloat16/float16 on CPU: those run in float32, rounded once."""
    if len(window[0]) == 3:
        if x.dtype in _HALF and x.is_cpu:
            return aten.avg_pool3d(x.float(), *window).to(x.dtype), None
        return aten.avg_pool3d(x, *window), None
    return aten.avg_pool2d(x, *window), None


_HALF = (torch.bfloat16, torch.float16)


@backward
def avg_pool_backward(residuals: PoolResiduals, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = Σ over each window of x / divisor   ⇒   dx = Σ over the windows holding x of dy / divisor"""
    _, x, _, window, _, _, _ = residuals
    dy = _lifted(residuals, dy)
    if len(window[0]) == 3:
        if x.dtype in _HALF and x.is_cpu:
            x32 = torch.empty_strided(x.shape, x.stride(), dtype=torch.float32, device=x.device)
            dx = aten.avg_pool3d_backward(dy.float(), x32, *window).to(x.dtype)
            return _unlifted(residuals, dx)
        return _unlifted(residuals, aten.avg_pool3d_backward(dy, x, *window))
    return _unlifted(residuals, aten.avg_pool2d_backward(dy, x, *window))


avg_pool_backward.example_wise()


# ---------------------------------------------------------------------------------------
# Adaptive average pooling


def AdaptiveAvgPool(output_size: int | tuple[int | None, ...]) -> Layer:
    """The mean over windows that tile the input into `output_size` cells, as
    `torch.nn.AdaptiveAvgPool1d`, `2d` or `3d`; `AdaptiveAvgPool(1)` is global average pooling.

    Cell `i` of an axis of length `L` cut into `O` cells spans `⌊i·L/O⌋ … ⌈(i+1)·L/O⌉ − 1`.
    The length of `output_size` gives the dimension: an int is 2-D (`(o, o)`), a tuple of
    1, 2 or 3 entries is 1-D, 2-D or 3-D; an entry `None` keeps that axis' input size.
    Unbatched inputs are accepted.

    Args:
        output_size: the output's spatial size: an int (2-D) or a tuple of 1, 2 or 3 ints or
            `None`s.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, (N, C, *spatial))` gives
            `(N, C, *output_size)` and `{}`; `apply({}, x)` gives `(y, vjp)`; `vjp(dy)` gives
            `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: `output_size` is not an int or a tuple of 1–3 ints or `None`s.
        FnnError: an output size below 1.
        ShapeError: (from `init` and `apply`) an input that is not `(N, C, *spatial)` or
            `(C, *spatial)`.

    Example:
        >>> init, apply = AdaptiveAvgPool(1)  # global average pooling
        >>> y, vjp = apply({}, torch.arange(8.0).reshape(1, 2, 2, 2))
        >>> y.flatten()
        tensor([1.5000, 5.5000])
        >>> AdaptiveAvgPool((None, 2)).init(fnn.random.key(0), (-1, 3, 5, 7))[0]
        (-1, 3, 5, 2)
    """
    sizes = (output_size, output_size) if isinstance(output_size, int) else output_size
    if (
        isinstance(output_size, bool)
        or not isinstance(sizes, (tuple, list))
        or not 1 <= len(sizes) <= 3
        or not all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in sizes)
    ):
        raise FnnTypeError(
            "AdaptiveAvgPool: output_size must be an int (2-D) or a tuple of 1, 2 or 3 ints or "
            f"Nones, got {output_size!r}"
        )
    if any(s is not None and s < 1 for s in sizes):
        raise FnnError(f"AdaptiveAvgPool: output_size must be positive, got {output_size!r}")
    n = len(sizes)
    wanted = tuple(sizes)
    lifted = ((1,) if n == 1 else ()) + wanted

    def out_spatial(spatial: Sequence[int]) -> tuple[int, ...]:
        return tuple(size if o is None else o for o, size in zip(wanted, spatial))

    return _pool("AdaptiveAvgPool", n, out_spatial, adaptive_avg_pool_forward,
                 adaptive_avg_pool_backward, lifted)  # fmt: skip


def adaptive_avg_pool_forward(
    x: torch.Tensor, config: tuple[Any, ...]
) -> tuple[torch.Tensor, None]:
    """`(y, None)`: `config` is the output size (lifted to 2-D for 1-D), `None` for "as the input"."""
    out = [x.shape[2 + i] if o is None else o for i, o in enumerate(config)]
    # the composite ops, as torch.nn's: a 1 × 1 output is a mean there, rounded as torch's
    kernel_fn = aten.adaptive_avg_pool3d if len(out) == 3 else aten.adaptive_avg_pool2d
    return kernel_fn(x, out), None


@backward
def adaptive_avg_pool_backward(
    residuals: PoolResiduals, dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y[i] = mean of x over cell i   ⇒   dx = dy[i] / |cell i| over each cell holding x"""
    x = residuals[1]
    dy = _lifted(residuals, dy)
    if x.ndim == 5:
        return _unlifted(residuals, aten._adaptive_avg_pool3d_backward(dy, x))
    return _unlifted(residuals, aten._adaptive_avg_pool2d_backward(dy, x))


adaptive_avg_pool_backward.example_wise()
