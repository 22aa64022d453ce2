"""Stochastic gradient descent with momentum, as `torch.optim.SGD`."""

from __future__ import annotations

import torch

from .. import tree
from ..core import PyTree
from ..errors import FnnError
from ..update import flat_pair
from .base import LearningRate, Optimizer, check_hyper, check_lr, learning_rate

__all__ = ["sgd"]


def sgd(
    lr: LearningRate = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> Optimizer:
    """SGD with optional momentum, Nesterov and weight decay; `torch.optim.SGD`'s rule:

        g ← ∇ + λ θ
        b ← g (first step),  b ← μ b + (1 − τ) g (after)
        g ← g + μ b (nesterov)   or   g ← b
        θ ← θ − η g

    `lr` (η) may be a schedule: a function of the step count. The state is
    `{"step": int, "momentum_buffer": tree of tensors or None}`.

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

    def init(params: PyTree) -> PyTree:
        buffers = tree.map(torch.zeros_like, params) if momentum else None
        return {"step": 0, "momentum_buffer": buffers}

    def update(params: PyTree, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]:
        leaves, g, treedef = flat_pair(params, grads, "sgd")
        step = state["step"]
        eta = learning_rate("sgd", lr, step)
        if maximize:
            g = torch._foreach_neg(g)
        if weight_decay:
            g = torch._foreach_add(g, leaves, alpha=weight_decay)
        buffers = state["momentum_buffer"]
        if momentum:
            if step == 0:
                buffers = [gi.clone() for gi in g]
            else:
                buffers = torch._foreach_mul(tree.leaves(buffers), momentum)
                torch._foreach_add_(buffers, g, alpha=1.0 - dampening)
            g = torch._foreach_add(g, buffers, alpha=momentum) if nesterov else buffers
            buffers = tree.unflatten(treedef, buffers)
        new_leaves = torch._foreach_add(leaves, g, alpha=-eta) if leaves else []
        return tree.unflatten(treedef, new_leaves), {"step": step + 1, "momentum_buffer": buffers}

    return Optimizer(init, update)
