"""n-D convolution and transposed convolution, as `torch.nn.Conv1d/2d/3d` and
`torch.nn.ConvTranspose1d/2d/3d`: one factory, `_conv`, for every dimension and both kinds.

The dimension follows the kernel: an int `kernel_size` is 2-D (NCHW), a tuple of 1, 2
or 3 ints is 1-D (NCL), 2-D or 3-D (NCDHW). An input without the batch axis
(`(C, H, W)`) is accepted wherever torch accepts it.

The forward pass is one `aten.convolution` (its `transposed` flag makes it a transposed
convolution); the VJP is one `aten.convolution_backward`, the kernel torch's own
autograd calls, so the residuals are just the input and the weight. Measured against the
alternative (`conv_transpose2d` for `dx` plus a batch-as-channels convolution for `dW`),
it was faster on the 64-channel benchmark (1.36× vs 0.87× of autograd at two threads)
and on the digits CNN's second layer, and it handles strides, dilations and groups
without output-padding arithmetic.

One exception, measured in `tests/benchmarks/bench_cnn.py`'s shapes: on CPU, a 2-D
convolution of a single input channel (the first layer on grey images) runs 1.7–6×
faster, forward and backward, through aten's im2col kernel (`_slow_conv2d_forward`/
`_backward`) than through oneDNN, which torch picks. Both compute the same sums; the VJP
uses the backward of the kernel the forward used.

Padding that `aten.convolution` cannot do itself (an odd `"same"` remainder, which torch
puts at the end, and the `padding_mode`s other than zeros) is done first by
`fnn.layers.resample.pad_forward`, and undone in the VJP by its `pad_backward`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import torch

from .. import random
from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import FnnError, FnnTypeError, ShapeError
from ..initializers import Initializer, fan_in_uniform, torch_default
from . import _checks
from .resample import pad_backward, pad_forward, padded_shape

__all__ = [
    "Conv",
    "ConvTranspose",
    "conv_backward",
    "layout",
    "kernel_tuple",
    "ntuple",
    "out_size",
]

aten = torch.ops.aten

Size = int | tuple[int, ...]
"""An int (the same for every spatial axis) or a tuple of one int per spatial axis."""
Padding = int | tuple[int, ...] | str

_LAYOUTS = {
    1: ("NCL", "(N, C, L)", "(C, L)"),
    2: ("NCHW", "(N, C, H, W)", "(C, H, W)"),
    3: ("NCDHW", "(N, C, D, H, W)", "(C, D, H, W)"),
}


def layout(n: int, what: str = "input") -> str:
    """How messages name an n-D layout: "an NCHW input (N, C, H, W) or unbatched (C, H, W)"."""
    tag, batched, unbatched = _LAYOUTS[n]
    return f"an {tag} {what} {batched} or unbatched {unbatched}"


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def kernel_tuple(name: str, kernel_size: object) -> tuple[int, ...]:
    """`kernel_size` as a tuple: an int is 2-D `(k, k)`; a tuple of 1–3 ints stays as it is."""
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
        kernel: tuple[Any, ...] = (kernel_size, kernel_size)
    elif isinstance(kernel_size, (tuple, list)) and 1 <= len(kernel_size) <= 3:
        kernel = tuple(kernel_size)
    else:
        kernel = ()
    if not kernel or not all(isinstance(k, int) and not isinstance(k, bool) for k in kernel):
        raise FnnTypeError(
            f"{name}: kernel_size must be an int (2-D) or a tuple of 1, 2 or 3 ints "
            f"(1-D, 2-D, 3-D), got {kernel_size!r}"
        )
    if min(kernel) < 1:
        raise FnnError(f"{name}: kernel_size must be positive, got {kernel_size!r}")
    return kernel


def ntuple(name: str, what: str, value: object, n: int, minimum: int = 1) -> tuple[int, ...]:
    """An int or a tuple of `n` ints, each ≥ `minimum`, as a tuple (torch's `_ntuple`)."""
    items: tuple[Any, ...] = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(items) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise FnnTypeError(
            f"{name}: {what} must be an int or a tuple of {n} int(s), one per spatial axis of "
            f"the {n}-D kernel, got {value!r}"
        )
    if min(items) < minimum:
        bound = "positive" if minimum == 1 else f"≥ {minimum}"
        raise FnnError(f"{name}: {what} must be {bound}, got {value!r}")
    return tuple(int(v) for v in items)


def out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a sliding window: ⌊(size + pad − dilation·(kernel − 1) − 1) / stride⌋ + 1.

    `pad` is the total padding of both sides."""
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


def Conv(
    out_channels: int,
    kernel_size: Size,
    stride: Size = 1,
    padding: Padding = 0,
    dilation: Size = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
    weight_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Layer:
    """An n-D convolution `y = x ⋆ W + b`, as `torch.nn.Conv1d`, `Conv2d` or `Conv3d`.

    The kernel's length gives the dimension: an int `kernel_size` is 2-D over
    `(N, C, H, W)`; a tuple of 1, 2 or 3 ints is 1-D over `(N, C, L)`, 2-D, or 3-D over
    `(N, C, D, H, W)`. An unbatched input (`(C, H, W)`, …) gives an unbatched output. Each
    output length is `L' = ⌊(L + 2·p − d·(k − 1) − 1) / s⌋ + 1`. Default init is torch's:
    weight and bias uniform in ±1/√fan_in with `fan_in = in_channels / groups · Π k`.

    Args:
        out_channels: number of output channels, a multiple of `groups`.
        kernel_size: window size: an int (2-D) or a tuple of 1, 2 or 3 ints.
        stride: step between windows, an int or a tuple of one per spatial axis.
        padding: added on each side, an int or a tuple of one per axis; or `"valid"` (none)
            or `"same"` (output as large as the input; stride 1 only; an odd extra row or
            column goes at the end, as in torch).
        dilation: spacing between kernel elements, an int or a tuple of one per axis.
        groups: number of channel groups, dividing `in_channels` and `out_channels`.
        bias: whether to add a bias; without it params have no `"bias"`.
        padding_mode: what the padding holds: `"zeros"`, `"reflect"`, `"replicate"` or
            `"circular"` (torch's, as `fnn.layers.Pad`'s modes).
        weight_init: initializer of `weight`; default torch's.
        bias_init: initializer of `bias`; default uniform in ±1/√fan_in.

    Returns:
        `Layer(init, apply)`. `init(key, (N, C, *spatial))` gives `(N, out_channels,
            *spatial')` and params `{"weight": (out_channels, C / groups, *kernel_size),
            "bias": (out_channels,)}`; `apply(params, x)` gives `(y, vjp)` with `y` of
            shape `(N, out_channels, *spatial')` (no `N` for an unbatched `x`); `vjp(dy)`, `dy`
            of `y`'s shape, gives `(dparams, dx)` shaped as `(params, x)`.

    Raises:
        FnnTypeError: a size that is not an int or a tuple of the kernel's length.
        FnnError: a size out of range, `out_channels` not a multiple of `groups`, `"same"`
            padding with a stride, or an unknown `padding_mode`.
        ShapeError: (from `init` and `apply`) an input that is not `(N, C, *spatial)` or
            `(C, *spatial)` with `C` a multiple of `groups`, or smaller than the kernel.

    Example:
        >>> init, apply = Conv(8, 3, padding=1)
        >>> out_shape, params = init(fnn.random.key(0), (-1, 3, 16, 16))
        >>> out_shape, params["weight"].shape
        ((-1, 8, 16, 16), torch.Size([8, 3, 3, 3]))
        >>> y, vjp = apply(params, torch.ones(2, 3, 16, 16))
        >>> dparams, dx = vjp(torch.ones_like(y))
        >>> dx.shape
        torch.Size([2, 3, 16, 16])
        >>> Conv(4, (5,), stride=2).init(fnn.random.key(0), (-1, 3, 20))[0]  # 1-D
        (-1, 4, 8)
    """
    return _conv(
        "Conv", False, out_channels, kernel_size, stride, padding, 0, dilation, groups, bias,
        padding_mode, weight_init, bias_init,
    )  # fmt: skip


def ConvTranspose(
    out_channels: int,
    kernel_size: Size,
    stride: Size = 1,
    padding: Size = 0,
    output_padding: Size = 0,
    dilation: Size = 1,
    groups: int = 1,
    bias: bool = True,
    weight_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Layer:
    """An n-D transposed convolution, as `torch.nn.ConvTranspose1d`, `2d` or `3d`.

    The adjoint of `Conv` with the same settings (its VJP for `x`), plus a bias: it maps
    each input length `L` to `L' = (L − 1)·s − 2·p + d·(k − 1) + output_padding + 1`, so
    with `stride=2` it doubles a size that a stride-2 `Conv` halved. The dimension follows
    the kernel as in `Conv`; unbatched inputs are accepted. Default init is torch's:
    uniform in ±1/√fan_in with `fan_in = out_channels / groups · Π k` (torch computes it
    from the weight's second axis).

    Args:
        out_channels: number of output channels, a multiple of `groups`.
        kernel_size: window size: an int (2-D) or a tuple of 1, 2 or 3 ints.
        stride: step between windows, an int or a tuple of one per spatial axis.
        padding: `d·(k − 1) − p` zeros are added on each side of the input; an int or a
            tuple of one per axis.
        output_padding: extra length added at the end of each output axis (to pick among the
            sizes a strided `Conv` maps to the same size); smaller than the stride or the
            dilation.
        dilation: spacing between kernel elements, an int or a tuple of one per axis.
        groups: number of channel groups, dividing `in_channels` and `out_channels`.
        bias: whether to add a bias; without it params have no `"bias"`.
        weight_init: initializer of `weight`; default torch's.
        bias_init: initializer of `bias`; default uniform in ±1/√fan_in.

    Returns:
        `Layer(init, apply)`. `init(key, (N, C, *spatial))` gives `(N, out_channels,
            *spatial')` and params `{"weight": (C, out_channels / groups, *kernel_size),
            "bias": (out_channels,)}` (torch's layout: input channels first); `apply(params,
            x)` gives `(y, vjp)` with `y` of shape `(N, out_channels, *spatial')` (no `N` for an
            unbatched `x`); `vjp(dy)` gives `(dparams, dx)` shaped as `(params, x)`.

    Raises:
        FnnTypeError: a size that is not an int or a tuple of the kernel's length.
        FnnError: a size out of range, `out_channels` not a multiple of `groups`, or an
            `output_padding` not smaller than the stride or the dilation.
        ShapeError: (from `init` and `apply`) an input that is not `(N, C, *spatial)` or
            `(C, *spatial)` with `C` a multiple of `groups`, or an empty output.

    Example:
        >>> init, apply = ConvTranspose(4, 3, stride=2, padding=1, output_padding=1)
        >>> out_shape, params = init(fnn.random.key(0), (-1, 8, 5, 5))
        >>> out_shape, params["weight"].shape
        ((-1, 4, 10, 10), torch.Size([8, 4, 3, 3]))
        >>> y, vjp = apply(params, torch.ones(2, 8, 5, 5))
        >>> vjp(torch.ones_like(y))[1].shape
        torch.Size([2, 8, 5, 5])
    """
    return _conv(
        "ConvTranspose", True, out_channels, kernel_size, stride, padding, output_padding,
        dilation, groups, bias, "zeros", weight_init, bias_init,
    )  # fmt: skip


def _conv(
    name: str,
    transposed: bool,
    out_channels: int,
    kernel_size: Size,
    stride: Size,
    padding: Padding,
    output_padding: Size,
    dilation: Size,
    groups: int,
    bias: bool,
    padding_mode: str,
    weight_init: Initializer | None,
    bias_init: Initializer | None,
) -> Layer:
    """The one convolution factory: `Conv` (`transposed=False`) and `ConvTranspose`, any n."""
    _checks.positive_int(name, "out_channels", out_channels)
    kernel = kernel_tuple(name, kernel_size)
    n = len(kernel)
    strides = ntuple(name, "stride", stride, n)
    dilations = ntuple(name, "dilation", dilation, n)
    _checks.positive_int(name, "groups", groups)
    if out_channels % groups:
        raise FnnError(
            f"{name}: out_channels ({out_channels}) must be divisible by groups ({groups})"
        )
    if padding_mode not in PADDING_MODES:
        raise FnnError(
            f"{name}: padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, "
            f"got {padding_mode!r}"
        )
    # Padding per side (lo, hi) of each spatial axis; torch pads an odd "same" remainder at the end.
    if isinstance(padding, str) and not transposed:
        if padding == "valid":
            sides = [(0, 0)] * n
        elif padding == "same":
            if any(s != 1 for s in strides):
                raise FnnError(
                    f"{name}: padding='same' needs stride 1 (as in torch), got stride {stride!r}"
                )
            totals = [d * (k - 1) for d, k in zip(dilations, kernel)]
            sides = [(t // 2, t - t // 2) for t in totals]
        else:
            raise FnnError(
                f"{name}: padding must be an int, a tuple of {n} ints, 'same' or 'valid', "
                f"got {padding!r}"
            )
    else:
        sides = [(p, p) for p in ntuple(name, "padding", padding, n, minimum=0)]
    out_pads = ntuple(name, "output_padding", output_padding, n, minimum=0)
    if any(op >= max(s, d) for op, s, d in zip(out_pads, strides, dilations)):
        raise FnnError(
            f"{name}: output_padding {output_padding!r} must be smaller than the stride "
            f"{stride!r} or the dilation {dilation!r} on each axis"
        )
    # What the kernel pads on both sides (`sym`), and what is padded before it (`pre`, in
    # torch.nn.functional.pad's order: last axis first), by `pre_mode`.
    if padding_mode == "zeros":
        sym = [lo for lo, _ in sides]
        extra = [(0, hi - lo) for lo, hi in reversed(sides)]
        pre_mode = "constant"
    else:
        sym = [0] * n
        extra = list(reversed(sides))
        pre_mode = padding_mode
    pre = [p for pair in extra for p in pair] if any(map(any, extra)) else None
    weight_init = weight_init or torch_default()
    stride_l, dilation_l, kernel_l, out_pad_l = (
        list(strides),
        list(dilations),
        list(kernel),
        list(out_pads),
    )
    # what aten's _slow_conv2d (im2col) supports
    im2col_ok = not transposed and n == 2 and groups == 1 and dilations == (1, 1)

    def out_spatial(spatial: Any) -> tuple[int, ...]:
        if transposed:
            return tuple(
                (size - 1) * s - 2 * p + d * (k - 1) + op + 1
                for size, k, s, (p, _), d, op in zip(spatial, kernel, strides, sides, dilations, out_pads)
            )  # fmt: skip
        return tuple(
            out_size(size, k, s, lo + hi, d)
            for size, k, s, (lo, hi), d in zip(spatial, kernel, strides, sides, dilations)
        )

    def too_small(shape: Any) -> str:
        if transposed:
            return f"{name}: input of spatial size {tuple(shape[-n:])} gives an empty output (padding {padding!r})"
        return (
            f"{name}: input of spatial size {tuple(shape[-n:])} is smaller than the kernel {kernel} "
            f"(dilation {dilations}, padding {padding!r})"
        )

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        shape = _checks.input_shape(name, input_shape)
        if len(shape) not in (n + 1, n + 2):
            raise ShapeError(
                f"{name}: expected {layout(n, 'input shape')} for a {n}-D kernel, got {shape}"
            )
        c = shape[-n - 1]
        if c < 1 or c % groups:
            raise ShapeError(
                f"{name}: input channels ({c}) must be a positive multiple of groups ({groups})"
            )
        if pre is not None and pre_mode != "constant":
            padded_shape(name, shape, pre, pre_mode)
        spatial = out_spatial(shape[-n:])
        if min(spatial) < 1:
            raise ShapeError(too_small(shape))
        weight_key, bias_key = random.split(key)
        if transposed:
            weight_shape = (c, out_channels // groups, *kernel)
        else:
            weight_shape = (out_channels, c // groups, *kernel)
        params = {"weight": weight_init(weight_key, weight_shape, dtype, device)}
        if bias:
            make_bias = bias_init or fan_in_uniform(weight_shape[1] * math.prod(kernel))
            params["bias"] = make_bias(bias_key, (out_channels,), dtype, device)
        return (*shape[: -n - 1], out_channels, *spatial), params

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs  # a convolution is deterministic
        weight, b = _checks.weight_and_bias(name, params, bias)
        _checks.input_like(name, x, weight)
        unbatched = x.ndim == n + 1
        xb = x.unsqueeze(0) if unbatched else x
        if (
            xb.ndim != n + 2
            or weight.ndim != n + 2
            or weight.shape[2:] != kernel
            or (
                (xb.shape[1], weight.shape[1] * groups) != (weight.shape[0], out_channels)
                if transposed
                else (xb.shape[1], weight.shape[0]) != (weight.shape[1] * groups, out_channels)
            )
        ):
            _diagnose(x, weight)
        im2col = im2col_ok and xb.shape[1] == 1 and xb.is_cpu and xb.dtype in _IM2COL_DTYPES
        try:
            xp = xb if pre is None else pad_forward(xb, pre, pre_mode)
            if im2col:  # its backward reads x as contiguous: a strided view gave wrong dW
                xp = xp.contiguous()
                y = aten._slow_conv2d_forward(xp, weight, kernel_l, b, stride_l, sym)
            else:
                y = aten.convolution(
                    xp, weight, b, stride_l, sym, dilation_l, transposed, out_pad_l, groups
                )
        except RuntimeError:  # too small an input, or a bias of another shape, dtype or device
            _diagnose(x, weight)
            if b is not None:
                _checks.param_like(name, "bias", b, (out_channels,), x)
            raise
        undo_pad = None if pre is None else (_stand_in(xb), pre, pre_mode)
        y = y.squeeze(0) if unbatched else y
        return y, VJP(
            conv_backward,
            (xp, weight, b is not None, y.shape, stride_l, sym, dilation_l, transposed,
             out_pad_l, groups, undo_pad, im2col, unbatched, name),
        )  # fmt: skip

    def _diagnose(x: torch.Tensor, weight: torch.Tensor) -> None:
        """Slow path: raise a clear error for what is wrong with the input or weight."""
        if transposed:
            expected: tuple[Any, ...] = ("in_channels", out_channels // groups, *kernel)
            right = weight.ndim == n + 2 and weight.shape[1] * groups == out_channels
        else:
            expected = (out_channels, "in_channels / groups", *kernel)
            right = weight.ndim == n + 2 and weight.shape[0] == out_channels
        if not right or weight.shape[2:] != kernel:
            raise ShapeError(
                f"{name}: params['weight'] has shape {tuple(weight.shape)}, expected {expected}"
            )
        if x.ndim not in (n + 1, n + 2):
            raise ShapeError(
                f"{name}: expected {layout(n)} for a {n}-D kernel, got shape {tuple(x.shape)}"
            )
        channels = weight.shape[0] if transposed else weight.shape[1] * groups
        if x.shape[-n - 1] != channels:
            tag, batched, unbatched = _LAYOUTS[n]
            form = (
                f"an {tag} input {batched}"
                if x.ndim == n + 2
                else f"an unbatched {tag} input {unbatched}"
            )
            raise ShapeError(
                f"{name}: expected an input with {channels} channels (axis {x.ndim - n - 1} of "
                f"{form}), got shape {tuple(x.shape)}"
            )
        if pre is not None and pre_mode != "constant":
            padded_shape(name, x.shape, pre, pre_mode)
        if min(out_spatial(x.shape[-n:])) < 1:
            raise ShapeError(too_small(x.shape))

    return declare(init, apply, LayerInfo(name))


_IM2COL_DTYPES = (torch.float32, torch.float64)


def _stand_in(x: torch.Tensor) -> torch.Tensor:
    """A tensor with `x`'s shape, dtype and device but no data: what `pad_backward` reads."""
    return torch.empty_strided(x.shape, (0,) * x.ndim, dtype=x.dtype, device=x.device)


ConvResiduals = tuple[
    torch.Tensor, torch.Tensor, bool, torch.Size, list[int], list[int], list[int], bool,
    list[int], int, tuple[torch.Tensor, list[int], str] | None, bool, bool, str,
]  # fmt: skip


@backward
def conv_backward(residuals: ConvResiduals, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """
    y = x ⋆ W + b (transposed: y = x ⋆ᵀ W + b)   ⇒   dW = x ⋆ dy,  db = Σₙ,ₛₚₐₜᵢₐₗ dy,  dx = dy ⋆ᵀ W (transposed: dy ⋆ W)
    """
    return _conv_grads(residuals, dy, True)


@conv_backward.consumer
def _conv_consume(box: list[Any], need_dx: bool) -> tuple[Params, torch.Tensor | None]:
    """`conv_backward` for `fnn.core.backprop` (`box = [residuals, dy]`): skips `dx` when it is
    not needed (a first layer)."""
    dy = box.pop()
    return _conv_grads(box.pop(), dy, need_dx)


@conv_backward.per_example_rule
def _conv_per_example(
    residuals: ConvResiduals, dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor | None]:
    """Per-example `dW` and `db` from one `convolution_backward`: the batch folded into the
    channels, each example its own group(s) (`groups · N`), the weight repeated per example."""
    x, weight, has_bias, _, stride, padding, dilation, transposed, out_pad, groups = residuals[:10]
    undo_pad, _, unbatched, name = residuals[10:]
    _check_dy(residuals, dy)
    if unbatched:
        raise FnnError(
            f"{name}: per-example gradients need a batched input (N, C, ...), got an unbatched one"
        )
    count = x.shape[0]
    dx: torch.Tensor | None
    if count == 0:
        dw, dx = weight.new_zeros((0, *weight.shape)), torch.zeros_like(x)
    else:
        dx, dw, _ = aten.convolution_backward(
            dy.reshape(1, -1, *dy.shape[2:]), x.reshape(1, -1, *x.shape[2:]),
            weight.repeat(count, *[1] * (weight.ndim - 1)), None, stride, padding, dilation,
            transposed, out_pad, groups * count, [need_dx, True, False],
        )  # fmt: skip
        dw = dw.reshape(count, *weight.shape)
        dx = dx.reshape(x.shape) if need_dx else None
    if dx is not None and undo_pad is not None:
        dx = pad_backward(dx, *undo_pad)
    if not has_bias:
        return {"weight": dw}, dx
    return {"weight": dw, "bias": dy.sum(tuple(range(2, dy.ndim)))}, dx


def _check_dy(residuals: ConvResiduals, dy: torch.Tensor) -> None:
    x, y_shape, name = residuals[0], residuals[3], residuals[13]
    if not isinstance(dy, torch.Tensor) or dy.shape != y_shape or dy.dtype is not x.dtype:
        _checks.cotangent_like(name, dy, y_shape, x)


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
    x, weight, has_bias, y_shape, stride, padding, dilation, transposed, out_pad, groups = (
        residuals[:10]
    )
    undo_pad, im2col, unbatched = residuals[10:13]
    if not isinstance(dy, torch.Tensor) or dy.shape != y_shape or dy.dtype is not x.dtype:
        _check_dy(residuals, dy)
    if unbatched:
        dy = dy.unsqueeze(0)
    mask = [need_dx, True, has_bias]
    if x.shape[0] == 0:  # an empty batch: zero gradients, no kernel call
        dx = torch.zeros_like(x) if need_dx else None
        dw = torch.zeros_like(weight)
        db = weight.new_zeros(dy.shape[1]) if has_bias else None
    elif im2col:
        dx, dw, db = aten._slow_conv2d_backward(
            dy, x, weight, weight.shape[2:], stride, padding, mask
        )
    else:
        dx, dw, db = aten.convolution_backward(
            dy, x, weight, [dy.shape[1]] if has_bias else None, stride, padding, dilation,
            transposed, out_pad, groups, mask,
        )  # fmt: skip
    if dx is not None:
        if undo_pad is not None:  # "same" with an odd remainder, or a padding_mode: undo the pad
            dx = pad_backward(dx, *undo_pad)
        if unbatched:
            dx = dx.squeeze(0)
    return ({"weight": dw, "bias": db} if has_bias else {"weight": dw}), dx
