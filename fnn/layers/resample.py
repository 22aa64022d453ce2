"""Padding and resampling: `Pad` (as `torch.nn.functional.pad`) and `Upsample` (as `torch.nn.Upsample`).

Both are parameter-free. Their forwards are aten's padding and upsampling kernels and
their VJPs are aten's own backward kernels for them (`reflection_pad2d_backward`,
`upsample_bilinear2d_backward`, …), which read only the input's shape: the VJPs keep a
zero-stride stand-in of the input, not the input. Circular padding has no aten backward
kernel; its VJP adds the wrapped borders back with one `index_add` per padded dimension,
and constant padding's VJP crops (a constant pad by the negated amounts).
`pad_forward`/`pad_backward` are shared with `Conv`'s `padding_mode`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import FnnError, FnnTypeError, ShapeError
from . import _checks

__all__ = [
    "Pad",
    "Upsample",
    "pad_backward",
    "pad_layer_backward",
    "upsample_backward",
    "padded_shape",
    "pad_forward",
]

aten = torch.ops.aten

PAD_MODES = ("constant", "reflect", "replicate", "circular")
_PAD_KERNELS = {"reflect": "reflection_pad", "replicate": "replication_pad"}


def _int_tuple(value: object) -> tuple[int, ...] | None:
    if isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(int(v) for v in value)
    return None


def _stand_in(x: torch.Tensor) -> torch.Tensor:
    """A tensor with `x`'s shape, dtype and device but no data: what shape-only kernels read."""
    return torch.empty_strided(x.shape, (0,) * x.ndim, dtype=x.dtype, device=x.device)


# ---------------------------------------------------------------------------------------
# Pad


def padded_shape(name: str, shape: Sequence[int], pads: Sequence[int], mode: str) -> Shape:
    """The shape `pad_forward` gives, or a `ShapeError` for an input it cannot pad.

    `pads` is `torch.nn.functional.pad`'s tuple: (left, right) of the last axis, then of
    the one before, …; a `-1` (any batch size) in `shape` stays `-1`."""
    count = len(pads) // 2
    if count > len(shape):
        raise ShapeError(
            f"{name}: padding {tuple(pads)} pads {count} dimensions but the input has "
            f"only {len(shape)}: shape {tuple(shape)}"
        )
    if mode != "constant" and len(shape) not in (count + 1, count + 2):
        raise ShapeError(
            f"{name}: {mode} padding of {count} dimension(s) needs an input of rank {count + 1} "
            f"(unbatched) or {count + 2} (batched), got shape {tuple(shape)}"
        )
    out = list(shape)
    for i in range(count):
        axis, lo, hi = len(shape) - 1 - i, pads[2 * i], pads[2 * i + 1]
        size = shape[axis]
        if size == -1:
            continue
        if mode == "reflect" and max(lo, hi) >= size:
            raise ShapeError(
                f"{name}: reflect padding ({lo}, {hi}) of axis {axis} must be smaller than its "
                f"size {size} (input shape {tuple(shape)})"
            )
        if mode == "circular" and max(lo, hi) > size:
            raise ShapeError(
                f"{name}: circular padding ({lo}, {hi}) of axis {axis} must be at most its size "
                f"{size}, wrapping around once (input shape {tuple(shape)})"
            )
        if mode in ("replicate", "reflect") and size == 0:
            raise ShapeError(f"{name}: cannot {mode}-pad axis {axis} of size 0")
        out[axis] = size + lo + hi
        if out[axis] < 0:
            raise ShapeError(
                f"{name}: padding ({lo}, {hi}) crops axis {axis} of size {size} below 0"
            )
    return tuple(out)


def pad_forward(x: torch.Tensor, pads: list[int], mode: str, value: float = 0.0) -> torch.Tensor:
    """`torch.nn.functional.pad(x, pads, mode, value)` through aten's kernels (no autograd)."""
    if mode == "constant":
        return aten.constant_pad_nd(x, pads, value)  # type: ignore[no-any-return]
    if mode == "circular":
        return aten._pad_circular(x, pads)  # type: ignore[no-any-return]
    kernel = getattr(aten, f"{_PAD_KERNELS[mode]}{len(pads) // 2}d")
    return kernel(x, pads)  # type: ignore[no-any-return]


def pad_backward(dy: torch.Tensor, x: torch.Tensor, pads: list[int], mode: str) -> torch.Tensor:
    """The VJP of `pad_forward` for the cotangent `dy`; `x` may be a zero-stride stand-in."""
    if mode == "constant":  # crop what was added (and zero-fill what was cropped)
        return aten.constant_pad_nd(dy, [-p for p in pads], 0.0)  # type: ignore[no-any-return]
    if mode == "circular":
        # torch crops first (negative amounts), then wraps the cropped axis of length S':
        # output j holds input off + (j − lo⁺) mod S', off = max(−lo, 0), lo⁺ = max(lo, 0).
        dx = dy
        for i in range(len(pads) // 2):
            axis, lo, hi = x.ndim - 1 - i, pads[2 * i], pads[2 * i + 1]
            size = x.shape[axis]
            kept = max(size - max(-lo, 0) - max(-hi, 0), 1)
            index = torch.arange(-max(lo, 0), size + lo + hi - max(lo, 0), device=dy.device)
            index = index.remainder_(kept).add_(max(-lo, 0))
            shape = list(dx.shape)
            shape[axis] = size
            dx = dx.new_zeros(shape).index_add_(axis, index, dx)
        return dx
    kernel = getattr(aten, f"{_PAD_KERNELS[mode]}{len(pads) // 2}d_backward")
    return kernel(dy, x, pads)  # type: ignore[no-any-return]


def Pad(padding: Sequence[int], mode: str = "constant", value: float = 0.0) -> Layer:
    """Pad the last axes of the input, as `torch.nn.functional.pad(x, padding, mode, value)`.

    `padding` is torch's tuple: `(left, right)` of the last axis, then `(top, bottom)` of
    the one before, and so on; negative amounts crop. `"constant"` pads with `value` and
    may pad any number of axes; `"reflect"` (mirror, edge not repeated), `"replicate"`
    (edge repeated) and `"circular"` (wrap around) pad 1, 2 or 3 axes of an input of rank
    2–3, 3–4 or 4–5 (unbatched or batched), as torch's.

    Args:
        padding: a tuple of an even number of ints, two per padded axis, last axis first.
        mode: `"constant"`, `"reflect"`, `"replicate"` or `"circular"`.
        value: the fill value of `"constant"` padding (other modes take none: 0).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives the padded shape and
            `{}`; `apply({}, x)` gives `(y, vjp)`, each padded axis of `y` longer by its two
            amounts; `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: `padding` is not a tuple of ints, or `value` not a number.
        FnnError: an odd-length `padding`, an unknown `mode`, a `value` with a mode other
            than `"constant"`, or more than 3 axes padded by a non-constant mode.
        ShapeError: (from `init` and `apply`) an input of a rank the mode cannot pad, a
            reflect padding not smaller than its axis (circular: larger), or a crop below 0.

    Example:
        >>> init, apply = Pad((1, 2), mode="reflect")
        >>> y, vjp = apply({}, torch.tensor([[[1.0, 2.0, 3.0]]]))
        >>> y
        tensor([[[2., 1., 2., 3., 2., 1.]]])
        >>> vjp(torch.ones_like(y))[1]
        tensor([[[2., 3., 1.]]])
    """
    pads = _int_tuple(padding)
    if pads is None or not pads:
        raise FnnTypeError(
            f"Pad: padding must be a tuple of ints (left, right, top, bottom, ...), got {padding!r}"
        )
    if len(pads) % 2:
        raise FnnError(
            f"Pad: padding must have an even length (two amounts per axis), got {padding!r}"
        )
    if mode not in PAD_MODES:
        raise FnnError(f"Pad: mode must be one of {', '.join(map(repr, PAD_MODES))}, got {mode!r}")
    value = float(_checks.number("Pad", "value", value))
    if mode != "constant" and value != 0:
        raise FnnError(f"Pad: mode {mode!r} takes no value (only 'constant' does), got {value!r}")
    if mode != "constant" and len(pads) > 6:
        raise FnnError(
            f"Pad: {mode} padding pads at most 3 axes (6 amounts), got {len(pads)}: {padding!r}"
        )
    pad_list = list(pads)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        shape = _checks.input_shape("Pad", input_shape)
        return padded_shape("Pad", shape, pads, mode), {}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        if params:
            _checks.no_params("Pad", params)
        _checks.float_input("Pad", x)
        padded_shape("Pad", x.shape, pads, mode)
        y = pad_forward(x, pad_list, mode, value)
        return y, VJP(pad_layer_backward, (_stand_in(x), y.shape, pad_list, mode))

    return declare(init, apply, LayerInfo("Pad"))


@backward
def pad_layer_backward(
    residuals: tuple[torch.Tensor, torch.Size, list[int], str], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """
    y = x with borders (constant, mirrored, repeated or wrapped)   ⇒   dx = Σ of dy over the output positions each input element went to
    """
    x, y_shape, pads, mode = residuals
    if not isinstance(dy, torch.Tensor) or dy.shape != y_shape or dy.dtype is not x.dtype:
        _checks.cotangent_like("Pad", dy, y_shape, x)
    return {}, pad_backward(dy, x, pads, mode)


@pad_layer_backward.per_example_rule
def _pad_per_example(
    residuals: tuple[torch.Tensor, torch.Size, list[int], str], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor]:
    """Example-wise unless the padding reaches the batch axis (then examples are mixed)."""
    del need_dx
    x, _, pads, _ = residuals
    if len(pads) // 2 >= x.ndim:
        raise FnnError(
            "Pad: its padding reaches the batch axis, so its output is not per example and "
            "per-example gradients are not defined"
        )
    grads: tuple[Params, torch.Tensor] = pad_layer_backward(residuals, dy)
    return grads


# ---------------------------------------------------------------------------------------
# Upsample

# mode -> (aten kernel name stem, spatial dimensions it takes, interpolating?)
_UPSAMPLE_MODES: dict[str, tuple[str, tuple[int, ...], bool]] = {
    "nearest": ("upsample_nearest", (1, 2, 3), False),
    "nearest-exact": ("_upsample_nearest_exact", (1, 2, 3), False),
    "linear": ("upsample_linear", (1,), True),
    "bilinear": ("upsample_bilinear", (2,), True),
    "bicubic": ("upsample_bicubic", (2,), True),
    "trilinear": ("upsample_trilinear", (3,), True),
}


def Upsample(
    size: int | tuple[int, ...] | None = None,
    scale_factor: float | tuple[float, ...] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
) -> Layer:
    """Resize (N, C, L), (N, C, H, W) or (N, C, D, H, W) inputs, as `torch.nn.Upsample`.

    The output's spatial size is `size`, or `⌊L·scale_factor⌋` per axis. The modes are
    torch's: `"nearest"` (the element at `⌊j / scale⌋`), `"nearest-exact"`, and the
    interpolating `"linear"` (1-D), `"bilinear"`/`"bicubic"` (2-D), `"trilinear"` (3-D).

    Args:
        size: the output's spatial size, an int for every axis or a tuple of one per axis.
        scale_factor: the multiplier of each spatial size, a number or a tuple of one per
            axis; give either `size` or `scale_factor`.
        mode: `"nearest"`, `"nearest-exact"`, `"linear"`, `"bilinear"`, `"bicubic"` or
            `"trilinear"`.
        align_corners: for the interpolating modes, whether the corner pixels of input and
            output are aligned (torch's meaning; `None` is False).
        recompute_scale_factor: with `scale_factor`, interpolate with the scale the output
            size implies rather than the one given (torch's meaning).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, (N, C, *spatial))` gives
            `(N, C, *out_spatial)` and `{}`; `apply({}, x)` gives `(y, vjp)`; `vjp(dy)`, `dy` of
            `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: a `size` or `scale_factor` of the wrong type.
        FnnError: both or neither of `size` and `scale_factor`, non-positive sizes or
            factors, an unknown `mode`, `align_corners` with a nearest mode, or
            `recompute_scale_factor` with `size`.
        ShapeError: (from `init` and `apply`) an input whose rank does not fit the mode or
            the length of `size`/`scale_factor`, or an output size below 1.

    Example:
        >>> init, apply = Upsample(scale_factor=2, mode="nearest")
        >>> y, vjp = apply({}, torch.tensor([[[1.0, 2.0]]]))
        >>> y
        tensor([[[1., 1., 2., 2.]]])
        >>> vjp(torch.ones_like(y))[1]
        tensor([[[2., 2.]]])
    """
    if (size is None) == (scale_factor is None):
        raise FnnError("Upsample: give exactly one of size and scale_factor")
    sizes: tuple[int, ...] | None = None
    factors: tuple[float, ...] | None = None
    if size is not None:
        sizes = (
            (size,) if isinstance(size, int) and not isinstance(size, bool) else _int_tuple(size)
        )
        if sizes is None or not 1 <= len(sizes) <= 3:
            raise FnnTypeError(
                f"Upsample: size must be an int or a tuple of 1 to 3 ints, got {size!r}"
            )
        if min(sizes) < 1:
            raise FnnError(f"Upsample: size must be positive, got {size!r}")
        if recompute_scale_factor:
            raise FnnError("Upsample: recompute_scale_factor is meaningful only with scale_factor")
    else:
        items = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,)
        if not 1 <= len(items) <= 3 or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) for f in items
        ):
            raise FnnTypeError(
                f"Upsample: scale_factor must be a number or a tuple of 1 to 3 numbers, "
                f"got {scale_factor!r}"
            )
        factors = tuple(float(f) for f in items if f is not None)
        if not all(f > 0 and math.isfinite(f) for f in factors):
            raise FnnError(f"Upsample: scale_factor must be positive, got {scale_factor!r}")
    if mode not in _UPSAMPLE_MODES:
        raise FnnError(
            f"Upsample: mode must be one of {', '.join(map(repr, _UPSAMPLE_MODES))}, got {mode!r}"
        )
    stem, dims, interpolating = _UPSAMPLE_MODES[mode]
    if align_corners is not None and not interpolating:
        raise FnnError(
            "Upsample: align_corners can only be set with the interpolating modes "
            f"(linear, bilinear, bicubic, trilinear), got mode {mode!r}"
        )
    aligned = [bool(align_corners)] if interpolating else []
    given = sizes if sizes is not None else factors
    assert given is not None
    per_axis = isinstance(size if sizes is not None else scale_factor, (tuple, list))
    if per_axis and len(given) not in dims:
        raise FnnError(
            f"Upsample: mode {mode!r} resizes {' or '.join(map(str, dims))} spatial axes, got "
            f"{len(given)} in {size if sizes is not None else scale_factor!r}"
        )
    what = f"{'size' if sizes is not None else 'scale_factor'} {given if per_axis else given[0]!r}"

    def plan(shape: Sequence[int]) -> tuple[list[int], list[float | None]]:
        """(output spatial size, per-axis scales given to the kernels) for an input shape."""
        n = len(shape) - 2
        if n not in dims or (per_axis and len(given) != n):
            ranks = [d + 2 for d in dims if not per_axis or len(given) == d]
            raise ShapeError(
                f"Upsample: mode {mode!r} with {what} expects an input of rank "
                f"{' or '.join(map(str, ranks))} (N, C, *spatial), got shape {tuple(shape)}"
            )
        spatial = shape[2:]
        if sizes is not None:
            return list(sizes if per_axis else sizes * n), [None] * n
        assert factors is not None
        scales = factors if per_axis else factors * n
        out = [int(float(s) * f) for s, f in zip(spatial, scales)]
        if min(out) < 1:
            raise ShapeError(
                f"Upsample: scale_factor {scale_factor!r} makes the input's spatial size "
                f"{tuple(spatial)} into {tuple(out)}: every size must stay ≥ 1"
            )
        return out, ([None] * n if recompute_scale_factor else list(scales))

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        shape = _checks.input_shape("Upsample", input_shape)
        out, _ = plan(shape)
        return (*shape[:2], *out), {}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        if params:
            _checks.no_params("Upsample", params)
        _checks.float_input("Upsample", x)
        out, scales = plan(x.shape)
        n = len(out)
        y = getattr(aten, f"{stem}{n}d")(x, out, *aligned, *scales)
        residuals = (f"{stem}{n}d_backward", _stand_in(x), y.shape, aligned, scales)
        return y, VJP(upsample_backward, residuals)

    return declare(init, apply, LayerInfo("Upsample"))


UpsampleResiduals = tuple[str, torch.Tensor, torch.Size, list[bool], list[float | None]]


@backward
def upsample_backward(
    residuals: UpsampleResiduals, dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y[j] = Σᵢ w(j, i) x[i] (nearest: w = 1 at i = ⌊j / scale⌋)   ⇒   dx[i] = Σⱼ w(j, i) dy[j]"""
    kernel, x, y_shape, aligned, scales = residuals
    if not isinstance(dy, torch.Tensor) or dy.shape != y_shape or dy.dtype is not x.dtype:
        _checks.cotangent_like("Upsample", dy, y_shape, x)
    dx = getattr(aten, kernel)(dy, list(y_shape[2:]), list(x.shape), *aligned, *scales)
    return {}, dx


upsample_backward.example_wise()
