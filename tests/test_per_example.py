"""fnn.per_example_grads: equal to torch.func.vmap(grad) per example, consistent with value_and_grad."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from .helpers import assert_trees_close

ROOT = pathlib.Path(__file__).resolve().parent.parent
F64 = torch.float64


def disk_mlp():
    return fnn.serial(
        L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
    )


def torch_mlp(p, x):
    """The disk MLP in torch.nn.functional, on params in state_dict form."""
    for i in (0, 2, 4):
        x = F.relu(F.linear(x, p[f"{i}.weight"], p[f"{i}.bias"]))
    return F.linear(x, p["6.weight"], p["6.bias"])


def torch_per_example(model, loss, params, x, target):
    """`(losses, grads)` by torch.func.vmap(grad_and_value) of each example's loss as a batch of one."""

    def one(p, xn, tn):
        return loss(model(p, xn[None]), tn[None])

    flat = fnn.tree.to_state_dict(params)
    grads, losses = torch.func.vmap(torch.func.grad_and_value(one), in_dims=(None, 0, 0))(
        flat, x, target
    )
    return losses, grads


def assert_grads_close(grads, expected_flat, atol=1e-12, rtol=1e-10):
    """fnn's nested grads against torch's flat state_dict-named ones (parameter-free layers: `{}`)."""
    assert_trees_close(fnn.tree.to_state_dict(grads), expected_flat, atol=atol, rtol=rtol)


def disk_data(n, loss, dtype=F64, seed=1):
    x, labels = fnn.data.disk(fnn.random.key(seed), n)
    target = labels if loss == "cross_entropy" else fnn.data.one_hot(labels, 2, dtype)
    return x.to(dtype), target


LOSSES = {
    "cross_entropy": (fnn.losses.cross_entropy, F.cross_entropy),
    "mse": (fnn.losses.mse, F.mse_loss),
}


@pytest.mark.parametrize("batch", [1, 7, 100])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_disk_mlp_equals_torch_func(batch, loss):
    fnn_loss, torch_loss = LOSSES[loss]
    init, apply = disk_mlp()
    _, params = init(fnn.random.key(0), (-1, 2), dtype=F64)
    x, target = disk_data(batch, loss)
    losses, grads = fnn.per_example_grads(apply, fnn_loss)(params, x, target)
    expected_losses, expected_grads = torch_per_example(torch_mlp, torch_loss, params, x, target)
    assert losses.shape == (batch,)
    for leaf, param in zip(fnn.tree.leaves(grads), fnn.tree.leaves(params)):
        assert leaf.shape == (batch, *param.shape)
    torch.testing.assert_close(losses, expected_losses, atol=1e-12, rtol=1e-10)
    assert_grads_close(grads, expected_grads)


def test_float32_equals_torch_func_to_1e6():
    init, apply = disk_mlp()
    _, params = init(fnn.random.key(3), (-1, 2))
    x, target = disk_data(100, "cross_entropy", torch.float32)
    losses, grads = fnn.per_example_grads(apply, fnn.losses.cross_entropy)(params, x, target)
    expected_losses, expected_grads = torch_per_example(
        torch_mlp, F.cross_entropy, params, x, target
    )
    torch.testing.assert_close(losses, expected_losses, atol=1e-6, rtol=0)
    assert_grads_close(grads, expected_grads, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_mean_of_per_example_grads_is_value_and_grad(loss):
    fnn_loss, _ = LOSSES[loss]
    init, apply = disk_mlp()
    _, params = init(fnn.random.key(1), (-1, 2), dtype=F64)
    x, target = disk_data(64, loss, seed=5)
    losses, grads = fnn.per_example_grads(apply, fnn_loss)(params, x, target)
    value, batch_grads = fnn.value_and_grad(apply, fnn_loss)(params, x, target)
    torch.testing.assert_close(losses.mean(), value, atol=1e-14, rtol=1e-12)
    assert_trees_close(
        fnn.tree.map(lambda g: g.mean(0), grads), batch_grads, atol=1e-14, rtol=1e-12
    )
    # each example's gradient is its own: a batch of one gives the same row
    one_loss, one_grads = fnn.per_example_grads(apply, fnn_loss)(params, x[3:4], target[3:4])
    torch.testing.assert_close(one_loss[0], losses[3], atol=1e-14, rtol=1e-12)
    assert_trees_close(
        fnn.tree.map(lambda g: g[0], one_grads),
        fnn.tree.map(lambda g: g[3], grads),
        atol=1e-14,
        rtol=1e-12,
    )


def test_bce_with_logits_and_dense_on_3d_inputs():
    """Dense on (N, T, in) sums each example's outer products over T."""
    init, apply = fnn.serial(
        L.Dense(5), L.Tanh(), L.Dense(3, bias=False), L.Flatten(), L.Dense(1), L.Flatten()
    )
    _, params = init(fnn.random.key(2), (-1, 4, 6), dtype=F64)
    x = fnn.random.normal(fnn.random.key(3), (9, 4, 6), dtype=F64)
    target = fnn.random.uniform(fnn.random.key(4), (9, 1), dtype=F64)

    def model(p, x):
        h = torch.tanh(F.linear(x, p["0.weight"], p["0.bias"]))
        h = F.linear(h, p["2.weight"]).flatten(1)
        return F.linear(h, p["4.weight"], p["4.bias"])

    losses, grads = fnn.per_example_grads(apply, fnn.losses.bce_with_logits)(params, x, target)
    expected_losses, expected_grads = torch_per_example(
        model, F.binary_cross_entropy_with_logits, params, x, target
    )
    torch.testing.assert_close(losses, expected_losses, atol=1e-12, rtol=1e-10)
    assert_grads_close(grads, expected_grads)
    assert "bias" not in grads["2"] and grads["2"]["weight"].shape == (9, 3, 5)


def test_combinators_fan_out_parallel_fan_in():
    """A residual block and a concat block: FanOut, parallel, FanInSum, FanInConcat."""
    block = fnn.serial(
        L.FanOut(2), fnn.parallel(fnn.serial(L.Dense(4), L.Gelu()), L.Identity()), L.FanInSum()
    )
    concat = fnn.serial(L.FanOut(2), fnn.parallel(L.Dense(3), L.Sigmoid()), L.FanInConcat(1))
    init, apply = fnn.serial(L.Dense(4), block, concat, L.LogSoftmax())
    _, params = init(fnn.random.key(6), (-1, 3), dtype=F64)
    x = fnn.random.normal(fnn.random.key(7), (6, 3), dtype=F64)
    labels = torch.tensor([0, 1, 2, 3, 4, 6])

    def model(p, x):
        h = F.linear(x, p["0.weight"], p["0.bias"])
        h = h + F.gelu(F.linear(h, p["1.1.0.0.weight"], p["1.1.0.0.bias"]))
        h = torch.cat([F.linear(h, p["2.1.0.weight"], p["2.1.0.bias"]), torch.sigmoid(h)], 1)
        return torch.log_softmax(h, 1)

    losses, grads = fnn.per_example_grads(apply, fnn.losses.cross_entropy)(params, x, labels)
    expected_losses, expected_grads = torch_per_example(model, F.cross_entropy, params, x, labels)
    torch.testing.assert_close(losses, expected_losses, atol=1e-12, rtol=1e-10)
    assert_grads_close(grads, expected_grads)


def test_missing_entries_for_parameter_free_layers_and_no_autograd():
    init, apply = disk_mlp()
    _, params = init(fnn.random.key(0), (-1, 2))
    sparse = fnn.tree.from_state_dict(fnn.tree.to_state_dict(params))  # no "1", "3", "5"
    x, labels = disk_data(10, "cross_entropy", torch.float32)
    with torch.no_grad():
        losses, grads = fnn.per_example_grads(apply, fnn.losses.cross_entropy)(sparse, x, labels)
    assert list(grads) == ["0", "2", "4", "6"]
    assert not losses.requires_grad and not any(g.requires_grad for g in fnn.tree.leaves(grads))


def test_dropout_key_gives_value_and_grads_masks():
    """The key is split among layers exactly as serial does, so the masks match value_and_grad's."""
    init, apply = fnn.serial(L.Dense(16), L.Relu(), L.Dropout(0.5), L.Dense(2))
    _, params = init(fnn.random.key(0), (-1, 2), dtype=F64)
    x, labels = disk_data(20, "cross_entropy")
    key = fnn.random.key(42)
    losses, grads = fnn.per_example_grads(apply, fnn.losses.cross_entropy)(
        params, x, labels, key=key
    )
    value, batch_grads = fnn.value_and_grad(apply, fnn.losses.cross_entropy)(
        params, x, labels, key=key
    )
    torch.testing.assert_close(losses.mean(), value)
    assert_trees_close(
        fnn.tree.map(lambda g: g.mean(0), grads), batch_grads, atol=1e-14, rtol=1e-12
    )


# A user's layer without a per-example rule: y = x ⊙ scale (elementwise), through the vmap fallback.
def Scale():
    def init(key, input_shape, *, dtype=torch.float32, device="cpu"):
        return input_shape, {
            "scale": fnn.random.uniform(key, input_shape[1:], 0.5, 1.5, dtype=dtype, device=device)
        }

    def apply(params, x, **kwargs):
        return x * params["scale"], fnn.VJP(scale_backward, (x, params["scale"]))

    return fnn.Layer(init, apply)


# y = x ⊙ s   ⇒   ds = Σₙ dy ⊙ x,  dx = dy ⊙ s
def scale_backward(residuals, dy):
    x, scale = residuals
    return {"scale": (dy * x).sum(0)}, dy * scale


# A user's BatchNorm-like layer: y = (x − mean over the batch) ⊙ s mixes examples.
@fnn.core.backward
def ruled_scale_backward(residuals, dy):
    """scale_backward, declared with a per-example rule (test_registered_rule_...)."""
    return scale_backward(residuals, dy)


def CenterScale():
    def init(key, input_shape, *, dtype=torch.float32, device="cpu"):
        return input_shape, {"scale": torch.ones(input_shape[1:], dtype=dtype, device=device)}

    def apply(params, x, **kwargs):
        centered = x - x.mean(0)
        return centered * params["scale"], fnn.VJP(
            center_scale_backward, (centered, params["scale"])
        )

    return fnn.Layer(init, apply)


# y = (x − x̄) ⊙ s   ⇒   ds = Σₙ dy ⊙ (x − x̄),  dx = g − mean(g) with g = dy ⊙ s
def center_scale_backward(residuals, dy):
    centered, scale = residuals
    g = dy * scale
    return {"scale": (dy * centered).sum(0)}, g - g.mean(0)


@pytest.mark.parametrize("batch", [1, 5])
def test_custom_layer_uses_the_vmap_fallback(batch):
    init, apply = fnn.serial(L.Dense(3), Scale(), L.Tanh(), L.Dense(2))
    _, params = init(fnn.random.key(8), (-1, 2), dtype=F64)
    x, labels = disk_data(batch, "cross_entropy")

    def model(p, x):
        h = torch.tanh(F.linear(x, p["0.weight"], p["0.bias"]) * p["1.scale"])
        return F.linear(h, p["3.weight"], p["3.bias"])

    losses, grads = fnn.per_example_grads(apply, fnn.losses.cross_entropy)(params, x, labels)
    expected_losses, expected_grads = torch_per_example(model, F.cross_entropy, params, x, labels)
    torch.testing.assert_close(losses, expected_losses, atol=1e-12, rtol=1e-10)
    assert_grads_close(grads, expected_grads)
    # a custom layer alone (no serial to open up) works too
    _, p = Scale().init(fnn.random.key(9), (-1, 2), dtype=F64)
    losses, grads = fnn.per_example_grads(Scale().apply, fnn.losses.mse)(p, x, x.flip(1))
    torch.testing.assert_close(grads["scale"], 2 * (x * p["scale"] - x.flip(1)) * x / 2)


def test_registered_rule_replaces_the_fallback():
    calls = []

    # y = x ⊙ s   ⇒   per example: ds[n] = dy[n] ⊙ x[n],  dx = dy ⊙ s
    def scale_per_example(residuals, dy, need_dx):
        calls.append(need_dx)
        x, scale = residuals
        return {"scale": dy * x}, dy * scale if need_dx else None

    ruled_backward = ruled_scale_backward
    ruled_backward.per_example_rule(scale_per_example)
    init, apply = fnn.serial(Scale(), L.Relu(), L.Dense(2))
    _, params = init(fnn.random.key(10), (-1, 2), dtype=F64)
    x, labels = disk_data(8, "cross_entropy")
    _, by_vmap = fnn.per_example_grads(apply, fnn.losses.cross_entropy)(params, x, labels)
    ruled = fnn.serial(fnn.with_vjp(Scale(), ruled_backward), L.Relu(), L.Dense(2))
    _, by_rule = fnn.per_example_grads(ruled.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert calls == [False]  # the first layer's dx is not needed
    assert_trees_close(by_rule, by_vmap, atol=1e-14, rtol=1e-12)


def test_layer_mixing_examples_is_a_clear_error():
    init, apply = fnn.serial(L.Dense(3), CenterScale(), L.Dense(2))
    _, params = init(fnn.random.key(11), (-1, 2))
    x, labels = disk_data(6, "cross_entropy", torch.float32)
    with pytest.raises(fnn.FnnError, match=r"serial\[1\].*changes with the rest of the batch"):
        fnn.per_example_grads(apply, fnn.losses.cross_entropy)(params, x, labels)


def test_loss_without_reduction_keyword_is_vmapped():
    def squared_error(pred, target):  # a user's loss: mean over all elements
        return fnn.losses.mse(pred, target)

    init, apply = disk_mlp()
    _, params = init(fnn.random.key(0), (-1, 2), dtype=F64)
    x, target = disk_data(12, "mse")
    by_vmap = fnn.per_example_grads(apply, squared_error)(params, x, target)
    by_reduction = fnn.per_example_grads(apply, fnn.losses.mse)(params, x, target)
    torch.testing.assert_close(by_vmap[0], by_reduction[0], atol=1e-14, rtol=1e-12)
    assert_trees_close(by_vmap[1], by_reduction[1], atol=1e-14, rtol=1e-12)


def test_has_aux_returns_the_output():
    init, apply = disk_mlp()
    _, params = init(fnn.random.key(0), (-1, 2))
    x, labels = disk_data(5, "cross_entropy", torch.float32)
    (losses, y), _grads = fnn.per_example_grads(apply, fnn.losses.cross_entropy, has_aux=True)(
        params, x, labels
    )
    torch.testing.assert_close(y, apply(params, x)[0])
    assert losses.shape == (5,)


def test_empty_batch():
    init, apply = disk_mlp()
    _, params = init(fnn.random.key(0), (-1, 2))
    losses, grads = fnn.per_example_grads(apply, fnn.losses.mse)(
        params, torch.zeros(0, 2), torch.zeros(0, 2)
    )
    assert losses.shape == (0,) and grads["0"]["weight"].shape == (0, 25, 2)


def test_errors_name_what_was_expected():
    init, apply = disk_mlp()
    _, params = init(fnn.random.key(0), (-1, 2))
    with pytest.raises(fnn.FnnError, match="pass layer.apply"):
        fnn.per_example_grads(disk_mlp(), fnn.losses.mse)
    f = fnn.per_example_grads(apply, fnn.losses.cross_entropy)
    with pytest.raises(fnn.errors.ShapeError, match="leading batch axis"):
        f(params, torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(fnn.errors.ShapeError, match=r"serial\[0\] Dense: expected input of shape"):
        f(params, torch.ones(4, 3), torch.zeros(4, dtype=torch.int64))

    def total(pred, target, reduction="mean"):  # ignores reduction: no batch axis
        return fnn.losses.mse(pred, target, reduction="sum")

    with pytest.raises(fnn.errors.ShapeError, match="batch axis first"):
        fnn.per_example_grads(apply, total)(params, torch.ones(4, 2), torch.ones(4, 2))
    softmax_over_batch = fnn.serial(L.Dense(1), L.Flatten(), L.Reshape(()), L.Softmax())
    _, p = softmax_over_batch.init(fnn.random.key(0), (-1, 2))
    with pytest.raises(fnn.FnnError, match=r"serial\[3\] Softmax: .* mixes examples"):
        fnn.per_example_grads(softmax_over_batch.apply, fnn.losses.mse)(
            p, torch.ones(4, 2), torch.ones(4)
        )


def test_check_finite_mode_still_checks():
    init, apply = disk_mlp()
    _, params = init(fnn.random.key(0), (-1, 2))
    x, labels = disk_data(4, "cross_entropy", torch.float32)
    f = fnn.per_example_grads(apply, fnn.losses.cross_entropy)
    with fnn.debug.check_finite():
        losses, grads = f(params, x, labels)
        x[0, 0] = float("nan")
        with pytest.raises(fnn.debug.NonFiniteError, match="input already contains NaN"):
            f(params, x, labels)
    assert fnn.tree.structure(grads) == fnn.tree.structure(params) and losses.shape == (4,)


@pytest.fixture(scope="module")
def dp_sgd():
    spec = importlib.util.spec_from_file_location("dp_sgd_example", ROOT / "examples" / "dp_sgd.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_dp_sgd_example_runs_and_learns(dp_sgd, capsys):
    result = dp_sgd.main(["--epochs", "15"])
    out = capsys.readouterr().out
    assert "noise multiplier" in out and "clip norm" in out and "test error" in out
    assert result.test_error < 0.35  # well below chance (0.5) after a few noisy epochs
    assert 0 < result.epsilon < float("inf")


def test_dp_sgd_step_clips_each_example(dp_sgd):
    """With no noise, the update is the mean of per-example gradients clipped to norm C."""
    grads = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]])}  # norms 5 and 0.5
    noisy = dp_sgd.privatize(
        grads, clip=1.0, noise_multiplier=0.0, expected_batch=2, key=fnn.random.key(0)
    )
    torch.testing.assert_close(noisy["w"], torch.tensor([(0.6 + 0.3) / 2, (0.8 + 0.4) / 2]))
    # the accountant: without subsampling the Gaussian mechanism's RDP is α / (2σ²)
    assert dp_sgd.rdp_sampled_gaussian(1.0, 2.0, 8) == pytest.approx(8 / (2 * 4.0))
