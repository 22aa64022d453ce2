"""torch.nn parity of the activations, Flatten and Dropout (DESIGN.md §7): forward and VJP
against the torch.nn module and autograd in float64 (batch 1, empty batch, unbatched and 0-d
inputs, non-contiguous inputs, every option value), central differences, float32,
state_dict round trips (Prelu), per-example rules, clear errors; Dropout's rate 1 and its
key-drawn mask under torch.compile(fullgraph=True)."""

from __future__ import annotations

import pickle

import pytest
import torch

import fnn
from fnn import layers as L

from .helpers import assert_trees_close, autograd_vjp, randn, requires_compile

nn = torch.nn


def _noncontiguous(t):
    """`t`'s values in a strided view (every other element of the last axis)."""
    if t.ndim == 0:
        return t
    out = t.new_empty(*t.shape[:-1], 2 * t.shape[-1])[..., ::2]
    out.copy_(t)
    return out


# id, fnn layer, torch module, input shapes (the first batched; fewer axes: unbatched)
CASES = [
    ("Softmax", L.Softmax, lambda: nn.Softmax(-1), [(2, 3, 4), (1, 5), (0, 3), (4,), ()]),
    ("Softmax-dim0", lambda: L.Softmax(0), lambda: nn.Softmax(0), [(3, 4), (1, 2), (0, 3), ()]),
    ("Softmax-dim1", lambda: L.Softmax(dim=1), lambda: nn.Softmax(1), [(2, 3, 4), (0, 3)]),
    ("Softmax-dim-2", lambda: L.Softmax(-2), lambda: nn.Softmax(-2), [(2, 3, 4), (3, 4)]),
    ("LogSoftmax", L.LogSoftmax, lambda: nn.LogSoftmax(-1), [(2, 3, 4), (0, 3), ()]),
    ("LogSoftmax-dim0", lambda: L.LogSoftmax(0), lambda: nn.LogSoftmax(0), [(3, 4), (1, 2)]),
    ("LogSoftmax-dim1", lambda: L.LogSoftmax(1), lambda: nn.LogSoftmax(1), [(2, 3, 2), (0, 2)]),
    ("Silu", L.Silu, nn.SiLU, [(2, 5), (1, 3), (0, 3), (2, 2, 2), ()]),
    ("Mish", L.Mish, nn.Mish, [(2, 5), (1, 3), (0, 3), ()]),
    ("Hardtanh", L.Hardtanh, nn.Hardtanh, [(2, 5), (1, 3), (0, 3)]),
    (
        "Hardtanh-bounds",
        lambda: L.Hardtanh(min_val=-0.5, max_val=0.3),
        lambda: nn.Hardtanh(-0.5, 0.3),
        [(3, 5), (1, 4)],
    ),
    ("Relu6", L.Relu6, nn.ReLU6, [(2, 5), (1, 3), (0, 3), (4,)]),
    ("Gelu-none", lambda: L.Gelu("none"), lambda: nn.GELU("none"), [(2, 5), (0, 3)]),
    ("Gelu-tanh", lambda: L.Gelu(approximate="tanh"), lambda: nn.GELU("tanh"), [(2, 5), (0, 3)]),
    ("Elu-alpha", lambda: L.Elu(alpha=0.4), lambda: nn.ELU(0.4), [(2, 5), (0, 3)]),
    (
        "Softplus-beta-threshold",
        lambda: L.Softplus(beta=2.0, threshold=1.0),
        lambda: nn.Softplus(2.0, 1.0),
        [(3, 5), (0, 3)],
    ),
    ("Prelu", L.Prelu, nn.PReLU, [(2, 3), (1, 3, 4), (0, 3), (5,), ()]),
    ("Prelu-channels", lambda: L.Prelu(3), lambda: nn.PReLU(3), [(2, 3, 4), (1, 3), (0, 3, 2)]),
    (
        "Prelu-channels-init",
        lambda: L.Prelu(num_parameters=2, init=0.1),
        lambda: nn.PReLU(2, init=0.1),
        [(2, 2, 2, 2), (1, 2)],
    ),
    ("Glu", L.Glu, nn.GLU, [(2, 4), (1, 6), (0, 4), (4,)]),
    ("Glu-dim1", lambda: L.Glu(dim=1), lambda: nn.GLU(1), [(2, 4, 3), (0, 2, 3)]),
    ("Glu-dim0", lambda: L.Glu(0), lambda: nn.GLU(0), [(4, 3), (2,)]),
    ("Flatten", L.Flatten, nn.Flatten, [(2, 3, 4), (1, 3), (0, 2, 3)]),
    ("Flatten-0", lambda: L.Flatten(0), lambda: nn.Flatten(0), [(2, 3, 4), (0, 3), ()]),
    (
        "Flatten-1-2",
        lambda: L.Flatten(1, 2),
        lambda: nn.Flatten(1, 2),
        [(2, 3, 4, 5), (0, 2, 2, 1)],
    ),
    (
        "Flatten-neg",
        lambda: L.Flatten(-3, -2),
        lambda: nn.Flatten(-3, -2),
        [(2, 3, 4, 5), (3, 4, 2)],
    ),
    ("Flatten-one-axis", lambda: L.Flatten(1, 1), lambda: nn.Flatten(1, 1), [(2, 3, 4)]),
]

PARAMS = [
    pytest.param(
        make,
        twin,
        shape,
        (-1, *shape[1:]) if len(shape) == len(shapes[0]) else shape,
        id=f"{name}-{'x'.join(map(str, shape)) or '0d'}",
    )
    for name, make, twin, shapes in CASES
    for shape in shapes
]


def _module_fn(module):
    def fn(p, x):
        return torch.func.functional_call(module, fnn.tree.to_state_dict(p), (x,))

    return fn


def _inputs(shape, seed):
    x = randn(seed, *shape) * 3
    if x.numel():  # the kinks and bounds of relu6 / hardtanh / prelu exactly
        x.view(-1)[0] = 0.0
        x.view(-1)[-1] = 6.0 if x.numel() > 1 else 0.0
    return x


@pytest.mark.parametrize("make, twin, shape, init_shape", PARAMS)
def test_forward_and_vjp_match_torch_module_and_autograd(make, twin, shape, init_shape):
    layer, module = make(), twin().double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(randn(8, *p.shape))
    out_shape, init_params = layer.init(fnn.random.key(0), init_shape, dtype=torch.float64)
    params = fnn.tree.from_state_dict(module.state_dict())
    assert fnn.tree.structure(params) == fnn.tree.structure(init_params)
    for x in (_inputs(shape, 1), _noncontiguous(_inputs(shape, 2))):
        y, vjp = layer.apply(params, x)
        with torch.no_grad():
            torch.testing.assert_close(y, module(x), atol=1e-12, rtol=1e-10)
        assert len(out_shape) == y.ndim
        assert all(o in (-1, d) for o, d in zip(out_shape, y.shape))
        dy = randn(3, *y.shape)
        dparams, dx = vjp(dy)
        expected = autograd_vjp(_module_fn(module), params, x, dy)
        assert_trees_close(dparams, expected[0], atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(dx, expected[1], atol=1e-10, rtol=1e-8)
        assert pickle.loads(pickle.dumps(vjp))(dy)[1].equal(dx)
    if x.numel():
        fnn.testing.check_vjp(layer, params, randn(4, *shape))  # (away from the kinks)


@pytest.mark.parametrize("make, twin, shape, init_shape", PARAMS[::2])
def test_float32_matches_torch_and_params_load_into_torch(make, twin, shape, init_shape):
    layer = make()
    _, params = layer.init(fnn.random.key(0), init_shape)
    module = twin()
    module.load_state_dict(fnn.tree.to_state_dict(params))
    x = torch.randn(shape)
    y, vjp = layer.apply(params, x)
    with torch.no_grad():
        torch.testing.assert_close(y, module(x))
    dy = torch.randn(y.shape)
    dparams, dx = vjp(dy)
    expected = autograd_vjp(_module_fn(module), params, x, dy)
    assert_trees_close(dparams, expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx, expected[1], atol=1e-5, rtol=1e-5)
    assert y.dtype == dx.dtype == torch.float32


def test_prelu_per_example_grads_equal_single_examples():
    model = fnn.serial(L.Dense(6), L.Reshape((3, 2)), L.Prelu(3), L.Flatten(), L.Prelu())
    _, params = model.init(fnn.random.key(0), (-1, 4), dtype=torch.float64)
    x, target = randn(1, 5, 4), randn(2, 5, 6)
    losses, grads = fnn.per_example_grads(model.apply, fnn.losses.mse)(params, x, target)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.mse)
    assert grads["2"]["weight"].shape == (5, 3) and grads["4"]["weight"].shape == (5, 1)
    for n in range(5):
        loss, expected = loss_and_grads(params, x[n : n + 1], target[n : n + 1])
        torch.testing.assert_close(losses[n], loss)
        assert_trees_close(fnn.tree.map(lambda g, n=n: g[n], grads), expected, atol=1e-12)


@pytest.mark.parametrize(
    "layer, name",
    [
        (L.Softmax(0), "Softmax"),
        (L.LogSoftmax(-2), "LogSoftmax"),
    ],
)
def test_per_example_grads_refuse_layers_that_mix_the_batch_axis(layer, name):
    model = fnn.serial(L.Dense(4), layer)
    _, params = model.init(fnn.random.key(0), (-1, 3))
    x = torch.randn(4, 3)
    y, _ = model.apply(params, x)
    f = fnn.per_example_grads(model.apply, fnn.losses.mse)
    with pytest.raises(fnn.errors.FnnError, match=name):
        f(params, x, torch.zeros(y.shape))


@pytest.mark.parametrize(
    "layer, match", [(L.Glu(0), "Glu: .* dim=0 is the batch axis"), (L.Flatten(0), "Flatten: .*")]
)
def test_per_example_rules_refuse_to_mix_the_batch_axis(layer, match):
    y, vjp = layer.apply({}, torch.ones(4, 2))
    with pytest.raises(fnn.errors.FnnError, match=match):
        fnn.core.per_example_rule(vjp)(vjp.residuals, torch.ones_like(y), True)


def test_softmax_along_a_non_batch_axis_has_per_example_grads():
    model = fnn.serial(L.Dense(6), L.Reshape((2, 3)), L.Softmax(1), L.Flatten())
    _, params = model.init(fnn.random.key(0), (-1, 3), dtype=torch.float64)
    x, target = randn(1, 4, 3), randn(2, 4, 6)
    _, grads = fnn.per_example_grads(model.apply, fnn.losses.mse)(params, x, target)
    _, expected = fnn.value_and_grad(model.apply, fnn.losses.mse)(params, x[:1], target[:1])
    assert_trees_close(fnn.tree.map(lambda g: g[0], grads), expected, atol=1e-12)


def test_bad_arguments_give_clear_errors():
    bad = [
        (lambda: L.Softmax(1.0), TypeError, "Softmax: dim must be an int"),
        (lambda: L.LogSoftmax(None), TypeError, "LogSoftmax: dim must be an int"),
        (lambda: L.Hardtanh(1.0, -1.0), fnn.errors.FnnError, "Hardtanh: max_val must be greater"),
        (lambda: L.Hardtanh("a"), TypeError, "Hardtanh: min_val must be a number"),
        (lambda: L.Prelu(0), fnn.errors.FnnError, "Prelu: num_parameters must be a positive"),
        (lambda: L.Prelu(init="x"), TypeError, "Prelu: init must be a number"),
        (lambda: L.Glu(True), TypeError, "Glu: dim must be an int"),
        (lambda: L.Flatten("1"), TypeError, "Flatten: start_dim must be an int"),
        (
            lambda: L.Dropout(1.01),
            fnn.errors.FnnError,
            r"Dropout: rate must be a number in \[0, 1\]",
        ),
        (lambda: L.Gelu("exact"), fnn.errors.FnnError, "Gelu: approximate must be"),
    ]
    for make, kind, match in bad:
        with pytest.raises(kind, match=match):
            make()
    key, x = fnn.random.key(0), torch.ones(2, 3)
    shape_errors = [
        (
            lambda: L.Softmax(2).apply({}, x),
            r"Softmax: dim=2 is out of range for an input of rank 2",
        ),
        (lambda: L.Softmax(-3).init(key, (-1, 3)), r"Softmax: dim=-3 is out of range"),
        (lambda: L.LogSoftmax(1).apply({}, torch.tensor(1.0)), "LogSoftmax: dim=1 is out of range"),
        (lambda: L.Glu().apply({}, x), r"Glu: axis dim=-1 must have an even size"),
        (lambda: L.Glu().init(key, (-1, 5)), r"Glu: axis dim=-1 must have an even size"),
        (lambda: L.Glu().apply({}, torch.tensor(1.0)), "Glu: expected an input of rank ≥ 1"),
        (
            lambda: L.Flatten(2, 1).apply({}, torch.ones(2, 3, 4)),
            "Flatten: start_dim=2 comes after",
        ),
        (lambda: L.Flatten(0, 3).init(key, (-1, 3)), "Flatten: end_dim=3 is out of range"),
        (lambda: L.Prelu(3).init(key, (-1, 4)), r"Prelu: expected 3 channels on axis 1"),
        (
            lambda: L.Prelu(3).apply({"weight": torch.ones(3)}, torch.ones(2, 4)),
            r"Prelu: params\['weight'\] of shape \(3,\) does not fit",
        ),
        (
            lambda: L.Glu().apply({}, torch.ones(2, 4))[1](torch.ones(2, 4)),
            r"Glu VJP: expected a cotangent of the output's shape \(2, 2\)",
        ),
    ]
    for call, match in shape_errors:
        with pytest.raises(fnn.errors.ShapeError, match=match):
            call()
    with pytest.raises(fnn.errors.TreeError, match=r"Prelu: params missing \['weight'\]"):
        L.Prelu().apply({}, x)
    with pytest.raises(fnn.errors.FnnTypeError, match="Silu: expected a floating-point input"):
        L.Silu().apply({}, torch.ones(2, dtype=torch.long))
    with pytest.raises(fnn.errors.FnnError, match="Prelu: input dtype torch.float64"):
        L.Prelu().apply({"weight": torch.ones(1)}, torch.ones(2, dtype=torch.float64))


# ---------------------------------------------------------------- Dropout


@pytest.mark.parametrize("shape", [(4, 5), (1, 3), (0, 3), (2, 3, 2)])
def test_dropout_rate_one_zeroes_everything_as_torch(shape):
    x = randn(0, *shape)
    y, vjp = L.Dropout(1.0).apply({}, x, key=fnn.random.key(0))
    torch.testing.assert_close(y, nn.functional.dropout(x, 1.0, training=True), atol=0, rtol=0)
    dy = randn(1, *shape)
    expected = autograd_vjp(lambda p, x: nn.functional.dropout(x, 1.0, training=True), {}, x, dy)
    _, dx = vjp(dy)
    torch.testing.assert_close(dx, expected[1], atol=0, rtol=0)
    assert L.Dropout(1.0).apply({}, x)[0] is x  # no key: evaluation, the identity
    fnn.testing.check_vjp(L.Dropout(1), {}, randn(2, 2, 3), key=fnn.random.key(1))


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
def test_dropout_keeps_a_fraction_one_minus_rate_scaled_and_vjp_uses_the_mask(rate):
    x = _noncontiguous(torch.ones(100, 200, dtype=torch.float64))
    y, vjp = L.Dropout(rate).apply({}, x, key=fnn.random.key(3))
    kept = y != 0
    assert abs(kept.double().mean().item() - (1 - rate)) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - rate)))
    dy = randn(4, 100, 200)
    _, dx = vjp(dy)
    torch.testing.assert_close(dx, dy * kept / (1 - rate), atol=0, rtol=1e-15)
    other = L.Dropout(rate).apply({}, x, key=fnn.random.key(4))[0]
    assert rate == 0.0 or not torch.equal(other != 0, kept)
    assert torch.equal(L.Dropout(rate).apply({}, x, key=fnn.random.key(3))[0], y)


def test_dropout_mask_has_no_visible_pattern():
    y, _ = L.Dropout(0.5).apply({}, torch.ones(400, 500), key=fnn.random.key(0))
    kept = (y != 0).double()
    assert abs(kept.mean(0).std().item() - 0.025) < 0.01  # columns as independent coins
    assert abs(kept.mean(1).std().item() - 0.0224) < 0.01  # rows too
    flat = kept.reshape(-1)
    assert abs(torch.corrcoef(torch.stack([flat[1:], flat[:-1]]))[0, 1].item()) < 0.01


@requires_compile
def test_dropout_with_a_key_compiles_whole_and_draws_the_eager_mask():
    torch._dynamo.reset()
    model = fnn.serial(L.Dense(8), L.Relu(), L.Dropout(0.3), L.Dense(4), L.Dropout(1.0))
    _, params = model.init(fnn.random.key(0), (-1, 4))

    def forward_backward(params, x, key):
        y, vjp = model.apply(params, x, key=key)
        return y, vjp(torch.ones_like(y))

    compiled = torch.compile(forward_backward, fullgraph=True, backend="aot_eager")
    x = torch.randn(16, 4)
    for seed in (3, 4):
        key = fnn.random.key(seed)
        expected = forward_backward(params, x, key)
        got = compiled(params, x, key)
        assert_trees_close(got, expected, atol=0, rtol=0)  # serial's key split traced too
