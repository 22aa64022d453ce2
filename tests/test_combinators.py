"""serial, parallel and the fans: params nesting, gradients against autograd, key splitting."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from .helpers import assert_trees_close, autograd_vjp, randn

MLP = [L.Dense(5), L.Tanh(), L.Dense(4), L.Relu(), L.Dense(3)]


def _mlp_reference(p, x):
    h = torch.tanh(F.linear(x, p["0"]["weight"], p["0"]["bias"]))
    h = F.relu(F.linear(h, p["2"]["weight"], p["2"]["bias"]))
    return F.linear(h, p["4"]["weight"], p["4"]["bias"])


@pytest.mark.parametrize("batch", [1, 7])
def test_serial_gradients_match_autograd_and_finite_differences(batch):
    model = fnn.serial(*MLP)
    out_shape, params = model.init(fnn.random.key(0), (-1, 3), dtype=torch.float64)
    assert out_shape == (-1, 3)
    assert list(params) == ["0", "1", "2", "3", "4"] and params["1"] == {} and params["3"] == {}
    x = randn(1, batch, 3)
    y, vjp = model.apply(params, x)
    torch.testing.assert_close(y, _mlp_reference(params, x))
    dy = randn(2, batch, 3)
    dparams, dx = vjp(dy)
    expected_dparams, expected_dx = autograd_vjp(_mlp_reference, params, x, dy)
    assert_trees_close(dparams, expected_dparams)
    torch.testing.assert_close(dx, expected_dx)
    fnn.testing.check_vjp(model, params, x)


def test_serial_param_names_match_torch_sequential_state_dict():
    _, params = fnn.serial(*MLP).init(fnn.random.key(0), (-1, 3))
    seq = torch.nn.Sequential(
        torch.nn.Linear(3, 5),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 4),
        torch.nn.ReLU(),
        torch.nn.Linear(4, 3),
    )
    assert list(fnn.tree.to_state_dict(params)) == list(seq.state_dict())
    seq.load_state_dict(fnn.tree.to_state_dict(params))
    x = torch.randn(6, 3)
    with torch.no_grad():
        torch.testing.assert_close(fnn.serial(*MLP).apply(params, x)[0], seq(x))


def test_serial_accepts_params_loaded_from_a_torch_state_dict():
    seq = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    params = fnn.tree.from_state_dict(seq.state_dict())
    assert "1" not in params
    model = fnn.serial(L.Dense(5), L.Relu(), L.Dense(2))
    x = torch.randn(4, 3)
    y, vjp = model.apply(params, x)
    with torch.no_grad():
        torch.testing.assert_close(y, seq(x))
    dparams, _ = vjp(torch.ones_like(y))
    assert fnn.tree.structure(dparams) == fnn.tree.structure(params)  # no entry for the Relu either


def test_nested_serial_nests_params_and_gradients():
    block = fnn.serial(L.Dense(4), L.Relu())
    model = fnn.serial(block, block, L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 3), dtype=torch.float64)
    assert set(params["0"]) == {"0", "1"} and params["0"]["0"]["weight"].shape == (4, 3)
    assert params["1"]["0"]["weight"].shape == (4, 4)
    fnn.testing.check_vjp(model, params, randn(0, 2, 3))


def _residual_block():
    return fnn.serial(
        L.FanOut(2), fnn.parallel(fnn.serial(L.Dense(4), L.Tanh()), L.Identity()), L.FanInSum()
    )


def test_residual_block_from_fans_matches_autograd():
    model = _residual_block()
    shape, params = model.init(fnn.random.key(0), (-1, 4), dtype=torch.float64)
    assert shape == (-1, 4)
    x = randn(1, 3, 4)

    def reference(p, x):
        return torch.tanh(F.linear(x, p["1"]["0"]["0"]["weight"], p["1"]["0"]["0"]["bias"])) + x

    y, vjp = model.apply(params, x)
    torch.testing.assert_close(y, reference(params, x))
    dy = randn(2, 3, 4)
    dparams, dx = vjp(dy)
    expected_dparams, expected_dx = autograd_vjp(reference, params, x, dy)
    assert_trees_close(dparams, expected_dparams)
    torch.testing.assert_close(dx, expected_dx)
    fnn.testing.check_vjp(model, params, x)


def test_parallel_maps_layers_over_inputs():
    model = fnn.parallel(L.Dense(2), L.Sigmoid())
    shapes, params = model.init(fnn.random.key(0), [(-1, 3), (-1, 5)], dtype=torch.float64)
    assert shapes == [(-1, 2), (-1, 5)] and params["1"] == {}
    x = (randn(0, 4, 3), randn(1, 4, 5))

    def reference(p, xs):
        return F.linear(xs[0], p["0"]["weight"], p["0"]["bias"]), torch.sigmoid(xs[1])

    _ys, vjp = model.apply(params, x)
    dy = (randn(2, 4, 2), randn(3, 4, 5))
    dparams, dx = vjp(dy)
    expected_dparams, expected_dx = autograd_vjp(reference, params, x, dy)
    assert_trees_close(dparams, expected_dparams)
    assert_trees_close(dx, expected_dx)
    fnn.testing.check_vjp(model, params, x)


def test_fan_in_concat_splits_the_cotangent():
    model = fnn.serial(L.FanOut(2), fnn.parallel(L.Dense(3), L.Dense(2)), L.FanInConcat(axis=1))
    shape, params = model.init(fnn.random.key(0), (-1, 4), dtype=torch.float64)
    assert shape == (-1, 5)
    x = randn(0, 2, 4)

    def reference(p, x):
        a = F.linear(x, p["1"]["0"]["weight"], p["1"]["0"]["bias"])
        b = F.linear(x, p["1"]["1"]["weight"], p["1"]["1"]["bias"])
        return torch.cat([a, b], 1)

    _y, vjp = model.apply(params, x)
    dy = randn(1, 2, 5)
    dparams, dx = vjp(dy)
    expected_dparams, expected_dx = autograd_vjp(reference, params, x, dy)
    assert_trees_close(dparams, expected_dparams)
    torch.testing.assert_close(dx, expected_dx)
    fnn.testing.check_vjp(model, params, x)


def test_serial_splits_the_key_among_dropout_layers():
    model = fnn.serial(L.Dropout(0.5), L.Dropout(0.5))
    x = torch.ones(1, 1000)
    y1, _ = model.apply({}, x, key=fnn.random.key(0))
    y2, _ = model.apply({}, x, key=fnn.random.key(0))
    assert torch.equal(y1, y2)
    # The two layers use different keys: survivors of both are scaled twice (×4), about a quarter.
    assert abs((y1 == 4).float().mean().item() - 0.25) < 0.05
    single, _ = L.Dropout(0.5).apply({}, x, key=fnn.random.key(0))
    assert not torch.equal(y1 != 0, single != 0)


def test_serial_vjp_pickles_and_replays():
    model = fnn.serial(*MLP)
    _, params = model.init(fnn.random.key(0), (-1, 3))
    _y, vjp = model.apply(params, torch.randn(4, 3))
    dy = torch.randn(4, 3)
    expected = vjp(dy)
    assert_trees_close(pickle.loads(pickle.dumps(vjp))(dy), expected, atol=0, rtol=0)
    assert vjp.backward.__qualname__ == "serial_backward"


def test_serial_rejects_unknown_params_keys_and_non_layers():
    model = fnn.serial(L.Dense(2), L.Relu())
    _, params = model.init(fnn.random.key(0), (-1, 3))
    with pytest.raises(ValueError, match=r"serial: unexpected params keys \['7'\]"):
        model.apply({**params, "7": {}}, torch.ones(1, 3))
    with pytest.raises(TypeError, match=r"serial\[1\].*forget the call"):
        fnn.serial(L.Dense(2), L.Relu)
