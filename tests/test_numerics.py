"""Numerics: extreme logits, stable activations, low-precision dtypes, and fnn.debug.check_finite."""

from __future__ import annotations

import pickle

import pytest
import torch

import fnn
from fnn import layers as L
from fnn.core import VJP
from fnn.debug import NonFiniteError

K = fnn.random.key(0)
EXTREME = [1e4, -1e4, 0.0, 3e3, -7e3]


def extreme_logits(n=6, c=5, scale=1e4, dtype=torch.float32):
    """Logits of ±scale (and zeros), with ties, as in a saturated classifier."""
    signs = fnn.random.randint(K, (n, c), -1, 2)
    return (signs * scale).to(dtype)


def reference_cross_entropy(logits, labels):
    z = logits.double().requires_grad_(True)
    value = torch.nn.functional.cross_entropy(z, labels)
    value.backward()
    return value.detach(), z.grad


# --------------------------------------------------------------------------- losses at ±1e4


@pytest.mark.parametrize("scale", [1e4, 1e6, 1e30])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_is_finite_for_huge_logits(scale, reduction):
    logits = extreme_logits(scale=scale)
    labels = torch.arange(6) % 5
    value, vjp = fnn.losses.cross_entropy(logits, labels, reduction=reduction)
    dvalue = 1.0 if reduction != "none" else torch.ones(6)
    grad = vjp(dvalue)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    if reduction == "mean":
        ref_value, ref_grad = reference_cross_entropy(logits, labels)
        torch.testing.assert_close(value.double(), ref_value, rtol=1e-6, atol=0)
        torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_bce_with_logits_is_finite_for_huge_logits(scale):
    logits = extreme_logits(scale=scale)
    targets = fnn.random.uniform(K, logits.shape)
    value, vjp = fnn.losses.bce_with_logits(logits, targets)
    grad = vjp(1.0)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    z = logits.double().requires_grad_(True)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(z, targets.double())
    ref.backward()
    torch.testing.assert_close(value.double(), ref.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(grad.double(), z.grad, rtol=1e-5, atol=1e-7)


def test_mse_is_finite_for_large_predictions():
    pred = torch.tensor(EXTREME)
    value, vjp = fnn.losses.mse(pred, torch.zeros(5))
    assert torch.isfinite(value) and torch.isfinite(vjp(1.0)).all()
    torch.testing.assert_close(vjp(1.0), 2 * pred / 5)


def test_training_on_saturated_logits_stays_finite():
    """A full value_and_grad through a model whose last layer emits ±1e4."""
    model = fnn.serial(L.Dense(5), L.Relu(), L.Dense(3))
    _, params = model.init(K, (-1, 5))
    params["2"]["weight"] = params["2"]["weight"] * 1e4
    loss, grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)(
        params, extreme_logits(8, 5, scale=10.0), torch.arange(8) % 3
    )
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in fnn.tree.leaves(grads))


# --------------------------------------------------------------------------- stable activations


def _reference(layer_name, x, **kw):
    x = x.double().requires_grad_(True)
    f = {
        "LogSoftmax": lambda t: torch.log_softmax(t, -1),
        "Softmax": lambda t: torch.softmax(t, -1),
        "Softplus": lambda t: torch.nn.functional.softplus(t, **kw),
        "Sigmoid": torch.sigmoid,
        "Tanh": torch.tanh,
    }[layer_name]
    y = f(x)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape))
    return y.detach(), x.grad


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e30])
@pytest.mark.parametrize("name", ["LogSoftmax", "Softmax", "Softplus", "Sigmoid", "Tanh"])
def test_activations_are_stable_for_large_inputs(name, scale):
    x = extreme_logits(4, 6, scale=scale)
    layer = getattr(L, name)()
    y, vjp = layer.apply({}, x)
    dy = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    _, dx = vjp(dy)
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()
    ref_y, ref_dx = _reference(name, x)
    torch.testing.assert_close(y.double(), ref_y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dx.double(), ref_dx, rtol=1e-5, atol=1e-6)


def test_log_softmax_of_huge_logits_is_exact():
    y, vjp = L.LogSoftmax().apply({}, torch.tensor([[1e4, -1e4, 0.0]]))
    assert y.tolist() == [[0.0, -2e4, -1e4]]
    assert vjp(torch.ones(1, 3))[1].tolist() == [[-2.0, 1.0, 1.0]]


@pytest.mark.parametrize("beta", [1.0, 100.0])
def test_softplus_is_linear_above_threshold_and_zero_far_below(beta):
    x = torch.tensor([1e4, 3e38, -1e4, -3e38, 0.0])
    y, vjp = L.Softplus(beta=beta).apply({}, x)
    _, dx = vjp(torch.ones(5))
    assert y[:2].tolist() == x[:2].tolist() and y[2:4].tolist() == [0.0, 0.0]
    assert dx.tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0, 0.5])


# --------------------------------------------------------------------------- bfloat16 and float16

MLP = [
    L.Dense(16),
    L.Relu(),
    L.Dense(16),
    L.Tanh(),
    L.Dense(16),
    L.Sigmoid(),
    L.Dense(16),
    L.Gelu(),
    L.Dense(16),
    L.Softplus(),
    L.Dense(16),
    L.Elu(),
    L.Dense(16),
    L.LeakyRelu(),
    L.Dense(4),
]

# Measured on this 8→16·7→4 MLP (batch 32, cross-entropy) against float64: loss within
# ~6e-4 (bf16) / ~1e-4 (f16) relative, each gradient within ~4 % / ~1 % (relative norm).
# The bounds leave room for other seeds; docs/reliability.md quotes them.
LOW_PRECISION = {
    torch.bfloat16: (5e-3, 0.1),
    torch.float16: (1e-3, 0.03),
    torch.float32: (1e-6, 1e-5),
}


@pytest.mark.parametrize("dtype", list(LOW_PRECISION), ids=str)
def test_low_precision_models_train_with_documented_accuracy(dtype):
    model = fnn.serial(*MLP)
    _, p64 = model.init(K, (-1, 8), dtype=torch.float64)
    x64 = fnn.random.normal(fnn.random.key(1), (32, 8), dtype=torch.float64)
    labels = torch.arange(32) % 4
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    ref_loss, ref_grads = loss_and_grads(p64, x64, labels)

    params = fnn.tree.map(lambda t: t.to(dtype), p64)
    loss, grads = loss_and_grads(params, x64.to(dtype), labels)
    assert loss.dtype == dtype and all(g.dtype == dtype for g in fnn.tree.leaves(grads))
    loss_tol, grad_tol = LOW_PRECISION[dtype]
    assert abs(loss.double().item() - ref_loss.item()) <= loss_tol * abs(ref_loss.item())
    for path, g, ref in zip(
        fnn.tree.paths(grads), fnn.tree.leaves(grads), fnn.tree.leaves(ref_grads)
    ):
        error = float((g.double() - ref).norm() / ref.norm().clamp_min(1e-12))
        assert error <= grad_tol, (path, error)

    new = fnn.update(params, grads, lr=0.1)
    opt = fnn.optim.adam(1e-3)
    new2, _ = opt.update(params, grads, opt.init(params))
    assert all(t.dtype == dtype for t in fnn.tree.leaves(new) + fnn.tree.leaves(new2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_losses_and_layers_run(dtype):
    x = fnn.random.normal(K, (4, 6)).to(dtype)
    for loss, target in [
        (fnn.losses.mse, torch.zeros_like(x)),
        (fnn.losses.bce_with_logits, torch.ones_like(x)),
        (fnn.losses.cross_entropy, torch.arange(4) % 6),
    ]:
        value, vjp = loss(x, target)
        assert value.dtype == dtype and vjp(1.0).dtype == dtype
    for layer in (L.Softmax(), L.LogSoftmax(), L.Dropout(0.5), L.Identity(), L.Flatten()):
        y, vjp = layer.apply({}, x, key=K)
        assert y.dtype == dtype and vjp(torch.ones_like(y))[1].dtype == dtype


def test_mixing_low_precision_input_and_float32_params_is_a_clear_error():
    init, apply = L.Dense(2)
    _, params = init(K, (-1, 3))
    with pytest.raises(
        fnn.FnnError,
        match=r"^Dense: input dtype torch.bfloat16 does not match the parameters' dtype torch.float32",
    ):
        apply(params, torch.ones(4, 3, dtype=torch.bfloat16))


# --------------------------------------------------------------------------- fnn.debug.check_finite


def mlp():
    model = fnn.serial(L.Dense(4), L.Relu(), L.Dense(4), L.Tanh(), L.Dense(2))
    return model, model.init(K, (-1, 3))[1]


X = torch.ones(5, 3)


def test_check_finite_names_the_first_layer_whose_output_is_not_finite():
    model, params = mlp()
    params["2"]["bias"] = torch.tensor([float("nan"), 0.0, 0.0, 0.0])
    with (
        fnn.debug.check_finite(),
        pytest.raises(
            NonFiniteError,
            match=r"^serial\[2\] Dense: output contains NaN/Inf \(5 NaN, 0 Inf of 20 elements\)",
        ),
    ):
        model.apply(params, X)
    y, _ = model.apply(params, X)  # off again: the NaN just flows through
    assert torch.isnan(y).all()


def test_check_finite_catches_overflow_to_inf():
    model, params = mlp()
    params["0"]["weight"] = torch.full((4, 3), 3e38)
    with (
        fnn.debug.check_finite(),
        pytest.raises(NonFiniteError, match=r"^serial\[0\] Dense: output .* Inf"),
    ):
        model.apply(params, X)


def test_check_finite_blames_a_non_finite_input_on_the_caller():
    model, params = mlp()
    x = X.clone()
    x[2, 1] = float("inf")
    with (
        fnn.debug.check_finite(),
        pytest.raises(NonFiniteError, match=r"^serial\[0\] Dense: input already contains"),
    ):
        model.apply(params, x)


def test_check_finite_gives_the_path_in_nested_models():
    inner = fnn.serial(L.Dense(4), L.Softplus(), L.Dense(4))
    model = fnn.serial(L.Dense(3), inner, L.Dense(2))
    _, params = model.init(K, (-1, 3))
    params["1"]["2"]["weight"] = params["1"]["2"]["weight"] * float("inf")
    with (
        fnn.debug.check_finite(),
        pytest.raises(NonFiniteError, match=r"^serial\[1\] serial\[2\] Dense: output"),
    ):
        model.apply(params, X)


def test_check_finite_in_parallel_branches():
    model = fnn.serial(L.FanOut(2), fnn.parallel(L.Dense(3), L.Dense(3)), L.FanInSum())
    _, params = model.init(K, (-1, 3))
    params["1"]["1"]["bias"] = torch.tensor([0.0, float("-inf"), 0.0])
    with (
        fnn.debug.check_finite(),
        pytest.raises(NonFiniteError, match=r"^serial\[1\] parallel\[1\] Dense: output"),
    ):
        model.apply(params, X)


def sqrt_apply(params, x, **kwargs):
    y = torch.sqrt(x)
    return y, VJP(sqrt_backward, y)


# y = √x   ⇒   dx = dy / (2y)      (infinite at x = 0)
def sqrt_backward(y, dy):
    return {}, dy / (2 * y)


def test_check_finite_names_the_layer_whose_vjp_makes_inf():
    model = fnn.serial(
        L.Dense(3),
        L.Relu(),
        fnn.core.declare(lambda k, s, **kw: (s, {}), sqrt_apply, fnn.core.LayerInfo("Sqrt")),
        L.Dense(2),
    )
    _, params = model.init(K, (-1, 3))
    params["0"]["bias"] = torch.tensor([-100.0, 0.0, 0.0])  # a dead relu unit: √0 in the forward
    x, labels = torch.ones(5, 3), torch.tensor([0, 1, 0, 1, 1])
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    with (
        fnn.debug.check_finite(),
        pytest.raises(
            NonFiniteError, match=r"^serial\[2\] Sqrt VJP: the input gradient contains NaN/Inf"
        ),
    ):
        loss_and_grads(params, x, labels)
    _, vjp = model.apply(params, x)  # off: nothing is checked, the Inf flows on silently
    _, dx = vjp.residuals[0][2](torch.ones(5, 3))
    assert torch.isinf(dx).any()


def test_check_finite_names_a_non_finite_parameter_gradient():
    model = fnn.serial(L.Dense(2, weight_init=fnn.initializers.zeros()), L.Tanh())
    _, params = model.init(K, (-1, 3))
    x = torch.full((10, 3), 3e38)  # weight 0: the output is finite, but dW = dyᵀ x overflows
    with fnn.debug.check_finite():
        y, vjp = model.apply(params, x)
        with pytest.raises(
            NonFiniteError, match=r"^serial\[0\] Dense VJP: the gradient of params\['weight'\]"
        ):
            vjp(torch.ones_like(y))


def test_check_finite_blames_a_non_finite_cotangent_on_the_caller():
    model, params = mlp()
    with fnn.debug.check_finite():
        _, vjp = model.apply(params, X)
    with pytest.raises(
        NonFiniteError, match=r"^serial\[4\] Dense VJP: the incoming cotangent already contains"
    ):
        vjp(torch.full((5, 2), float("nan")))


def test_check_finite_changes_no_value_and_its_vjps_pickle():
    model, params = mlp()
    x, labels = fnn.random.normal(K, (7, 3)), torch.arange(7) % 2
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    loss, grads = loss_and_grads(params, x, labels)
    with fnn.debug.check_finite():
        checked_loss, checked_grads = loss_and_grads(params, x, labels)
        _, vjp = model.apply(params, x)
    assert torch.equal(loss, checked_loss)
    assert all(
        torch.equal(a, b) for a, b in zip(fnn.tree.leaves(grads), fnn.tree.leaves(checked_grads))
    )
    assert fnn.tree.structure(grads) == fnn.tree.structure(checked_grads)
    assert vjp.residuals[0][0].backward is fnn.debug.checked_backward
    restored = pickle.loads(pickle.dumps(vjp))
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            fnn.tree.leaves(restored(torch.ones(7, 2))[0]),
            fnn.tree.leaves(vjp(torch.ones(7, 2))[0]),
        )
    )


def test_check_finite_is_off_by_default_and_leaves_the_fast_path_alone():
    assert not fnn.debug.is_checking_finite()
    model, params = mlp()
    _, vjp = model.apply(params, X)
    assert [v.backward.__name__ for v in vjp.residuals[0]][:2] == [
        "dense_backward",
        "relu_backward",
    ]


def test_check_finite_nests_and_works_as_a_decorator():
    with fnn.debug.check_finite():
        assert fnn.debug.is_checking_finite()
        with fnn.debug.check_finite(False):
            assert not fnn.debug.is_checking_finite()
        assert fnn.debug.is_checking_finite()
    assert not fnn.debug.is_checking_finite()

    @fnn.debug.check_finite()
    def step():
        return fnn.debug.is_checking_finite()

    assert step() and step() and not fnn.debug.is_checking_finite()
    with pytest.raises(RuntimeError), fnn.debug.check_finite():
        raise RuntimeError("the flag is restored on errors too")
    assert not fnn.debug.is_checking_finite()


def test_non_finite_error_is_an_fnn_value_error():
    assert issubclass(NonFiniteError, fnn.FnnError) and issubclass(NonFiniteError, ValueError)
