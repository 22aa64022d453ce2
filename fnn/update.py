"""`update`: one plain gradient-descent step over a params tree, pure."""

from __future__ import annotations

import torch

from ._dicts import check_devices, pair
from ._no_grad import without_grad
from .core import PyTree
from .errors import FnnTypeError
from .optim.base import check_lr, explain_lr_overflow

__all__ = ["update"]


def update(params: PyTree, grads: PyTree, lr: float = 1e-3) -> PyTree:
    """One plain gradient-descent step, `params − lr · grads`, leaf by leaf; pure.

    The grads are paired with the params by key at every call (structure, shapes and
    dtypes are checked; the grads' dict order does not matter).

    Args:
        params: a pytree of tensors.
        grads: a pytree mirroring `params`, each leaf of its parameter's shape, dtype and
            device (what `value_and_grad` gives).
        lr: the learning rate, a number ≥ 0.

    Returns:
        New params mirroring `params`, each leaf of its shape; `params` and `grads` are not
            changed.

    Raises:
        FnnTypeError: `lr` is not a number (as in every optimizer), or a leaf that is not a
            tensor.
        FnnError: `lr` is negative or NaN or does not fit the params' dtype, or a gradient
            of another dtype or device.
        TreeError: `grads` does not match the params tree (naming the first difference).

    Example:
        >>> fnn.update({"w": torch.ones(2)}, {"w": torch.ones(2)}, lr=0.5)
        {'w': tensor([0.5000, 0.5000])}
    """
    if type(lr) is not float or not lr >= 0:
        if callable(lr):  # a schedule needs a step count: optimizers keep one
            raise FnnTypeError(
                f"update: lr must be a number (use an optimizer for a schedule), got {lr!r}"
            )
        check_lr("update", lr)
    paired = pair(params, grads, "update")
    if not paired.params:
        return paired.rebuild([])
    try:
        # params that require grad must not build a graph
        new = without_grad(torch._foreach_add, paired.params, paired.grads, alpha=-lr)
    except RuntimeError:  # a gradient on another device, or an lr too large: say which
        check_devices(params, grads, "update")
        explain_lr_overflow("update", lr, paired.params)
        raise
    return paired.rebuild(new)
