"""Every layer's VJP against central differences (float64) and against torch.autograd
on the matching torch.nn.functional computation, over several shapes incl. batch 1."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from .helpers import assert_trees_close, autograd_vjp, randn


def _dense(p, x):
    return F.linear(x, p["weight"], p.get("bias"))


def _mlp(approximate="none"):
    def fn(p, x):
        h = F.gelu(_dense(p["0"], x), approximate=approximate)
        return _dense(p["2"], h)

    return fn


def _dropout_reference(rate):
    # The torch computation with the mask fnn drew: y = x · mask / (1 − rate).
    def fn(p, x):
        _, apply = L.Dropout(rate)
        y, _ = apply({}, x.detach(), key=fnn.random.key(7))
        mask = (y != 0).to(x.dtype)
        return x * mask / (1 - rate)

    return fn


# name, layer factory, torch reference f(params, x), input shapes, apply kwargs
CASES = [
    ("Dense", lambda: L.Dense(3), _dense, [(1, 4), (5, 4), (2, 3, 4), (4,)], {}),
    ("Dense-no-bias", lambda: L.Dense(2, bias=False), _dense, [(1, 3), (6, 3)], {}),
    ("Mlp", lambda: L.Mlp(6), _mlp(), [(1, 4), (5, 4), (2, 3, 4), (4,)], {}),
    (
        "Mlp-tanh-no-bias",
        lambda: L.Mlp(5, 2, approximate="tanh", bias=False),
        _mlp("tanh"),
        [(1, 3), (6, 3)],
        {},
    ),
    ("Relu", L.Relu, lambda p, x: F.relu(x), [(1, 5), (4, 3), (2, 3, 4)], {}),
    (
        "LeakyRelu",
        lambda: L.LeakyRelu(0.2),
        lambda p, x: F.leaky_relu(x, 0.2),
        [(1, 5), (4, 3)],
        {},
    ),
    ("Tanh", L.Tanh, lambda p, x: torch.tanh(x), [(1, 5), (4, 3), (2, 2, 2)], {}),
    ("Sigmoid", L.Sigmoid, lambda p, x: torch.sigmoid(x), [(1, 5), (4, 3)], {}),
    ("Elu", lambda: L.Elu(1.3), lambda p, x: F.elu(x, 1.3), [(1, 5), (4, 3)], {}),
    ("Gelu", L.Gelu, lambda p, x: F.gelu(x), [(1, 5), (4, 3)], {}),
    (
        "Gelu-tanh",
        lambda: L.Gelu("tanh"),
        lambda p, x: F.gelu(x, approximate="tanh"),
        [(1, 5), (4, 3)],
        {},
    ),
    (
        "Softplus",
        lambda: L.Softplus(2.0, 1.5),
        lambda p, x: F.softplus(x, 2.0, 1.5),
        [(1, 5), (4, 3)],
        {},
    ),
    ("Softmax", L.Softmax, lambda p, x: F.softmax(x, -1), [(1, 5), (4, 3), (2, 3, 4)], {}),
    (
        "LogSoftmax",
        L.LogSoftmax,
        lambda p, x: F.log_softmax(x, -1),
        [(1, 5), (4, 3), (2, 3, 4)],
        {},
    ),
    ("Identity", L.Identity, lambda p, x: x * 1, [(1, 5), (4, 3)], {}),
    ("Flatten", L.Flatten, lambda p, x: x.flatten(1), [(1, 3, 2, 2), (4, 3), (2, 2, 3)], {}),
    (
        "Reshape",
        lambda: L.Reshape((2, -1)),
        lambda p, x: x.reshape(x.shape[0], 2, -1),
        [(1, 6), (3, 2, 2)],
        {},
    ),
    (
        "Dropout",
        lambda: L.Dropout(0.3),
        _dropout_reference(0.3),
        [(1, 5), (6, 4)],
        {"key": fnn.random.key(7)},
    ),
    ("Dropout-eval", lambda: L.Dropout(0.3), lambda p, x: x * 1, [(1, 5), (6, 4)], {}),
]

PARAMS = [
    pytest.param(make, ref, shape, kwargs, id=f"{name}-{'x'.join(map(str, shape))}")
    for name, make, ref, shapes, kwargs in CASES
    for shape in shapes
]


def _setup(make, shape, dtype=torch.float64):
    layer = make()
    _, params = layer.init(
        fnn.random.key(1), (-1, *shape[1:]) if len(shape) > 1 else shape, dtype=dtype
    )
    x = randn(2, *shape, dtype=dtype)
    return layer, params, x


@pytest.mark.parametrize("make, ref, shape, kwargs", PARAMS)
def test_vjp_matches_finite_differences(make, ref, shape, kwargs):
    layer, params, x = _setup(make, shape)
    fnn.testing.check_vjp(layer, params, x, **kwargs)


@pytest.mark.parametrize("make, ref, shape, kwargs", PARAMS)
def test_forward_and_vjp_match_torch_autograd(make, ref, shape, kwargs):
    layer, params, x = _setup(make, shape)
    y, vjp = layer.apply(params, x, **kwargs)
    torch.testing.assert_close(y, ref(params, x), atol=1e-12, rtol=1e-10)
    dy = randn(3, *y.shape)
    dparams, dx = vjp(dy)
    expected_dparams, expected_dx = autograd_vjp(ref, params, x, dy)
    assert_trees_close(dparams, expected_dparams)
    torch.testing.assert_close(dx, expected_dx, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("make, ref, shape, kwargs", PARAMS)
def test_float32_matches_torch(make, ref, shape, kwargs):
    layer, params, x = _setup(make, shape, dtype=torch.float32)
    y, vjp = layer.apply(params, x, **kwargs)
    torch.testing.assert_close(y, ref(params, x))
    dy = torch.ones_like(y)
    dparams, dx = vjp(dy)
    expected_dparams, expected_dx = autograd_vjp(ref, params, x, dy)
    assert_trees_close(dparams, expected_dparams, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx, expected_dx, atol=1e-5, rtol=1e-5)
    assert y.dtype == dx.dtype == torch.float32


@pytest.mark.parametrize("make, ref, shape, kwargs", PARAMS)
def test_vjp_pickles_and_replays(make, ref, shape, kwargs):
    layer, params, x = _setup(make, shape)
    y, vjp = layer.apply(params, x, **kwargs)
    assert isinstance(vjp, fnn.VJP)
    dy = randn(4, *y.shape)
    first = vjp(dy)
    replayed = pickle.loads(pickle.dumps(vjp))(dy)
    again = vjp(dy)
    assert_trees_close(replayed, first, atol=0, rtol=0)
    assert_trees_close(again, first, atol=0, rtol=0)


@pytest.mark.parametrize("make, ref, shape, kwargs", PARAMS)
def test_inputs_are_not_mutated(make, ref, shape, kwargs):
    layer, params, x = _setup(make, shape)
    params_before = fnn.tree.map(torch.clone, params)
    x_before = x.clone()
    y, vjp = layer.apply(params, x, **kwargs)
    dy = randn(5, *y.shape)
    dy_before = dy.clone()
    vjp(dy)
    assert torch.equal(x, x_before) and torch.equal(dy, dy_before)
    assert_trees_close(params, params_before, atol=0, rtol=0)


@pytest.mark.parametrize("make, ref, shape, kwargs", PARAMS)
def test_init_shape_agrees_with_apply(make, ref, shape, kwargs):
    layer = make()
    out_shape, params = layer.init(fnn.random.key(0), (-1, *shape[1:]) if len(shape) > 1 else shape)
    y, _ = layer.apply(params, torch.randn(shape), **kwargs)
    expected = tuple(y.shape)
    if len(shape) > 1:
        expected = (-1, *expected[1:])
    assert tuple(out_shape) == expected


def test_relu_gradient_at_zero_is_zero_like_torch():
    x = torch.tensor([[-1.0, 0.0, 2.0]])
    _y, vjp = L.Relu().apply({}, x)
    _, dx = vjp(torch.ones(1, 3))
    assert dx.tolist() == [[0.0, 0.0, 1.0]]


def test_dense_default_init_matches_torch_linear_bounds():
    _, params = L.Dense(300).init(fnn.random.key(0), (-1, 50))
    bound = 1 / 50**0.5
    for leaf in params.values():
        assert leaf.abs().max() <= bound
        assert leaf.abs().max() > 0.95 * bound  # uniform over the whole range
    assert abs(params["weight"].std().item() - bound / 3**0.5) < 0.01 * bound * 10


def test_dense_weight_layout_is_torch_linear():
    _, params = L.Dense(3).init(fnn.random.key(0), (-1, 5))
    assert params["weight"].shape == (3, 5) and params["bias"].shape == (3,)
    linear = torch.nn.Linear(5, 3)
    linear.load_state_dict(params)
    x = torch.randn(4, 5)
    with torch.no_grad():
        torch.testing.assert_close(L.Dense(3).apply(params, x)[0], linear(x))


def test_dropout_zeroes_with_probability_rate_and_rescales():
    x = torch.ones(200, 100)
    y, _ = L.Dropout(0.25).apply({}, x, key=fnn.random.key(3))
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))


def test_dropout_without_key_is_identity_and_same_key_same_mask():
    x = torch.randn(10, 10)
    assert torch.equal(L.Dropout(0.5).apply({}, x)[0], x)
    a, _ = L.Dropout(0.5).apply({}, x, key=fnn.random.key(1))
    b, _ = L.Dropout(0.5).apply({}, x, key=fnn.random.key(1))
    c, _ = L.Dropout(0.5).apply({}, x, key=fnn.random.key(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_log_softmax_and_softplus_are_stable_for_large_inputs():
    x = torch.tensor([[1e4, -1e4, 0.0]])
    y, vjp = L.LogSoftmax().apply({}, x)
    assert torch.isfinite(y).all() and torch.isfinite(vjp(torch.ones_like(y))[1]).all()
    y, vjp = L.Softplus().apply({}, x)
    assert torch.isfinite(y).all() and y[0, 0] == 1e4
    assert torch.isfinite(vjp(torch.ones_like(y))[1]).all()


# y = x²   ⇒   dx = 2 x dy
def square_backward(x, dy):
    return {}, 2 * x * dy


def test_elementwise_factory_makes_a_custom_activation():
    layer = L.elementwise("Square", torch.square, square_backward, keep="input")
    fnn.testing.check_vjp(layer, {}, randn(0, 3, 2))
