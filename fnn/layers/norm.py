"""Normalisation layers: `LayerNorm`, `RMSNorm`, `GroupNorm` and `BatchNorm`, as torch.nn's.

LayerNorm, GroupNorm and BatchNorm run on aten's fused kernels, forward and
backward (`native_layer_norm`, `native_group_norm`, `native_batch_norm` and their
`_backward`s); RMSNorm's backward is written out (aten has no CPU kernel for it).
Each keeps the input plus the mean and 1/σ it normalised with as residuals.

`BatchNorm`'s running mean and variance are an explicit *state*, never hidden
in the params and never given gradients: `apply(params, x, state=state,
train=True)` returns `(y, vjp, new_state)`. `fnn.init_state(model, shape)`
makes the initial state; `docs/state.md` explains how it travels through
`serial`, `parallel` and `value_and_grad`.

Empty inputs (a batch of 0) never reach a kernel: they give an empty output, zero
gradients and, for BatchNorm, unchanged statistics, as torch does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core import VJP, Key, Layer, LayerInfo, Params, PyTree, Shape, Shapes, backward, declare
from ..errors import FnnError, FnnTypeError, ShapeError, TreeError, describe
from . import _checks

__all__ = [
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "BatchNorm",
    "layer_norm_backward",
    "rms_norm_backward",
    "group_norm_backward",
    "batch_norm_backward",
]

aten = torch.ops.aten

Affine = tuple[torch.Tensor | None, torch.Tensor | None]


def _normalized_shape(name: str, value: object) -> Shape | None:
    """`normalized_shape` as a tuple of positive ints (an int `n` is `(n,)`), or `None`."""
    if value is None:
        return None
    shape = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(shape, Sequence)
        or isinstance(shape, str)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    ):
        raise FnnError(
            f"{name}: normalized_shape must be a positive int, a non-empty tuple of them, or "
            f"None (the last axis), got {value!r}"
        )
    return tuple(shape)


def _flag(name: str, what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise FnnTypeError(f"{name}: {what} must be True or False, got {value!r}")
    return value


def _affine_params(
    name: str,
    shape: Shape,
    weight: bool,
    bias: bool,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Params:
    """torch's initial affine params: `weight` ones and `bias` zeros of `shape`, where present."""
    _checks.init_dtype(name, dtype, device)
    params: Params = {}
    if weight:
        params["weight"] = torch.ones(shape, dtype=dtype, device=device)
    if bias:
        params["bias"] = torch.zeros(shape, dtype=dtype, device=device)
    return params


def _affine_leaves(name: str, params: Params, x: object, weight: bool, bias: bool) -> Affine:
    """`(weight or None, bias or None)` from `params` (exactly the leaves the layer has), with `x`
    a float tensor of their dtype and device."""
    required = ["weight"] * weight + ["bias"] * bias
    if params is None and not required:
        params = {}
    try:
        w = params["weight"] if weight else None
        b = params["bias"] if bias else None
        if len(params) != len(required):
            raise KeyError
    except (KeyError, TypeError):
        _checks.param_leaves(name, params, required)
        raise
    if w is not None:
        _checks.input_like(name, x, w)
    _checks.float_input(name, x)
    if b is not None:
        _checks.input_like(name, x, b)
    if w is not None and b is not None and b.shape != w.shape:
        raise ShapeError(
            f"{name}: params['weight'] and params['bias'] must have the same shape, got "
            f"{tuple(w.shape)} and {tuple(b.shape)}"
        )
    return w, b


def _grads(dweight: torch.Tensor | None, dbias: torch.Tensor | None) -> Params:
    grads: Params = {}
    if dweight is not None:
        grads["weight"] = dweight
    if dbias is not None:
        grads["bias"] = dbias
    return grads


def _check_dy(name: str, x: torch.Tensor, dy: object) -> None:
    if not isinstance(dy, torch.Tensor) or dy.shape != x.shape or dy.dtype is not x.dtype:
        _checks.cotangent_like(name, dy, x.shape, x)


# ---------------------------------------------------------------- LayerNorm and RMSNorm


def _trailing_init(name: str, fixed: Shape | None, input_shape: Shapes) -> tuple[Shape, Shape]:
    """`(shape, normalized)` for `init`: the input shape and the trailing axes normalised."""
    shape = _checks.input_shape(name, input_shape, min_rank=1 if fixed is None else len(fixed))
    normalized = fixed if fixed is not None else shape[-1:]
    if shape[len(shape) - len(normalized) :] != normalized or min(normalized) < 1:
        raise ShapeError(
            f"{name}: expected an input shape ending in {_ending(normalized)}, got {shape}"
        )
    return shape, normalized


def _trailing_apply(
    name: str, fixed: Shape | None, weight: torch.Tensor | None, x: torch.Tensor
) -> list[int]:
    """The normalised trailing axes of `x` (the weight's shape, else `normalized_shape`, else
    the last axis), checked against `x`."""
    if weight is not None:
        normalized = tuple(weight.shape)
        if fixed is not None and normalized != fixed:
            raise ShapeError(
                f"{name}: params['weight'] has shape {normalized}, expected normalized_shape {fixed}"
            )
    elif fixed is not None:
        normalized = fixed
    elif x.ndim >= 1:
        normalized = tuple(x.shape[-1:])
    else:
        normalized = (1,)  # no axis: the error below
    if x.ndim < len(normalized) or tuple(x.shape[x.ndim - len(normalized) :]) != normalized:
        raise ShapeError(
            f"{name}: expected an input of shape {_ending(normalized)}, got {tuple(x.shape)}"
        )
    return list(normalized)


def _ending(normalized: Shape) -> str:
    return "(..., " + ", ".join(map(str, normalized)) + ")"


def LayerNorm(
    normalized_shape: int | Sequence[int] | None = None,
    eps: float = 1e-5,
    elementwise_affine: bool = True,
    bias: bool = True,
) -> Layer:
    """Normalise over the trailing axes, then scale and shift, as `torch.nn.LayerNorm`.

    `y = (x − μ) / √(σ² + eps) · weight + bias`, with μ and σ² (biased) the mean and
    variance over the last `len(normalized_shape)` axes.

    Args:
        normalized_shape: the shape of the trailing axes to normalise over: an int, a tuple,
            or `None` for the last axis, whatever its size (fixed by `init`).
        eps: added to the variance, for numerical stability.
        elementwise_affine: whether there is a learnt `weight` (and `bias`).
        bias: whether there is a learnt `bias` (with `elementwise_affine`).

    Returns:
        `Layer(init, apply)`. `init(key, (..., *normalized_shape))` gives the same shape and
            params `{"weight": normalized_shape, "bias": normalized_shape}`, ones and zeros
            (only `weight` with `bias=False`, `{}` with `elementwise_affine=False`);
            `apply(params, x)`, `x` of shape `(..., *normalized_shape)`, gives `(y, vjp)`
            with `y` of `x`'s shape; `vjp(dy)`, `dy` of `y`'s shape, gives `(dparams, dx)`
            shaped as `(params, x)`.

    Raises:
        FnnError: `normalized_shape` is not a positive int, a tuple of them or `None`.
        FnnTypeError: `eps` is not a number, or a flag is not a bool.
        ShapeError: (from `init` and `apply`) an input whose trailing axes do not match.

    Example:
        >>> init, apply = LayerNorm()
        >>> out_shape, params = init(fnn.random.key(0), (-1, 4))
        >>> y, vjp = apply(params, torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        >>> y
        tensor([[-1.3416, -0.4472,  0.4472,  1.3416]])
        >>> dparams, dx = vjp(torch.ones_like(y))
        >>> LayerNorm((2, 3), bias=False).init(fnn.random.key(0), (-1, 2, 3))[1]["weight"].shape
        torch.Size([2, 3])
    """
    fixed = _normalized_shape("LayerNorm", normalized_shape)
    _checks.number("LayerNorm", "eps", eps)
    has_weight = _flag("LayerNorm", "elementwise_affine", elementwise_affine)
    has_bias = has_weight and _flag("LayerNorm", "bias", bias)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key
        shape, normalized = _trailing_init("LayerNorm", fixed, input_shape)
        return shape, _affine_params("LayerNorm", normalized, has_weight, has_bias, dtype, device)

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        weight, b = _affine_leaves("LayerNorm", params, x, has_weight, has_bias)
        normalized = _trailing_apply("LayerNorm", fixed, weight, x)
        y, mean, rstd = aten.native_layer_norm.default(x, normalized, weight, b, eps)
        return y, VJP(layer_norm_backward, (x, weight, b, mean, rstd, normalized))

    return declare(init, apply, LayerInfo("LayerNorm"))


@backward
def layer_norm_backward(
    residuals: tuple[
        torch.Tensor,
        torch.Tensor | None,
        torch.Tensor | None,
        torch.Tensor,
        torch.Tensor,
        list[int],
    ],
    dy: torch.Tensor,
) -> tuple[Params, torch.Tensor]:
    """
    y = γ x̂ + β, x̂ = (x − μ)/σ per row   ⇒   dγ = Σ dy x̂,  dβ = Σ dy,  dx = (g − mean(g) − x̂ mean(g x̂)) / σ  with g = γ dy
    """
    x, weight, bias, mean, rstd, normalized = residuals
    _check_dy("LayerNorm", x, dy)
    mask = [True, weight is not None, bias is not None]
    dx, dweight, dbias = aten.native_layer_norm_backward.default(
        dy, x, normalized, mean, rstd, weight, bias, mask
    )
    return _grads(dweight, dbias), dx


# per example: dγ[n] = Σ dy x̂ and dβ[n] = Σ dy over example n's rows
@layer_norm_backward.per_example_rule
def _layer_norm_per_example(
    residuals: tuple[
        torch.Tensor,
        torch.Tensor | None,
        torch.Tensor | None,
        torch.Tensor,
        torch.Tensor,
        list[int],
    ],
    dy: torch.Tensor,
    need_dx: bool,
) -> tuple[Params, torch.Tensor]:
    del need_dx
    x, weight, bias, mean, rstd, normalized = residuals
    _check_dy("LayerNorm", x, dy)
    _batch_axis_kept("LayerNorm", x, len(normalized))
    dx = aten.native_layer_norm_backward.default(
        dy, x, normalized, mean, rstd, weight, bias, [True, False, False]
    )[0]
    rows = dy.reshape(x.shape[0], math.prod(x.shape[1 : x.ndim - len(normalized)]), *normalized)
    dweight = (
        (rows * ((x - mean) * rstd).reshape(rows.shape)).sum(1) if weight is not None else None
    )
    return _grads(dweight, rows.sum(1) if bias is not None else None), dx


def _batch_axis_kept(name: str, x: torch.Tensor, normalized: int) -> None:
    if x.ndim <= normalized:
        raise FnnError(
            f"{name}: on an input of shape {tuple(x.shape)} the batch axis is normalised over, so "
            "it mixes examples and per-example gradients are not defined"
        )


def RMSNorm(
    normalized_shape: int | Sequence[int] | None = None,
    eps: float | None = None,
    elementwise_affine: bool = True,
) -> Layer:
    """Divide by the root mean square over the trailing axes, then scale, as `torch.nn.RMSNorm`.

    `y = x / √(mean(x²) + eps) · weight`, the mean over the last `len(normalized_shape)` axes.

    Args:
        normalized_shape: the shape of the trailing axes to normalise over: an int, a tuple,
            or `None` for the last axis, whatever its size (fixed by `init`).
        eps: added to the mean square; `None` for `torch.finfo(x.dtype).eps`, as in torch
            (float32's for half-precision inputs, which are computed in float32).
        elementwise_affine: whether there is a learnt `weight`.

    Returns:
        `Layer(init, apply)`. `init(key, (..., *normalized_shape))` gives the same shape and
            params `{"weight": normalized_shape}`, ones (`{}` with
            `elementwise_affine=False`); `apply(params, x)`, `x` of shape
            `(..., *normalized_shape)`, gives `(y, vjp)` with `y` of `x`'s shape; `vjp(dy)`,
            `dy` of `y`'s shape, gives `(dparams, dx)` shaped as `(params, x)`.

    Raises:
        FnnError: `normalized_shape` is not a positive int, a tuple of them or `None`.
        FnnTypeError: `eps` is not a number or `None`, or `elementwise_affine` not a bool.
        ShapeError: (from `init` and `apply`) an input whose trailing axes do not match.

    Example:
        >>> init, apply = RMSNorm()
        >>> _, params = init(fnn.random.key(0), (-1, 2))
        >>> y, vjp = apply(params, torch.tensor([[3.0, 4.0]]))
        >>> y
        tensor([[0.8485, 1.1314]])
        >>> dparams, dx = vjp(torch.ones_like(y))
    """
    fixed = _normalized_shape("RMSNorm", normalized_shape)
    if eps is not None:
        _checks.number("RMSNorm", "eps", eps)
    has_weight = _flag("RMSNorm", "elementwise_affine", elementwise_affine)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key
        shape, normalized = _trailing_init("RMSNorm", fixed, input_shape)
        return shape, _affine_params("RMSNorm", normalized, has_weight, False, dtype, device)

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        weight, _ = _affine_leaves("RMSNorm", params, x, has_weight, False)
        normalized = _trailing_apply("RMSNorm", fixed, weight, x)
        y, rstd = _rms_norm_forward(x, normalized, weight, eps)
        return y, VJP(rms_norm_backward, (x, weight, rstd, len(normalized)))

    return declare(init, apply, LayerInfo("RMSNorm"))


_FUSED_RMS_NORM = getattr(aten, "_fused_rms_norm", None)  # aten's kernel (torch ≥ 2.9), or None


def _rms_norm_forward(
    x: torch.Tensor, normalized: Any, weight: torch.Tensor | None, eps: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(y, r)`, `r = 1/√(mean(x²) + ε)` per row in float32 at least: aten's fused kernel where
    torch has it, else the same computation as torch's own `rms_norm` before it existed."""
    if _FUSED_RMS_NORM is not None:
        return _FUSED_RMS_NORM.default(x, normalized, weight, eps)  # type: ignore[no-any-return]
    compute = torch.promote_types(x.dtype, torch.float32)
    rows = list(range(x.ndim - len(normalized), x.ndim))
    xc = x.to(compute)
    eps_value = eps if eps is not None else torch.finfo(compute).eps
    rstd = torch.rsqrt(xc.pow(2).mean(rows, keepdim=True).add_(eps_value))
    y = xc.mul(rstd).type_as(x)
    return (y.mul(weight) if weight is not None else y), rstd


@backward
def rms_norm_backward(
    residuals: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, int], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """
    y = γ x̂, x̂ = x r, r = 1/√(mean(x²) + ε) per row   ⇒   dγ = Σ dy x̂,  dx = r (g − x̂ mean(g x̂))  with g = γ dy
    """
    x, weight, rstd, k = residuals
    _check_dy("RMSNorm", x, dy)
    dx, rows = _rms_norm_grads(x, weight, rstd, k, dy)
    if weight is None:
        return {}, dx
    return {"weight": rows.sum(0).to(x.dtype)}, dx


def _rms_norm_grads(
    x: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor, k: int, dy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(dx, dy·x̂)` with `dy·x̂` of shape `(rows, *normalized)`, computed in float32 at least."""
    normalized = x.shape[x.ndim - k :]
    compute = torch.promote_types(x.dtype, torch.float32)
    if x.numel() == 0:  # no rows, or no elements per row (torch's decomposition does the same)
        return torch.zeros_like(x), x.new_zeros((0, *normalized), dtype=compute)
    xc, dyc = x.to(compute), dy.to(compute)
    x_hat = xc * rstd
    g = dyc * weight.to(compute) if weight is not None else dyc
    inner = list(range(x.ndim - k, x.ndim))
    dx = (g - x_hat * ((g * x_hat).sum(inner, keepdim=True) / math.prod(normalized))) * rstd
    return dx.to(x.dtype), (dyc * x_hat).reshape(math.prod(x.shape[: x.ndim - k]), *normalized)


# per example: dγ[n] = Σ dy x̂ over example n's rows
@rms_norm_backward.per_example_rule
def _rms_norm_per_example(
    residuals: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, int],
    dy: torch.Tensor,
    need_dx: bool,
) -> tuple[Params, torch.Tensor]:
    del need_dx
    x, weight, rstd, k = residuals
    _check_dy("RMSNorm", x, dy)
    _batch_axis_kept("RMSNorm", x, k)
    dx, rows = _rms_norm_grads(x, weight, rstd, k, dy)
    if weight is None:
        return {}, dx
    rows = rows.reshape(x.shape[0], math.prod(x.shape[1 : x.ndim - k]), *weight.shape)
    per_example = rows.sum(1)
    return {"weight": per_example.to(x.dtype)}, dx


# ---------------------------------------------------------------- GroupNorm


def GroupNorm(num_groups: int, eps: float = 1e-5, affine: bool = True) -> Layer:
    """Normalise each group of channels of each example, then scale and shift per channel, as
    `torch.nn.GroupNorm(num_groups, num_channels)`.

    The C channels (axis 1) are split into `num_groups` groups of C / num_groups; μ and σ²
    (biased) are each example's and group's mean and variance over its channels and the
    spatial axes: `y = (x − μ) / √(σ² + eps) · weight + bias`.

    Args:
        num_groups: how many groups; it must divide the number of channels.
        eps: added to the variance, for numerical stability.
        affine: whether there is a learnt per-channel `weight` and `bias`.

    Returns:
        `Layer(init, apply)`. `init(key, (N, C, *spatial))` gives the same shape and params
            `{"weight": (C,), "bias": (C,)}`, ones and zeros (`{}` with `affine=False`);
            `apply(params, x)`, `x` of shape `(N, C, *spatial)`, gives `(y, vjp)` with `y` of
            `x`'s shape; `vjp(dy)`, `dy` of `y`'s shape, gives `(dparams, dx)` shaped as
            `(params, x)`.

    Raises:
        FnnError: `num_groups` is not a positive int.
        FnnTypeError: `eps` is not a number or `affine` not a bool.
        ShapeError: (from `init` and `apply`) an input of rank < 2, with channels that
            `num_groups` does not divide, or with an empty spatial axis.

    Example:
        >>> init, apply = GroupNorm(2)
        >>> _, params = init(fnn.random.key(0), (-1, 4))
        >>> y, vjp = apply(params, torch.tensor([[1.0, 3.0, 0.0, 4.0]]))
        >>> y
        tensor([[-1.0000,  1.0000, -1.0000,  1.0000]])
        >>> dparams, dx = vjp(torch.ones_like(y))
    """
    _checks.positive_int("GroupNorm", "num_groups", num_groups)
    _checks.number("GroupNorm", "eps", eps)
    has_affine = _flag("GroupNorm", "affine", affine)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key
        shape = _checks.input_shape("GroupNorm", input_shape, min_rank=2)
        _group_shape(num_groups, shape)
        channels = (shape[1],)
        return shape, _affine_params("GroupNorm", channels, has_affine, has_affine, dtype, device)

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        weight, b = _affine_leaves("GroupNorm", params, x, has_affine, has_affine)
        if x.ndim < 2:
            raise ShapeError(
                f"GroupNorm: expected an input of shape (N, C, ...), got {tuple(x.shape)}"
            )
        n, c, hxw = _group_shape(num_groups, tuple(x.shape))
        if weight is not None and weight.shape != (c,):
            raise ShapeError(
                f"GroupNorm: expected an input of shape (N, {weight.shape[0]}, ...) for "
                f"params['weight'] of shape {tuple(weight.shape)}, got {tuple(x.shape)}"
            )
        x = x.contiguous()  # as torch.group_norm hands it to the kernel
        y, mean, rstd = aten.native_group_norm.default(x, weight, b, n, c, hxw, num_groups, eps)
        return y, VJP(group_norm_backward, (x, weight, mean, rstd, num_groups))

    return declare(init, apply, LayerInfo("GroupNorm"))


def _group_shape(groups: int, shape: Shape) -> tuple[int, int, int]:
    """`(N, C, H·W·…)` of an input shape, with `groups` dividing C and no empty spatial axis."""
    channels, spatial = shape[1], shape[2:]
    if channels < 1 or channels % groups:
        raise ShapeError(
            f"GroupNorm: num_groups={groups} must divide the number of channels (axis 1), got "
            f"input shape {shape}"
        )
    if spatial and min(spatial) == 0:
        raise ShapeError(
            f"GroupNorm: expected non-empty spatial axes, as torch, got input shape {shape}"
        )
    return shape[0], channels, math.prod(spatial)


@backward
def group_norm_backward(
    residuals: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, int],
    dy: torch.Tensor,
) -> tuple[Params, torch.Tensor]:
    """
    y = γ x̂ + β, x̂ = (x − μ)/σ per example and group   ⇒   dγ = Σ dy x̂,  dβ = Σ dy,  dx = (g − mean(g) − x̂ mean(g x̂)) / σ  with g = γ dy
    """
    x, weight, mean, rstd, groups = residuals
    _check_dy("GroupNorm", x, dy)
    n, c, hxw = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    affine = weight is not None
    dx, dweight, dbias = aten.native_group_norm_backward.default(
        dy.contiguous(), x, mean, rstd, weight, n, c, hxw, groups, [True, affine, affine]
    )
    return _grads(dweight, dbias), dx


# per example: dγ[n] = Σ dy x̂ and dβ[n] = Σ dy over example n's spatial axes
@group_norm_backward.per_example_rule
def _group_norm_per_example(
    residuals: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, int],
    dy: torch.Tensor,
    need_dx: bool,
) -> tuple[Params, torch.Tensor]:
    del need_dx
    x, weight, mean, rstd, groups = residuals
    _check_dy("GroupNorm", x, dy)
    n, c, hxw = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    dx = aten.native_group_norm_backward.default(
        dy.contiguous(), x, mean, rstd, weight, n, c, hxw, groups, [True, False, False]
    )[0]
    if weight is None:
        return {}, dx
    x_hat = (x.reshape(n, groups, c // groups * hxw) - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)
    rows = dy.reshape(n, c, hxw)
    return {"weight": (rows * x_hat.reshape(n, c, hxw)).sum(2), "bias": rows.sum(2)}, dx


# ---------------------------------------------------------------- BatchNorm

STATE_LEAVES = ("running_mean", "running_var", "num_batches_tracked")


def BatchNorm(
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = True,
) -> Layer:
    """Normalise each channel (axis 1) over the batch and spatial axes, as torch.nn's
    `BatchNorm1d` (inputs `(N, C)`, `(N, C, L)`), `BatchNorm2d` (`(N, C, H, W)`) and
    `BatchNorm3d` (`(N, C, D, H, W)`).

    `y = (x − μ) / √(σ² + eps) · weight + bias`. With `track_running_stats` (the default)
    the layer has a state (from `fnn.init_state`, never differentiated): `{"running_mean":
    (C,) zeros, "running_var": (C,) ones, "num_batches_tracked": 0-d int64}`, torch's buffer
    names. `train=True` normalises with the batch's μ and (biased) σ² and moves the running
    statistics toward them: `running ← (1 − momentum)·running + momentum·batch`, with the
    unbiased variance, and `num_batches_tracked + 1`. `train=False` normalises with the
    running statistics and returns the state unchanged. Without `track_running_stats` there
    is no state and the batch statistics are always used, as in torch. An empty batch gives
    an empty output, zero gradients and unchanged statistics (`num_batches_tracked` still
    counts it, as torch's).

    Args:
        momentum: weight of the batch statistics in the running ones; `None` for a
            cumulative average, as in torch.
        eps: added to the variance, for numerical stability.
        affine: whether there is a learnt per-channel `weight` and `bias`.
        track_running_stats: whether the layer keeps running statistics (a state).

    Returns:
        `Layer(init, apply)`. `init(key, (N, C, *spatial))` gives the same shape and params
            `{"weight": (C,), "bias": (C,)}`, ones and zeros (`{}` with `affine=False`).
            With running statistics, `apply(params, x, state=state, train=...)`, both keywords
            required, gives `(y, vjp, new_state)`; without, `apply(params, x)` gives
            `(y, vjp)`; `y` has `x`'s shape. `vjp(dy)`, `dy` of `y`'s shape, gives
            `(dparams, dx)` shaped as `(params, x)`.

    Raises:
        FnnTypeError: `momentum` or `eps` is not a number, or a flag is not a bool.
        ShapeError: (from `init` and `apply`) an input that is not `(N, C)`, `(N, C, L)`,
            `(N, C, H, W)` or `(N, C, D, H, W)` with `C` the params' length, or a batch with
            one value per channel in training.

    Example:
        >>> bn = BatchNorm()
        >>> _, params = bn.init(fnn.random.key(0), (-1, 3))
        >>> state = fnn.init_state(bn, (-1, 3))
        >>> x = torch.tensor([[0.0, 1.0, 2.0], [2.0, 3.0, 6.0]])
        >>> y, vjp, state = bn.apply(params, x, state=state, train=True)
        >>> y
        tensor([[-1.0000, -1.0000, -1.0000],
                [ 1.0000,  1.0000,  1.0000]])
        >>> state["running_mean"], int(state["num_batches_tracked"])
        (tensor([0.1000, 0.2000, 0.4000]), 1)
    """
    if momentum is not None:
        _checks.number("BatchNorm", "momentum", momentum)
    _checks.number("BatchNorm", "eps", eps)
    has_affine = _flag("BatchNorm", "affine", affine)
    tracking = _flag("BatchNorm", "track_running_stats", track_running_stats)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key
        shape = _channels_shape(input_shape)
        channels = (shape[1],)
        return shape, _affine_params("BatchNorm", channels, has_affine, has_affine, dtype, device)

    def init_state(
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, PyTree]:
        """`(output_shape, state)`: the running statistics of a fresh `torch.nn.BatchNorm2d`."""
        shape = _channels_shape(input_shape)
        _checks.init_dtype("BatchNorm", dtype, device)
        channels = shape[1]
        return shape, {
            "running_mean": torch.zeros(channels, dtype=dtype, device=device),
            "running_var": torch.ones(channels, dtype=dtype, device=device),
            "num_batches_tracked": torch.tensor(0, dtype=torch.int64, device=device),
        }

    def apply(
        params: Params,
        x: torch.Tensor,
        *,
        state: PyTree = None,
        train: bool | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ...]:  # (y, vjp, new_state): the Layer contract's form for state= (ApplyFn)
        del kwargs
        if state is None or train is None:
            _missing(state, train)
        weight, bias = _affine_leaves("BatchNorm", params, x, has_affine, has_affine)
        _check_input(x, weight)
        try:
            running_mean, running_var, count = (state[k] for k in STATE_LEAVES)
            if (
                len(state) != 3
                or running_mean.shape != x.shape[1:2]
                or running_var.shape != x.shape[1:2]
                or running_mean.dtype is not x.dtype
                or running_var.dtype is not x.dtype
            ):
                raise KeyError
        except (KeyError, TypeError, AttributeError):
            _check_state(state, x)
            raise
        if not train:
            if x.numel() == 0:
                y = x.clone()
            else:
                y = aten._native_batch_norm_legit_no_training.default(
                    x, weight, bias, running_mean, running_var, 0.0, eps
                )[0]
            residuals = (x, weight, running_mean, running_var, False, eps)
            return y, VJP(batch_norm_backward, residuals), state
        _one_value_per_channel(x)
        count = count + 1
        if x.numel() == 0:  # torch's BatchNorm: statistics unchanged, the batch still counted
            residuals = (x, weight, None, None, True, eps)
            new_state = {"running_mean": running_mean, "running_var": running_var}
            return (
                x.clone(),
                VJP(batch_norm_backward, residuals),
                new_state | {"num_batches_tracked": count},
            )
        if momentum is None and torch.compiler.is_compiling():
            # int(count) would break the graph: the cumulative average from tensors instead
            y, mean, invstd, batch_mean, batch_var = _batch_norm_train(
                x, weight, bias, running_mean, running_var, training=True, momentum=1.0, eps=eps
            )
            f = count.to(x.dtype).reciprocal()
            new_mean = f * batch_mean + (1 - f) * running_mean
            new_var = f * batch_var + (1 - f) * running_var
        else:
            factor = momentum if momentum is not None else 1.0 / int(count)
            y, mean, invstd, new_mean, new_var = _batch_norm_train(
                x, weight, bias, running_mean, running_var, training=True, momentum=factor, eps=eps
            )
        new_state = {"running_mean": new_mean, "running_var": new_var, "num_batches_tracked": count}
        return y, VJP(batch_norm_backward, (x, weight, mean, invstd, True, eps)), new_state

    def apply_batch_stats(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[Any, ...]:
        del kwargs  # train= changes nothing: torch uses the batch statistics in both modes
        weight, bias = _affine_leaves("BatchNorm", params, x, has_affine, has_affine)
        _check_input(x, weight)
        _one_value_per_channel(x)
        if x.numel() == 0:
            return x.clone(), VJP(batch_norm_backward, (x, weight, None, None, True, eps))
        y, mean, invstd = aten._native_batch_norm_legit.no_stats(x, weight, bias, True, 0.0, eps)
        return y, VJP(batch_norm_backward, (x, weight, mean, invstd, True, eps))

    if not tracking:
        return declare(
            init, apply_batch_stats, LayerInfo("BatchNorm", keywords=frozenset({"train"}))
        )
    info = LayerInfo("BatchNorm", keywords=frozenset({"state", "train"}), init_state=init_state)
    return declare(init, apply, info)


@backward
def batch_norm_backward(
    residuals: tuple[
        torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, bool, float
    ],
    dy: torch.Tensor,
) -> tuple[Params, torch.Tensor]:
    """
    train: y = γ x̂ + β, x̂ = (x − μ_B)/σ_B  ⇒  dγ = Σ dy x̂,  dβ = Σ dy,  dx = γ/σ_B (dy − mean(dy) − x̂ mean(dy x̂));  eval: dx = γ dy / σ_run
    """
    x, weight, mean, spread, train, eps = residuals
    _check_dy("BatchNorm", x, dy)
    affine = weight is not None
    if x.numel() == 0:  # no kernel sees an empty input: zero gradients, as torch's
        zeros = x.new_zeros(x.shape[1]) if affine else None
        return _grads(zeros, None if zeros is None else zeros.clone()), torch.zeros_like(x)
    # train: (mean, spread) are the batch's μ and 1/σ; eval: the running mean and variance
    saved, running = ((mean, spread), (None, None)) if train else ((None, None), (mean, spread))
    dx, dweight, dbias = aten.native_batch_norm_backward.default(
        dy, x, weight, *running, *saved, train, eps, [True, affine, affine]
    )
    return _grads(dweight, dbias), dx


# per example (evaluation only): dγ[n] = Σ dy x̂ and dβ[n] = Σ dy over example n's positions
@batch_norm_backward.per_example_rule
def _batch_norm_per_example(
    residuals: tuple[
        torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, bool, float
    ],
    dy: torch.Tensor,
    need_dx: bool,
) -> tuple[Params, torch.Tensor]:
    x, weight, running_mean, running_var, train, eps = residuals
    if train:
        raise FnnError(
            "BatchNorm: with batch statistics (train=True, or track_running_stats=False) the "
            "output mixes examples, so per-example gradients are not defined; use train=False"
        )
    _, dx = batch_norm_backward.function(residuals, dy)
    if weight is None:
        return {}, dx
    assert running_mean is not None and running_var is not None
    n, c, hxw = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    rows = dy.reshape(n, c, hxw)
    x_hat = (x.reshape(n, c, hxw) - running_mean[:, None]) * (running_var[:, None] + eps).rsqrt()
    return {"weight": (rows * x_hat).sum(2), "bias": rows.sum(2)}, dx


_batch_norm_train = aten._native_batch_norm_legit_functional.default


def _channels_shape(input_shape: Any) -> Shape:
    shape = _checks.input_shape("BatchNorm", input_shape, min_rank=2)
    if len(shape) > 5 or shape[1] < 1:
        raise ShapeError(
            "BatchNorm: expected an input shape (N, C), (N, C, L), (N, C, H, W) or "
            f"(N, C, D, H, W) with C ≥ 1, got {shape}"
        )
    return shape


def _check_input(x: torch.Tensor, weight: torch.Tensor | None) -> None:
    """x is `(N, C, …)` of rank 2 to 5, with `C` the weight's length."""
    if weight is not None and (weight.ndim != 1):
        raise ShapeError(
            f"BatchNorm: params['weight'] and params['bias'] must have shape (C,), got "
            f"{tuple(weight.shape)}"
        )
    if not 2 <= x.ndim <= 5 or (weight is not None and x.shape[1] != weight.shape[0]):
        channels = "C" if weight is None else str(weight.shape[0])
        raise ShapeError(
            f"BatchNorm: expected an input of shape (N, {channels}, ...), got {tuple(x.shape)} "
            "(rank 2 to 5, as BatchNorm1d/2d/3d)"
        )


def _one_value_per_channel(x: torch.Tensor) -> None:
    if x.numel() == x.shape[1]:
        raise ShapeError(
            f"BatchNorm: training needs more than one value per channel, got input of shape "
            f"{tuple(x.shape)}"
        )


def _missing(state: object, train: object) -> None:
    if state is None:
        raise FnnError(
            "BatchNorm: needs its running statistics: call apply(params, x, state=state, train=True/False) "
            "with state = fnn.init_state(model, input_shape) (see docs/state.md)"
        )
    raise FnnError(
        "BatchNorm: say train=True (batch statistics; the running ones are updated) or "
        "train=False (the running statistics are used)"
    )


def _check_state(state: object, x: torch.Tensor) -> None:
    """Slow path: a clear error for a state that is not BatchNorm's."""
    if not isinstance(state, Mapping):
        raise TreeError(
            f"BatchNorm: expected state as a dict with {list(STATE_LEAVES)}, got {describe(state)}"
        )
    missing = [k for k in STATE_LEAVES if k not in state]
    extra = [k for k in state if k not in STATE_LEAVES]
    if missing or extra:
        raise TreeError(f"BatchNorm: state keys must be {list(STATE_LEAVES)}, got {list(state)}")
    for k in STATE_LEAVES[:2]:
        if not isinstance(state[k], torch.Tensor) or state[k].shape != x.shape[1:2]:
            raise ShapeError(
                f"BatchNorm: state[{k!r}] must be a tensor of shape {tuple(x.shape[1:2])}, got {describe(state[k])}"
            )
        if state[k].dtype is not x.dtype:
            raise FnnError(
                f"BatchNorm: state[{k!r}] has dtype {state[k].dtype} but the params have {x.dtype} "
                "(make the state with fnn.init_state(model, shape, dtype=...))"
            )
