"""`update`: one plain gradient-descent step over a params tree, pure."""

from __future__ import annotations

import torch

from . import tree
from .core import PyTree
from .errors import FnnError, FnnTypeError, TreeError, describe

__all__ = ["update", "flat_pair"]


def flat_pair(
    params: PyTree, grads: PyTree, where: str
) -> tuple[list[torch.Tensor], list[torch.Tensor], tree.TreeDef]:
    """Both trees' leaves and the params' treedef; `ValueError` naming the first mismatch."""
    pair = _dict_of_dicts_pair(params, grads)
    if pair is not None:  # shapes and dtypes already compared leaf by leaf
        leaves, grad_leaves = pair
        return leaves, grad_leaves, tree.TreeDef.of_dicts(params, len(leaves))
    leaves, treedef = tree.flatten(params)
    grad_leaves, grad_treedef = tree.flatten(grads)
    try:
        bad = grad_treedef != treedef or any(
            p.shape != g.shape or p.dtype is not g.dtype for p, g in zip(leaves, grad_leaves)
        )
    except AttributeError:  # a leaf that is not a tensor
        bad = True
    if bad:
        tree.assert_same_structure(params, grads, f"{where}: grads tree")
        _diagnose(params, grads, where)
    return leaves, grad_leaves, treedef


def _dict_of_dicts_pair(
    params: PyTree, grads: PyTree
) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """Fast path for the common tree, a dict of dicts of tensors (serial params): both
    trees' leaves, in the params' order, if `grads` has the same keys and each gradient
    the shape and dtype of its param, else `None` (the general path names the problem)."""
    if type(params) is not dict or type(grads) is not dict or len(params) != len(grads):
        return None
    leaves: list[torch.Tensor] = []
    grad_leaves: list[torch.Tensor] = []
    try:
        for key, sub in params.items():
            grad_sub = grads.get(key)
            if type(sub) is not dict or type(grad_sub) is not dict or len(sub) != len(grad_sub):
                return None
            for name, leaf in sub.items():
                grad = grad_sub[name]
                if leaf.shape != grad.shape or leaf.dtype is not grad.dtype:
                    return None
                leaves.append(leaf)
                grad_leaves.append(grad)
    except (AttributeError, KeyError):  # a leaf that is not a tensor, a missing gradient
        return None
    return leaves, grad_leaves


def _diagnose(params: PyTree, grads: PyTree, where: str) -> None:
    """Slow path: name the first leaf whose gradient is not a tensor of the param's dtype and device."""
    for path, p, g in zip(tree.paths(params), tree.leaves(params), tree.leaves(grads)):
        if not isinstance(p, torch.Tensor) or not isinstance(g, torch.Tensor):
            raise FnnTypeError(
                f"{where}: params{path} and its gradient must be tensors, got {describe(p)} and {describe(g)}"
            )
        if p.dtype != g.dtype:
            raise FnnError(
                f"{where}: the gradient of params{path} has dtype {g.dtype}, the param {p.dtype}"
            )
        if p.device != g.device:
            raise FnnError(
                f"{where}: the gradient of params{path} is on {g.device}, the param on {p.device}"
            )
    raise TreeError(f"{where}: grads tree does not match the params tree")


def update(params: PyTree, grads: PyTree, lr: float = 1e-3) -> PyTree:
    """One plain gradient-descent step, `params − lr · grads`, leaf by leaf; pure.

    Args:
        params: a pytree of tensors.
        grads: a pytree mirroring `params`, each leaf of its parameter's shape, dtype and
            device (what `value_and_grad` gives).
        lr: the learning rate, ≥ 0.

    Returns:
        New params mirroring `params`, each leaf of its shape; `params` and `grads` are not
            changed.

    Raises:
        FnnError: `lr` is not a non-negative number, or a gradient of another dtype or device.
        FnnTypeError: a leaf that is not a tensor.
        TreeError: `grads` does not match the params tree (naming the first difference).

    Example:
        >>> fnn.update({"w": torch.ones(2)}, {"w": torch.ones(2)}, lr=0.5)
        {'w': tensor([0.5000, 0.5000])}
    """
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr >= 0:
        raise FnnError(f"update: lr must be a non-negative number, got {lr!r}")
    leaves, grad_leaves, treedef = flat_pair(params, grads, "update")
    if not leaves:
        return tree.unflatten(treedef, [])
    try:
        return tree.unflatten(treedef, torch._foreach_add(leaves, grad_leaves, alpha=-lr))
    except RuntimeError:  # e.g. a gradient on another device: say which
        _diagnose(params, grads, "update")
        raise
