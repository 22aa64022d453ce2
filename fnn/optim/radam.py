"""RAdam, as `torch.optim.RAdam`."""

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

__all__ = ["radam"]


def radam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    mask: Mask = None,
) -> Optimizer:
    """Rectified Adam; `torch.optim.RAdam`'s rule:

        t ← t + 1,   g ← −∇ (maximize) or ∇,   g ← g + λ θ  (or θ ← θ (1 − η λ) decoupled)
        m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
        ρ∞ = 2 / (1 − β₂) − 1,   ρₜ = ρ∞ − 2 t β₂ᵗ / (1 − β₂ᵗ)
        ρₜ > 5:  r = √((ρₜ − 4)(ρₜ − 2) ρ∞ / ((ρ∞ − 4)(ρ∞ − 2) ρₜ)),
                 θ ← θ − η r / (1 − β₁ᵗ) · m √(1 − β₂ᵗ) / (√v + ε)
        else:    θ ← θ − η / (1 − β₁ᵗ) · m

    Args:
        lr: η, a number or a schedule (a function of the step count, 0 first).
        betas: (β₁, β₂), each in [0, 1).
        eps: ε, added to the denominator.
        weight_decay: λ, L2 penalty (added to the gradient unless decoupled).
        decoupled_weight_decay: decay the weights directly, as AdamW.
        maximize: maximize the objective instead of minimizing it.
        mask: the leaves weight decay applies to (a tree of bools or a function
            of params, e.g. `fnn.optim.decay_mask`); all leaves by default.

    Returns:
        `Optimizer(init, update)`: `init(params)` gives the state, and
            `update(params, grads, state)`, with `grads` mirroring `params` (each leaf of its
            parameter's shape), gives `(params, state)`. The state is
            `{"step": int, "exp_avg": {name: tensor}, "exp_avg_sq": {...}}`.

    Raises:
        FnnTypeError: a hyperparameter that is not a number (`lr`: nor a schedule).
        FnnError: a hyperparameter out of range.

    Example:
        >>> opt = fnn.optim.radam(lr=0.1)
        >>> params = {"w": torch.zeros(2)}
        >>> params, state = opt.update(params, {"w": torch.tensor([1.0, -2.0])}, opt.init(params))
        >>> params["w"]
        tensor([-0.1000,  0.2000])
    """
    return _Radam(
        name="radam",
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        decoupled=decoupled_weight_decay,
        maximize=maximize,
        mask=mask,
    ).optimizer()


@dataclass(frozen=True, kw_only=True, eq=False)
class _Radam(Moments):
    """`radam`'s hyperparameters and math (betas and eps: `Moments`; the rest: `FlatForm`)."""

    @property
    def buffers(self) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _math(
        self, params: TensorList, grads: TensorList, state: Buffers, count: int, lr: float
    ) -> tuple[TensorList, Buffers]:
        beta1, beta2 = float(self.betas[0]), float(self.betas[1])
        t = count + 1
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * (beta2**t) / (1 - beta2**t)
        m = torch._foreach_lerp(state[0], grads, 1 - beta1)
        v = torch._foreach_mul(state[1], exact_scalar(beta2, grads))
        torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
        rect = (
            ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            if rho_t > 5
            else 0
        )
        unrectified = 0 if rect > 0 else 1.0
        bias_correction1 = 1 - beta1**t
        unrect_step_size = (lr * unrectified / bias_correction1) * -1
        bias_correction2 = ((1 - beta2**t) ** 0.5) * (lr * rect / bias_correction1) * -1
        # torch's expression: buffer = √(1 − β₂ᵗ) r η / (1 − β₁ᵗ) / (√v + ε) + unrectified step
        buffer = torch._foreach_sqrt(v)
        torch._foreach_add_(buffer, self.eps)
        torch._foreach_div_(buffer, exact_scalar(bias_correction2, grads))
        torch._foreach_reciprocal_(buffer)
        torch._foreach_add_(buffer, unrect_step_size)
        return torch._foreach_addcmul(params, m, buffer), [m, v]
