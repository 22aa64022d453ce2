"""Generated code for the commonest params tree, a dict of dicts of tensors (a serial
model's params), which `update` and every optimizer pair with grads and rebuild at
every step.

For one such structure (its keys, in order), `DictsLayout` holds two straight-line
functions written out for it:

- `pair(params, grads, fresh)`: both trees' leaves in the params' order (and a tag,
  below), or `None` unless `params` has exactly this structure and `grads` the same
  keys, with each gradient of its parameter's shape and dtype. (What `None` means is
  the caller's to say: it then takes the general path, which names the first
  mismatch.)
- `build(leaves)`: a new tree of this structure holding `leaves`.

A generic walk over the two trees costs about as much as the shape and dtype reads
themselves; the written-out code leaves only those reads (about 1 µs a leaf pair on
a small CPU).

Two records skip even those reads in the commonest loop, `value_and_grad` then an
update, over and over:

- `FRESH`: the eager fast path of `value_and_grad` (fnn/fastpath.py) records the
  tensors it just used and made, `(tag, param₀, grad₀, param₁, grad₁, …)`, after
  checking the params against its model (the tag names that model). Each gradient
  was computed from its parameter, so their shapes and dtypes agree by construction.
  When `pair` finds every leaf of both trees to be those very objects (`is`), in
  that order, it skips the comparison and returns the tag.
- `BUILT`: an update whose pairing was vouched for that way records the params it
  made, `(tag, leaf₀, leaf₁, …)`: each of its parameter's shape and dtype, so still
  right for that model. When the fast path of that model finds its params to be
  those very objects, it skips its shape checks.

Any other tree (a gradient or parameter replaced, other params, another model) gets
the full checks. A record holds its tensors, so no other tensor can take their
identity; `FRESH` is cleared once used. (What neither can see is a tensor resized
in place, `resize_` or `.data =`, between two fnn calls: fnn does not support that.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .tree import TreeDef

__all__ = ["BUILT", "FRESH", "DictsLayout", "layout_of"]

Keys = tuple[tuple[str, tuple[str, ...]], ...]
Pair = Callable[
    [Any, Any, Any], "tuple[list[torch.Tensor], list[torch.Tensor], object | None] | None"
]
"""`pair(params, grads, fresh) -> (leaves, grad_leaves, tag or None)`, or `None`."""

FRESH: list[tuple[Any, ...] | None] = [None]
"""The fast path's last `(tag, param, grad, param, grad, …)`, in params order; see above."""
BUILT: list[tuple[Any, ...] | None] = [None]
"""The last vouched-for update's `(tag, leaf, leaf, …)`, in params order; see above."""

_LAYOUTS: dict[Keys, DictsLayout] = {}
_MAX_LAYOUTS = 64


class DictsLayout:
    """The generated `pair` and `build` for one dict-of-dicts structure, and its `treedef`."""

    __slots__ = ("build", "keys", "num_leaves", "pair", "treedef")

    def __init__(self, keys: Keys, checks: bool = True):
        self.keys = keys
        self.num_leaves = sum(len(names) for _, names in keys)
        skeleton = {key: dict.fromkeys(names, 0) for key, names in keys}  # 0: a leaf
        self.treedef = TreeDef.of_dicts(skeleton, self.num_leaves)
        namespace: dict[str, Any] = {}
        exec(compile(_source(keys, checks), "<fnn._dicts>", "exec"), namespace)
        self.pair: Pair = namespace["pair"]
        self.build: Callable[[Any], dict[str, dict[str, Any]]] = namespace["build"]


def layout_of(params: Any) -> DictsLayout | None:
    """The layout of `params` if it is a dict of dicts with `str` keys, else `None`."""
    if type(params) is not dict or not params:
        return None
    keys = []
    for key, sub in params.items():
        if type(key) is not str or type(sub) is not dict:
            return None
        names = tuple(sub)
        if not all(type(name) is str for name in names):
            return None
        keys.append((key, names))
    frozen = tuple(keys)
    layout = _LAYOUTS.get(frozen)
    if layout is None:
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        layout = _LAYOUTS[frozen] = DictsLayout(frozen)
    return layout


def _source(keys: Keys, checks: bool = True) -> str:
    """`pair` and `build` for `keys`, e.g. for `{"0": {"weight": …, "bias": …}, "1": {}}`:

    def pair(P, G, fresh):
        try:
            if type(P) is not dict or type(G) is not dict or tuple(P) != ('0', '1') or len(G) != 2:
                return None
            p0 = P['0']; q0 = G['0']
            p1 = P['1']; q1 = G['1']
            if (type(p0) is not dict or type(q0) is not dict or tuple(p0) != ('weight', 'bias')
                    or len(q0) != 2 or type(p1) is not dict or p1 or type(q1) is not dict or q1):
                return None
            a0 = p0['weight']; b0 = q0['weight']
            a1 = p0['bias']; b1 = q0['bias']
            if (fresh is not None and len(fresh) == 5 and a0 is fresh[1] and b0 is fresh[2]
                    and a1 is fresh[3] and b1 is fresh[4]):
                tag = fresh[0]
            else:
                tag = None
                if (a0.shape != b0.shape or a0.dtype is not b0.dtype
                        or a1.shape != b1.shape or a1.dtype is not b1.dtype):
                    return None
        except (KeyError, AttributeError, TypeError):
            return None
        return [a0, a1], [b0, b1], tag

    def build(leaves):
        return {'0': {'weight': leaves[0], 'bias': leaves[1]}, '1': {}}
    """
    outer = tuple(key for key, _ in keys)
    fetch_subs: list[str] = []
    sub_checks: list[str] = []
    fetch_leaves: list[str] = []
    leaf_checks: list[str] = []
    leaves: list[str] = []
    grads: list[str] = []
    built: list[str] = []
    n = 0
    for i, (key, names) in enumerate(keys):
        fetch_subs.append(f"p{i} = P[{key!r}]; q{i} = G[{key!r}]")
        if names:
            sub_checks.append(
                f"type(p{i}) is not dict or type(q{i}) is not dict or tuple(p{i}) != {names!r}"
                f" or len(q{i}) != {len(names)}"
            )
        else:
            sub_checks.append(f"type(p{i}) is not dict or p{i} or type(q{i}) is not dict or q{i}")
        entries = []
        for name in names:
            fetch_leaves.append(f"a{n} = p{i}[{name!r}]; b{n} = q{i}[{name!r}]")
            leaf_checks.append(f"a{n}.shape != b{n}.shape or a{n}.dtype is not b{n}.dtype")
            leaves.append(f"a{n}")
            grads.append(f"b{n}")
            entries.append(f"{name!r}: leaves[{n}]")
            n += 1
        built.append(f"{key!r}: {{{', '.join(entries)}}}")
    lines = [
        "def pair(P, G, fresh):",
        "    try:",
        "        if type(P) is not dict or type(G) is not dict"
        f" or tuple(P) != {outer!r} or len(G) != {len(outer)}:",
        "            return None",
        *(f"        {line}" for line in fetch_subs),
        f"        if {' or '.join(sub_checks)}:",
        "            return None",
    ]
    if not checks:
        lines = ["def pair(P, G, fresh):", "    try:", *(f"        {line}" for line in fetch_subs)]
    if leaf_checks:
        same = " and ".join(
            f"{leaf} is fresh[{2 * k + 1}] and {grad} is fresh[{2 * k + 2}]"
            for k, (leaf, grad) in enumerate(zip(leaves, grads))
        )
        lines += [*(f"        {line}" for line in fetch_leaves)]
        if checks:
            lines += [
                f"        if fresh is not None and len(fresh) == {2 * n + 1} and {same}:",
                "            tag = fresh[0]",
                "        else:",
                "            tag = None",
                f"            if {' or '.join(leaf_checks)}:",
                "                return None",
            ]
    lines += [
        "    except (KeyError, AttributeError, TypeError):",
        "        return None",
        f"    return [{', '.join(leaves)}], [{', '.join(grads)}], "
        + ("tag" if checks and leaf_checks else "None"),
        "",
        "def build(leaves):",
        f"    return {{{', '.join(built)}}}",
        "",
    ]
    return "\n".join(lines)
