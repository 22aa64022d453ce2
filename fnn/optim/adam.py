"""Adam and AdamW, as `torch.optim.Adam` and `torch.optim.AdamW`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (
    Buffers,
    LearningRate,
    Mask,
    Moments,
    Optimizer,
    TensorList,
    exact_scalar,
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
    return _Adam(
        name=name,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        mask=mask,
        decoupled=decoupled,
    ).optimizer()


@dataclass(frozen=True, kw_only=True, eq=False)
class _Adam(Moments):
    """`adam`'s and `adamw`'s hyperparameters and math (betas and eps: `Moments`; the rest: `FlatForm`)."""

    amsgrad: bool = False

    @property
    def buffers(self) -> dict[str, float]:
        return {
            "exp_avg": 0.0,
            "exp_avg_sq": 0.0,
            **({"max_exp_avg_sq": 0.0} if self.amsgrad else {}),
        }

    def _math(
        self, params: TensorList, grads: TensorList, state: Buffers, count: int, lr: float
    ) -> tuple[TensorList, Buffers]:
        beta1, beta2 = float(self.betas[0]), float(self.betas[1])
        t = count + 1
        m = torch._foreach_lerp(state[0], grads, 1 - beta1)
        v = torch._foreach_mul(state[1], exact_scalar(beta2, grads))
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        new_state = [m, v]
        if self.amsgrad:
            new_state.append(torch._foreach_maximum(state[2], v))
        denom = torch._foreach_sqrt(new_state[-1])
        torch._foreach_div_(denom, exact_scalar((1 - beta2**t) ** 0.5, grads))
        torch._foreach_add_(denom, self.eps)
        step_size = lr / (1 - beta1**t)
        return torch._foreach_addcdiv(params, m, denom, value=-step_size), new_state
