"""Losses: `loss(pred, target, reduction="mean") -> (value, vjp)` with `vjp(dvalue) -> dpred`.

Reductions are `torch.nn.functional`'s: `"mean"` (default), `"sum"` or `"none"`.
`dvalue` may be a Python number or a tensor of the value's shape;
`fnn.value_and_grad` passes `1.0`.

    >>> value, vjp = cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    >>> dlogits = vjp(1.0)            # softmax(logits) − one_hot(labels)
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from ._constants import scalar
from .core import VJP
from .errors import FnnError, FnnTypeError, ShapeError, describe
from .fastpath import BatchConstants, eager_kernel

__all__ = ["mse", "cross_entropy", "bce_with_logits"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_pred(name: str, pred: object, reduction: str) -> torch.Tensor:
    if reduction not in _REDUCTIONS:
        raise FnnError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
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
    if target.device != pred.device:
        raise FnnError(
            f"{name}: target is on {target.device} but the prediction is on {pred.device}"
        )
    if target.dtype != pred.dtype:
        raise FnnError(
            f"{name}: target dtype {target.dtype} does not match the prediction's dtype {pred.dtype}"
        )
    return target


_REDUCTION_ENUM = {"none": 0, "mean": 1, "sum": 2}  # aten's at::Reduction
_ONES: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
aten = torch.ops.aten


def _one(like: torch.Tensor) -> torch.Tensor:
    """A cached 0-d one of `like`'s dtype and device (never written to: aten's backward
    kernels only read it)."""
    one = _ONES.get((like.dtype, like.device))
    if one is None:
        one = _ONES[(like.dtype, like.device)] = torch.ones(
            (), dtype=like.dtype, device=like.device
        )
    return one


def _cotangent(name: str, dvalue: object, reduction: str, like: torch.Tensor) -> torch.Tensor:
    """`dvalue` as a tensor for aten's loss backward kernels (a cached 0-d one for 1.0)."""
    if isinstance(dvalue, torch.Tensor):
        if reduction != "none" and dvalue.ndim:
            raise ShapeError(
                f"{name} VJP: expected a scalar cotangent, got shape {tuple(dvalue.shape)}"
            )
        if reduction == "none" and dvalue.shape != (
            like.shape[:1] if name == "cross_entropy" else like.shape
        ):
            expected = tuple(like.shape[:1] if name == "cross_entropy" else like.shape)
            raise ShapeError(
                f"{name} VJP: expected a cotangent of the loss's shape {expected}, got {tuple(dvalue.shape)}"
            )
        return dvalue
    if isinstance(dvalue, bool) or not isinstance(dvalue, int | float) or reduction == "none":
        raise FnnTypeError(
            f"{name} VJP: expected a {'tensor' if reduction == 'none' else 'scalar'} "
            f"cotangent, got {describe(dvalue)}"
        )
    if dvalue == 1.0:
        return _one(like)
    return torch.full((), dvalue, dtype=like.dtype, device=like.device)


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
    flat = diff.view(-1)
    value = torch.dot(flat, flat)
    return value.div_(scalar(float(flat.numel()), value)) if mean else value


# L = mean((p − t)²)   ⇒   dp = dL · 2 (p − t) / n
def mse_backward(
    residuals: tuple[torch.Tensor, torch.Tensor | None, str], dvalue: float | torch.Tensor
) -> torch.Tensor:
    pred_or_diff, target, reduction = residuals
    if target is not None:  # reduction "none": residuals are (pred, target)
        dvalue = _cotangent("mse", dvalue, reduction, pred_or_diff)
        # torch.ops.aten has no type annotations: its ops return Any
        return aten.mse_loss_backward.default(dvalue, pred_or_diff, target, 0)  # type: ignore[no-any-return]
    scale = 2.0 / pred_or_diff.numel() if reduction == "mean" and pred_or_diff.numel() else 2.0
    if isinstance(dvalue, float | int) and not isinstance(dvalue, bool):
        return pred_or_diff.mul(scalar(dvalue * scale, pred_or_diff))
    return pred_or_diff.mul(_cotangent("mse", dvalue, reduction, pred_or_diff)).mul_(scale)


def mse_value_and_dpred(
    box: list[torch.Tensor],
    target: object,
    constants: BatchConstants | None = None,
    buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`mse(pred, target)`'s value and `vjp(1.0)` in one go for `fnn.fastpath`, `box = [pred]`
    (emptied, so `pred` dies early), `constants` the batch's (see `fnn.fastpath`) or `None`,
    `buffers` a workspace `(out, out.view(-1))` for `dpred` or `None`; `None` where the general
    path must decide (a target of another shape or dtype, no elements). The same kernels and
    constants as `mse` and `mse_backward`, so the same bits."""
    pred = box.pop()
    if (
        type(target) is not torch.Tensor
        or target.shape != pred.shape
        or target.dtype is not pred.dtype
    ):
        return None
    if buffers is None:
        diff = pred - target
        flat = diff.view(-1)
    else:
        diff, flat = buffers
        torch.sub(pred, target, out=diff)
    del pred
    if constants is None:
        n = diff.numel()
        if not n:
            return None
        key = (n, diff.dtype, diff.device)
        scales = _MEAN_SCALES.get(key)
        if scales is None:
            scales = _mean_scales(key, diff)
        n_scalar, two_over_n = scales
    else:
        n_scalar, two_over_n = constants[0], constants[1]
    value = torch.dot(flat, flat).div_(n_scalar)
    return value, diff.mul_(two_over_n)  # diff is ours: dp = 2 (p − t) / n in place


_MEAN_SCALES: dict[tuple[int, torch.dtype, torch.device], tuple[Any, Any]] = {}


def _mean_scales(key: tuple[int, torch.dtype, torch.device], like: torch.Tensor) -> tuple[Any, Any]:
    """`(n, 2 / n)` as `scalar`s, cached by `(n, dtype, device)`."""
    if len(_MEAN_SCALES) > 256:
        _MEAN_SCALES.clear()
    n = key[0]
    scales = _MEAN_SCALES[key] = (scalar(float(n), like), scalar(2.0 / n, like))
    return scales


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> tuple[torch.Tensor, VJP]:
    """Softmax cross-entropy against integer labels, as `torch.nn.functional.cross_entropy`.

    Stable through log-sum-exp: logits of ±1e4 give finite values and gradients.

    Args:
        logits: unnormalised scores of shape `(N, C)`, floating point.
        labels: int64 class indices of shape `(N,)`, each in `[0, C)`.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.

    Returns:
        `(value, vjp)`: `value` 0-d (`(N,)` with `"none"`); `vjp(dvalue)`, `dvalue` a number
            or a tensor of `value`'s shape, gives `dlogits` of shape `(N, C)`:
            `(softmax(logits) − one_hot(labels)) · dvalue / N` for the mean.

    Raises:
        FnnError: an unknown `reduction`, or a label out of range.
        FnnTypeError: `logits` not a floating-point tensor, or `labels` not int64.
        ShapeError: `logits` not `(N, C)`, or `labels` not `(N,)`.

    Example:
        >>> value, vjp = cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(value.item(), 4)    # log 4
        1.3863
        >>> vjp(1.0)
        tensor([[-0.3750,  0.1250,  0.1250,  0.1250],
                [ 0.1250,  0.1250,  0.1250, -0.3750]])
    """
    _check_pred("cross_entropy", logits, reduction)
    if logits.ndim != 2:
        raise ShapeError(
            f"cross_entropy: expected logits of shape (N, C), got {tuple(logits.shape)}"
        )
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        raise FnnTypeError(
            f"cross_entropy: expected integer labels (an int64 tensor of shape (N,)), got {describe(labels)}"
        )
    if labels.shape != logits.shape[:1]:
        raise ShapeError(
            f"cross_entropy: labels of shape {tuple(labels.shape)} do not match logits {tuple(logits.shape)}; "
            f"expected ({logits.shape[0]},)"
        )
    log_probs = torch.log_softmax(logits, 1)
    try:
        value, total_weight = aten.nll_loss_forward.default(
            log_probs, labels, None, _REDUCTION_ENUM[reduction], -100
        )
    except (RuntimeError, IndexError):
        if labels.device != logits.device:
            raise FnnError(
                f"cross_entropy: labels are on {labels.device} but the logits are on {logits.device}"
            ) from None
        raise FnnError(
            f"cross_entropy: labels must be class indices in [0, {logits.shape[1]}) on {logits.device}"
        ) from None
    return value, VJP(cross_entropy_backward, (log_probs, labels, reduction, total_weight))


# L = mean(−log softmax(z)[y])   ⇒   dz = dL · (softmax(z) − one_hot(y)) / n
def cross_entropy_backward(
    residuals: tuple[torch.Tensor, torch.Tensor, str, torch.Tensor], dvalue: float | torch.Tensor
) -> torch.Tensor:
    log_probs, labels, reduction, total_weight = residuals
    dvalue = _cotangent("cross_entropy", dvalue, reduction, log_probs)
    return _dlogits(dvalue, log_probs, labels, _REDUCTION_ENUM[reduction], total_weight)


def _dlogits(
    dvalue: torch.Tensor,
    log_probs: torch.Tensor,
    labels: torch.Tensor,
    reduction: int,
    total_weight: torch.Tensor,
) -> torch.Tensor:
    dlog_probs = aten.nll_loss_backward.default(
        dvalue, log_probs, labels, None, reduction, -100, total_weight
    )
    return aten._log_softmax_backward_data.default(dlog_probs, log_probs, 1, log_probs.dtype)  # type: ignore[no-any-return]


def _cross_entropy_kernel(
    nll_loss_forward: Any,
    nll_loss_backward: Any,
    log_softmax_backward: Any,
    box: list[torch.Tensor],
    labels: Any,
    constants: BatchConstants | None = None,
    buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`cross_entropy(logits, labels)`'s value and `vjp(1.0)` in one go for `fnn.fastpath`,
    with the given aten kernels: `box = [logits]` (emptied, so the logits die early),
    `constants` the batch's (see `fnn.fastpath`) or `None`, `buffers[0]` where the gradient
    goes if given; `None` where the general path must decide (labels of another dtype). The
    same kernels as `cross_entropy` and its VJP, so the same bits."""
    logits = box.pop()
    if labels.dtype is not torch.int64:
        return None  # (nll_loss itself rejects labels of the wrong shape, and non-tensors)
    log_probs = torch.log_softmax(logits, 1)
    del logits
    one = _one(log_probs) if constants is None else constants[2]
    value, total_weight = nll_loss_forward(log_probs, labels, None, 1, -100)
    dlog_probs = nll_loss_backward(one, log_probs, labels, None, 1, -100, total_weight)
    if buffers is None:
        return value, log_softmax_backward(dlog_probs, log_probs, 1, log_probs.dtype)
    out = buffers[0]
    return value, log_softmax_backward(dlog_probs, log_probs, 1, log_probs.dtype, out=out)


cross_entropy_value_and_dlogits = functools.partial(
    _cross_entropy_kernel,
    aten.nll_loss_forward.default,
    aten.nll_loss_backward.default,
    aten._log_softmax_backward_data.default,
)
"""The fast-path kernel with aten's `OpOverload`s, the variant `torch.compile` traces."""

cross_entropy_value_and_dlogits_eager = functools.partial(
    _cross_entropy_kernel,
    eager_kernel(aten.nll_loss_forward.default),
    eager_kernel(aten.nll_loss_backward.default),
    torch._log_softmax_backward_data,  # the same kernel behind a faster binding than `_op`
)
"""The eager fast-path kernel: the same kernels through their C++ entry points
(`fnn.fastpath.eager_kernel`), about 1 µs less a call."""


def bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> tuple[torch.Tensor, VJP]:
    """Binary cross-entropy on logits, as `torch.nn.functional.binary_cross_entropy_with_logits`.

    Stable for large logits.

    Args:
        logits: unnormalised scores of any shape `(...)`, floating point.
        targets: probabilities in [0, 1] of `logits`' shape, dtype and device.
        reduction: `"mean"` (default), `"sum"` or `"none"`, as in `torch.nn.functional`.

    Returns:
        `(value, vjp)`: `value` 0-d (`(...)`, `logits`' shape, with `"none"`); `vjp(dvalue)`,
            `dvalue` a number or a tensor of `value`'s shape, gives `dlogits` of `logits`'
            shape: `(σ(logits) − targets) · dvalue / n` for the mean.

    Raises:
        FnnError: an unknown `reduction`, or targets of another dtype or device.
        FnnTypeError: `logits` or `targets` is not a floating-point tensor.
        ShapeError: `targets` has another shape than `logits`.

    Example:
        >>> value, vjp = bce_with_logits(torch.zeros(3), torch.ones(3))
        >>> round(value.item(), 4)    # log 2
        0.6931
        >>> vjp(1.0)
        tensor([-0.1667, -0.1667, -0.1667])
    """
    _check_pred("bce_with_logits", logits, reduction)
    _check_target_like("bce_with_logits", logits, targets)
    value = F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)
    return value, VJP(bce_with_logits_backward, (logits, targets, reduction))


# L = mean(−t log σ(z) − (1 − t) log(1 − σ(z)))   ⇒   dz = dL · (σ(z) − t) / n
def bce_with_logits_backward(
    residuals: tuple[torch.Tensor, torch.Tensor, str], dvalue: float | torch.Tensor
) -> torch.Tensor:
    logits, targets, reduction = residuals
    dvalue = _cotangent("bce_with_logits", dvalue, reduction, logits)
    grad = torch.sigmoid(logits).sub_(targets)
    return grad.mul_(dvalue.div(logits.numel()) if reduction == "mean" else dvalue)
