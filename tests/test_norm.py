"""LayerNorm and BatchNorm: VJPs against central differences (float64) and torch.autograd
on F.layer_norm / F.batch_norm (training and evaluation), over several shapes incl. batch 1;
BatchNorm's running statistics equal torch.nn.BatchNorm1d/2d's after several steps and
evaluation uses them; the state is never mutated; clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from .helpers import assert_trees_close, autograd_vjp, randn


def _random_affine(params, seed):
    # Not the ones/zeros init, so that weight and bias gradients are really tested.
    return {k: randn(seed + i, *v.shape, dtype=v.dtype) for i, (k, v) in enumerate(params.items())}


# ---------------------------------------------------------------- LayerNorm

LAYER_NORM_SHAPES = [(1, 5), (4, 3), (2, 3, 4), (6,)]


@pytest.mark.parametrize("shape", LAYER_NORM_SHAPES, ids=str)
def test_layer_norm_matches_finite_differences_and_autograd(shape):
    layer = L.LayerNorm(eps=1e-3)
    out_shape, params = layer.init(fnn.random.key(0), shape, dtype=torch.float64)
    params = _random_affine(params, 1)
    x = randn(3, *shape)
    fnn.testing.check_vjp(layer, params, x)

    def reference(p, x):
        return F.layer_norm(x, x.shape[-1:], p["weight"], p["bias"], eps=1e-3)

    y, vjp = layer.apply(params, x)
    assert out_shape == shape
    torch.testing.assert_close(y, reference(params, x), atol=1e-12, rtol=1e-10)
    dy = randn(4, *y.shape)
    expected = autograd_vjp(reference, params, x, dy)
    dparams, dx = vjp(dy)
    assert_trees_close(dparams, expected[0])
    torch.testing.assert_close(dx, expected[1], atol=1e-10, rtol=1e-8)
    assert pickle.loads(pickle.dumps(vjp))(dy)[1].equal(dx)


def test_layer_norm_params_load_into_torch_layer_norm():
    _, params = L.LayerNorm().init(fnn.random.key(0), (-1, 7))
    module = torch.nn.LayerNorm(7)
    module.load_state_dict(params)
    x = torch.randn(3, 7)
    torch.testing.assert_close(L.LayerNorm().apply(params, x)[0], module(x).detach())


def test_layer_norm_errors_name_the_layer():
    init, apply = L.LayerNorm()
    _, params = init(fnn.random.key(0), (-1, 4))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"LayerNorm: expected an input of shape \(\.\.\., 4\), got \(2, 5\)",
    ):
        apply(params, torch.ones(2, 5))
    with pytest.raises(fnn.errors.TreeError, match=r"LayerNorm: params missing \['bias'\]"):
        apply({"weight": params["weight"]}, torch.ones(2, 4))
    with pytest.raises(fnn.errors.FnnTypeError, match="LayerNorm: expected a floating-point input"):
        apply(params, torch.ones(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="LayerNorm: eps must be a number"):
        L.LayerNorm(eps="small")


# ---------------------------------------------------------------- BatchNorm

BATCH_NORM_SHAPES = [(4, 3), (1, 3, 2, 2), (2, 3, 3, 5), (5, 2, 4), (3, 1, 2, 2)]


def _batch_norm(shape, dtype=torch.float64, **kwargs):
    layer = L.BatchNorm(**kwargs)
    _, params = layer.init(fnn.random.key(0), (-1, *shape[1:]), dtype=dtype)
    state = fnn.init_state(layer, (-1, *shape[1:]), dtype=dtype)
    return layer, _random_affine(params, 1), state


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", BATCH_NORM_SHAPES, ids=str)
def test_batch_norm_matches_finite_differences_and_autograd(shape, train):
    layer, params, state = _batch_norm(shape, eps=1e-3)
    channels = shape[1]
    state = {  # running statistics that are not the initial zeros and ones
        "running_mean": randn(5, channels),
        "running_var": randn(6, channels).abs() + 0.5,
        "num_batches_tracked": torch.tensor(3),
    }
    x = randn(3, *shape)
    fnn.testing.check_vjp(fnn.state.bind(layer, state, train=train), params, x)

    def reference(p, x):
        return F.batch_norm(
            x,
            state["running_mean"].clone(),
            state["running_var"].clone(),
            p["weight"],
            p["bias"],
            train,
            0.1,
            1e-3,
        )

    y, vjp, new_state = layer.apply(params, x, state=state, train=train)
    torch.testing.assert_close(y, reference(params, x), atol=1e-12, rtol=1e-10)
    dy = randn(4, *y.shape)
    expected = autograd_vjp(reference, params, x, dy)
    dparams, dx = vjp(dy)
    assert_trees_close(dparams, expected[0], atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(dx, expected[1], atol=1e-10, rtol=1e-8)
    assert pickle.loads(pickle.dumps(vjp))(dy)[1].equal(dx)
    assert (new_state is state) == (not train)


@pytest.mark.parametrize(
    "module, shape, kwargs",
    [
        (lambda: torch.nn.BatchNorm2d(3), (4, 3, 5, 5), {}),
        (lambda: torch.nn.BatchNorm1d(4), (6, 4), {}),
        (
            lambda: torch.nn.BatchNorm1d(2, momentum=0.3, eps=1e-3),
            (3, 2, 7),
            {"momentum": 0.3, "eps": 1e-3},
        ),
        (lambda: torch.nn.BatchNorm2d(2, momentum=None), (2, 2, 3, 3), {"momentum": None}),
    ],
    ids=["BatchNorm2d", "BatchNorm1d", "momentum0.3-eps1e-3", "cumulative"],
)
def test_running_statistics_follow_torch_and_eval_uses_them(module, shape, kwargs):
    torch_bn = module()
    layer, params, state = _batch_norm(shape, dtype=torch.float32, **kwargs)
    torch_bn.load_state_dict(params | state)
    initial = fnn.tree.map(torch.clone, state)
    for step in range(5):
        x = fnn.random.normal(
            fnn.random.key(step), shape, 2.0, 3.0
        )  # mean 2, std 3: far from the init
        previous = state
        y, _, state = layer.apply(params, x, state=state, train=True)
        torch_bn.train()
        torch.testing.assert_close(y, torch_bn(x).detach(), atol=1e-5, rtol=1e-5)
        assert previous["running_mean"] is not state["running_mean"]
    assert_trees_close(
        initial, fnn.init_state(layer, (-1, *shape[1:])), atol=0, rtol=0
    )  # never mutated
    for name, value in state.items():
        torch.testing.assert_close(
            value, torch_bn.state_dict()[name], atol=1e-6, rtol=1e-6, msg=name
        )
    assert (
        int(state["num_batches_tracked"]) == 5 and state["num_batches_tracked"].dtype == torch.int64
    )
    assert (state["running_mean"] - 2.0).abs().max() < 2.0  # the statistics moved toward the data's
    torch_bn.eval()
    x = torch.randn(shape)
    y, _, same = layer.apply(params, x, state=state, train=False)
    torch.testing.assert_close(y, torch_bn(x).detach(), atol=1e-5, rtol=1e-5)
    assert same is state
    batch_stats = layer.apply(params, x, state=state, train=True)[0]
    assert not torch.allclose(y, batch_stats, atol=1e-3)  # eval really used the running statistics


def test_batch_norm_state_has_torch_buffer_names_and_no_gradients():
    layer, params, state = _batch_norm((4, 3, 2, 2))
    assert list(state) == ["running_mean", "running_var", "num_batches_tracked"]
    assert set(params | state) == set(torch.nn.BatchNorm2d(3).state_dict())
    _, vjp, _ = layer.apply(params, randn(0, 4, 3, 2, 2), state=state, train=True)
    dparams, _ = vjp(randn(1, 4, 3, 2, 2))
    assert sorted(dparams) == ["bias", "weight"]


def test_batch_norm_errors_say_what_is_missing():
    layer, params, state = _batch_norm((4, 3))
    x = torch.ones(4, 3, dtype=torch.float64)
    with pytest.raises(
        fnn.errors.FnnError, match=r"BatchNorm: needs its running statistics: .*fnn.init_state"
    ):
        layer.apply(params, x)
    with pytest.raises(fnn.errors.FnnError, match=r"BatchNorm: say train=True .* or train=False"):
        layer.apply(params, x, state=state)
    with pytest.raises(
        fnn.errors.TreeError, match=r"BatchNorm: state keys must be \['running_mean'"
    ):
        layer.apply(params, x, state={"running_mean": state["running_mean"]}, train=True)
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"BatchNorm: state\['running_var'\] must be a tensor of shape \(3,\)",
    ):
        layer.apply(params, x, state={**state, "running_var": torch.ones(4)}, train=False)
    with pytest.raises(
        fnn.errors.FnnError, match=r"BatchNorm: state\['running_mean'\] has dtype torch.float32 but"
    ):
        layer.apply(params, x, state=fnn.init_state(layer, (-1, 3)), train=True)
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"BatchNorm: expected an input of shape \(N, 3, \.\.\.\), got \(4, 5\)",
    ):
        layer.apply(params, torch.ones(4, 5, dtype=torch.float64), state=state, train=True)
    with pytest.raises(
        fnn.errors.ShapeError, match="BatchNorm: training needs more than one value per channel"
    ):
        layer.apply(params, torch.ones(1, 3, dtype=torch.float64), state=state, train=True)
    layer.apply(
        params, torch.ones(1, 3, dtype=torch.float64), state=state, train=False
    )  # eval: fine
    with pytest.raises(
        fnn.errors.ShapeError, match=r"BatchNorm: expected an input shape of rank ≥ 2"
    ):
        layer.init(fnn.random.key(0), (-1,))
    with pytest.raises(ValueError, match="BatchNorm: momentum must be a number"):
        L.BatchNorm(momentum="fast")
