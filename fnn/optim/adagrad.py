"""Adagrad, as `torch.optim.Adagrad`."""

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

__all__ = ["adagrad"]


def adagrad(
    lr: LearningRate = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
    mask: Mask = None,
) -> Optimizer:
    """Adagrad; `torch.optim.Adagrad`'s rule:

        t ← t + 1,   g ← −∇ (maximize) or ∇,   g ← g + λ θ
        η̃ ← η / (1 + (t − 1) δ),   s ← s + g²,   θ ← θ − η̃ g / (√s + ε)

    Args:
        lr: η, a number or a schedule (a function of the step count, 0 first).
        lr_decay: δ, decay of the learning rate per step.
        weight_decay: λ, L2 penalty added to the gradient.
        initial_accumulator_value: s₀, the starting value of every element of `s`.
        eps: ε, added to the denominator.
        maximize: maximize the objective instead of minimizing it.
        mask: the leaves weight decay applies to (a tree of bools or a function
            of params, e.g. `fnn.optim.decay_mask`); all leaves by default.

    Returns:
        `Optimizer(init, update)`: `init(params)` gives the state, and
            `update(params, grads, state)`, with `grads` mirroring `params` (each leaf of its
            parameter's shape), gives `(params, state)`.
            The state is `{"step": int, "sum": {name: tensor}}`, each tensor of its
            parameter's shape.

    Raises:
        FnnTypeError: a hyperparameter that is not a number (`lr`: nor a schedule).
        FnnError: a hyperparameter out of range.

    Example:
        >>> opt = fnn.optim.adagrad(lr=0.5)
        >>> params = {"w": torch.zeros(2)}
        >>> params, state = opt.update(params, {"w": torch.tensor([2.0, -4.0])}, opt.init(params))
        >>> params["w"], state["sum"]["w"]
        (tensor([-0.5000,  0.5000]), tensor([ 4., 16.]))
    """
    check_lr("adagrad", lr)
    check_hyper("adagrad", "lr_decay", lr_decay)
    check_hyper("adagrad", "weight_decay", weight_decay)
    check_hyper("adagrad", "initial_accumulator_value", initial_accumulator_value)
    check_hyper("adagrad", "eps", eps)
    decay_indices = MaskResolver("adagrad", mask)

    def adagrad_step(
        params: PyTree,
        treedef: TreeDef,
        leaves: TensorList,
        g: TensorList,
        buffers: Sequence[TensorList],
        step: int,
    ) -> tuple[TensorList, Sequence[TensorList]]:
        eta = learning_rate("adagrad", lr, step)
        if maximize:
            g = torch._foreach_neg(g)
        if weight_decay:
            g = add_weight_decay(g, leaves, weight_decay, decay_indices(params, treedef))
        t = step + 1
        clr = eta / (1 + (t - 1) * lr_decay)
        total = torch._foreach_addcmul(buffers[0], g, g, value=1)
        std = torch._foreach_sqrt(total)
        torch._foreach_add_(std, eps)
        return torch._foreach_addcdiv(leaves, g, std, value=-clr), [total]

    return build_optimizer("adagrad", {"sum": initial_accumulator_value}, adagrad_step)
