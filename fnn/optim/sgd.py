"""Stochastic gradient descent with momentum, as `torch.optim.SGD`."""

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
    scalar_for,
)

__all__ = ["sgd"]


def sgd(
    lr: LearningRate = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    *,
    mask: Mask = None,
) -> Optimizer:
    """SGD with optional momentum, Nesterov and weight decay; `torch.optim.SGD`'s rule:

        g ← −∇ (maximize) or ∇,   g ← g + λ θ
        b ← g (first step),  b ← μ b + (1 − τ) g (after)
        g ← g + μ b (nesterov)   or   g ← b
        θ ← θ − η g

    Args:
        lr: η, a number or a schedule (a function of the step count, 0 first).
        momentum: μ, the momentum factor (0: none).
        dampening: τ, dampening of the momentum.
        weight_decay: λ, L2 penalty added to the gradient.
        nesterov: use Nesterov momentum (needs `momentum > 0` and `dampening = 0`).
        maximize: maximize the objective instead of minimizing it.
        mask: the leaves weight decay applies to (a tree of bools or a function
            of params, e.g. `fnn.optim.decay_mask`); all leaves by default.

    Returns:
        `Optimizer(init, update)`: `init(params)` gives the state, and
            `update(params, grads, state)`, with `grads` mirroring `params` (each leaf of its
            parameter's shape), gives `(params, state)`.
            The state is `{"step": int}`, plus `"momentum_buffer": {name: tensor}` with
            momentum, each tensor of its parameter's shape.

    Raises:
        FnnTypeError: a hyperparameter that is not a number (`lr`: nor a schedule).
        FnnError: a hyperparameter out of range, or `nesterov` without momentum or with
            dampening.

    Example:
        >>> opt = fnn.optim.sgd(lr=0.1, momentum=0.9)
        >>> params = {"w": torch.ones(2)}
        >>> state = opt.init(params)
        >>> params, state = opt.update(params, {"w": torch.ones(2)}, state)
        >>> params["w"]
        tensor([0.9000, 0.9000])
    """
    return _Sgd(
        name="sgd",
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        maximize=maximize,
        mask=mask,
    ).optimizer()


@dataclass(frozen=True, kw_only=True, eq=False)
class _Sgd(FlatForm):
    """`sgd`'s hyperparameters and math (checks, lr, maximize, weight decay: `FlatForm`)."""

    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False

    def _check(self) -> None:
        check_hyper("sgd", "momentum", self.momentum)
        check_hyper("sgd", "dampening", self.dampening)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise FnnError("sgd: nesterov momentum requires momentum > 0 and dampening = 0")

    @property
    def buffers(self) -> dict[str, float]:
        return {"momentum_buffer": 0.0} if self.momentum else {}

    def _math(
        self, params: TensorList, grads: TensorList, state: Buffers, count: int, lr: float
    ) -> tuple[TensorList, Buffers]:
        momentum = self.momentum
        if not momentum:
            return torch._foreach_add(params, grads, alpha=-lr), []
        if count == 0:
            b = torch._foreach_mul(grads, 1.0)  # a copy of g (x · 1.0 is exact)
        else:
            b = torch._foreach_mul(state[0], scalar_for(momentum, grads))
            if self.dampening:
                torch._foreach_add_(b, grads, alpha=1.0 - self.dampening)
            else:  # the same sums (x + 1·y is x + y), without parsing an alpha
                torch._foreach_add_(b, grads)
        g = torch._foreach_add(grads, b, alpha=momentum) if self.nesterov else b
        return torch._foreach_add(params, g, alpha=-lr), [b]
