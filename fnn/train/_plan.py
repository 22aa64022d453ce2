"""What the train step can compute inline: a plan read from the layers' declarations.

`plan(apply)` walks a model once (through `fnn.core.layer_info`, nothing else) and gives
one `Node` per child of its top-level `serial`, each
either *inline* (its `LayerInfo.step` says how: Dense, elementwise) or *opaque* (run
through its own `apply` and VJP). A model that is not a `serial` is one opaque node.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

from ..core import Layer, LayerInfo, layer_info


class Node(NamedTuple):
    path: tuple[str, ...]  # the params keys leading to this layer, e.g. ("2",)
    where: str  # for messages: "serial[2] Dense"
    apply: Any  # the layer's own apply (opaque nodes run it)
    info: LayerInfo
    inline: bool  # computed by the step's own code (info.step), not through its VJP


class Plan(NamedTuple):
    nodes: tuple[Node, ...]
    top_keys: tuple[str, ...]  # the top-level serial's child keys ("0", "1", ...)
    serial: bool  # whether the model is a serial (else one opaque node)
    keywords: frozenset[str] | None


def plan(apply: Any) -> Plan:
    """The nodes of `apply`'s model, in order (see the module docstring)."""
    info = layer_info(apply)
    if info.kind != "serial":
        node = Node((), info.name, apply, info, False)
        return Plan((node,), (), False, info.keywords)
    nodes: list[Node] = []
    _walk(info.children, (), "serial", nodes)
    return Plan(tuple(nodes), tuple(str(i) for i in range(len(info.children))), True, info.keywords)


def _walk(children: tuple[Layer, ...], path: tuple[str, ...], where: str, out: list[Node]) -> None:
    for i, child in enumerate(children):
        info = layer_info(child)
        child_path = (*path, str(i))
        child_where = f"{where}[{i}]"
        inline = info.step is not None and info.step[0] in ("dense", "elementwise")
        out.append(Node(child_path, f"{child_where} {info.name}", child[1], info, inline))


def stateful(info: LayerInfo) -> bool:
    """Whether a layer (or a layer inside it) has running statistics."""
    if info.init_state is not None:
        return True
    return any(stateful(layer_info(c)) for c in info.children)


def is_current(backward: Any) -> bool:
    """Whether `backward` is still what its module names: a patched backward is not, and the
    step then runs that layer through its VJP (the patch)."""
    module = sys.modules.get(backward.__module__)
    return module is not None and getattr(module, backward.__name__, None) is backward
