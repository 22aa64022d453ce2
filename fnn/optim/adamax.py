"""Adamax, as `torch.optim.Adamax`."""

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

__all__ = ["adamax"]


def adamax(
    lr: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
    mask: Mask = None,
) -> Optimizer:
    """Adam with the infinity norm; `torch.optim.Adamax`'s rule:

        t ← t + 1,   g ← −∇ (maximize) or ∇,   g ← g + λ θ
        m ← β₁ m + (1 − β₁) g,   u ← max(β₂ u, |g| + ε)
        θ ← θ − η / (1 − β₁ᵗ) · m / u

    Args:
        lr: η, a number or a schedule (a function of the step count, 0 first).
        betas: (β₁, β₂), each in [0, 1).
        eps: ε, added to |g|.
        weight_decay: λ, L2 penalty added to the gradient.
        maximize: maximize the objective instead of minimizing it.
        mask: the leaves weight decay applies to (a tree of bools or a function
            of params, e.g. `fnn.optim.decay_mask`); all leaves by default.

    Returns:
        `Optimizer(init, update)`: `init(params)` gives the state, and
            `update(params, grads, state)`, with `grads` mirroring `params` (each leaf of its
            parameter's shape), gives `(params, state)`. The state is
            `{"step": int, "exp_avg": {name: tensor}, "exp_inf": {...}}`.

    Raises:
        FnnTypeError: a hyperparameter that is not a number (`lr`: nor a schedule).
        FnnError: a hyperparameter out of range.

    Example:
        >>> opt = fnn.optim.adamax(lr=0.1)
        >>> params = {"w": torch.zeros(2)}
        >>> params, state = opt.update(params, {"w": torch.tensor([1.0, -2.0])}, opt.init(params))
        >>> params["w"]
        tensor([-0.1000,  0.1000])
    """
    return _Adamax(
        name="adamax",
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
        mask=mask,
    ).optimizer()


@dataclass(frozen=True, kw_only=True, eq=False)
class _Adamax(Moments):
    """`adamax`'s hyperparameters and math (betas and eps: `Moments`; the rest: `FlatForm`)."""

    @property
    def buffers(self) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_inf": 0.0}

    def _math(
        self, params: TensorList, grads: TensorList, state: Buffers, count: int, lr: float
    ) -> tuple[TensorList, Buffers]:
        beta1, beta2 = float(self.betas[0]), float(self.betas[1])
        m = torch._foreach_lerp(state[0], grads, 1 - beta1)
        u = torch._foreach_mul(state[1], exact_scalar(beta2, grads))
        norm = torch._foreach_abs(grads)
        torch._foreach_add_(norm, self.eps)
        torch._foreach_maximum_(u, norm)
        step_size = (lr / (1 - beta1 ** (count + 1))) * -1
        return torch._foreach_addcdiv(params, m, u, step_size), [m, u]
