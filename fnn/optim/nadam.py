"""NAdam, as `torch.optim.NAdam`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import (
    Buffers,
    LearningRate,
    Mask,
    Moments,
    Optimizer,
    TensorList,
    check_hyper,
    exact_scalar,
)

__all__ = ["nadam"]


def nadam(
    lr: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    mask: Mask = None,
) -> Optimizer:
    """Adam with Nesterov momentum; `torch.optim.NAdam`'s rule:

        t ← t + 1,   g ← −∇ (maximize) or ∇,   g ← g + λ θ  (or θ ← θ (1 − η λ) decoupled)
        μₜ = β₁ (1 − ½ · 0.96^(t ψ)),   Πₜ = Πₜ₋₁ μₜ
        m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²,   d = √v / √(1 − β₂ᵗ) + ε
        θ ← θ − η (1 − μₜ) / (1 − Πₜ) · g / d − η μₜ₊₁ / (1 − Πₜ μₜ₊₁) · m / d

    Args:
        lr: η, a number or a schedule (a function of the step count, 0 first).
        betas: (β₁, β₂), each in [0, 1).
        eps: ε, added to the denominator.
        weight_decay: λ, L2 penalty (added to the gradient unless decoupled).
        momentum_decay: ψ ≥ 0, the momentum decay.
        decoupled_weight_decay: decay the weights directly, as AdamW (NAdamW).
        maximize: maximize the objective instead of minimizing it.
        mask: the leaves weight decay applies to (a tree of bools or a function
            of params, e.g. `fnn.optim.decay_mask`); all leaves by default.

    Returns:
        `Optimizer(init, update)`: `init(params)` gives the state, and
            `update(params, grads, state)`, with `grads` mirroring `params` (each leaf of its
            parameter's shape), gives `(params, state)`. The state is `{"step": int,
            "mu_product": {name: 0-d tensor}, "exp_avg": {name: tensor}, "exp_avg_sq": {...}}`,
            as torch's: `mu_product` is Πₜ, a 0-d CPU tensor of torch's scalar dtype
            (float32, or float64 when that is torch's default dtype).

    Raises:
        FnnTypeError: a hyperparameter that is not a number (`lr`: nor a schedule).
        FnnError: a hyperparameter out of range.

    Example:
        >>> opt = fnn.optim.nadam(lr=0.1)
        >>> params = {"w": torch.zeros(2)}
        >>> params, state = opt.update(params, {"w": torch.tensor([1.0, -2.0])}, opt.init(params))
        >>> params["w"]
        tensor([-0.1056,  0.1056])
    """
    return _Nadam(
        name="nadam",
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        momentum_decay=momentum_decay,
        decoupled=decoupled_weight_decay,
        maximize=maximize,
        mask=mask,
    ).optimizer()


@dataclass(frozen=True, kw_only=True, eq=False)
class _Nadam(Moments):
    """`nadam`'s hyperparameters and math (betas and eps: `Moments`; the rest: `FlatForm`)."""

    momentum_decay: float = 4e-3

    scalar_buffers: ClassVar[tuple[str, ...]] = ("mu_product",)

    def _check(self) -> None:
        super()._check()
        check_hyper(self.name, "momentum_decay", self.momentum_decay)

    @property
    def buffers(self) -> dict[str, float]:
        return {"mu_product": 1.0, "exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _init_buffer(self, key: str, fill: float, p: torch.Tensor) -> torch.Tensor:
        if key == "mu_product":  # as torch: on the CPU, in torch's scalar dtype
            dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            return torch.tensor(fill, dtype=dtype)
        return torch.full_like(p, fill)

    def _math(
        self, params: TensorList, grads: TensorList, state: Buffers, count: int, lr: float
    ) -> tuple[TensorList, Buffers]:
        beta1, beta2 = float(self.betas[0]), float(self.betas[1])
        t = count + 1
        m = torch._foreach_lerp(state[1], grads, 1 - beta1)
        v = torch._foreach_mul(state[2], exact_scalar(beta2, grads))
        torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
        denom = torch._foreach_sqrt(v)
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * self.momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * self.momentum_decay)))
        mu_product = torch._foreach_mul(state[0], mu)
        torch._foreach_div_(denom, exact_scalar((1 - beta2**t) ** 0.5, grads))
        torch._foreach_add_(denom, self.eps)
        products = [p.item() for p in mu_product]
        step_grads = [(lr * (1.0 - mu) / (1.0 - p)) * -1 for p in products]
        step_avg = [(lr * mu_next / (1.0 - p * mu_next)) * -1 for p in products]
        new = torch._foreach_addcdiv(params, grads, denom, step_grads)
        torch._foreach_addcdiv_(new, m, denom, step_avg)
        return new, [mu_product, m, v]
