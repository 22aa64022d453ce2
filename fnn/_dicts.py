"""Pairing params with grads, leaf by leaf and by name, at every call.

`pair(params, grads, where)` walks both trees once, in the params' order, and looks
each gradient up by its key (so the grads' own dict order does not matter). It
checks what torch would let through silently: the structure (same keys, same
container kinds and lengths), and for each leaf that both are tensors of the same
shape (a (1, n) gradient would broadcast into an (m, n) parameter) and dtype (a
float64 gradient would promote a float32 parameter). Devices are left to torch's
kernels: a gradient on another device makes them raise, and the caller names it.

There is nothing to remember between calls: no cache, no record of earlier calls.
Walking a serial model's params (a dict of dicts) costs a fraction of a microsecond
a leaf; `tests/benchmarks/bench_update.py` measures it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch

from . import tree
from .errors import FnnError, FnnTypeError, TreeError, describe

__all__ = ["Paired", "pair", "diagnose", "check_devices"]


class Paired(NamedTuple):
    """Both trees' leaves in the params' order, with their dotted names.

    Attributes:
        names: each leaf's dotted name, as `fnn.tree.to_state_dict(params)` lists them.
        params: the params' leaves.
        grads: the matching gradients.
        rebuild: `rebuild(leaves)` is a new tree of the params' structure holding `leaves`.
    """

    names: list[str]
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    rebuild: Callable[[list[torch.Tensor] | tuple[torch.Tensor, ...]], Any]


class _Mismatch(Exception):
    """Raised inside the walk; `pair` turns it into a clear error."""


def _walk(p: Any, g: Any, prefix: str, out: Paired) -> None:
    kind = type(p)
    if kind is dict or (kind is not list and kind is not tuple and isinstance(p, Mapping)):
        if not isinstance(g, Mapping) or len(g) != len(p):
            raise _Mismatch
        for k, v in p.items():
            if k not in g:
                raise _Mismatch
            _walk(v, g[k], f"{prefix}{k}.", out)
    elif kind is list or kind is tuple or isinstance(p, list | tuple):
        if not isinstance(g, list | tuple) or len(g) != len(p):
            raise _Mismatch
        for i, (v, w) in enumerate(zip(p, g)):
            _walk(v, w, f"{prefix}{i}.", out)
    elif p is None:
        if g is not None:
            raise _Mismatch
    else:
        if (
            not isinstance(p, torch.Tensor)
            or not isinstance(g, torch.Tensor)
            or p.shape != g.shape
            or p.dtype is not g.dtype
        ):
            raise _Mismatch
        out.names.append(prefix[:-1])
        out.params.append(p)
        out.grads.append(g)


def _build(node: Any, it: Any) -> Any:
    kind = type(node)
    if kind is dict:
        return {k: _build(v, it) for k, v in node.items()}
    if kind is list:
        return [_build(v, it) for v in node]
    if kind is tuple:
        return tuple([_build(v, it) for v in node])
    if node is None:
        return None
    if isinstance(node, Mapping):
        return {k: _build(v, it) for k, v in node.items()}
    if isinstance(node, list | tuple):
        items = [_build(v, it) for v in node]
        if isinstance(node, list):
            return items
        return type(node)(*items) if hasattr(node, "_fields") else tuple(items)
    return next(it)


def pair(params: Any, grads: Any, where: str) -> Paired:
    """Pair `params` with `grads`: both trees' leaves, names and a rebuild function.

    Raises:
        TreeError: the structures or a leaf's shape differ (naming the first difference).
        FnnTypeError: a leaf that is not a tensor.
        FnnError: a gradient of another dtype than its parameter.
    """
    out = Paired([], [], [], lambda leaves: _build(params, iter(leaves)))
    try:
        _walk(params, grads, "", out)
    except _Mismatch:
        diagnose(params, grads, where)
    return out


def diagnose(params: Any, grads: Any, where: str) -> None:
    """Name the first difference between `params` and `grads` (always raises)."""
    tree.assert_same_structure(params, grads, f"{where}: grads tree")
    for path, p, g in _leaf_pairs(params, grads, ""):
        if not isinstance(p, torch.Tensor) or not isinstance(g, torch.Tensor):
            raise FnnTypeError(
                f"{where}: params{path} and its gradient must be tensors, got {describe(p)} "
                f"and {describe(g)}"
            )
        if p.dtype != g.dtype:
            raise FnnError(
                f"{where}: the gradient of params{path} has dtype {g.dtype}, the param {p.dtype}"
            )
    check_devices(params, grads, where)
    raise TreeError(f"{where}: grads tree does not match the params tree")


def check_devices(params: Any, grads: Any, where: str) -> None:
    """After a torch error: raise a clear `FnnError` if a gradient is on another device
    than its parameter; return if none is (the caller re-raises torch's error)."""
    for path, p, g in _leaf_pairs(params, grads, ""):
        if isinstance(p, torch.Tensor) and isinstance(g, torch.Tensor) and p.device != g.device:
            raise FnnError(
                f"{where}: the gradient of params{path} is on {g.device}, the param on {p.device}"
            )


def _leaf_pairs(p: Any, g: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """`(path, param leaf, grad leaf)` in the params' order, grads looked up by key; stops
    where the structures differ."""
    if isinstance(p, Mapping):
        if isinstance(g, Mapping):
            for k, v in p.items():
                if k in g:
                    yield from _leaf_pairs(v, g[k], f"{path}[{k!r}]")
    elif isinstance(p, list | tuple):
        if isinstance(g, list | tuple):
            for i, (v, w) in enumerate(zip(p, g)):
                yield from _leaf_pairs(v, w, f"{path}[{i}]")
    elif p is not None:
        yield path, p, g
