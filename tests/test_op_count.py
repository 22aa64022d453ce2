"""Regression guard: the torch ops dispatched by one disk train step may not grow past
the count documented in docs/performance.md (op count is the currency of small steps)."""

from __future__ import annotations

import collections
import pathlib
import re

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

import fnn
from fnn import layers as L

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "performance.md"


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _documented(case: str) -> int:
    match = re.search(rf"\|\s*{re.escape(case)}\s*\|\s*(\d+)\s*\|", DOC.read_text())
    assert match, f"docs/performance.md has no op-count row for {case!r}"
    return int(match.group(1))


@pytest.mark.parametrize(
    "case, loss, momentum",
    [
        ("MSE, SGD momentum", "mse", 0.9),
        ("MSE, SGD", "mse", 0.0),
        ("cross-entropy, SGD momentum", "cross_entropy", 0.9),
    ],
)
def test_disk_train_step_op_count(case, loss, momentum):
    model = fnn.serial(
        L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
    )
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), 100)
    target = fnn.data.one_hot(labels, 2) if loss == "mse" else labels
    loss_and_grads = fnn.value_and_grad(model.apply, getattr(fnn.losses, loss))
    opt = fnn.optim.sgd(lr=0.1, momentum=momentum)
    state = opt.init(params)
    for _ in range(2):  # past the first step, whose momentum buffer is a plain copy
        _, grads = loss_and_grads(params, x, target)
        params, state = opt.update(params, grads, state)
    with _CountOps() as counter:
        _, grads = loss_and_grads(params, x, target)
        opt.update(params, grads, state)
    count = sum(counter.ops.values())
    assert count <= _documented(case), f"{count} ops now: {dict(counter.ops)}"
    assert count >= _documented(case) - 2, "fewer ops than documented: update docs/performance.md"
