"""`update`: one plain gradient-descent step over a params tree, pure."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from . import tree
from ._dicts import BUILT, FRESH, DictsLayout, layout_of
from .core import PyTree
from .errors import FnnError, FnnTypeError, TreeError, describe

__all__ = ["update", "flat_pair", "vouch"]


def flat_pair(
    params: PyTree, grads: PyTree, where: str, slot: list[DictsLayout | None] | None = None
) -> tuple[
    list[torch.Tensor], list[torch.Tensor], tree.TreeDef, Callable[[Any], PyTree], object | None
]:
    """Both trees' leaves, the params' treedef, a function that builds a tree of that
    structure from leaves, and the fast path's tag if it vouched for the pair (see
    fnn/_dicts.py: pass it to `vouch` with the params made from these); `ValueError` naming
    the first mismatch.

    `slot` is a one-item list remembering the last dict-of-dicts layout its caller saw: a
    training loop pairs trees of one structure at every step.
    """
    # (torch.compile traces the general path: a layout is made by `exec`, FRESH is global state)
    if not torch.compiler.is_compiling():
        layout = slot[0] if slot is not None else None
        if layout is None or (found := layout.pair(params, grads, FRESH[0])) is None:
            layout = layout_of(params)
            found = layout.pair(params, grads, FRESH[0]) if layout is not None else None
            if slot is not None:
                slot[0] = layout
        if found is not None:  # shapes and dtypes compared (or known equal: see FRESH)
            FRESH[0] = None
            assert layout is not None
            return found[0], found[1], layout.treedef, layout.build, found[2]
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
    return leaves, grad_leaves, treedef, functools.partial(tree.unflatten, treedef), None


def vouch(tag: object | None, leaves: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> None:
    """Record params just made from a pair the fast path vouched for (`BUILT`, fnn/_dicts.py)."""
    BUILT[0] = (tag, *leaves) if tag is not None else None


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
    if type(lr) is not float and (isinstance(lr, bool) or not isinstance(lr, int | float)):
        raise FnnError(f"update: lr must be a non-negative number, got {lr!r}")
    if not lr >= 0:
        raise FnnError(f"update: lr must be a non-negative number, got {lr!r}")
    leaves, grad_leaves, _, build, tag = flat_pair(params, grads, "update", _LAST_LAYOUT)
    if not leaves:
        return build([])
    try:
        new = torch._foreach_add(leaves, grad_leaves, alpha=-lr)
    except RuntimeError:  # e.g. a gradient on another device: say which
        _diagnose(params, grads, "update")
        raise
    vouch(tag, new)
    return build(new)


_LAST_LAYOUT: list[DictsLayout | None] = [None]  # see flat_pair
