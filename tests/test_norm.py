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

from .helpers import assert_trees_close, autograd_vjp, randn, requires_compile


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


# ---------------------------------------------------------------- torch.nn parity (§7)
#
# Each case: an fnn layer, the torch.nn module with the same options, input shapes (batch 1,
# empty batch, unbatched where torch takes it). The module's state_dict (weights made random)
# loads into the fnn layer; forward and VJP must equal the module's and autograd's.


def _torch_twin(module, seed=11):
    module = module.double()
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.copy_(randn(seed + i, *p.shape))
    return module


def _noncontiguous(t):
    """`t`'s values in a strided view (every other element of the last axis)."""
    if t.ndim == 0:
        return t
    out = t.new_empty(*t.shape[:-1], 2 * t.shape[-1])[..., ::2]
    out.copy_(t)
    assert not out.is_contiguous() or t.shape[-1] <= 1 or t.numel() == 0
    return out


def _module_fn(module):
    def fn(p, x):
        return torch.func.functional_call(module, fnn.tree.to_state_dict(p), (x,))

    return fn


PARITY = [
    # id, fnn layer, torch module, shapes
    (
        "LayerNorm",
        lambda: L.LayerNorm(),
        lambda: torch.nn.LayerNorm(5),
        [(3, 5), (1, 5), (0, 5), (5,)],
    ),
    (
        "LayerNorm-2d",
        lambda: L.LayerNorm((3, 4), eps=1e-3),
        lambda: torch.nn.LayerNorm((3, 4), eps=1e-3),
        [(2, 3, 4), (0, 3, 4), (3, 4)],
    ),
    (
        "LayerNorm-int-nobias",
        lambda: L.LayerNorm(4, bias=False),
        lambda: torch.nn.LayerNorm(4, bias=False),
        [(2, 3, 4), (1, 4)],
    ),
    (
        "LayerNorm-noaffine",
        lambda: L.LayerNorm(4, elementwise_affine=False),
        lambda: torch.nn.LayerNorm(4, elementwise_affine=False),
        [(2, 3, 4), (0, 4)],
    ),
    ("RMSNorm", lambda: L.RMSNorm(), lambda: torch.nn.RMSNorm(5), [(3, 5), (1, 5), (0, 5), (5,)]),
    (
        "RMSNorm-2d-eps",
        lambda: L.RMSNorm((3, 4), eps=1e-2),
        lambda: torch.nn.RMSNorm((3, 4), eps=1e-2),
        [(2, 3, 4), (0, 3, 4)],
    ),
    (
        "RMSNorm-noaffine",
        lambda: L.RMSNorm(4, elementwise_affine=False),
        lambda: torch.nn.RMSNorm(4, elementwise_affine=False),
        [(2, 4), (3, 2, 4)],
    ),
    (
        "GroupNorm",
        lambda: L.GroupNorm(2),
        lambda: torch.nn.GroupNorm(2, 4),
        [(2, 4, 3), (1, 4, 2, 2), (0, 4, 3), (3, 4)],
    ),
    (
        "GroupNorm-1-noaffine",
        lambda: L.GroupNorm(1, eps=1e-3, affine=False),
        lambda: torch.nn.GroupNorm(1, 6, eps=1e-3, affine=False),
        [(2, 6, 2), (1, 6)],
    ),
    (
        "GroupNorm-instance",
        lambda: L.GroupNorm(3),
        lambda: torch.nn.GroupNorm(3, 3),
        [(2, 3, 2, 1, 2), (1, 3, 4)],
    ),
    (
        "BatchNorm-batch-stats",
        lambda: L.BatchNorm(track_running_stats=False),
        lambda: torch.nn.BatchNorm1d(3, track_running_stats=False),
        [(4, 3), (2, 3, 5), (0, 3), (0, 3, 2)],
    ),
    (
        "BatchNorm-batch-stats-noaffine-2d",
        lambda: L.BatchNorm(eps=1e-3, affine=False, track_running_stats=False),
        lambda: torch.nn.BatchNorm2d(2, eps=1e-3, affine=False, track_running_stats=False),
        [(2, 2, 3, 2), (1, 2, 2, 2)],
    ),
]

PARITY_PARAMS = [
    pytest.param(
        make,
        twin,
        shape,
        # unbatched shapes (one axis fewer than the first) are given to init as they are
        (-1, *shape[1:]) if len(shape) == len(shapes[0]) else shape,
        id=f"{name}-{'x'.join(map(str, shape))}",
    )
    for name, make, twin, shapes in PARITY
    for shape in shapes
]


@pytest.mark.parametrize("make, twin, shape, init_shape", PARITY_PARAMS)
def test_norm_matches_torch_module_and_autograd(make, twin, shape, init_shape):
    module = _torch_twin(twin())
    layer = make()
    out_shape, init_params = layer.init(fnn.random.key(0), init_shape, dtype=torch.float64)
    params = fnn.tree.from_state_dict(module.state_dict())
    assert fnn.tree.structure(params) == fnn.tree.structure(init_params)  # torch's names
    assert out_shape == init_shape
    fn = _module_fn(module)
    for x in (randn(3, *shape), _noncontiguous(randn(3, *shape))):
        y, vjp = layer.apply(params, x)
        with torch.no_grad():
            torch.testing.assert_close(y, module(x), atol=1e-12, rtol=1e-10)
        dy = randn(4, *y.shape)
        dparams, dx = vjp(dy)
        expected = autograd_vjp(fn, params, x, dy)
        assert_trees_close(dparams, expected[0], atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(dx, expected[1], atol=1e-10, rtol=1e-8)
        if x.numel() == 0:
            assert y.shape == x.shape and all(
                bool((g == 0).all()) for g in fnn.tree.leaves(dparams)
            )
    assert pickle.loads(pickle.dumps(vjp))(dy)[1].equal(dx)
    if 0 < x.numel() <= 40:
        fnn.testing.check_vjp(layer, params, x.contiguous())  # (check_vjp needs contiguous x)


@pytest.mark.parametrize("make, twin, shape, init_shape", PARITY_PARAMS[::3])
def test_norm_float32_and_params_load_into_torch(make, twin, shape, init_shape):
    layer = make()
    _, params = layer.init(fnn.random.key(0), init_shape)
    params = fnn.tree.map(lambda t: t + 0.1 * torch.randn(t.shape), params)
    module = twin()
    module.load_state_dict(fnn.tree.to_state_dict(params))
    x = torch.randn(shape)
    y, vjp = layer.apply(params, x)
    with torch.no_grad():
        torch.testing.assert_close(y, module(x), atol=1e-5, rtol=1e-5)
    dy = torch.randn(y.shape)
    dparams, dx = vjp(dy)
    expected = autograd_vjp(_module_fn(module), params, x, dy)
    assert_trees_close(dparams, expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dx, expected[1], atol=1e-4, rtol=1e-4)
    assert y.dtype == dx.dtype == torch.float32


BATCH_NORM_MODULES = [
    # fnn kwargs, torch module, input shape
    ({}, lambda: torch.nn.BatchNorm1d(3), (4, 3)),
    ({"momentum": 0.3}, lambda: torch.nn.BatchNorm1d(3, momentum=0.3), (2, 3, 5)),
    ({"affine": False}, lambda: torch.nn.BatchNorm2d(2, affine=False), (2, 2, 3, 3)),
    (
        {"momentum": None, "eps": 1e-3},
        lambda: torch.nn.BatchNorm3d(2, eps=1e-3, momentum=None),
        (2, 2, 2, 3, 2),
    ),
]


@pytest.mark.parametrize(
    "kwargs, twin, shape", BATCH_NORM_MODULES, ids=["1d", "1d-L", "2d-noaffine", "3d-cumulative"]
)
def test_batch_norm_every_rank_and_option_follows_torch_modules(kwargs, twin, shape):
    module = _torch_twin(twin())
    layer = L.BatchNorm(**kwargs)
    like = fnn.init_state(layer, (-1, *shape[1:]), dtype=torch.float64)
    # (clones: torch updates its buffers in place, and state_dict() holds them)
    both = fnn.tree.map(torch.clone, fnn.tree.from_state_dict(module.state_dict()))
    params, state = fnn.state.split(both, like=like)
    assert fnn.tree.structure(params) == fnn.tree.structure(
        layer.init(fnn.random.key(0), (-1, *shape[1:]))[1]
    )
    fn = _module_fn(module)
    for step, n in enumerate([shape[0], 0, shape[0] + 1]):  # an empty batch in the middle
        x = randn(step, n, *shape[1:]) * 2 + 1
        module.train()
        y, vjp, state = layer.apply(params, x, state=state, train=True)
        dy = randn(9, *y.shape)
        expected = autograd_vjp(fn, params, x, dy)  # runs the module in train mode: a step
        torch.testing.assert_close(y, module(x).detach(), atol=1e-10, rtol=1e-8)
        dparams, dx = vjp(dy)
        assert_trees_close(dparams, expected[0], atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(dx, expected[1], atol=1e-9, rtol=1e-7)
    reference = _torch_twin(twin())
    reference.train()
    both = fnn.tree.map(torch.clone, fnn.tree.from_state_dict(reference.state_dict()))
    params2, state2 = fnn.state.split(both, like=like)
    for step, n in enumerate([shape[0], 0, shape[0] + 1]):
        x = randn(step, n, *shape[1:]) * 2 + 1
        with torch.no_grad():
            reference(x)
        _, _, state2 = layer.apply(params2, x, state=state2, train=True)
    assert_trees_close(state2, dict(reference.named_buffers()), atol=1e-12, rtol=1e-10)
    assert int(state2["num_batches_tracked"]) == 3  # the empty batch counts, as in torch
    reference.eval()
    for n in (shape[0], 0):
        x = randn(20 + n, n, *shape[1:])
        y, vjp, same = layer.apply(params2, x, state=state2, train=False)
        assert same is state2
        with torch.no_grad():
            torch.testing.assert_close(y, reference(x), atol=1e-12, rtol=1e-10)
        dy = randn(21, *y.shape)
        expected = autograd_vjp(_module_fn(reference), params2, x, dy)
        dparams, dx = vjp(dy)
        assert_trees_close(dparams, expected[0], atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(dx, expected[1], atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(0, 5), (0, 3, 4), (0, 2, 3, 3), (0, 2, 1, 2, 2), (3, 2, 0)])
def test_batch_norm_empty_input_never_reaches_a_kernel(shape, dtype):
    # issue 15 item 1: these killed the process with SIGFPE
    for kwargs in ({}, {"affine": False}, {"track_running_stats": False}):
        layer = L.BatchNorm(**kwargs)
        _, params = layer.init(fnn.random.key(0), (-1, *shape[1:]), dtype=dtype)
        state = fnn.init_state(layer, (-1, *shape[1:]), dtype=dtype)
        x = torch.zeros(shape, dtype=dtype)
        for train in (True, False):
            if state:
                y, vjp, new_state = layer.apply(params, x, state=state, train=train)
                assert torch.equal(new_state["running_mean"], state["running_mean"])
                assert torch.equal(new_state["running_var"], state["running_var"])
                assert int(new_state["num_batches_tracked"]) == int(train)
            else:
                y, vjp = layer.apply(params, x, train=train)
            dparams, dx = vjp(torch.zeros(shape, dtype=dtype))
            assert y.shape == dx.shape == x.shape
            assert sorted(dparams) == sorted(params)
            assert all(g.shape == (shape[1],) and not g.any() for g in dparams.values())


def test_batch_norm_without_running_stats_has_no_state_and_ignores_train():
    layer = L.BatchNorm(track_running_stats=False)
    assert fnn.init_state(layer, (-1, 3)) == {}
    _, params = layer.init(fnn.random.key(0), (-1, 3))
    x = torch.randn(5, 3)
    y_train, _ = layer.apply(params, x, train=True)
    y_eval, _ = layer.apply(params, x, train=False)
    assert torch.equal(y_train, y_eval)
    model = fnn.serial(L.Dense(3), L.BatchNorm(track_running_stats=False), L.Relu())
    _, mparams = model.init(fnn.random.key(1), (-1, 2))
    fnn.testing.check_vjp(model, mparams, randn(1, 4, 2))


def test_norm_per_example_grads_equal_a_loop_of_single_examples():
    model = fnn.serial(
        L.Dense(4), L.LayerNorm(), L.RMSNorm(4), L.Reshape((2, 2)), L.GroupNorm(2), L.Flatten()
    )
    _, params = model.init(fnn.random.key(0), (-1, 3), dtype=torch.float64)
    params = fnn.tree.map(lambda t: t + randn(5, *t.shape), params)
    x, target = randn(1, 5, 3), randn(2, 5, 4)
    losses, grads = fnn.per_example_grads(model.apply, fnn.losses.mse)(params, x, target)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.mse)
    for n in range(5):
        loss, expected = loss_and_grads(params, x[n : n + 1], target[n : n + 1])
        torch.testing.assert_close(losses[n], loss)
        assert_trees_close(fnn.tree.map(lambda g: g[n], grads), expected, atol=1e-12)
    bn = L.BatchNorm()
    _, bparams = bn.init(fnn.random.key(0), (-1, 4), dtype=torch.float64)
    state = fnn.init_state(bn, (-1, 4), dtype=torch.float64)
    frozen = fnn.state.bind(bn, state, train=False)
    bparams = fnn.tree.map(lambda t: t + randn(6, *t.shape), bparams)
    other = randn(3, 5, 4)
    losses, grads = fnn.per_example_grads(frozen.apply, fnn.losses.mse)(bparams, target, other)
    for n in range(5):
        _, expected = fnn.value_and_grad(frozen.apply, fnn.losses.mse)(
            bparams, target[n : n + 1], other[n : n + 1]
        )
        assert_trees_close(fnn.tree.map(lambda g: g[n], grads), expected, atol=1e-12)
    with pytest.raises(fnn.errors.FnnError, match="BatchNorm: with batch statistics"):
        f = fnn.per_example_grads(fnn.state.bind(bn, state, train=True).apply, fnn.losses.mse)
        f(bparams, target, other)


def test_norm_constructor_and_input_errors_name_the_layer():
    bad = [
        (lambda: L.LayerNorm(0), fnn.errors.FnnError, "LayerNorm: normalized_shape"),
        (lambda: L.LayerNorm((2, "a")), fnn.errors.FnnError, "LayerNorm: normalized_shape"),
        (lambda: L.LayerNorm(elementwise_affine=1), TypeError, "LayerNorm: elementwise_affine"),
        (lambda: L.RMSNorm(eps="x"), TypeError, "RMSNorm: eps must be a number"),
        (lambda: L.RMSNorm(()), fnn.errors.FnnError, "RMSNorm: normalized_shape"),
        (lambda: L.GroupNorm(0), fnn.errors.FnnError, "GroupNorm: num_groups"),
        (lambda: L.GroupNorm(2, affine="yes"), TypeError, "GroupNorm: affine"),
        (lambda: L.BatchNorm(affine=None), TypeError, "BatchNorm: affine"),
        (lambda: L.BatchNorm(track_running_stats=0), TypeError, "BatchNorm: track_running_stats"),
    ]
    for make, kind, match in bad:
        with pytest.raises(kind, match=match):
            make()
    key = fnn.random.key(0)
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"LayerNorm: expected an input shape ending in \(\.\.\., 3, 4\)",
    ):
        L.LayerNorm((3, 4)).init(key, (-1, 4, 3))
    _, p = L.LayerNorm((3, 4)).init(key, (-1, 3, 4))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"LayerNorm: expected an input of shape \(\.\.\., 3, 4\), got \(2, 4\)",
    ):
        L.LayerNorm((3, 4)).apply(p, torch.ones(2, 4))
    with pytest.raises(fnn.errors.TreeError, match=r"LayerNorm: params unexpected \['bias'\]"):
        L.LayerNorm(4, bias=False).apply(L.LayerNorm(4).init(key, (-1, 4))[1], torch.ones(2, 4))
    with pytest.raises(fnn.errors.FnnTypeError, match="RMSNorm: expected a floating-point input"):
        L.RMSNorm(elementwise_affine=False).apply({}, torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(fnn.errors.ShapeError, match="GroupNorm: num_groups=3 must divide"):
        L.GroupNorm(3).init(key, (-1, 4, 5))
    _, p = L.GroupNorm(2).init(key, (-1, 4, 5))
    with pytest.raises(fnn.errors.ShapeError, match="GroupNorm: num_groups=2 must divide"):
        L.GroupNorm(2, affine=False).apply({}, torch.ones(2, 5, 3))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"GroupNorm: expected an input of shape \(N, 4, \.\.\.\)"
    ):
        L.GroupNorm(2).apply(p, torch.ones(2, 6, 3))
    with pytest.raises(fnn.errors.ShapeError, match="GroupNorm: expected non-empty spatial axes"):
        L.GroupNorm(2).apply(p, torch.ones(2, 4, 0))
    with pytest.raises(fnn.errors.ShapeError, match=r"BatchNorm: expected an input shape \(N, C\)"):
        L.BatchNorm().init(key, (-1, 2, 1, 1, 1, 1))
    layer, params, state = _batch_norm((4, 3))
    with pytest.raises(fnn.errors.ShapeError, match=r"rank 2 to 5"):
        layer.apply(
            params, torch.ones(2, 3, 1, 1, 1, 1, dtype=torch.float64), state=state, train=False
        )
    with pytest.raises(
        fnn.errors.ShapeError, match="BatchNorm: training needs more than one value"
    ):
        L.BatchNorm(track_running_stats=False, affine=False).apply({}, torch.ones(1, 3))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.LayerNorm(elementwise_affine=False), (2, 0)),
        (lambda: L.LayerNorm(3), (0, 3)),
        (lambda: L.LayerNorm(3), (2, 0, 3)),
        (lambda: L.RMSNorm(3), (0, 3)),
        (lambda: L.RMSNorm(3), (2, 0, 3)),
        (lambda: L.RMSNorm(elementwise_affine=False), (2, 0)),
        (lambda: L.GroupNorm(2), (0, 4, 3)),
        (lambda: L.GroupNorm(2), (0, 4)),
        (lambda: L.Softmax(), (2, 0)),
        (lambda: L.LogSoftmax(1), (0, 3)),
        (lambda: L.Glu(), (2, 0)),
        (lambda: L.Glu(), (0, 4)),
        (lambda: L.Prelu(3), (0, 3, 2)),
        (lambda: L.Prelu(3), (2, 3, 0)),
        (lambda: L.Flatten(), (2, 0, 3)),
        (lambda: L.Silu(), (0, 3)),
        (lambda: L.Mish(), (0, 3)),
        (lambda: L.Relu6(), (0, 3)),
    ],
    ids=str,
)
def test_zero_size_inputs_give_zero_gradients_and_per_example_rules_too(make, shape):
    # issue 15 item 1's audit: every aten call of these layers on zero-size inputs
    layer = make()
    try:
        params = layer.init(fnn.random.key(0), (-1, *shape[1:]), dtype=torch.float64)[1]
    except fnn.errors.ShapeError:  # no affine params, and init wants a non-empty last axis
        params = {}
    x = torch.zeros(shape, dtype=torch.float64)
    y, vjp = layer.apply(params, x)
    dy = torch.zeros_like(y)
    dparams, dx = vjp(dy)
    assert dx.shape == x.shape and fnn.tree.structure(dparams) == fnn.tree.structure(params)
    assert all(not g.any() for g in fnn.tree.leaves(dparams))
    per_example, dx2 = fnn.core.per_example_rule(vjp)(vjp.residuals, dy, True)
    assert dx2.shape == x.shape
    for g, p in zip(fnn.tree.leaves(per_example), fnn.tree.leaves(params)):
        assert g.shape == (shape[0], *p.shape) and not g.any()


@requires_compile
def test_batch_norm_train_step_compiles_whole_and_equals_eager():
    torch._dynamo.reset()
    model = fnn.serial(
        L.Dense(3), L.BatchNorm(), L.Relu(), L.Reshape((3, 1)), L.BatchNorm(momentum=None)
    )
    _, params = model.init(fnn.random.key(0), (-1, 2), dtype=torch.float64)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.mse)

    def step(params, state, x, target):
        return loss_and_grads(params, x, target, state=state, train=True)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    state = eager_state = fnn.init_state(model, (-1, 2), dtype=torch.float64)
    for seed in range(3):
        x, target = randn(seed, 6, 2), randn(seed + 10, 6, 3, 1)
        loss, grads, state = compiled(params, state, x, target)
        eager_loss, eager_grads, eager_state = step(params, eager_state, x, target)
        assert_trees_close((loss, grads), (eager_loss, eager_grads), atol=0, rtol=0)
        assert_trees_close(state, eager_state, atol=1e-15, rtol=1e-15)
