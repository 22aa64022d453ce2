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

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from . import tree
from .errors import FnnError, FnnTypeError, TreeError, describe

__all__ = ["Paired", "pair", "diagnose", "check_devices"]


class Paired:
    """Both trees' leaves in the params' order.

    Attributes:
        tree: the params tree itself.
        params: the params' leaves.
        grads: the matching gradients.
    """

    __slots__ = ("_dicts", "grads", "params", "tree")

    def __init__(
        self, tree: Any, params: list[torch.Tensor], grads: list[torch.Tensor], dicts: bool
    ) -> None:
        self.tree = tree
        self.params = params
        self.grads = grads
        self._dicts = dicts  # a dict of dicts of tensors (a serial model's params)

    def names(self) -> list[str]:
        """Each leaf's dotted name, as `fnn.tree.to_state_dict(params)` lists them."""
        if self._dicts:
            return [f"{k}.{n}" for k, sub in self.tree.items() for n in sub]
        names: list[str] = []
        _names(self.tree, "", names)
        return names

    def rebuild(self, leaves: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> Any:
        """A new tree of the params' structure holding `leaves` (in the params' order)."""
        if not self._dicts:
            return _build(self.tree, iter(leaves))
        it = iter(leaves)
        out: dict[str, dict[str, torch.Tensor]] = {}
        for k, sub in self.tree.items():
            built = {}
            for n in sub:
                built[n] = next(it)
            out[k] = built
        return out


def _pair_dicts(p: Any, g: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """The common case, a dict of dicts of tensors, in one flat loop; `None` if `p` is not
    one or anything differs (the general walk then takes over and names the difference)."""
    if type(p) is not dict or type(g) is not dict or len(g) != len(p):
        return None
    ps: list[torch.Tensor] = []
    gs: list[torch.Tensor] = []
    try:
        for k, sub in p.items():
            gsub = g[k]
            if type(sub) is not dict or type(gsub) is not dict or len(gsub) != len(sub):
                return None
            for n, a in sub.items():
                b = gsub[n]
                if a.shape != b.shape or a.dtype is not b.dtype or not isinstance(a, torch.Tensor):
                    return None
                ps.append(a)
                gs.append(b)
    except (KeyError, AttributeError):  # a missing key, or a leaf that is not a tensor
        return None
    return ps, gs


class _Mismatch(Exception):
    """Raised inside the walk; `pair` turns it into a clear error."""


def _walk(p: Any, g: Any, ps: list[torch.Tensor], gs: list[torch.Tensor]) -> None:
    kind = type(p)
    if kind is dict or (kind is not list and kind is not tuple and isinstance(p, Mapping)):
        if not isinstance(g, Mapping) or len(g) != len(p):
            raise _Mismatch
        for k, v in p.items():
            if k not in g:
                raise _Mismatch
            _walk(v, g[k], ps, gs)
    elif kind is list or kind is tuple or isinstance(p, (list, tuple)):
        if not isinstance(g, (list, tuple)) or len(g) != len(p):
            raise _Mismatch
        for v, w in zip(p, g):
            _walk(v, w, ps, gs)
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
        ps.append(p)
        gs.append(g)


def _names(p: Any, prefix: str, out: list[str]) -> None:
    if isinstance(p, Mapping):
        for k, v in p.items():
            _names(v, f"{prefix}{k}.", out)
    elif isinstance(p, (list, tuple)):
        for i, v in enumerate(p):
            _names(v, f"{prefix}{i}.", out)
    elif p is not None:
        out.append(prefix[:-1])


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
    if isinstance(node, (list, tuple)):
        items = [_build(v, it) for v in node]
        if isinstance(node, list):
            return items
        return type(node)(*items) if hasattr(node, "_fields") else tuple(items)
    return next(it)


def pair(params: Any, grads: Any, where: str) -> Paired:
    """Pair `params` with `grads`: both trees' leaves, in the params' order.

    Raises:
        TreeError: the structures or a leaf's shape differ (naming the first difference).
        FnnTypeError: a leaf that is not a tensor.
        FnnError: a gradient of another dtype than its parameter.
    """
    found = _pair_dicts(params, grads)
    if found is not None:
        return Paired(params, found[0], found[1], True)
    ps: list[torch.Tensor] = []
    gs: list[torch.Tensor] = []
    try:
        _walk(params, grads, ps, gs)
    except _Mismatch:
        diagnose(params, grads, where)
    return Paired(params, ps, gs, False)


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
    elif isinstance(p, (list, tuple)):
        if isinstance(g, (list, tuple)):
            for i, (v, w) in enumerate(zip(p, g)):
                yield from _leaf_pairs(v, w, f"{path}[{i}]")
    elif p is not None:
        yield path, p, g
