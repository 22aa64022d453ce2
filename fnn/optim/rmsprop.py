"""RMSprop, as `torch.optim.RMSprop`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
    return _Rmsprop(
        name="rmsprop",
        lr=lr,
        alpha=alpha,
        eps=eps,
        weight_decay=weight_decay,
        momentum=momentum,
        centered=centered,
        maximize=maximize,
        mask=mask,
    ).optimizer()


@dataclass(frozen=True, kw_only=True, eq=False)
class _Rmsprop(FlatForm):
    """`rmsprop`'s hyperparameters and math (the rest: `FlatForm`)."""

    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False

    def _check(self) -> None:
        check_hyper("rmsprop", "alpha", self.alpha)
        check_hyper("rmsprop", "eps", self.eps)
        check_hyper("rmsprop", "momentum", self.momentum)

    @property
    def buffers(self) -> dict[str, float]:
        buffers = {"square_avg": 0.0}
        if self.momentum > 0:
            buffers["momentum_buffer"] = 0.0
        if self.centered:
            buffers["grad_avg"] = 0.0
        return buffers

    def _math(
        self, params: TensorList, grads: TensorList, state: Buffers, count: int, lr: float
    ) -> tuple[TensorList, Buffers]:
        alpha = self.alpha
        square_avg = torch._foreach_mul(state[0], scalar_for(alpha, grads))
        torch._foreach_addcmul_(square_avg, grads, grads, value=1 - alpha)
        new_state: list[TensorList] = [square_avg]
        if self.centered:
            grad_avg = torch._foreach_lerp(state[-1], grads, 1 - alpha)
            avg = torch._foreach_addcmul(square_avg, grad_avg, grad_avg, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avg)
        torch._foreach_add_(avg, self.eps)
        if self.momentum > 0:
            buf = torch._foreach_mul(state[1], scalar_for(self.momentum, grads))
            torch._foreach_addcdiv_(buf, grads, avg)
            new_state.append(buf)
            new_params = torch._foreach_add(params, buf, alpha=-lr)
        else:
            new_params = torch._foreach_addcdiv(params, grads, avg, value=-lr)
        if self.centered:
            new_state.append(grad_avg)
        return new_params, new_state
