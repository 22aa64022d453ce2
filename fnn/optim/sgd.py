"""Stochastic gradient descent with momentum, as `torch.optim.SGD`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core import PyTree
from ..errors import FnnError
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
    check_lr("sgd", lr)
    check_hyper("sgd", "momentum", momentum)
    check_hyper("sgd", "dampening", dampening)
    check_hyper("sgd", "weight_decay", weight_decay)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise FnnError("sgd: nesterov momentum requires momentum > 0 and dampening = 0")
    decay_indices = MaskResolver("sgd", mask)
    schedule, fixed_lr = (lr, 0.0) if callable(lr) else (None, float(lr))

    def sgd_step(
        params: PyTree,
        treedef: TreeDef,
        leaves: TensorList,
        g: TensorList,
        buffers: Sequence[TensorList],
        step: int,
    ) -> tuple[TensorList, Sequence[TensorList]]:
        eta = fixed_lr if schedule is None else learning_rate("sgd", schedule, step)
        if maximize:
            g = torch._foreach_neg(g)
        if weight_decay:
            g = add_weight_decay(g, leaves, weight_decay, decay_indices(params, treedef))
        if not momentum:
            return torch._foreach_add(leaves, g, alpha=-eta), []
        if step == 0:
            b = torch._foreach_mul(g, _scalar(1.0, g[0]))  # a copy of g (x · 1.0 is exact)
        else:
            b = torch._foreach_mul(buffers[0], _scalar(momentum, g[0]))
            if dampening:
                torch._foreach_add_(b, g, alpha=1.0 - dampening)
            else:  # the same sums (x + 1·y is x + y), without parsing an alpha
                torch._foreach_add_(b, g)
        g = torch._foreach_add(g, b, alpha=momentum) if nesterov else b
        return torch._foreach_add(leaves, g, alpha=-eta), [b]

    return build_optimizer("sgd", {"momentum_buffer": 0.0} if momentum else {}, sgd_step)


_SCALARS: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """`value` as a cached 0-d tensor: `_foreach_mul` by a tensor skips the slow
    Python-scalar path (half the time on CPU) with the same rounding. Never written to."""
    found = _SCALARS.get((value, like.dtype, like.device))
    if found is None:
        found = _SCALARS[(value, like.dtype, like.device)] = torch.tensor(
            value, dtype=like.dtype, device=like.device
        )
    return found
