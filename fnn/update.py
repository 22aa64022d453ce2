"""`update`: one plain gradient-descent step over a params tree, pure."""

from __future__ import annotations

import torch

from . import tree
from .core import PyTree
from .errors import FnnError

__all__ = ["update", "flat_pair"]


def flat_pair(params: PyTree, grads: PyTree, where: str) -> tuple[list[torch.Tensor], list[torch.Tensor], tree.TreeDef]:
    """Both trees' leaves and the params' treedef; `ValueError` naming the first mismatch."""
    leaves, treedef = tree.flatten(params)
    grad_leaves, grad_treedef = tree.flatten(grads)
    if grad_treedef != treedef or any(p.shape != g.shape for p, g in zip(leaves, grad_leaves)):
        tree.assert_same_structure(params, grads, f"{where}: grads tree")
        raise tree.TreeError(f"{where}: grads tree does not match the params tree")
    return leaves, grad_leaves, treedef


def update(params: PyTree, grads: PyTree, lr: float = 1e-3) -> PyTree:
    """`params − lr · grads`, leaf by leaf, as new tensors (the inputs are not changed).

    Example:
        >>> fnn.update({"w": torch.ones(2)}, {"w": torch.ones(2)}, lr=0.5)
        {'w': tensor([0.5000, 0.5000])}
    """
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr >= 0:
        raise FnnError(f"update: lr must be a non-negative number, got {lr!r}")
    leaves, grad_leaves, treedef = flat_pair(params, grads, "update")
    if not leaves:
        return tree.unflatten(treedef, [])
    return tree.unflatten(treedef, torch._foreach_add(leaves, grad_leaves, alpha=-lr))
