"""A train step built from fnn compiles whole (fullgraph=True: zero graph breaks) and
gives the same numbers as eager. The aot_eager backend traces exactly what inductor would
compile, without spending CI time generating C++ (the benchmark uses inductor)."""

from __future__ import annotations

import torch

import fnn
from fnn import layers as L

from .helpers import requires_compile

# Compiling fnn code needs dynamo to call a VJP (a NamedTuple instance): torch 2.13 and newer.
pytestmark = requires_compile


def _train_step(loss_fn, optimizer):
    model = fnn.serial(L.Dense(25), L.Relu(), L.Dense(25), L.Tanh(), L.Dense(2))
    loss_and_grads = fnn.value_and_grad(model.apply, loss_fn)

    def step(params, state, x, target):
        loss, grads = loss_and_grads(params, x, target)
        params, state = optimizer.update(params, grads, state)
        return loss, params, state

    return model, step


def test_train_step_compiles_with_zero_graph_breaks_and_matches_eager():
    torch._dynamo.reset()
    optimizer = fnn.optim.sgd(lr=lambda step: 0.1 * (1 - step / 100), momentum=0.9)
    model, step = _train_step(fnn.losses.cross_entropy, optimizer)
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), 64)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_params, eager_state = params, optimizer.init(params)
    params, state = params, optimizer.init(params)
    for _ in range(4):
        loss, params, state = compiled(params, state, x, labels)
        eager_loss, eager_params, eager_state = step(eager_params, eager_state, x, labels)
        torch.testing.assert_close(loss, eager_loss, atol=1e-6, rtol=1e-6)
    for a, b in zip(fnn.tree.leaves(params), fnn.tree.leaves(eager_params)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert state["step"] == eager_state["step"] == 4


def test_explain_reports_one_graph_for_an_mse_adam_step():
    torch._dynamo.reset()
    optimizer = fnn.optim.adam(lr=1e-2)
    model, step = _train_step(fnn.losses.mse, optimizer)
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x = fnn.random.uniform(fnn.random.key(1), (16, 2))
    target = fnn.random.normal(fnn.random.key(2), (16, 2))
    explanation = torch._dynamo.explain(step)(params, optimizer.init(params), x, target)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
