"""Adam and AdamW, as `torch.optim.Adam` and `torch.optim.AdamW`."""

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
    check_betas,
    check_hyper,
    check_lr,
    learning_rate,
    scale_leaves,
)

__all__ = ["adam", "adamw"]


def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    mask: Mask = None,
) -> Optimizer:
    """Adam with L2 weight decay added to the gradient; `torch.optim.Adam`'s rule:

        t ← t + 1,   g ← −∇ (maximize) or ∇,   g ← g + λ θ
        m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²,   v̂ ← max(v̂, v) (amsgrad)
        θ ← θ − η / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)      (√v̂ with amsgrad)

    Args:
        lr: η, a number or a schedule (a function of the step count, 0 first).
        betas: (β₁, β₂), each in [0, 1).
        eps: ε, added to the denominator.
        weight_decay: λ, L2 penalty added to the gradient.
        amsgrad: use the running maximum v̂ of v (AMSGrad).
        maximize: maximize the objective instead of minimizing it.
        mask: the leaves weight decay applies to (a tree of bools or a function
            of params, e.g. `fnn.optim.decay_mask`); all leaves by default.

    Returns:
        `Optimizer(init, update)`: `init(params)` gives the state, and
            `update(params, grads, state)`, with `grads` mirroring `params` (each leaf of its
            parameter's shape), gives `(params, state)`.
            The state is `{"step": int, "exp_avg": {name: tensor}, "exp_avg_sq": {...}}`, plus
            `"max_exp_avg_sq"` with amsgrad, each tensor of its parameter's shape.

    Raises:
        FnnTypeError: a hyperparameter that is not a number (`lr`: nor a schedule).
        FnnError: a hyperparameter out of range.

    Example:
        >>> opt = fnn.optim.adam(lr=0.1)
        >>> params = {"w": torch.zeros(2)}
        >>> state = opt.init(params)
        >>> params, state = opt.update(params, {"w": torch.tensor([1.0, -2.0])}, state)
        >>> params["w"], state["step"]
        (tensor([-0.1000,  0.1000]), 1)
    """
    return _adam("adam", lr, betas, eps, weight_decay, amsgrad, maximize, mask, decoupled=False)


def adamw(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    mask: Mask = None,
) -> Optimizer:
    """Adam with decoupled weight decay; `torch.optim.AdamW`'s rule:

        θ ← θ (1 − η λ),  then Adam's step without λ in the gradient.

    Args:
        lr: η, a number or a schedule (a function of the step count, 0 first).
        betas: (β₁, β₂), each in [0, 1).
        eps: ε, added to the denominator.
        weight_decay: λ, the decoupled weight decay.
        amsgrad: use the running maximum v̂ of v (AMSGrad).
        maximize: maximize the objective instead of minimizing it.
        mask: the leaves that decay (a tree of bools or a function of params;
            `fnn.optim.decay_mask` skips biases and norm parameters); all leaves by default.

    Returns:
        `Optimizer(init, update)` with `adam`'s state: `init(params)` gives the state, and
            `update(params, grads, state)`, with `grads` mirroring `params` (each leaf of its
            parameter's shape), gives `(params, state)`.

    Raises:
        FnnTypeError: a hyperparameter that is not a number (`lr`: nor a schedule).
        FnnError: a hyperparameter out of range.

    Example:
        >>> opt = fnn.optim.adamw(lr=0.1, weight_decay=0.5)
        >>> params = {"w": torch.ones(2)}
        >>> params, state = opt.update(params, {"w": torch.tensor([1.0, -1.0])}, opt.init(params))
        >>> params["w"]
        tensor([0.8500, 1.0500])
    """
    return _adam("adamw", lr, betas, eps, weight_decay, amsgrad, maximize, mask, decoupled=True)


def _adam(
    name: str,
    lr: LearningRate,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    mask: Mask,
    *,
    decoupled: bool,
) -> Optimizer:
    check_lr(name, lr)
    beta1, beta2 = check_betas(name, betas)
    check_hyper(name, "eps", eps)
    check_hyper(name, "weight_decay", weight_decay)
    decay_indices = MaskResolver(name, mask)

    def adam_step(
        params: PyTree,
        treedef: TreeDef,
        leaves: TensorList,
        g: TensorList,
        buffers: Sequence[TensorList],
        step: int,
    ) -> tuple[TensorList, Sequence[TensorList]]:
        eta = learning_rate(name, lr, step)
        t = step + 1
        if maximize:
            g = torch._foreach_neg(g)
        if weight_decay and decoupled:
            leaves = scale_leaves(leaves, 1 - eta * weight_decay, decay_indices(params, treedef))
        elif weight_decay:
            g = add_weight_decay(g, leaves, weight_decay, decay_indices(params, treedef))
        m = torch._foreach_lerp(buffers[0], g, 1 - beta1)
        v = torch._foreach_mul(buffers[1], beta2)
        torch._foreach_addcmul_(v, g, g, value=1 - beta2)
        new_buffers = [m, v]
        if amsgrad:
            new_buffers.append(torch._foreach_maximum(buffers[2], v))
        denom = torch._foreach_sqrt(new_buffers[-1])
        torch._foreach_div_(denom, (1 - beta2**t) ** 0.5)
        torch._foreach_add_(denom, eps)
        step_size = eta / (1 - beta1**t)
        return torch._foreach_addcdiv(leaves, m, denom, value=-step_size), new_buffers

    buffers = {"exp_avg": 0.0, "exp_avg_sq": 0.0, **({"max_exp_avg_sq": 0.0} if amsgrad else {})}
    return build_optimizer(name, buffers, adam_step)
