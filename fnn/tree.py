"""Pytrees: nested dicts, lists and tuples with tensors (or other values) as leaves.

`None` is an empty subtree (it has no leaves), as in JAX. Dicts keep their
insertion order, so a flattened parameter tree lists its leaves in the same order
as the matching `torch.nn` model's `state_dict()`.

    >>> params = {"0": {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}}
    >>> list(to_state_dict(params))
    ['0.weight', '0.bias']
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from .errors import TreeError

__all__ = [
    "TreeDef",
    "map",
    "leaves",
    "flatten",
    "unflatten",
    "structure",
    "paths",
    "assert_same_structure",
    "to_state_dict",
    "from_state_dict",
]

PyTree = Any

_LEAF = "*"


class TreeDef:
    """The structure of a pytree without its leaves; comparable with `==` and hashable.

    Made by `flatten` or `structure`, not by hand; `unflatten` rebuilds a tree from it.

    Args:
        node: the structure, as `flatten` builds it.
        num_leaves: the number of leaves.
        template: a tree to read the structure from when `node` is `None`.

    Attributes:
        num_leaves: the number of leaves.

    Example:
        >>> treedef = fnn.tree.structure({"a": 1, "b": (2, 3)})
        >>> treedef, treedef.num_leaves
        (TreeDef({'a': *, 'b': (*, *)}), 3)
        >>> treedef == fnn.tree.structure({"a": torch.ones(2), "b": (0, 0)})
        True
    """

    __slots__ = ("_known", "_template", "num_leaves")

    def __init__(self, node: Any, num_leaves: int, template: PyTree = None):
        self._known = node
        self._template = template
        self.num_leaves = num_leaves

    @classmethod
    def of_dicts(cls, template: dict[str, dict[str, Any]], num_leaves: int) -> TreeDef:
        """The treedef of a dict of dicts of leaves (a serial model's params), computed
        only if compared: the hot path just rebuilds dicts with the template's keys."""
        return cls(None, num_leaves, template)

    @property
    def _node(self) -> Any:
        if self._known is None and self._template is not None:
            self._known = _flatten_into(self._template, [])
        return self._known

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, TreeDef) and self._node == other._node)

    def __hash__(self) -> int:
        return hash(self._node)

    def __repr__(self) -> str:
        return f"TreeDef({_show(self._node)})"


def _show(node: Any) -> str:
    if node == _LEAF:
        return "*"
    if node is None:
        return "None"
    kind, meta, children = node
    if kind is dict:
        return "{" + ", ".join(f"{k!r}: {_show(c)}" for k, c in zip(meta, children)) + "}"
    inner = ", ".join(_show(c) for c in children)
    return f"[{inner}]" if kind is list else f"({inner}{',' if len(children) == 1 else ''})"


def _is_namedtuple(x: object) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


_DEEP = 100  # a tree this deep is past any real model; past ~400, recursion runs out


def _diagnosed(what: str, *trees: PyTree) -> BaseException:
    """Called on a RecursionError: a `TreeError` naming the cycle or the depth of the first
    of `trees` with one, else the RecursionError itself (it came from elsewhere, e.g. `f`)."""
    error = sys.exc_info()[1]
    assert error is not None
    for tree in trees:
        open_ids: set[int] = set()
        deepest = 0
        stack: list[tuple[Any, str, int, bool]] = [(tree, "", 0, False)]
        while stack:
            node, path, depth, leaving = stack.pop()
            if leaving:
                open_ids.discard(id(node))
                continue
            if isinstance(node, dict):
                children = [(f"{path}[{k!r}]", v) for k, v in node.items()]
            elif isinstance(node, (list, tuple)):
                children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
            else:
                continue
            if id(node) in open_ids:
                return TreeError(
                    f"{what}: the tree contains itself (a cycle) at {path or 'the root'}"
                )
            open_ids.add(id(node))
            deepest = builtins.max(deepest, depth + 1)
            stack.append((node, path, depth, True))
            stack.extend((v, p, depth + 1, False) for p, v in reversed(children))
        if deepest > _DEEP:
            return TreeError(
                f"{what}: the tree is nested {deepest} containers deep, deeper than Python's "
                "recursion limit allows (real trees are a few levels deep)"
            )
    return error


def _flatten_into(tree: PyTree, out: list[Any]) -> Any:
    # `type(x) is` first: exact dicts, lists and tuples are the common case and the cheapest test.
    kind = type(tree)
    if kind is dict:
        return (dict, tuple(tree), tuple([_flatten_into(v, out) for v in tree.values()]))
    if kind is list or kind is tuple:
        return (kind, len(tree), tuple([_flatten_into(v, out) for v in tree]))
    if tree is None:
        return None
    if isinstance(tree, dict):
        keys = tuple(tree)
        return (dict, keys, tuple([_flatten_into(tree[k], out) for k in keys]))
    if isinstance(tree, (list, tuple)):
        kind = list if isinstance(tree, list) else type(tree) if _is_namedtuple(tree) else tuple
        return (kind, len(tree), tuple([_flatten_into(v, out) for v in tree]))
    out.append(tree)
    return _LEAF


def flatten(tree: PyTree) -> tuple[list[Any], TreeDef]:
    """Split a tree into its leaves and its structure.

    Args:
        tree: nested dicts, lists and tuples (NamedTuples too); `None` is an empty subtree.

    Returns:
        `(leaves, treedef)`: the leaves as a list, in order (dicts in insertion order), and
            the `TreeDef` that `unflatten` rebuilds the tree from.

    Raises:
        TreeError: the tree contains itself (a cycle) or is nested too deep to walk.

    Example:
        >>> params = {"0": {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, "1": {}}
        >>> leaves, treedef = fnn.tree.flatten(params)
        >>> [leaf.shape for leaf in leaves], treedef
        ([torch.Size([2, 3]), torch.Size([2])], TreeDef({'0': {'weight': *, 'bias': *}, '1': {}}))
    """
    out: list[Any] = []
    try:
        node = _flatten_into(tree, out)
    except RecursionError:
        raise _diagnosed("tree.flatten", tree) from None
    return out, TreeDef(node, len(out))


def leaves(tree: PyTree) -> list[Any]:
    """The leaves of `tree`, in flattening order.

    Args:
        tree: a pytree.

    Returns:
        The leaves as a list; `None` subtrees give none.

    Raises:
        TreeError: the tree contains itself (a cycle) or is nested too deep to walk.

    Example:
        >>> fnn.tree.leaves({"a": 1, "b": (2, None, 3)})
        [1, 2, 3]
    """
    out: list[Any] = []
    try:
        _flatten_into(tree, out)
    except RecursionError:
        raise _diagnosed("tree.leaves", tree) from None
    return out


def structure(tree: PyTree) -> TreeDef:
    """The structure of `tree`, without its leaves.

    Args:
        tree: a pytree.

    Returns:
        Its `TreeDef`, as `flatten(tree)[1]`.

    Raises:
        TreeError: the tree contains itself (a cycle) or is nested too deep to walk.

    Example:
        >>> fnn.tree.structure({"a": 1, "b": (2, 3)})
        TreeDef({'a': *, 'b': (*, *)})
    """
    return flatten(tree)[1]


def _build(node: Any, it: Iterator[Any]) -> PyTree:
    if node is _LEAF:
        return next(it)
    if node is None:
        return None
    kind, meta, children = node
    if kind is dict:
        return {k: _build(c, it) for k, c in zip(meta, children)}
    items = [_build(c, it) for c in children]
    if kind is list:
        return items
    if kind is tuple:
        return tuple(items)
    return kind(*items)  # a NamedTuple


def unflatten(treedef: TreeDef, leaves: list[Any] | tuple[Any, ...]) -> PyTree:
    """The tree with structure `treedef` and the given leaves: the inverse of `flatten`.

    Args:
        treedef: a structure from `flatten` or `structure`.
        leaves: `treedef.num_leaves` leaves, in flattening order.

    Returns:
        The tree, with new containers and the given leaves.

    Raises:
        TreeError: the number of leaves does not match `treedef`.

    Example:
        >>> treedef = fnn.tree.structure({"a": 1, "b": (2, 3)})
        >>> fnn.tree.unflatten(treedef, [4, 5, 6])
        {'a': 4, 'b': (5, 6)}
    """
    if len(leaves) != treedef.num_leaves:
        raise TreeError(
            f"unflatten: the treedef has {treedef.num_leaves} leaves, got {len(leaves)}"
        )
    if treedef._template is not None:  # a dict of dicts of leaves
        it = iter(leaves)
        return {k: {name: next(it) for name in sub} for k, sub in treedef._template.items()}
    return _build(treedef._node, iter(leaves))


def _mismatch(a: PyTree, b: PyTree, path: str) -> str | None:
    """A description of the first place where `b`'s structure differs from `a`'s."""
    if isinstance(a, dict):
        if not isinstance(b, dict):
            return f"{path or 'the tree'}: expected a dict, got {type(b).__name__}"
        missing = [k for k in a if k not in b]
        extra = [k for k in b if k not in a]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if extra:
                parts.append(f"unexpected keys {extra}")
            return f"{path or 'the tree'}: " + " and ".join(parts)
        for k in a:
            found = _mismatch(a[k], b[k], f"{path}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return f"{path or 'the tree'}: expected a {type(a).__name__} of {len(a)} items, got {_kind(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _mismatch(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if a is None:
        return None if b is None else f"{path or 'the tree'}: expected None, got {_kind(b)}"
    if isinstance(b, (dict, list, tuple)) or b is None:
        return f"{path or 'the tree'}: expected a leaf, got {_kind(b)}"
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape != b.shape:
        return f"{path or 'the tree'}: expected shape {tuple(a.shape)}, got {tuple(b.shape)}"
    return None


def _kind(x: object) -> str:
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)} items"
    return "None" if x is None else f"a {type(x).__name__}"


def assert_same_structure(
    expected: PyTree, got: PyTree, what: str = "tree", *, shapes: bool = True
) -> None:
    """Check that `got` has the structure of `expected`, naming the first leaf that differs.

    Args:
        expected: the reference pytree.
        got: the pytree to check.
        what: what `got` is, for the message (`"grads"`).
        shapes: whether tensor leaves must also have equal shapes.

    Raises:
        TreeError: the structures (or, with `shapes=True`, tensor shapes) differ.
            Also when a tree contains itself (a cycle) or is nested too deep to walk.

    Example:
        >>> fnn.tree.assert_same_structure({"w": torch.ones(2)}, {"w": torch.ones(3)}, "grads")
        Traceback (most recent call last):
        ...
        fnn.errors.TreeError: grads does not match: ['w']: expected shape (2,), got (3,)
    """
    try:
        if shapes:
            found = _mismatch(expected, got, "")
        else:
            found = (
                None
                if structure(expected) == structure(got)
                else _mismatch(_strip(expected), _strip(got), "")
            )
    except RecursionError:
        raise _diagnosed("tree.assert_same_structure", expected, got) from None
    if found:
        raise TreeError(f"{what} does not match: {found}")


def _strip(tree: PyTree) -> PyTree:
    return map(lambda _: 0, tree)


def map(f: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
    """Apply `f` leaf by leaf over one or more trees of the same structure.

    Args:
        f: a function of as many leaves as there are trees.
        tree: the first tree; the result has its structure.
        *rest: more trees with `tree`'s structure.

    Returns:
        A tree with `tree`'s structure and `f(leaf, *rest_leaves)` at each leaf.

    Raises:
        TreeError: a tree of `rest` does not match `tree` (naming the first difference).
            Also when a tree contains itself (a cycle) or is nested too deep to walk.

    Example:
        >>> fnn.tree.map(lambda a, b: a + b, {"a": 1, "b": [2]}, {"a": 10, "b": [20]})
        {'a': 11, 'b': [22]}
    """
    try:
        if not rest:
            return _map1(f, tree)
        for i, other in enumerate(rest):
            found = _mismatch(_strip(tree), _strip(other), "")
            if found:
                raise TreeError(f"tree.map: tree {i + 1} does not match tree 0: {found}")
        return _mapn(f, tree, rest)
    except RecursionError:
        raise _diagnosed("tree.map", tree, *rest) from None


def _map1(f: Callable[[Any], Any], tree: PyTree) -> PyTree:
    if isinstance(tree, dict):
        return {k: _map1(f, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map1(f, v) for v in tree]
    if isinstance(tree, tuple):
        items = [_map1(f, v) for v in tree]
        return type(tree)(*items) if _is_namedtuple(tree) else tuple(items)
    if tree is None:
        return None
    return f(tree)


def _mapn(f: Callable[..., Any], tree: PyTree, rest: tuple[PyTree, ...]) -> PyTree:
    if isinstance(tree, dict):
        return {k: _mapn(f, v, tuple(r[k] for r in rest)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [_mapn(f, v, tuple(r[i] for r in rest)) for i, v in enumerate(tree)]
        if isinstance(tree, list):
            return items
        return type(tree)(*items) if _is_namedtuple(tree) else tuple(items)
    if tree is None:
        return None
    return f(tree, *rest)


def paths(tree: PyTree) -> list[str]:
    """Each leaf's path in indexing syntax, in flattening order.

    Args:
        tree: a pytree.

    Returns:
        A list of strings such as `"['0']['weight']"`, one per leaf.

    Raises:
        TreeError: the tree contains itself (a cycle) or is nested too deep to walk.

    Example:
        >>> fnn.tree.paths({"0": {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}})
        ["['0']['weight']", "['0']['bias']"]
    """
    out: list[str] = []

    def walk(node: PyTree, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}[{k!r}]")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif node is not None:
            out.append(path)

    try:
        walk(tree, "")
    except RecursionError:
        raise _diagnosed("tree.paths", tree) from None
    return out


def to_state_dict(params: PyTree) -> dict[str, Any]:
    """Flatten nested params into `{"0.weight": tensor, ...}`, torch's `state_dict` names.

    Empty subtrees (parameter-free layers) leave no entry, as in torch.

    Args:
        params: nested dicts (or lists and tuples) with non-empty `str` keys without `"."`.

    Returns:
        A flat dict from dotted names to the leaves (the same tensors, not copies).

    Raises:
        TreeError: `params` is not a container, or a key is empty, not a `str` or has a `"."`,
            or the tree contains itself (a cycle) or is nested too deep to walk.

    Example:
        >>> params = {"0": {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, "1": {}}
        >>> {name: t.shape for name, t in fnn.tree.to_state_dict(params).items()}
        {'0.weight': torch.Size([2, 3]), '0.bias': torch.Size([2])}
    """
    flat: dict[str, Any] = {}

    def walk(node: PyTree, prefix: str) -> None:
        if isinstance(node, Mapping):
            items = builtins.list(node.items())
        elif isinstance(node, (list, tuple)):
            items = builtins.list((str(i), v) for i, v in enumerate(node))
        elif node is None:
            return
        else:
            flat[prefix[:-1]] = node
            return
        for k, v in items:
            if not isinstance(k, str) or not k or "." in k:
                raise TreeError(
                    f"to_state_dict: key {k!r} at {prefix[:-1] or 'the root'} must be a "
                    "non-empty str without '.'"
                )
            walk(v, f"{prefix}{k}.")

    if not isinstance(params, (Mapping, list, tuple)):
        raise TreeError(f"to_state_dict: expected a dict of params, got {type(params).__name__}")
    try:
        walk(params, "")
    except RecursionError:
        raise _diagnosed("to_state_dict", params) from None
    return flat


def from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Nest flat dotted names (`"0.weight"`) into dicts: the inverse of `to_state_dict`.

    `from_state_dict(seq.state_dict())` gives params the matching `serial` accepts.

    Args:
        state_dict: a mapping from dotted names to tensors, e.g. a torch `state_dict()`.

    Returns:
        Nested dicts with the same leaves (not copies).

    Raises:
        TreeError: `state_dict` is not a mapping, or a name is empty or clashes with another.

    Example:
        >>> fnn.tree.from_state_dict({"0.weight": 1, "0.bias": 2, "2.weight": 3})
        {'0': {'weight': 1, 'bias': 2}, '2': {'weight': 3}}
    """
    if not isinstance(state_dict, Mapping):
        raise TreeError(
            f"from_state_dict: expected a mapping of dotted names to tensors, got "
            f"{type(state_dict).__name__}"
        )
    nested: dict[str, Any] = {}
    for name, value in state_dict.items():
        if not isinstance(name, str) or not name:
            raise TreeError(f"from_state_dict: names must be non-empty str, got {name!r}")
        *parents, last = name.split(".")
        node = nested
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise TreeError(f"from_state_dict: {name!r} nests under a tensor entry {part!r}")
            node = child
        if last in node:
            raise TreeError(f"from_state_dict: {name!r} clashes with another entry")
        node[last] = value
    return nested
