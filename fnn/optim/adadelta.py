"""Adadelta, as `torch.optim.Adadelta`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FnnError
from .base import (
    Buffers,
    FlatForm,
    LearningRate,
    Mask,
    Optimizer,
    TensorList,
    check_hyper,
    exact_scalar,
)

__all__ = ["adadelta"]


def adadelta(
    lr: LearningRate = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
    mask: Mask = None,
) -> Optimizer:
    """Adadelta; `torch.optim.Adadelta`'s rule:

        g ← −∇ (maximize) or ∇,   g ← g + λ θ,   v ← ρ v + (1 − ρ) g²
        δ = √(u + ε) / √(v + ε) · g,   u ← ρ u + (1 − ρ) δ²,   θ ← θ − η δ

    Args:
        lr: η, a number or a schedule (a function of the step count, 0 first).
        rho: ρ in [0, 1], the decay of both running averages.
        eps: ε, added inside both square roots.
        weight_decay: λ, L2 penalty added to the gradient.
        maximize: maximize the objective instead of minimizing it.
        mask: the leaves weight decay applies to (a tree of bools or a function
            of params, e.g. `fnn.optim.decay_mask`); all leaves by default.

    Returns:
        `Optimizer(init, update)`: `init(params)` gives the state, and
            `update(params, grads, state)`, with `grads` mirroring `params` (each leaf of its
            parameter's shape), gives `(params, state)`. The state is
            `{"step": int, "square_avg": {name: tensor}, "acc_delta": {...}}`.

    Raises:
        FnnTypeError: a hyperparameter that is not a number (`lr`: nor a schedule).
        FnnError: a hyperparameter out of range.

    Example:
        >>> opt = fnn.optim.adadelta(lr=1.0, eps=1e-2)
        >>> params = {"w": torch.zeros(2)}
        >>> params, state = opt.update(params, {"w": torch.tensor([1.0, -1.0])}, opt.init(params))
        >>> params["w"]
        tensor([-0.3015,  0.3015])
    """
    return _Adadelta(
        name="adadelta",
        lr=lr,
        rho=rho,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
        mask=mask,
    ).optimizer()


@dataclass(frozen=True, kw_only=True, eq=False)
class _Adadelta(FlatForm):
    """`adadelta`'s hyperparameters and math (the rest: `FlatForm`)."""

    rho: float = 0.9
    eps: float = 1e-6

    def _check(self) -> None:
        check_hyper(self.name, "rho", self.rho)
        if self.rho > 1:
            raise FnnError(f"adadelta: rho must be in [0, 1], got {self.rho!r}")
        check_hyper(self.name, "eps", self.eps)

    @property
    def buffers(self) -> dict[str, float]:
        return {"square_avg": 0.0, "acc_delta": 0.0}

    def _math(
        self, params: TensorList, grads: TensorList, state: Buffers, count: int, lr: float
    ) -> tuple[TensorList, Buffers]:
        rho, eps = self.rho, self.eps
        v = torch._foreach_mul(state[0], exact_scalar(rho, grads))
        torch._foreach_addcmul_(v, grads, grads, value=1 - rho)
        std = torch._foreach_add(v, eps)
        torch._foreach_sqrt_(std)
        delta = torch._foreach_add(state[1], eps)
        torch._foreach_sqrt_(delta)
        torch._foreach_div_(delta, std)
        torch._foreach_mul_(delta, grads)
        u = torch._foreach_mul(state[1], exact_scalar(rho, grads))
        torch._foreach_addcmul_(u, delta, delta, value=1 - rho)
        return torch._foreach_add(params, delta, alpha=-lr), [v, u]
