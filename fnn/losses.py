"""Losses: `loss(pred, target, reduction="mean", ...) -> (value, vjp)` with `vjp(dvalue) -> dpred`.

Names, keywords, defaults and meanings are `torch.nn.functional`'s (without `_loss`).
Reductions are torch's: `"mean"` (default), `"sum"` or `"none"` (and `"batchmean"` for
`kl_div`). `dvalue` may be a Python number or a tensor of the value's shape;
`fnn.value_and_grad` passes `1.0`.

    >>> value, vjp = cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    >>> dlogits = vjp(1.0)            # softmax(logits) − one_hot(labels)

Sections: the checks every loss shares; regression losses (`mse`, `l1`, `smooth_l1`,
`huber`); classification losses (`cross_entropy`, `nll`, `multi_margin`,
`bce_with_logits`); `kl_div`. Each loss has its module-level backward right below it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ._constants import scalar
from ._devices import device_key, same_device
from .core import VJP, backward
from .errors import FnnError, FnnTypeError, ShapeError, describe

__all__ = [
    "mse",
    "l1",
    "smooth_l1",
    "huber",
    "cross_entropy",
    "nll",
    "multi_margin",
    "bce_with_logits",
    "kl_div",
    "mse_backward",
    "l1_backward",
    "smooth_l1_backward",
    "huber_backward",
    "cross_entropy_backward",
    "nll_backward",
    "multi_margin_backward",
    "bce_with_logits_backward",
    "kl_div_backward",
]

_REDUCTIONS = ("mean", "sum", "none")
_REDUCTION_ENUM = {"none": 0, "mean": 1, "sum": 2}  # aten's at::Reduction
# A cached 0-d one per dtype and device (a finite set of keys, so it stays small). It cannot
# change a result: `_one` hands it only to aten's backward kernels, which read it, never write.
_ONES: dict[tuple[torch.dtype, torch.device | str], torch.Tensor] = {}
aten = torch.ops.aten
Shape = tuple[int, ...]


# ---------------------------------------------------------------------------- shared checks


def _check_pred(
    name: str, pred: object, reduction: object, reductions: tuple[str, ...] = _REDUCTIONS
) -> torch.Tensor:
    if not isinstance(reduction, str) or reduction not in reductions:
        raise FnnError(f"{name}: reduction must be one of {reductions}, got {reduction!r}")
    if not isinstance(pred, torch.Tensor) or not pred.is_floating_point():
        raise FnnTypeError(
            f"{name}: expected a floating-point prediction tensor, got {describe(pred)}"
        )
    return pred


def _check_target_like(name: str, pred: torch.Tensor, target: object) -> torch.Tensor:
    if not isinstance(target, torch.Tensor) or not target.is_floating_point():
        raise FnnTypeError(
            f"{name}: expected a floating-point target tensor, got {describe(target)}"
        )
    if target.shape != pred.shape:
        raise ShapeError(
            f"{name}: target shape {tuple(target.shape)} does not match prediction shape {tuple(pred.shape)}"
        )
    if not same_device(target, pred):
        raise FnnError(
            f"{name}: target is on {target.device} but the prediction is on {pred.device}"
        )
    if target.dtype != pred.dtype:
        raise FnnError(
            f"{name}: target dtype {target.dtype} does not match the prediction's dtype {pred.dtype}"
        )
    return target


def _check_number(name: str, keyword: str, value: object, low: float, low_open: bool) -> float:
    """`value` as a float, refusing non-numbers, NaN and values below `low` (or at it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FnnTypeError(f"{name}: {keyword} must be a number, got {describe(value)}")
    if not (value > low if low_open else value >= low):  # also refuses NaN
        bound = f"> {low}" if low_open else f">= {low}"
        raise FnnError(f"{name}: {keyword} must be {bound}, got {value!r}")
    return float(value)


def _check_weight(
    name: str, keyword: str, weight: object, pred: torch.Tensor, shape: Shape | None
) -> torch.Tensor | None:
    """A `weight=` tensor of `pred`'s dtype and device, of `shape` (`None`: broadcastable to
    `pred`'s shape), or `None`."""
    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise FnnTypeError(
            f"{name}: {keyword} must be a floating-point tensor or None, got {describe(weight)}"
        )
    if shape is not None and weight.shape != shape:
        raise ShapeError(
            f"{name}: {keyword} must have shape {shape} (one per class), got {tuple(weight.shape)}"
        )
    if shape is None and not _broadcasts_to(tuple(weight.shape), tuple(pred.shape)):
        raise ShapeError(
            f"{name}: {keyword} of shape {tuple(weight.shape)} does not broadcast to the "
            f"logits' shape {tuple(pred.shape)}"
        )
    if not same_device(weight, pred):
        raise FnnError(f"{name}: {keyword} is on {weight.device} but the input is on {pred.device}")
    if weight.dtype != pred.dtype:
        raise FnnError(
            f"{name}: {keyword} dtype {weight.dtype} does not match the input's dtype {pred.dtype}"
        )
    return weight


def _broadcasts_to(shape: Shape, target: Shape) -> bool:
    return len(shape) <= len(target) and all(
        a in (1, b) for a, b in zip(reversed(shape), reversed(target), strict=False)
    )


def _run(
    name: str, like: torch.Tensor, kernel: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """`kernel(*args)`, turning torch's "not implemented for <dtype>" into an FnnTypeError that
    says so; every other torch error is re-raised as it is (the checks above caught the
    user's mistakes)."""
    try:
        return kernel(*args, **kwargs)
    except (RuntimeError, NotImplementedError) as error:
        if "not implemented for" not in str(error):
            raise
        cause = str(error).splitlines()[0]
        raise FnnTypeError(
            f"{name}: torch has no kernel for dtype {like.dtype} on {like.device} ({cause}); "
            "use float32 or float64"
        ) from None


def _one(like: torch.Tensor) -> torch.Tensor:
    """A cached 0-d one of `like`'s dtype and device (never written to: aten's backward
    kernels only read it)."""
    key = (like.dtype, device_key(like))
    one = _ONES.get(key)
    if one is None:
        one = _ONES[key] = torch.ones((), dtype=like.dtype, device=like.device)
    return one


def _cotangent(
    name: str, dvalue: object, reduction: str, like: torch.Tensor, shape: Shape | None = None
) -> torch.Tensor:
    """`dvalue` as a tensor: 0-d for `"mean"`/`"sum"`/`"batchmean"` (a cached 0-d one for
    1.0), the value's `shape` (default `like`'s) for `"none"`."""
    if isinstance(dvalue, torch.Tensor):
        expected = tuple(like.shape) if shape is None else shape
        if reduction != "none" and dvalue.ndim:
            raise ShapeError(
                f"{name} VJP: expected a scalar cotangent, got shape {tuple(dvalue.shape)}"
            )
        if reduction == "none" and tuple(dvalue.shape) != expected:
            raise ShapeError(
                f"{name} VJP: expected a cotangent of the loss's shape {expected}, got {tuple(dvalue.shape)}"
            )
        if not dvalue.is_floating_point():
            raise FnnTypeError(
                f"{name} VJP: expected a floating-point cotangent, got {describe(dvalue)}"
            )
        # another float dtype (autocast's float32 loss of a bfloat16 prediction): cast, as
        # autograd casts a gradient back through the cast that made it
        return dvalue if dvalue.dtype == like.dtype else dvalue.to(like.dtype)
    if isinstance(dvalue, bool) or not isinstance(dvalue, (int, float)) or reduction == "none":
        raise FnnTypeError(
            f"{name} VJP: expected a {'tensor' if reduction == 'none' else 'scalar'} "
            f"cotangent, got {describe(dvalue)}"
        )
    if dvalue == 1.0:
        return _one(like)
    return torch.full((), dvalue, dtype=like.dtype, device=like.device)


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    """torch's reductions of elementwise losses (the mean of nothing is NaN, as in torch)."""
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


# ---------------------------------------------------------------------------- regression


def mse(
    pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> tuple[torch.Tensor, VJP]:
    """Mean squared error `mean((pred − target)²)`, as `torch.nn.functional.mse_loss`.

    Args:
        pred: predictions of any shape `(...)`, floating point.
        target: targets of `pred`'s shape, dtype and device.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.

    Returns:
        `(value, vjp)`: `value` 0-d (`(...)`, `pred`'s shape, with `"none"`); `vjp(dvalue)`,
            `dvalue` a number or a tensor of `value`'s shape, gives `dpred` of `pred`'s shape.

    Raises:
        FnnError: an unknown `reduction`, or a target of another dtype or device.
        FnnTypeError: `pred` or `target` is not a floating-point tensor.
        ShapeError: `target` has another shape than `pred`.

    Example:
        >>> value, vjp = mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        >>> value, vjp(1.0)
        (tensor(2.5000), tensor([1., 2.]))
    """
    _check_pred("mse", pred, reduction)
    _check_target_like("mse", pred, target)
    if reduction == "none":
        return F.mse_loss(pred, target, reduction="none"), VJP(
            mse_backward, (pred, target, reduction)
        )
    diff = pred - target
    return _sum_of_squares(diff, reduction == "mean"), VJP(mse_backward, (diff, None, reduction))


def _sum_of_squares(diff: torch.Tensor, mean: bool) -> torch.Tensor:
    # One BLAS dot product: on small batches it is 2-3x cheaper than F.mse_loss, and dividing
    # by a cached 0-d tensor rounds as dividing by n does, without wrapping n at every call.
    flat = diff.reshape(-1)  # a view unless diff kept a non-contiguous input's layout
    value = torch.dot(flat, flat)
    return value.div_(scalar(float(flat.numel()), value)) if mean else value


@backward
def mse_backward(
    residuals: tuple[torch.Tensor, torch.Tensor | None, str], dvalue: float | torch.Tensor
) -> torch.Tensor:
    """L = mean((p − t)²)   ⇒   dp = dL · 2 (p − t) / n"""
    pred_or_diff, target, reduction = residuals
    if target is not None:  # reduction "none": residuals are (pred, target)
        dvalue = _cotangent("mse", dvalue, reduction, pred_or_diff)
        # torch.ops.aten has no type annotations: its ops return Any
        return aten.mse_loss_backward.default(dvalue, pred_or_diff, target, 0)  # type: ignore[no-any-return]
    scale = 2.0 / pred_or_diff.numel() if reduction == "mean" and pred_or_diff.numel() else 2.0
    if isinstance(dvalue, (float, int)) and not isinstance(dvalue, bool):
        return pred_or_diff.mul(scalar(dvalue * scale, pred_or_diff))
    return pred_or_diff.mul(_cotangent("mse", dvalue, reduction, pred_or_diff)).mul_(scale)


def l1(
    pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> tuple[torch.Tensor, VJP]:
    """Mean absolute error `mean(|pred − target|)`, as `torch.nn.functional.l1_loss`.

    Args:
        pred: predictions of any shape `(...)`, floating point.
        target: targets of `pred`'s shape, dtype and device.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.

    Returns:
        `(value, vjp)`: `value` 0-d (`(...)`, `pred`'s shape, with `"none"`); `vjp(dvalue)`,
            `dvalue` a number or a tensor of `value`'s shape, gives `dpred` of `pred`'s shape:
            `sign(pred − target) · dvalue / n` for the mean (0 where they are equal).

    Raises:
        FnnError: an unknown `reduction`, or a target of another dtype or device.
        FnnTypeError: `pred` or `target` is not a floating-point tensor.
        ShapeError: `target` has another shape than `pred`.

    Example:
        >>> value, vjp = fnn.losses.l1(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0]))
        >>> value, vjp(1.0)
        (tensor(1.5000), tensor([ 0.5000, -0.5000]))
    """
    _check_pred("l1", pred, reduction)
    _check_target_like("l1", pred, target)
    value = _run("l1", pred, F.l1_loss, pred, target, reduction=reduction)
    return value, VJP(l1_backward, (pred, target, reduction))


@backward
def l1_backward(
    residuals: tuple[torch.Tensor, torch.Tensor, str], dvalue: float | torch.Tensor
) -> torch.Tensor:
    """L = mean(|p − t|)   ⇒   dp = dL · sign(p − t) / n"""
    pred, target, reduction = residuals
    grad = _cotangent("l1", dvalue, reduction, pred)
    if reduction == "mean":
        grad = grad / pred.numel() if pred.numel() else grad
    return torch.sign(pred - target).mul_(grad)


def smooth_l1(
    pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean", beta: float = 1.0
) -> tuple[torch.Tensor, VJP]:
    """Smooth L1 loss, as `torch.nn.functional.smooth_l1_loss`: with `d = |pred − target|`,
    `0.5 d² / beta` where `d < beta`, else `d − 0.5 beta` (`beta = 0`: the L1 loss).

    Args:
        pred: predictions of any shape `(...)`, floating point.
        target: targets of `pred`'s shape, dtype and device.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.
        beta: where the loss turns from quadratic to linear, `>= 0`.

    Returns:
        `(value, vjp)`: `value` 0-d (`(...)`, `pred`'s shape, with `"none"`); `vjp(dvalue)`,
            `dvalue` a number or a tensor of `value`'s shape, gives `dpred` of `pred`'s shape:
            `clamp((pred − target) / beta, −1, 1) · dvalue / n` for the mean.

    Raises:
        FnnError: an unknown `reduction`, a negative or NaN `beta`, or a target of another
            dtype or device.
        FnnTypeError: `pred` or `target` is not a floating-point tensor, or `beta` is not a
            number.
        ShapeError: `target` has another shape than `pred`.

    Example:
        >>> value, vjp = fnn.losses.smooth_l1(torch.tensor([0.5, 3.0]), torch.zeros(2))
        >>> value, vjp(1.0)
        (tensor(1.3125), tensor([0.2500, 0.5000]))
    """
    _check_pred("smooth_l1", pred, reduction)
    _check_target_like("smooth_l1", pred, target)
    beta = _check_number("smooth_l1", "beta", beta, 0.0, low_open=False)
    value = _run("smooth_l1", pred, F.smooth_l1_loss, pred, target, reduction=reduction, beta=beta)
    return value, VJP(smooth_l1_backward, (pred, target, reduction, beta))


@backward
def smooth_l1_backward(
    residuals: tuple[torch.Tensor, torch.Tensor, str, float], dvalue: float | torch.Tensor
) -> torch.Tensor:
    """
    L = mean(½ d² / β if |d| < β else |d| − ½ β),  d = p − t   ⇒   dp = dL · clamp(d / β, −1, 1) / n
    """
    pred, target, reduction, beta = residuals
    if beta == 0.0:  # torch's smooth_l1_loss is the L1 loss then
        return l1_backward.function((pred, target, reduction), dvalue)  # type: ignore[no-any-return]
    grad = _cotangent("smooth_l1", dvalue, reduction, pred)
    if not pred.numel():  # no elements: nothing reaches the kernel
        return torch.zeros_like(pred)
    return aten.smooth_l1_loss_backward.default(  # type: ignore[no-any-return]
        grad, pred, target, _REDUCTION_ENUM[reduction], beta
    )


def huber(
    pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean", delta: float = 1.0
) -> tuple[torch.Tensor, VJP]:
    """Huber loss, as `torch.nn.functional.huber_loss`: with `d = |pred − target|`,
    `0.5 d²` where `d < delta`, else `delta (d − 0.5 delta)` (`delta` times `smooth_l1`'s).

    Args:
        pred: predictions of any shape `(...)`, floating point.
        target: targets of `pred`'s shape, dtype and device.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.
        delta: where the loss turns from quadratic to linear, `> 0`.

    Returns:
        `(value, vjp)`: `value` 0-d (`(...)`, `pred`'s shape, with `"none"`); `vjp(dvalue)`,
            `dvalue` a number or a tensor of `value`'s shape, gives `dpred` of `pred`'s shape:
            `clamp(pred − target, −delta, delta) · dvalue / n` for the mean.

    Raises:
        FnnError: an unknown `reduction`, a `delta` not `> 0`, or a target of another dtype
            or device.
        FnnTypeError: `pred` or `target` is not a floating-point tensor, or `delta` is not a
            number.
        ShapeError: `target` has another shape than `pred`.

    Example:
        >>> value, vjp = fnn.losses.huber(torch.tensor([0.5, 3.0]), torch.zeros(2), delta=2.0)
        >>> value, vjp(1.0)
        (tensor(2.0625), tensor([0.2500, 1.0000]))
    """
    _check_pred("huber", pred, reduction)
    _check_target_like("huber", pred, target)
    delta = _check_number("huber", "delta", delta, 0.0, low_open=True)
    value = _run("huber", pred, F.huber_loss, pred, target, reduction=reduction, delta=delta)
    return value, VJP(huber_backward, (pred, target, reduction, delta))


@backward
def huber_backward(
    residuals: tuple[torch.Tensor, torch.Tensor, str, float], dvalue: float | torch.Tensor
) -> torch.Tensor:
    """L = mean(½ d² if |d| < δ else δ (|d| − ½ δ)),  d = p − t   ⇒   dp = dL · clamp(d, −δ, δ) / n"""
    pred, target, reduction, delta = residuals
    grad = _cotangent("huber", dvalue, reduction, pred)
    if not pred.numel():  # no elements: nothing reaches the kernel
        return torch.zeros_like(pred)
    return aten.huber_loss_backward.default(  # type: ignore[no-any-return]
        grad, pred, target, _REDUCTION_ENUM[reduction], delta
    )


# ---------------------------------------------------------------------------- classification
# Class-index losses run on a (M, C) layout: (N, C) as it is, (N, C, d1, ...) with the
# classes moved last and the rest flattened (M = N·d1·…), unbatched (C,) as (1, C).


def _classes_last(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 2:
        return x
    if x.ndim == 1:
        return x.unsqueeze(0)
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _classes_back(d: torch.Tensor, shape: Shape) -> torch.Tensor:
    """The inverse of `_classes_last`: `d` (M, C) back to `shape`."""
    if len(shape) == 2:
        return d
    if len(shape) == 1:
        return d.reshape(shape)
    return d.reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1).contiguous()


def _n_classes(name: str, what: str, pred: torch.Tensor) -> int:
    if pred.ndim == 0:
        raise ShapeError(
            f"{name}: expected {what} of shape (N, C), (N, C, d1, ...) or unbatched (C,), got ()"
        )
    return pred.shape[0 if pred.ndim == 1 else 1]


def _check_labels(
    name: str,
    what: str,
    pred: torch.Tensor,
    target: object,
    ignore_index: int | None,
    probabilities: bool = False,
    kernel_checks: bool = False,
) -> torch.Tensor:
    """int64 class indices of `pred`'s shape less its class axis, each in [0, C) or equal to
    `ignore_index`, on `pred`'s device (the range left to the kernel on the CPU where
    `kernel_checks`: the caller then names a bad label if the kernel raises)."""
    n_classes = _n_classes(name, what, pred)
    expected = tuple(pred.shape[:1] + pred.shape[2:]) if pred.ndim >= 2 else ()
    if not isinstance(target, torch.Tensor) or target.dtype != torch.int64:
        also = (
            f" or class probabilities of the {what}' shape {tuple(pred.shape)}"
            if probabilities
            else ""
        )
        raise FnnTypeError(
            f"{name}: expected integer labels (an int64 tensor of shape {expected}){also}, "
            f"got {describe(target)}"
        )
    if tuple(target.shape) != expected:
        raise ShapeError(
            f"{name}: labels of shape {tuple(target.shape)} do not match {what} "
            f"{tuple(pred.shape)}; expected {expected} ({what} (N, C), (N, C, d1, ...) or "
            "unbatched (C,) take labels (N,), (N, d1, ...) or ())"
        )
    if not same_device(target, pred):
        raise FnnError(f"{name}: labels are on {target.device} but the {what} are on {pred.device}")
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise FnnTypeError(f"{name}: ignore_index must be an int, got {describe(ignore_index)}")
    # Checked here, not left to a kernel's luck: a label is valid by the rule. The CPU kernels
    # of nll_loss check every label themselves (`kernel_checks`): there the check runs only
    # after the kernel raised, to name the bad label (see `_nll_forward`). Elsewhere (a CUDA
    # kernel asserts on the device) it runs first. Data-dependent, so skipped while
    # torch.compile traces; meta tensors hold no values.
    if not (kernel_checks and pred.is_cpu):
        _check_label_range(name, pred, target, n_classes, ignore_index)
    return target


def _check_label_range(
    name: str, pred: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int | None
) -> None:
    """An FnnError naming a label outside [0, n_classes) that is not `ignore_index`."""
    if target.numel() and pred.device.type != "meta" and not torch.compiler.is_compiling():
        low, high = torch.aminmax(target)  # one pass; the mask only when something is outside
        bad = None
        if int(low) < 0 or int(high) >= n_classes:
            bad = (target < 0) | (target >= n_classes)
            if ignore_index is not None:
                bad &= target != ignore_index
        if bad is not None and bad.any():
            ignored = "" if ignore_index is None else f" or ignore_index ({ignore_index})"
            raise FnnError(
                f"{name}: labels must be class indices in [0, {n_classes}){ignored}, "
                f"got {int(target[bad][0])}"
            )


def _check_smoothing(name: str, label_smoothing: object) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise FnnTypeError(
            f"{name}: label_smoothing must be a number, got {describe(label_smoothing)}"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise FnnError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return float(label_smoothing)


def _nll_forward(
    name: str,
    log_probs: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's `nll_loss` of `log_probs` (M, C) and `labels` (M,), with `cross_entropy`'s
    label smoothing: `(value, total_weight)`, value (M,) with `"none"`, else 0-d;
    `total_weight` is Σ weight[label] over the labels not ignored (their count unweighted)."""
    try:
        value, total_weight = _run(
            name,
            log_probs,
            aten.nll_loss_forward.default,
            log_probs,
            labels,
            weight,
            _REDUCTION_ENUM[reduction],
            ignore_index,
        )
    except (IndexError, RuntimeError):  # the CPU kernel refuses a label out of range: name it
        _check_label_range(name, log_probs, labels, log_probs.shape[-1], ignore_index)
        raise
    if smoothing:  # torch's: (1 − ε) nll + ε/C · Σ_c −w_c log p_c, ignored rows left out
        smooth = -(log_probs * weight).sum(1) if weight is not None else -log_probs.sum(1)
        smooth = smooth.masked_fill_(labels == ignore_index, 0.0)
        if reduction == "sum":
            smooth = smooth.sum()
        elif reduction == "mean":
            smooth = smooth.sum() / total_weight
        value = value * (1.0 - smoothing) + smooth * (smoothing / log_probs.shape[1])
    return value, total_weight


# Lᵢ = −(1 − ε) w[yᵢ] lp[i, yᵢ] − ε/C Σ_c w_c lp[i, c]  (mean: ÷ W = Σᵢ w[yᵢ])   ⇒   dlp[i] = dLᵢ · (−(1 − ε) w[yᵢ] one_hot(yᵢ) − ε/C w) / W
def _nll_backward(
    name: str,
    dvalue: float | torch.Tensor,
    log_probs: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    smoothing: float,
    total_weight: torch.Tensor,
    value_shape: Shape,
) -> torch.Tensor:
    """`dlog_probs` (M, C) of `_nll_forward`'s value for the cotangent `dvalue`."""
    grad = _cotangent(name, dvalue, reduction, log_probs, value_shape)
    if not log_probs.numel():  # no elements: nothing reaches the kernel
        return torch.zeros_like(log_probs)
    if reduction == "none":
        grad = grad.reshape(-1)
    dlog_probs = aten.nll_loss_backward.default(
        grad * (1.0 - smoothing) if smoothing else grad,
        log_probs,
        labels,
        weight,
        _REDUCTION_ENUM[reduction],
        ignore_index,
        total_weight,
    )
    if smoothing:
        coef = grad * (smoothing / log_probs.shape[1])
        if reduction == "mean":
            coef = coef / total_weight
        # where, not a product: an all-ignored batch has coef = 0/0, and its gradient is 0
        coef = torch.where(labels == ignore_index, 0.0, coef.expand(labels.shape)).unsqueeze(1)
        dlog_probs = dlog_probs - (coef if weight is None else coef * weight)
    return dlog_probs  # type: ignore[no-any-return]


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, VJP]:
    """Softmax cross-entropy, as `torch.nn.functional.cross_entropy`.

    Targets are class indices (int64) or class probabilities (floating point, the logits'
    shape). Stable through log-sum-exp: logits of ±1e4 give finite values and gradients.
    With class indices, `"mean"` is the weighted mean over the labels not ignored:
    `Σ lossᵢ / Σ weight[labelᵢ]` (NaN when every label is ignored, with zero gradients, as
    in torch); with probabilities it divides by the number of samples `N·d1·…`.

    Args:
        logits: unnormalised scores `(N, C)`, `(N, C, d1, ...)` or unbatched `(C,)`,
            floating point.
        target: int64 class indices of shape `(N,)`, `(N, d1, ...)` or `()`, each in
            `[0, C)` or equal to `ignore_index`; or class probabilities of `logits`' shape,
            dtype and device.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.
        weight: a rescaling weight per class, shape `(C,)`, or `None`.
        ignore_index: a label value that contributes neither loss nor gradient (class
            indices only).
        label_smoothing: ε in [0, 1]: the target becomes `(1 − ε) target + ε / C`.

    Returns:
        `(value, vjp)`: `value` 0-d (`(N,)`, `(N, d1, ...)` or `()` with `"none"`);
            `vjp(dvalue)`, `dvalue` a number or a tensor of `value`'s shape, gives
            `dlogits` of `logits`' shape: `(softmax(logits) − one_hot(target)) · dvalue / N`
            for the unweighted mean.

    Raises:
        FnnError: an unknown `reduction`, a label out of range, a `label_smoothing` outside
            [0, 1], or a target or weight on another device or of another dtype.
        FnnTypeError: `logits` not a floating-point tensor, `target` neither int64 labels
            nor probabilities of the logits' shape, or no kernel for the logits' dtype.
        ShapeError: `logits` 0-d, `target` of the wrong shape, or `weight` not `(C,)`.

    Example:
        >>> value, vjp = fnn.losses.cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(value.item(), 4)    # log 4
        1.3863
        >>> vjp(1.0)
        tensor([[-0.3750,  0.1250,  0.1250,  0.1250],
                [ 0.1250,  0.1250,  0.1250, -0.3750]])
        >>> value, _ = fnn.losses.cross_entropy(torch.zeros(2, 4), torch.tensor([0, -100]))
        >>> round(value.item(), 4)    # the second label is ignored
        1.3863
    """
    name = "cross_entropy"
    _check_pred(name, logits, reduction)
    n_classes = _n_classes(name, "logits", logits)
    weight = _check_weight(name, "weight", weight, logits, (n_classes,))
    smoothing = _check_smoothing(name, label_smoothing)
    shape = tuple(logits.shape)
    if isinstance(target, torch.Tensor) and target.is_floating_point() and target.shape == shape:
        _check_target_like(name, logits, target)
        log_probs = _run(name, logits, torch.log_softmax, _classes_last(logits), 1)
        probs = _classes_last(target)
        if smoothing:
            probs = probs * (1.0 - smoothing) + smoothing / n_classes
        weighted = probs if weight is None else probs * weight
        product = log_probs * probs if weight is None else log_probs * probs * weight
        if reduction == "none":
            value = -product.sum(1).reshape(shape[:1] + shape[2:] if len(shape) > 1 else ())
        elif reduction == "sum" or not product.numel():  # the mean of nothing: NaN
            value = -product.sum() if reduction == "sum" else product.sum().fill_(float("nan"))
        else:
            value = -product.sum() / log_probs.shape[0]
        value_shape = tuple(value.shape)
        kept = (log_probs, weighted, None, ignore_index, reduction, smoothing, None, value_shape)
        return value, VJP(cross_entropy_backward, (*kept, shape))
    labels = _check_labels(
        name, "logits", logits, target, ignore_index, probabilities=True, kernel_checks=True
    )
    log_probs = _run(name, logits, torch.log_softmax, _classes_last(logits), 1)
    flat = labels.reshape(-1)
    value, total_weight = _nll_forward(
        name, log_probs, flat, weight, ignore_index, reduction, smoothing
    )
    value_shape = tuple(labels.shape)
    if reduction == "none":
        value = value.reshape(value_shape)
    residuals = (log_probs, flat, weight, ignore_index, reduction, smoothing, total_weight)
    return value, VJP(cross_entropy_backward, (*residuals, value_shape, shape))


@backward
def cross_entropy_backward(
    residuals: tuple[Any, ...], dvalue: float | torch.Tensor
) -> torch.Tensor:
    """
    L = −Σ_c t_c log softmax(z)_c (t = one_hot(y) or probabilities)   ⇒   dz = dL · (softmax(z) Σ_c t_c − t)
    """
    log_probs, targets, weight, ignore_index, reduction, smoothing, total_weight = residuals[:7]
    value_shape, shape = residuals[7:]
    if targets.is_floating_point():  # probabilities, already weighted and smoothed
        grad = _cotangent("cross_entropy", dvalue, reduction, log_probs, value_shape)
        if not log_probs.numel():
            return torch.zeros(shape, dtype=log_probs.dtype, device=log_probs.device)
        if reduction == "none":
            grad = grad.reshape(-1, 1)
        elif reduction == "mean":
            grad = grad / log_probs.shape[0]
        dlog_probs = -(targets * grad)
    else:
        dlog_probs = _nll_backward(
            "cross_entropy",
            dvalue,
            log_probs,
            targets,
            weight,
            ignore_index,
            reduction,
            smoothing,
            total_weight,
            value_shape,
        )
        if not log_probs.numel():
            return torch.zeros(shape, dtype=log_probs.dtype, device=log_probs.device)
    dlogits = torch._log_softmax_backward_data(dlog_probs, log_probs, 1, log_probs.dtype)
    return _classes_back(dlogits, shape)


def nll(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, VJP]:
    """Negative log-likelihood of log-probabilities, as `torch.nn.functional.nll_loss`:
    `−weight[t] · input[t]` per sample; `"mean"` divides by `Σ weight[t]` over the labels
    not ignored (NaN when every label is ignored, with zero gradients, as in torch).

    Args:
        input: log-probabilities `(N, C)`, `(N, C, d1, ...)` or unbatched `(C,)`, floating
            point (e.g. `LogSoftmax(dim=1)`'s output).
        target: int64 class indices of shape `(N,)`, `(N, d1, ...)` or `()`, each in
            `[0, C)` or equal to `ignore_index`.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.
        weight: a rescaling weight per class, shape `(C,)`, or `None`.
        ignore_index: a label value that contributes neither loss nor gradient.

    Returns:
        `(value, vjp)`: `value` 0-d (`(N,)`, `(N, d1, ...)` or `()` with `"none"`);
            `vjp(dvalue)`, `dvalue` a number or a tensor of `value`'s shape, gives `dinput`
            of `input`'s shape: `−weight[t] · one_hot(t) · dvalue / Σ weight[t]` for the mean.

    Raises:
        FnnError: an unknown `reduction`, a label out of range, or labels or weight on
            another device or of another dtype.
        FnnTypeError: `input` not a floating-point tensor, or `target` not int64.
        ShapeError: `input` 0-d, `target` of the wrong shape, or `weight` not `(C,)`.

    Example:
        >>> log_probs = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
        >>> value, vjp = fnn.losses.nll(log_probs, torch.tensor([0, 1]))
        >>> round(value.item(), 4)    # −(log 0.5 + log 0.75) / 2
        0.4904
        >>> vjp(1.0)
        tensor([[-0.5000,  0.0000],
                [ 0.0000, -0.5000]])
    """
    name = "nll"
    _check_pred(name, input, reduction)
    n_classes = _n_classes(name, "input", input)
    weight = _check_weight(name, "weight", weight, input, (n_classes,))
    labels = _check_labels(name, "input", input, target, ignore_index, kernel_checks=True)
    log_probs, flat = _classes_last(input), labels.reshape(-1)
    value, total_weight = _nll_forward(name, log_probs, flat, weight, ignore_index, reduction, 0.0)
    value_shape = tuple(labels.shape)
    if reduction == "none":
        value = value.reshape(value_shape)
    residuals = (log_probs, flat, weight, ignore_index, reduction, total_weight, value_shape)
    return value, VJP(nll_backward, (*residuals, tuple(input.shape)))


@backward
def nll_backward(residuals: tuple[Any, ...], dvalue: float | torch.Tensor) -> torch.Tensor:
    """L = Σᵢ −w[tᵢ] xᵢ[tᵢ] / Σᵢ w[tᵢ]   ⇒   dxᵢ = −dL · w[tᵢ] one_hot(tᵢ) / Σᵢ w[tᵢ]"""
    log_probs, labels, weight, ignore_index, reduction, total_weight, value_shape, shape = residuals
    dlog_probs = _nll_backward(
        "nll",
        dvalue,
        log_probs,
        labels,
        weight,
        ignore_index,
        reduction,
        0.0,
        total_weight,
        value_shape,
    )
    return _classes_back(dlog_probs, shape)


def multi_margin(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    p: int = 1,
    margin: float = 1.0,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, VJP]:
    """The multi-class hinge loss (the SVM loss), as `torch.nn.functional.multi_margin_loss`:
    per sample `Σ_{j ≠ t} weight[t] · max(0, margin − x[t] + x[j])ᵖ / C`.

    Args:
        input: class scores `(N, C)` or unbatched `(C,)`, floating point.
        target: int64 class indices of shape `(N,)` (or `()`), each in `[0, C)`.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.
        p: 1 (hinge) or 2 (squared hinge).
        margin: the margin by which the true class should win.
        weight: a rescaling weight per class, shape `(C,)`, or `None`.

    Returns:
        `(value, vjp)`: `value` 0-d (`(N,)` or `()` with `"none"`); `vjp(dvalue)`, `dvalue`
            a number or a tensor of `value`'s shape, gives `dinput` of `input`'s shape. The
            mean of an empty batch is NaN (torch's own kernel returns garbage there).

    Raises:
        FnnError: an unknown `reduction`, `p` not 1 or 2, a label out of range, or labels or
            weight on another device or of another dtype.
        FnnTypeError: `input` not a floating-point tensor, `target` not int64, or `margin`
            not a number.
        ShapeError: `input` not `(N, C)` or `(C,)`, `target` of the wrong shape, or
            `weight` not `(C,)`.

    Example:
        >>> scores = torch.tensor([[3.0, 2.5, 0.0]])
        >>> value, vjp = fnn.losses.multi_margin(scores, torch.tensor([0]))
        >>> value, vjp(1.0)    # class 1 is within the margin of class 0
        (tensor(0.1667), tensor([[-0.3333,  0.3333,  0.0000]]))
    """
    name = "multi_margin"
    _check_pred(name, input, reduction)
    if input.ndim not in (1, 2):
        raise ShapeError(
            f"{name}: expected input of shape (N, C) or (C,), got {tuple(input.shape)}"
        )
    if isinstance(p, bool) or p not in (1, 2):
        raise FnnError(f"{name}: p must be 1 or 2, got {p!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise FnnTypeError(f"{name}: margin must be a number, got {describe(margin)}")
    weight = _check_weight(name, "weight", weight, input, (input.shape[-1],))
    labels = _check_labels(name, "input", input, target, None)
    if labels.numel() == 0:  # torch's kernel reads uninitialised memory on an empty batch
        value = _reduce(input.new_zeros(labels.shape), reduction)
    else:
        value = _run(
            name,
            input,
            F.multi_margin_loss,
            input,
            labels,
            p=p,
            margin=margin,
            weight=weight,
            reduction=reduction,
        )
    return value, VJP(multi_margin_backward, (input, labels, reduction, int(p), margin, weight))


@backward
def multi_margin_backward(residuals: tuple[Any, ...], dvalue: float | torch.Tensor) -> torch.Tensor:
    """
    Lᵢ = Σ_{j≠t} w[t] hⱼᵖ / C,  hⱼ = max(0, m − x[t] + x[j])   ⇒   dx[j] = dLᵢ · w[t] p hⱼᵖ⁻¹ / C,  dx[t] = −Σ_{j≠t} dx[j]
    """
    input, labels, reduction, p, margin, weight = residuals
    grad = _cotangent("multi_margin", dvalue, reduction, input, tuple(labels.shape))
    if not input.numel():  # no elements: nothing to compute
        return torch.zeros_like(input)
    # Plain ops, not aten's multi_margin_loss_backward: that kernel has no meta (fake
    # tensor) implementation, so torch.compile could not trace it.
    x = input.unsqueeze(0) if input.ndim == 1 else input  # (N, C)
    t = labels.reshape(-1, 1)  # (N, 1)
    h = x - x.gather(1, t) + margin  # (N, C)
    active = (h > 0).scatter_(1, t, False)
    scale = 1.0 / x.shape[1] / (x.shape[0] if reduction == "mean" else 1)
    dx: torch.Tensor = (h * (2 * scale) if p == 2 else torch.full_like(h, scale)) * active
    if weight is not None:
        dx = dx * weight[t]
    dx = dx * (grad.reshape(-1, 1) if reduction == "none" else grad)
    dx = dx.scatter(1, t, -dx.sum(1, keepdim=True))
    return dx.reshape(input.shape)


def bce_with_logits(
    logits: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
    pos_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, VJP]:
    """Binary cross-entropy on logits, as `torch.nn.functional.binary_cross_entropy_with_logits`:
    `−weight · (pos_weight · t · log σ(z) + (1 − t) · log(1 − σ(z)))` per element.

    Stable for large logits.

    Args:
        logits: unnormalised scores of any shape `(...)`, floating point.
        target: probabilities in [0, 1] of `logits`' shape, dtype and device.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.
        weight: a rescaling weight broadcastable to `logits`' shape, or `None`.
        pos_weight: a weight of the positive term broadcastable to `logits`' shape (one per
            class on the last axis, `(C,)`, as in torch), or `None`.

    Returns:
        `(value, vjp)`: `value` 0-d (`(...)`, `logits`' shape, with `"none"`); `vjp(dvalue)`,
            `dvalue` a number or a tensor of `value`'s shape, gives `dlogits` of `logits`'
            shape: `(σ(logits) − target) · dvalue / n` for the unweighted mean.

    Raises:
        FnnError: an unknown `reduction`, or a target or weight of another dtype or device.
        FnnTypeError: `logits`, `target` or a weight is not a floating-point tensor.
        ShapeError: `target` has another shape than `logits`, or a weight does not broadcast
            to it.

    Example:
        >>> value, vjp = fnn.losses.bce_with_logits(torch.zeros(3), torch.ones(3))
        >>> round(value.item(), 4)    # log 2
        0.6931
        >>> vjp(1.0)
        tensor([-0.1667, -0.1667, -0.1667])
    """
    name = "bce_with_logits"
    _check_pred(name, logits, reduction)
    _check_target_like(name, logits, target)
    weight = _check_weight(name, "weight", weight, logits, None)
    pos_weight = _check_weight(name, "pos_weight", pos_weight, logits, None)
    value = _run(
        name,
        logits,
        F.binary_cross_entropy_with_logits,
        logits,
        target,
        weight,
        reduction=reduction,
        pos_weight=pos_weight,
    )
    return value, VJP(bce_with_logits_backward, (logits, target, weight, pos_weight, reduction))


@backward
def bce_with_logits_backward(
    residuals: tuple[Any, ...], dvalue: float | torch.Tensor
) -> torch.Tensor:
    """
    L = mean(−w (q t log σ(z) + (1 − t) log(1 − σ(z))))   ⇒   dz = dL · w ((q t + 1 − t) σ(z) − q t) / n
    """
    logits, target, weight, pos_weight, reduction = residuals
    grad = _cotangent("bce_with_logits", dvalue, reduction, logits)
    if pos_weight is None:  # torch's order of operations, for the same bits
        dlogits = torch.sigmoid(logits).sub_(target)
    else:
        weighted = pos_weight * target
        dlogits = (weighted + 1).sub_(target).mul_(torch.sigmoid(logits)).sub_(weighted)
    dlogits.mul_(grad)
    if weight is not None:
        dlogits.mul_(weight)
    if reduction == "mean" and logits.numel():
        dlogits.div_(logits.numel())
    return dlogits


# ---------------------------------------------------------------------------- divergences


_KL_REDUCTIONS = ("mean", "sum", "none", "batchmean")


def kl_div(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    log_target: bool = False,
) -> tuple[torch.Tensor, VJP]:
    """Kullback-Leibler divergence, as `torch.nn.functional.kl_div`: per element
    `target · (log target − input)`, `input` being log-probabilities.

    `"batchmean"` divides the sum by the batch size `input.shape[0]` (the true KL
    divergence per sample); `"mean"`, torch's default, divides by the number of elements.

    Args:
        input: log-probabilities of any shape `(N, ...)`, floating point.
        target: probabilities (log-probabilities with `log_target=True`) of `input`'s
            shape, dtype and device.
        reduction: `"mean"` (default), `"batchmean"`, `"sum"` or `"none"`.
        log_target: whether `target` is given as log-probabilities.

    Returns:
        `(value, vjp)`: `value` 0-d (`input`'s shape with `"none"`); `vjp(dvalue)`, `dvalue`
            a number or a tensor of `value`'s shape, gives `dinput` of `input`'s shape:
            `−target · dvalue / N` for `"batchmean"` (`−exp(target)` with `log_target`).

    Raises:
        FnnError: an unknown `reduction`, or a target of another dtype or device.
        FnnTypeError: `input` or `target` not a floating-point tensor, or `log_target` not a
            bool.
        ShapeError: `target` has another shape than `input`.

    Example:
        >>> log_q = torch.log(torch.tensor([[0.5, 0.5]]))
        >>> value, vjp = fnn.losses.kl_div(log_q, torch.tensor([[0.25, 0.75]]), "batchmean")
        >>> round(value.item(), 4), vjp(1.0)
        (0.1308, tensor([[-0.2500, -0.7500]]))
    """
    name = "kl_div"
    _check_pred(name, input, reduction, _KL_REDUCTIONS)
    _check_target_like(name, input, target)
    if not isinstance(log_target, bool):
        raise FnnTypeError(f"{name}: log_target must be a bool, got {describe(log_target)}")
    enum = _REDUCTION_ENUM["sum" if reduction == "batchmean" else reduction]
    value = _run(name, input, torch.kl_div, input, target, enum, log_target=log_target)
    if reduction == "batchmean" and input.ndim:
        value = value / input.shape[0]
    return value, VJP(kl_div_backward, (input, target, reduction, log_target))


@backward
def kl_div_backward(
    residuals: tuple[torch.Tensor, torch.Tensor, str, bool], dvalue: float | torch.Tensor
) -> torch.Tensor:
    """L = Σ t (log t − x) / N   ⇒   dx = −dL · t / N   (t = exp(target) with log_target)"""
    input, target, reduction, log_target = residuals
    grad = _cotangent("kl_div", dvalue, reduction, input)
    if reduction == "mean" and input.numel():
        grad = grad / input.numel()
    elif reduction == "batchmean" and input.ndim and input.shape[0]:
        grad = grad / input.shape[0]
    return -(torch.exp(target) if log_target else target) * grad
