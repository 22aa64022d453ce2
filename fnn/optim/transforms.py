"""Gradient transformations (clipping, weight decay) and `chain`, which runs them
before an optimizer, optax-style.

    >>> opt = chain(clip_by_global_norm(1.0), fnn.optim.sgd(lr=0.1))
    >>> params = {"w": torch.zeros(2)}
    >>> params, state = opt.update(params, {"w": torch.tensor([3.0, 4.0])}, opt.init(params))
    >>> params["w"]
    tensor([-0.0600, -0.0800])
"""

from __future__ import annotations

from typing import Any

import torch

from .. import tree
from .._dicts import check_devices, pair
from ..core import PyTree
from ..errors import FnnError, FnnTypeError
from .base import (
    Mask,
    Optimizer,
    Transform,
    add_weight_decay,
    check_hyper,
    decay_indices,
    flat_mask,
)

__all__ = [
    "global_norm",
    "clip_grad_norm",
    "clip_by_global_norm",
    "add_decayed_weights",
    "decay_mask",
    "chain",
]


def _check_norm_type(name: str, norm_type: Any) -> float:
    check_hyper(name, "norm_type", norm_type)
    if norm_type == 0:
        raise FnnError(f"{name}: norm_type must be > 0 (or inf), got {norm_type!r}")
    return float(norm_type)


def _total_norm(leaves: list[torch.Tensor], norm_type: float) -> torch.Tensor:
    # torch.nn.utils.get_total_norm: the norm of the leaves' norms, as one 0-d tensor (no sync).
    if not leaves:
        return torch.tensor(0.0)
    norms = torch.stack(torch._foreach_norm(leaves, norm_type))
    # torch.linalg's functions have no type annotations: they return Any
    return torch.linalg.vector_norm(norms, norm_type)  # type: ignore[no-any-return]


def global_norm(grads: PyTree, norm_type: float = 2.0) -> torch.Tensor:
    """The norm of all leaves of `grads` taken together as one vector, a 0-d tensor.

    Equal to `torch.nn.utils.get_total_norm(leaves, norm_type)`.

    Args:
        grads: a pytree of tensors of any shapes.
        norm_type: the p of the p-norm, > 0 (`float("inf")` for the max norm).

    Returns:
        The norm, a 0-d tensor; `tensor(0.)` for an empty tree.

    Raises:
        FnnTypeError: `norm_type` is not a number.
        FnnError: `norm_type` is not > 0.

    Example:
        >>> fnn.optim.global_norm({"a": torch.tensor([3.0]), "b": {"c": torch.tensor([4.0])}})
        tensor(5.)
    """
    norm_type = _check_norm_type("global_norm", norm_type)
    return _total_norm(tree.leaves(grads), norm_type)


def clip_grad_norm(
    grads: PyTree, max_norm: float, norm_type: float = 2.0
) -> tuple[PyTree, torch.Tensor]:
    """Scale `grads` down so their global norm is at most `max_norm`, as `clip_grad_norm_`.

    Unlike `torch.nn.utils.clip_grad_norm_`, it is pure: `grads` is not changed. Every leaf
    is multiplied by torch's factor `min(max_norm / (norm + 1e-6), 1)`, with no device sync.
    A tree inside the ball of radius `max_norm − 1e-6` comes back bit for bit; clipping a
    clipped tree again changes it by less than 1e-6 relative.

    Args:
        grads: a pytree of tensors of any shapes.
        max_norm: the largest norm allowed, ≥ 0.
        norm_type: the p of the p-norm, > 0 (`float("inf")` for the max norm).

    Returns:
        `(clipped grads, norm before clipping)`: the clipped grads mirror `grads`, each leaf
            of its shape; the norm is a 0-d tensor.

    Raises:
        FnnTypeError: `max_norm` or `norm_type` is not a number.
        FnnError: `max_norm` < 0 or `norm_type` not > 0.

    Example:
        >>> grads, norm = fnn.optim.clip_grad_norm({"w": torch.tensor([3.0, 4.0])}, max_norm=1.0)
        >>> grads["w"], norm
        (tensor([0.6000, 0.8000]), tensor(5.))
    """
    check_hyper("clip_grad_norm", "max_norm", max_norm)
    norm_type = _check_norm_type("clip_grad_norm", norm_type)
    leaves, treedef = tree.flatten(grads)
    norm = _total_norm(leaves, norm_type)
    if not leaves:
        return grads, norm
    # the same expression as torch's, so the same bits: max_norm / t is t.reciprocal() * max_norm
    factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return tree.unflatten(treedef, torch._foreach_mul(leaves, factor)), norm


def clip_by_global_norm(max_norm: float, norm_type: float = 2.0) -> Transform:
    """A transformation that clips the gradients with `clip_grad_norm`; its state is `{}`.

    Args:
        max_norm: the largest global norm allowed, ≥ 0.
        norm_type: the p of the p-norm, > 0 (`float("inf")` for the max norm).

    Returns:
        `Transform(init, update)`: `init(params)` gives `{}`, and
            `update(params, grads, state)` gives `(clipped grads, state)`, the clipped grads
            mirroring `grads`.

    Raises:
        FnnTypeError: `max_norm` or `norm_type` is not a number.
        FnnError: `max_norm` < 0 or `norm_type` not > 0.

    Example:
        >>> clip = fnn.optim.clip_by_global_norm(1.0)
        >>> grads, _ = clip.update({"w": torch.zeros(2)}, {"w": torch.tensor([3.0, 4.0])}, {})
        >>> grads["w"]
        tensor([0.6000, 0.8000])
    """
    check_hyper("clip_by_global_norm", "max_norm", max_norm)
    _check_norm_type("clip_by_global_norm", norm_type)

    def init(params: PyTree) -> PyTree:
        del params
        return {}

    def update(params: PyTree, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]:
        del params
        return clip_grad_norm(grads, max_norm, norm_type)[0], state

    return Transform(init, update)


def add_decayed_weights(weight_decay: float, mask: Mask = None) -> Transform:
    """A transformation `g ← g + λ θ`: L2 weight decay, as torch's `weight_decay=`.

    Args:
        weight_decay: λ, ≥ 0.
        mask: the leaves that decay (a tree of bools or a function of params, e.g.
            `fnn.optim.decay_mask`); all leaves by default.

    Returns:
        `Transform(init, update)`: `init(params)` gives `{}`, and
            `update(params, grads, state)` gives `(grads, state)`, the new grads mirroring
            `grads`.

    Raises:
        FnnTypeError: `weight_decay` is not a number.
        FnnError: `weight_decay` < 0.

    Example:
        >>> decay = fnn.optim.add_decayed_weights(0.1)
        >>> grads, _ = decay.update({"w": torch.ones(2)}, {"w": torch.zeros(2)}, {})
        >>> grads["w"]
        tensor([0.1000, 0.1000])
    """
    check_hyper("add_decayed_weights", "weight_decay", weight_decay)
    by_name = flat_mask("add_decayed_weights", mask)

    def init(params: PyTree) -> PyTree:
        del params
        return {}

    def update(params: PyTree, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]:
        paired = pair(params, grads, "add_decayed_weights")
        if not paired.params or not weight_decay:
            return grads, state
        decayed = (
            decay_indices("add_decayed_weights", mask, by_name, params, paired.names())
            if mask is not None
            else None
        )
        try:
            new = add_weight_decay(paired.grads, paired.params, weight_decay, decayed)
        except RuntimeError:  # a gradient on another device: say which
            check_devices(params, grads, "add_decayed_weights")
            raise
        return paired.rebuild(new), state

    return Transform(init, update)


def decay_mask(params: PyTree) -> PyTree:
    """The usual weight-decay mask: True for weights, False for biases and norm parameters.

    Pass it as `mask=` to an optimizer or to `add_decayed_weights`; call it once
    (`mask=decay_mask(params)`) to resolve the mask once instead of every update.

    Args:
        params: a pytree of tensors.

    Returns:
        A tree mirroring `params` with a bool per leaf: True for tensors of 2 or more
            dimensions (`Dense` and `Conv` weights), else False.

    Example:
        >>> fnn.optim.decay_mask({"weight": torch.ones(2, 3), "bias": torch.ones(2)})
        {'weight': True, 'bias': False}
    """
    return tree.map(lambda p: p.dim() >= 2, params)


def chain(*transforms: Transform | Optimizer) -> Any:
    """Run gradient transformations in order, then (optionally) an optimizer.

    Args:
        *transforms: `Transform`s, of which only the last may be an `Optimizer`.

    Returns:
        `chain(t1, t2, optimizer)` is an `Optimizer` whose update passes the grads through
            `t1` and `t2` before `optimizer`; `chain(t1, t2)` (no optimizer) is a
            `Transform`. The state is the tuple of their states, in order.

    Raises:
        FnnError: no argument, or (from `update`) a state not made by this chain's `init`.
        FnnTypeError: an optimizer before the last place, or an argument of another type.

    Example:
        >>> opt = fnn.optim.chain(fnn.optim.clip_by_global_norm(1.0), fnn.optim.sgd(lr=1.0))
        >>> params = {"w": torch.zeros(2)}
        >>> state = opt.init(params)
        >>> params, state = opt.update(params, {"w": torch.tensor([0.0, 10.0])}, state)
        >>> params["w"], state[1]["step"]
        (tensor([ 0.0000, -1.0000]), 1)
    """
    if not transforms:
        raise FnnError("chain: expected at least one transformation or optimizer, got none")
    *head, last = transforms
    for i, t in enumerate(head):
        if not isinstance(t, Transform):
            what = "an optimizer" if isinstance(t, Optimizer) else type(t).__name__
            raise FnnTypeError(
                f"chain: argument {i} must be a Transform (only the last may be an "
                f"optimizer), got {what}"
            )
    if not isinstance(last, (Transform, Optimizer)):
        raise FnnTypeError(
            f"chain: the last argument must be a Transform or an Optimizer, got {type(last).__name__}"
        )
    parts = tuple(transforms)
    n = len(parts)

    def init(params: PyTree) -> PyTree:
        return tuple(t.init(params) for t in parts)

    def run(params: PyTree, grads: PyTree, state: PyTree) -> tuple[PyTree, list[PyTree]]:
        if not isinstance(state, (tuple, list)) or len(state) != n:
            raise FnnError(
                f"chain: the state must be the tuple of {n} states made by chain's init, got {state!r:.80}"
            )
        states = []
        for t, s in zip(head, state):
            grads, s = t.update(params, grads, s)
            states.append(s)
        return grads, states

    if isinstance(last, Optimizer):

        def update(params: PyTree, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]:
            grads, states = run(params, grads, state)
            params, s = last.update(params, grads, state[-1])
            return params, (*states, s)

        return Optimizer(init, update)

    def transform(params: PyTree, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]:
        grads, states = run(params, grads, state)
        grads, s = last.update(params, grads, state[-1])
        return grads, (*states, s)

    return Transform(init, transform)
