"""2-D convolution, as `torch.nn.Conv2d` (NCHW).

The forward pass is one `aten.convolution`; the VJP is one
`aten.convolution_backward`, the kernel torch's own autograd calls, so the
residuals are just the input and the weight. Measured against the alternative
(`conv_transpose2d` for `dx` plus a batch-as-channels convolution for `dW`),
it was faster on the 64-channel benchmark (1.36× vs 0.87× of autograd at two
threads) and on the digits CNN's second layer, and it handles strides,
dilations and groups without output-padding arithmetic.

One exception, measured in `tests/benchmarks/bench_cnn.py`'s shapes: on CPU, a
convolution of a single input channel (the first layer on grey images) runs
1.7–6× faster, forward and backward, through aten's im2col kernel
(`_slow_conv2d_forward`/`_backward`) than through oneDNN, which torch picks.
Both compute the same sums; the VJP uses the backward of the kernel the forward used.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import torch

from .. import random
from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import FnnError, FnnTypeError, ShapeError
from ..initializers import Initializer, fan_in_uniform, torch_default
from . import _checks

__all__ = ["Conv"]

aten = torch.ops.aten

IntPair = int | tuple[int, int]
Padding = int | tuple[int, int] | str


def pair(name: str, what: str, value: object, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each ≥ `minimum`, as a pair (torch's `_pair`)."""
    items = value if isinstance(value, tuple | list) else (value, value)
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise FnnTypeError(f"{name}: {what} must be an int or a pair of ints, got {value!r}")
    if min(items) < minimum:
        bound = "positive" if minimum == 1 else f"≥ {minimum}"
        raise FnnError(f"{name}: {what} must be {bound}, got {value!r}")
    return int(items[0]), int(items[1])


def out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a sliding window: ⌊(size + pad − dilation·(kernel − 1) − 1) / stride⌋ + 1.

    `pad` is the total padding of both sides."""
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


def Conv(
    out_channels: int,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    bias: bool = True,
    weight_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Layer:
    """A 2-D convolution over NCHW images: `y = x ⋆ W + b`, as `torch.nn.Conv2d`.

    The output height is `H' = ⌊(H + 2·ph − dh·(kh − 1) − 1) / sh⌋ + 1`, and likewise the
    width. Default init is `torch.nn.Conv2d`'s: weight and bias uniform in ±1/√fan_in with
    `fan_in = in_channels / groups · kh · kw`.

    Args:
        out_channels: number of output channels, a multiple of `groups`.
        kernel_size: window size `k` or `(kh, kw)`.
        stride: step `s` or `(sh, sw)` between windows.
        padding: zeros added on each side, `p` or `(ph, pw)`; or `"valid"` (none) or
            `"same"` (output as large as the input; stride 1 only; an odd extra row or
            column goes at the bottom/right, as in torch).
        dilation: spacing `d` or `(dh, dw)` between kernel elements.
        groups: number of channel groups, dividing `in_channels` and `out_channels`.
        bias: whether to add a bias; without it params have no `"bias"`.
        weight_init: initializer of `weight`; default `torch.nn.Conv2d`'s.
        bias_init: initializer of `bias`; default uniform in ±1/√fan_in.

    Returns:
        `Layer(init, apply)`. `init(key, (N, C, H, W))` gives `(N, out_channels, H', W')`
            and params `{"weight": (out_channels, C / groups, kh, kw), "bias":
            (out_channels,)}`; `apply(params, x)`, `x` of shape `(N, C, H, W)`, gives
            `(y, vjp)` with `y` of shape `(N, out_channels, H', W')`; `vjp(dy)`, `dy` of `y`'s
            shape, gives `(dparams, dx)` shaped as `(params, x)`.

    Raises:
        FnnTypeError: a size that is not an int or a pair of ints.
        FnnError: a size out of range, `out_channels` not a multiple of `groups`, or
            `"same"` padding with a stride.
        ShapeError: (from `init` and `apply`) an input that is not `(N, C, H, W)` with `C`
            a multiple of `groups`, or smaller than the kernel.

    Example:
        >>> init, apply = Conv(8, 3, padding=1)
        >>> out_shape, params = init(fnn.random.key(0), (-1, 3, 16, 16))
        >>> out_shape, params["weight"].shape
        ((-1, 8, 16, 16), torch.Size([8, 3, 3, 3]))
        >>> y, vjp = apply(params, torch.ones(2, 3, 16, 16))
        >>> dparams, dx = vjp(torch.ones_like(y))
        >>> dx.shape
        torch.Size([2, 3, 16, 16])
    """
    _checks.positive_int("Conv", "out_channels", out_channels)
    kernel = pair("Conv", "kernel_size", kernel_size)
    strides = pair("Conv", "stride", stride)
    dilations = pair("Conv", "dilation", dilation)
    _checks.positive_int("Conv", "groups", groups)
    if out_channels % groups:
        raise FnnError(
            f"Conv: out_channels ({out_channels}) must be divisible by groups ({groups})"
        )
    # Padding per side, (top, bottom, left, right); torch pads an odd "same" remainder at the end.
    if padding == "valid":
        sides = (0, 0, 0, 0)
    elif padding == "same":
        if strides != (1, 1):
            raise FnnError(
                f"Conv: padding='same' needs stride 1 (as in torch), got stride {stride!r}"
            )
        total = [d * (k - 1) for d, k in zip(dilations, kernel)]
        sides = (total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2)
    elif isinstance(padding, str):
        raise FnnError(f"Conv: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        ph, pw = pair("Conv", "padding", padding, minimum=0)
        sides = (ph, ph, pw, pw)
    sym = [sides[0], sides[2]]  # what aten.convolution pads on both sides
    extra = [0, sides[3] - sides[2], 0, sides[1] - sides[0]]  # the rest, for constant_pad_nd
    crop = (extra[3], extra[1]) if any(extra) else None  # what the VJP cuts off dx again
    weight_init = weight_init or torch_default()
    stride_l, dilation_l, kernel_l = list(strides), list(dilations), list(kernel)
    im2col_ok = groups == 1 and dilations == (1, 1)  # what aten's _slow_conv2d supports

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        shape = _checks.input_shape("Conv", input_shape)
        if len(shape) != 4:
            raise ShapeError(f"Conv: expected an NCHW input shape (N, C, H, W), got {shape}")
        n, c, h, w = shape
        if c < 1 or c % groups:
            raise ShapeError(
                f"Conv: input channels ({c}) must be a positive multiple of groups ({groups})"
            )
        out_hw = _out_hw(h, w)
        if min(out_hw) < 1:
            raise ShapeError(_too_small(shape))
        weight_key, bias_key = random.split(key)
        weight_shape = (out_channels, c // groups, *kernel)
        params = {"weight": weight_init(weight_key, weight_shape, dtype, device)}
        if bias:
            make_bias = bias_init or fan_in_uniform(weight_shape[1] * kernel[0] * kernel[1])
            params["bias"] = make_bias(bias_key, (out_channels,), dtype, device)
        return (n, out_channels, *out_hw), params

    def _out_hw(h: int, w: int) -> tuple[int, int]:
        return (
            out_size(h, kernel[0], strides[0], sides[0] + sides[1], dilations[0]),
            out_size(w, kernel[1], strides[1], sides[2] + sides[3], dilations[1]),
        )

    def _too_small(shape: Any) -> str:
        return (
            f"Conv: input of spatial size {tuple(shape[2:])} is smaller than the kernel {kernel} "
            f"(dilation {dilations}, padding {padding!r})"
        )

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs  # Conv is deterministic
        weight, b = _checks.weight_and_bias("Conv", params, bias)
        _checks.input_like("Conv", x, weight)
        if (
            x.ndim != 4
            or weight.ndim != 4
            or x.shape[1] != weight.shape[1] * groups
            or weight.shape[0] != out_channels
            or weight.shape[2:] != kernel
        ):
            _diagnose(x, weight)
        xp = aten.constant_pad_nd(x, extra) if crop else x
        im2col = im2col_ok and x.shape[1] == 1 and x.is_cpu and x.dtype in _IM2COL_DTYPES
        try:
            if im2col:
                y = aten._slow_conv2d_forward(xp, weight, kernel_l, b, stride_l, sym)
            else:
                y = aten.convolution(
                    xp, weight, b, stride_l, sym, dilation_l, False, [0, 0], groups
                )
        except RuntimeError:  # too small an input, or a bias of another shape, dtype or device
            _diagnose(x, weight)
            if b is not None:
                _checks.param_like("Conv", "bias", b, (out_channels,), x)
            raise
        return y, VJP(
            conv_backward,
            (xp, weight, b is not None, y.shape, stride_l, sym, dilation_l, groups, crop, im2col),
        )

    def _diagnose(x: torch.Tensor, weight: torch.Tensor) -> None:
        """Slow path: raise a clear error for what is wrong with the input or weight."""
        expected = (out_channels, "in_channels / groups", *kernel)
        if weight.ndim != 4 or weight.shape[0] != out_channels or weight.shape[2:] != kernel:
            raise ShapeError(
                f"Conv: params['weight'] has shape {tuple(weight.shape)}, expected {expected}"
            )
        if x.ndim != 4:
            raise ShapeError(
                f"Conv: expected an NCHW input (N, C, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != weight.shape[1] * groups:
            raise ShapeError(
                f"Conv: expected an input with {weight.shape[1] * groups} channels (axis 1), "
                f"got shape {tuple(x.shape)}"
            )
        if min(_out_hw(x.shape[2], x.shape[3])) < 1:
            raise ShapeError(_too_small(x.shape))

    return declare(init, apply, LayerInfo("Conv"))


_IM2COL_DTYPES = (torch.float32, torch.float64)

ConvResiduals = tuple[
    torch.Tensor, torch.Tensor, bool, torch.Size, list[int], list[int], list[int], int,
    tuple[int, int] | None, bool,
]  # fmt: skip


# y = x ⋆ W + b   ⇒   dW = x ⋆ dy,  db = Σₙₕᵥ dy,  dx = dy ⋆ᵀ W      (one aten.convolution_backward)
@backward
def conv_backward(residuals: ConvResiduals, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    return _conv_grads(residuals, dy, True)


@conv_backward.consumer
def _conv_consume(box: list[Any], need_dx: bool) -> tuple[Params, torch.Tensor | None]:
    """`conv_backward` for `fnn.core.backprop` (`box = [residuals, dy]`): skips `dx` when it is
    not needed (a first layer)."""
    dy = box.pop()
    return _conv_grads(box.pop(), dy, need_dx)


@overload
def _conv_grads(
    residuals: ConvResiduals, dy: torch.Tensor, need_dx: Literal[True]
) -> tuple[Params, torch.Tensor]: ...
@overload
def _conv_grads(
    residuals: ConvResiduals, dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor | None]: ...
def _conv_grads(
    residuals: ConvResiduals, dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor | None]:
    x, weight, has_bias, y_shape, stride, padding, dilation, groups, crop, im2col = residuals
    if not isinstance(dy, torch.Tensor) or dy.shape != y_shape or dy.dtype is not x.dtype:
        _checks.cotangent_like("Conv", dy, y_shape, x)
    mask = [need_dx, True, has_bias]
    if im2col:
        dx, dw, db = aten._slow_conv2d_backward(
            dy, x, weight, weight.shape[2:], stride, padding, mask
        )
    else:
        dx, dw, db = aten.convolution_backward(
            dy, x, weight, [weight.shape[0]] if has_bias else None, stride, padding, dilation,
            False, [0, 0], groups, mask,
        )  # fmt: skip
    if crop and dx is not None:  # "same" padding with an odd remainder: cut the padded edge off
        dx = dx[:, :, : dx.shape[2] - crop[0], : dx.shape[3] - crop[1]]
    return ({"weight": dw, "bias": db} if has_bias else {"weight": dw}), dx
