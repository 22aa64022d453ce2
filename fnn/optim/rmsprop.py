"""RMSprop, as `torch.optim.RMSprop`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core import PyTree
from ..tree import TreeDef
from .base import (
    LearningRate,
    Mask,
    MaskResolver,
    Optimizer,
    TensorList,
    add_weight_decay,
    build_optimizer,
    check_hyper,
    check_lr,
    learning_rate,
)

__all__ = ["rmsprop"]


def rmsprop(
    lr: LearningRate = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
    mask: Mask = None,
) -> Optimizer:
    """RMSprop with optional momentum and centering; `torch.optim.RMSprop`'s rule:

        g ← −∇ (maximize) or ∇,   g ← g + λ θ,   v ← α v + (1 − α) g²
        ḡ ← α ḡ + (1 − α) g,   d ← √(v − ḡ²) + ε    (centered)   else  d ← √v + ε
        b ← μ b + g / d,  θ ← θ − η b    (momentum > 0)   else  θ ← θ − η g / d

    Args:
        lr: η, a number or a schedule (a function of the step count, 0 first).
        alpha: α, smoothing constant of the squared-gradient average.
        eps: ε, added to the denominator.
        weight_decay: λ, L2 penalty added to the gradient.
        momentum: μ, the momentum factor (0: none).
        centered: divide by the estimated variance of the gradient instead of its
            second moment.
        maximize: maximize the objective instead of minimizing it.
        mask: the leaves weight decay applies to (a tree of bools or a function
            of params, e.g. `fnn.optim.decay_mask`); all leaves by default.

    Returns:
        `Optimizer(init, update)`: `init(params)` gives the state, and
            `update(params, grads, state)`, with `grads` mirroring `params` (each leaf of its
            parameter's shape), gives `(params, state)`.
            The state is `{"step": int, "square_avg": {name: tensor}}`, plus
            `"momentum_buffer"` when momentum > 0 and `"grad_avg"` when centered, each tensor
            of its parameter's shape.

    Raises:
        FnnTypeError: a hyperparameter that is not a number (`lr`: nor a schedule).
        FnnError: a hyperparameter out of range.

    Example:
        >>> opt = fnn.optim.rmsprop(lr=0.01, alpha=0.9)
        >>> params = {"w": torch.zeros(2)}
        >>> params, state = opt.update(params, {"w": torch.tensor([1.0, -1.0])}, opt.init(params))
        >>> params["w"]
        tensor([-0.0316,  0.0316])
    """
    check_lr("rmsprop", lr)
    check_hyper("rmsprop", "alpha", alpha)
    check_hyper("rmsprop", "eps", eps)
    check_hyper("rmsprop", "weight_decay", weight_decay)
    check_hyper("rmsprop", "momentum", momentum)
    decay_indices = MaskResolver("rmsprop", mask)

    def rmsprop_step(
        params: PyTree,
        treedef: TreeDef,
        leaves: TensorList,
        g: TensorList,
        buffers: Sequence[TensorList],
        step: int,
    ) -> tuple[TensorList, Sequence[TensorList]]:
        eta = learning_rate("rmsprop", lr, step)
        if maximize:
            g = torch._foreach_neg(g)
        if weight_decay:
            g = add_weight_decay(g, leaves, weight_decay, decay_indices(params, treedef))
        square_avg = torch._foreach_mul(buffers[0], alpha)
        torch._foreach_addcmul_(square_avg, g, g, value=1 - alpha)
        new_buffers = [square_avg]
        if centered:
            grad_avg = torch._foreach_lerp(buffers[-1], g, 1 - alpha)
            avg = torch._foreach_addcmul(square_avg, grad_avg, grad_avg, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avg)
        torch._foreach_add_(avg, eps)
        if momentum > 0:
            buf = torch._foreach_mul(buffers[1], momentum)
            torch._foreach_addcdiv_(buf, g, avg)
            new_buffers.append(buf)
            new_leaves = torch._foreach_add(leaves, buf, alpha=-eta)
        else:
            new_leaves = torch._foreach_addcdiv(leaves, g, avg, value=-eta)
        if centered:
            new_buffers.append(grad_avg)
        return new_leaves, new_buffers

    buffers = {"square_avg": 0.0}
    if momentum > 0:
        buffers["momentum_buffer"] = 0.0
    if centered:
        buffers["grad_avg"] = 0.0
    return build_optimizer("rmsprop", buffers, rmsprop_step)
