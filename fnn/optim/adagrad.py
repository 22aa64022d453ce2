"""Adagrad, as `torch.optim.Adagrad`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Buffers, FlatForm, LearningRate, Mask, Optimizer, TensorList, check_hyper

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
    return _Adagrad(
        name="adagrad",
        lr=lr,
        lr_decay=lr_decay,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
        eps=eps,
        maximize=maximize,
        mask=mask,
    ).optimizer()


@dataclass(frozen=True, kw_only=True, eq=False)
class _Adagrad(FlatForm):
    """`adagrad`'s hyperparameters and math (the rest: `FlatForm`)."""

    lr_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10

    def _check(self) -> None:
        check_hyper("adagrad", "lr_decay", self.lr_decay)
        check_hyper("adagrad", "initial_accumulator_value", self.initial_accumulator_value)
        check_hyper("adagrad", "eps", self.eps)

    @property
    def buffers(self) -> dict[str, float]:
        return {"sum": self.initial_accumulator_value}

    def _math(
        self, params: TensorList, grads: TensorList, state: Buffers, count: int, lr: float
    ) -> tuple[TensorList, Buffers]:
        clr = lr / (1 + count * self.lr_decay)
        total = torch._foreach_addcmul(state[0], grads, grads, value=1)
        std = torch._foreach_sqrt(total)
        torch._foreach_add_(std, self.eps)
        return torch._foreach_addcdiv(params, grads, std, value=-clr), [total]
