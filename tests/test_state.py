"""The state design: BatchNorm's running statistics travel as an explicit tree beside the
params, through serial, parallel (a residual block) and value_and_grad, with torch's
state_dict names; stateless models keep the (y, vjp) contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from .helpers import assert_trees_close, randn

SHAPE = (-1, 2, 6, 6)


def residual_model():
    """conv–BN–relu, then a residual block x + BN(conv(relu(BN(conv(x))))), pool, linear."""
    block = fnn.serial(
        L.Conv(4, 3, padding=1), L.BatchNorm(), L.Relu(), L.Conv(4, 3, padding=1), L.BatchNorm()
    )
    return fnn.serial(
        L.Conv(4, 3, padding=1), L.BatchNorm(), L.Relu(),
        L.FanOut(2), fnn.parallel(block, L.Identity()), L.FanInSum(), L.Relu(),
        L.MaxPool(2), L.Flatten(), L.Dense(3),
    )  # fmt: skip


class TorchResidual(torch.nn.Module):
    """torch twin of residual_model(), with the same state_dict names ("4.0.1.running_mean", …)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        block = nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.BatchNorm2d(4),
        )
        self.layers = nn.ModuleDict({
            "0": nn.Conv2d(2, 4, 3, padding=1), "1": nn.BatchNorm2d(4), "4": nn.ModuleDict({"0": block}),
            "9": nn.Linear(36, 3),
        })  # fmt: skip

    def forward(self, x):
        m = self.layers
        h = F.relu(m["1"](m["0"](x)))
        h = F.relu(m["4"]["0"](h) + h)
        return m["9"](F.max_pool2d(h, 2).flatten(1))


def _setup(dtype=torch.float64):
    model = residual_model()
    _, params = model.init(fnn.random.key(0), SHAPE, dtype=dtype)
    state = fnn.init_state(model, SHAPE, dtype=dtype)
    torch_model = TorchResidual().to(dtype)
    torch_model.layers.load_state_dict(
        fnn.tree.to_state_dict(params) | fnn.tree.to_state_dict(state)
    )
    return model, params, state, torch_model


def test_state_names_are_torch_buffer_names():
    _model, params, state, torch_model = _setup()
    names = list(fnn.tree.to_state_dict(state))
    assert names == [
        f"{p}.{leaf}"
        for p in ("1", "4.0.1", "4.0.4")
        for leaf in ("running_mean", "running_var", "num_batches_tracked")
    ]
    both = fnn.tree.to_state_dict(params) | fnn.tree.to_state_dict(state)
    assert set(both) == set(torch_model.layers.state_dict())
    assert not set(fnn.tree.to_state_dict(params)) & set(names)  # params hold no statistics


def test_training_steps_match_torch_grads_losses_and_running_statistics():
    model, params, state, torch_model = _setup()
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    opt = torch.optim.SGD(torch_model.parameters(), lr=0.1)
    for step in range(3):
        x, labels = randn(step, 5, 2, 6, 6), torch.tensor([0, 1, 2, 1, 0])
        value, grads, state = loss_and_grads(params, x, labels, state=state, train=True)
        with torch.enable_grad():
            opt.zero_grad()
            expected = F.cross_entropy(torch_model(x), labels)
            expected.backward()
        torch.testing.assert_close(value, expected.detach(), atol=1e-12, rtol=1e-10)
        fnn.tree.assert_same_structure(params, grads)
        torch_grads = {k: p.grad for k, p in torch_model.layers.named_parameters()}
        assert_trees_close(fnn.tree.to_state_dict(grads), torch_grads, atol=1e-10, rtol=1e-8)
        opt.step()
        params = fnn.update(params, grads, lr=0.1)
    buffers = {
        k: v for k, v in torch_model.layers.state_dict().items() if "running" in k or "batches" in k
    }
    assert_trees_close(fnn.tree.to_state_dict(state), buffers, atol=1e-12, rtol=1e-10)
    assert int(state["4"]["0"]["4"]["num_batches_tracked"]) == 3
    torch_model.eval()
    x = randn(9, 4, 2, 6, 6)
    y, _, same = model.apply(params, x, state=state, train=False)
    torch.testing.assert_close(y, torch_model(x).detach(), atol=1e-12, rtol=1e-10)
    assert fnn.tree.structure(same) == fnn.tree.structure(state)


def test_has_aux_returns_the_output_and_the_new_state_last():
    model, params, state, _ = _setup()
    x, labels = randn(1, 3, 2, 6, 6), torch.tensor([0, 1, 2])
    (value, y), _grads, new_state = fnn.value_and_grad(
        model.apply, fnn.losses.cross_entropy, has_aux=True
    )(params, x, labels, state=state, train=True)
    assert y.shape == (3, 3) and value.ndim == 0
    assert fnn.tree.structure(new_state) == fnn.tree.structure(state)
    assert not torch.equal(new_state["1"]["running_mean"], state["1"]["running_mean"])


def test_stateless_models_keep_the_two_output_contract():
    model = fnn.serial(L.Conv(2, 3), L.Relu(), L.Flatten(), L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 1, 5, 5))
    assert fnn.init_state(model, (-1, 1, 5, 5)) == {}
    x = torch.randn(2, 1, 5, 5)
    y, _vjp = model.apply(params, x)
    y2, _vjp2, new_state = model.apply(params, x, state={}, train=True)  # any model accepts a state
    assert torch.equal(y, y2) and new_state == {}
    value, grads = fnn.value_and_grad(model.apply, fnn.losses.mse)(params, x, torch.zeros(2, 2))
    value2, grads2, _ = fnn.value_and_grad(model.apply, fnn.losses.mse)(
        params, x, torch.zeros(2, 2), state={}
    )
    assert torch.equal(value, value2)
    assert_trees_close(grads2, grads, atol=0, rtol=0)


def test_split_separates_a_torch_state_dict_into_params_and_state():
    model, params, state, torch_model = _setup()
    both = fnn.tree.from_state_dict(torch_model.layers.state_dict())
    got_params, got_state = fnn.state.split(both, like=state)
    assert fnn.tree.structure(got_state) == fnn.tree.structure(state)
    assert set(fnn.tree.to_state_dict(got_params)) == set(fnn.tree.to_state_dict(params))
    model.apply(got_params, randn(0, 2, 2, 6, 6), state=got_state, train=False)
    with pytest.raises(fnn.errors.TreeError, match=r"split: the tree has no entries \['4'\]"):
        fnn.state.split({"1": both["1"]}, like=state)


def test_bind_gives_a_stateless_layer_for_check_vjp_and_inference():
    model = fnn.serial(L.Conv(3, 3), L.BatchNorm(), L.Relu(), L.AvgPool(2))
    _, params = model.init(fnn.random.key(0), (-1, 2, 6, 6), dtype=torch.float64)
    state = fnn.init_state(model, (-1, 2, 6, 6), dtype=torch.float64)
    x = randn(1, 3, 2, 6, 6)
    for train in (True, False):
        fnn.testing.check_vjp(fnn.state.bind(model, state, train=train), params, x)
    y, _ = fnn.state.bind(model, state, train=False).apply(params, x)
    assert torch.equal(y, model.apply(params, x, state=state, train=False)[0])


def test_state_errors_name_the_position():
    model, params, state, _ = _setup()
    x = randn(0, 2, 2, 6, 6)
    with pytest.raises(
        fnn.errors.FnnError, match=r"^serial\[1\] BatchNorm: needs its running statistics"
    ):
        model.apply(params, x)
    with pytest.raises(
        fnn.errors.FnnError,
        match=r"^serial\[4\] parallel\[0\] serial\[1\] BatchNorm: needs its running",
    ):
        model.apply(params, x, state={"1": state["1"]}, train=True)
    with pytest.raises(fnn.errors.TreeError, match=r"serial: unexpected state keys \['12'\]"):
        model.apply(params, x, state={**state, "12": {}}, train=True)
    with pytest.raises(fnn.errors.TreeError, match="serial: expected state as a dict"):
        model.apply(params, x, state=[1], train=True)
    with pytest.raises(fnn.errors.FnnTypeError, match="init_state: expected a Layer"):
        fnn.init_state(L.BatchNorm, (-1, 3))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"^serial\[0\] Conv: expected an NCHW input shape"
    ):
        fnn.init_state(model, (-1, 2))
