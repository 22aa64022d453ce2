"""fnn.tree on trees that contain themselves or nest too deep: clear TreeErrors, never a
RecursionError; and the isinstance forms every torch we support can compile."""

from __future__ import annotations

import pathlib
import re

import pytest
import torch

import fnn
from fnn.errors import TreeError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _cyclic():
    tree = {"a": [torch.ones(1)], "b": {}}
    tree["a"].append(tree)
    return tree


def _deep(levels):
    tree = torch.ones(1)
    for i in range(levels):
        tree = {"k": tree} if i % 2 else [tree]
    return tree


CALLS = {
    "flatten": fnn.tree.flatten,
    "leaves": fnn.tree.leaves,
    "structure": fnn.tree.structure,
    "paths": fnn.tree.paths,
    "map": lambda t: fnn.tree.map(lambda x: x, t),
    "map of two": lambda t: fnn.tree.map(lambda x, y: x, t, t),
    "assert_same_structure": lambda t: fnn.tree.assert_same_structure(t, t),
    "assert_same_structure shapes=False": lambda t: fnn.tree.assert_same_structure(
        t, t, shapes=False
    ),
    "to_state_dict": fnn.tree.to_state_dict,
}


@pytest.mark.parametrize("name", list(CALLS))
def test_a_cycle_is_a_tree_error_naming_where(name):
    with pytest.raises(TreeError, match=r"contains itself \(a cycle\) at \['a'\]\[1\]"):
        CALLS[name](_cyclic())


@pytest.mark.parametrize("name", list(CALLS))
def test_a_too_deep_tree_is_a_tree_error_giving_its_depth(name):
    with pytest.raises(TreeError, match="nested 5000 containers deep"):
        CALLS[name](_deep(5000))


def test_deep_but_reasonable_trees_still_work_and_shared_subtrees_are_no_cycle():
    tree = _deep(150)
    assert len(fnn.tree.leaves(tree)) == 1
    shared = [torch.ones(1)]
    assert len(fnn.tree.leaves({"a": shared, "b": shared})) == 2


def test_a_recursion_error_from_the_mapped_function_passes_through():
    def endless(x):
        return endless(x)

    with pytest.raises(RecursionError):
        fnn.tree.map(endless, {"a": 1})


@pytest.mark.parametrize("module", ["tree.py", "io.py"])
def test_isinstance_takes_tuples_not_unions(module):
    # `isinstance(x, list | tuple)` breaks the compiled graph on torch 2.3 and 2.6.
    source = (ROOT / "fnn" / module).read_text()
    unions = re.findall(r"isinstance\([^()]*\|[^()]*\)", source)
    assert not unions, unions
