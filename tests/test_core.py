"""value_and_grad, update, losses, purity (no autograd, no global RNG) and errors."""

from __future__ import annotations

import pathlib
import re

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L
from fnn.errors import FnnError

from .helpers import assert_trees_close, autograd_loss_and_grads, randn, torch_disk_mlp

DISK_MLP = [L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)]


LOSS_CASES = [
    ("cross_entropy", fnn.losses.cross_entropy, F.cross_entropy, lambda labels: labels),
    ("mse", fnn.losses.mse, F.mse_loss, lambda labels: fnn.data.one_hot(labels, 2, torch.float64)),
]


@pytest.mark.parametrize(
    "name, loss, torch_loss, target_of", LOSS_CASES, ids=[c[0] for c in LOSS_CASES]
)
@pytest.mark.parametrize("batch", [1, 10, 100])
def test_value_and_grad_matches_autograd(name, loss, torch_loss, target_of, batch):
    model = fnn.serial(*DISK_MLP)
    _, params = model.init(fnn.random.key(0), (-1, 2), dtype=torch.float64)
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    x, target = x.double(), target_of(labels)
    value, grads = fnn.value_and_grad(model.apply, loss)(params, x, target)
    expected_value, expected_grads = autograd_loss_and_grads(
        torch_disk_mlp(params), torch_loss, x, target
    )
    assert value.ndim == 0
    torch.testing.assert_close(value, expected_value, atol=1e-12, rtol=1e-12)
    params_without_empty = {k: v for k, v in params.items() if v}
    assert_trees_close({k: grads[k] for k in params_without_empty}, expected_grads)
    assert fnn.tree.structure(grads) == fnn.tree.structure(params)


def test_value_and_grad_has_aux_returns_the_output():
    model = fnn.serial(*DISK_MLP)
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), 50)
    (value, logits), grads = fnn.value_and_grad(
        model.apply, fnn.losses.cross_entropy, has_aux=True
    )(params, x, labels)
    torch.testing.assert_close(logits, model.apply(params, x)[0])
    value2, grads2 = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert torch.equal(value, value2)
    assert_trees_close(grads, grads2, atol=0, rtol=0)


# L = Σ (p − t)⁴   ⇒   dp = 4 (p − t)³ · dL      (a user's loss: gets a tensor cotangent)
def quartic_backward(residuals, dvalue):
    diff = residuals
    assert isinstance(dvalue, torch.Tensor)
    return 4 * diff**3 * dvalue


def quartic(pred, target):
    diff = pred - target
    return (diff**4).sum(), fnn.VJP(quartic_backward, diff)


def test_value_and_grad_with_a_user_loss_and_dropout_key():
    model = fnn.serial(L.Dense(4), L.Dropout(0.5), L.Dense(1))
    _, params = model.init(fnn.random.key(0), (-1, 3), dtype=torch.float64)
    x, t = randn(0, 6, 3), randn(1, 6, 1)
    f = fnn.value_and_grad(model.apply, quartic)
    v1, g1 = f(params, x, t, key=fnn.random.key(5))
    v2, g2 = f(params, x, t, key=fnn.random.key(5))
    assert torch.equal(v1, v2)
    assert_trees_close(g1, g2, atol=0, rtol=0)

    def total(p):
        y, _ = model.apply(p, x, key=fnn.random.key(5))
        return quartic(y, t)[0]

    w = params["2"]["weight"]
    eps = 1e-6
    bumped = {**params, "2": {**params["2"], "weight": w + eps * torch.eye(1, 4, dtype=w.dtype)}}
    numeric = (total(bumped) - v1) / eps
    assert abs(numeric - g1["2"]["weight"][0, 0]) < 1e-3 * max(1.0, abs(float(numeric)))


def test_losses_match_torch_for_every_reduction():
    logits, labels = randn(0, 5, 3), torch.tensor([0, 2, 1, 1, 0])
    target = randn(1, 5, 3)
    cases = [
        (fnn.losses.cross_entropy, F.cross_entropy, labels),
        (fnn.losses.mse, F.mse_loss, target),
        (fnn.losses.bce_with_logits, F.binary_cross_entropy_with_logits, torch.sigmoid(target)),
    ]
    for ours, theirs, t in cases:
        for reduction in ["mean", "sum", "none"]:
            value, vjp = ours(logits, t, reduction=reduction)
            with torch.enable_grad():
                z = logits.clone().requires_grad_(True)
                expected = theirs(z, t, reduction=reduction)
                dvalue = randn(2, *expected.shape)
                (expected_grad,) = torch.autograd.grad(expected, z, dvalue)
            torch.testing.assert_close(value, expected.detach())
            torch.testing.assert_close(vjp(dvalue), expected_grad)
            if reduction != "none":
                torch.testing.assert_close(vjp(float(dvalue)), expected_grad)


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_losses_are_finite_for_extreme_logits(scale):
    logits = torch.tensor([[scale, -scale, 0.0], [0.0, scale, -scale]])
    for value, vjp in [
        fnn.losses.cross_entropy(logits, torch.tensor([1, 2])),
        fnn.losses.bce_with_logits(logits, torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]])),
        fnn.losses.mse(logits, torch.zeros_like(logits)),
    ]:
        assert torch.isfinite(value) and torch.isfinite(vjp(1.0)).all()
    value, vjp = fnn.losses.cross_entropy(logits, torch.tensor([1, 2]))
    expected = F.cross_entropy(logits, torch.tensor([1, 2]))
    torch.testing.assert_close(value, expected)


def test_update_is_plain_sgd_and_pure():
    params = {"a": {"w": torch.ones(2, 2)}, "b": torch.zeros(3)}
    grads = {"a": {"w": torch.full((2, 2), 2.0)}, "b": torch.ones(3)}
    before = fnn.tree.map(torch.clone, params)
    new = fnn.update(params, grads, lr=0.25)
    assert torch.equal(new["a"]["w"], torch.full((2, 2), 0.5)) and torch.equal(
        new["b"], torch.full((3,), -0.25)
    )
    assert_trees_close(params, before, atol=0, rtol=0)


@pytest.mark.parametrize(
    "grads, fragment",
    [
        ({"a": {"w": torch.ones(2, 2)}}, r"missing keys \['b'\]"),
        (
            {"a": {"w": torch.ones(2, 2)}, "b": torch.ones(3), "c": torch.ones(1)},
            r"unexpected keys \['c'\]",
        ),
        (
            {"a": {"w": torch.ones(2, 3)}, "b": torch.ones(3)},
            r"\['a'\]\['w'\]: expected shape \(2, 2\), got \(2, 3\)",
        ),
        ({"a": torch.ones(2, 2), "b": torch.ones(3)}, r"\['a'\]: expected a dict"),
    ],
)
def test_update_rejects_mismatched_trees(grads, fragment):
    params = {"a": {"w": torch.ones(2, 2)}, "b": torch.zeros(3)}
    with pytest.raises(ValueError, match=fragment):
        fnn.update(params, grads, lr=0.1)


@pytest.mark.parametrize(
    "momentum, dampening, nesterov, weight_decay",
    [
        (0.0, 0.0, False, 0.0),
        (0.9, 0.0, False, 0.0),
        (0.9, 0.0, True, 1e-2),
        (0.5, 0.3, False, 0.0),
    ],
)
def test_sgd_matches_torch_optim_step_for_step(momentum, dampening, nesterov, weight_decay):
    model = fnn.serial(*DISK_MLP)
    _, params = model.init(fnn.random.key(0), (-1, 2), dtype=torch.float64)
    seq = torch_disk_mlp(params)
    kwargs = dict(
        momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay
    )
    torch_opt = torch.optim.SGD(seq.parameters(), lr=0.1, **kwargs)
    opt = fnn.optim.sgd(lr=lambda step: 0.1 * 0.99**step, **kwargs)
    state = opt.init(params)
    f = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    x, labels = fnn.data.disk(fnn.random.key(1), 64)
    x = x.double()
    for step in range(20):
        for group in torch_opt.param_groups:
            group["lr"] = 0.1 * 0.99**step
        _, grads = f(params, x, labels)
        params, state = opt.update(params, grads, state)
        autograd_loss_and_grads(seq, F.cross_entropy, x, labels)
        torch_opt.step()
    expected = fnn.tree.from_state_dict({k: v.detach() for k, v in seq.state_dict().items()})
    assert_trees_close({k: v for k, v in params.items() if v}, expected, atol=1e-12, rtol=1e-10)


def test_no_autograd_graph_is_built_and_everything_runs_without_grad_mode():
    model = fnn.serial(*DISK_MLP)
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), 20)
    with torch.enable_grad():
        loss, grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)(params, x, labels)
        new = fnn.update(params, grads, lr=0.1)
    for t in [loss, *fnn.tree.leaves(grads), *fnn.tree.leaves(new)]:
        assert t.grad_fn is None and not t.requires_grad
    with torch.no_grad():
        loss2, grads2 = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert torch.equal(loss, loss2)
    assert_trees_close(grads, grads2, atol=0, rtol=0)


def test_fnn_sources_never_use_autograd():
    root = pathlib.Path(fnn.__file__).parent
    pattern = re.compile(
        r"\.backward\(\s*\)|torch\.autograd|requires_grad_\(|requires_grad\s*=\s*True|enable_grad"
    )
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        if "testing" not in path.relative_to(root).parts[0]
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_same_key_same_results_and_the_global_rng_is_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    model = fnn.serial(*DISK_MLP, L.Dropout(0.1))
    _, p1 = model.init(fnn.random.key(4), (-1, 2))
    _, p2 = model.init(fnn.random.key(4), (-1, 2))
    _, p3 = model.init(fnn.random.key(5), (-1, 2))
    x1, l1 = fnn.data.disk(fnn.random.key(9), 30)
    x2, l2 = fnn.data.disk(fnn.random.key(9), 30)
    y1, _ = model.apply(p1, x1, key=fnn.random.key(2))
    y2, _ = model.apply(p2, x2, key=fnn.random.key(2))
    assert torch.equal(torch.get_rng_state(), before)
    assert_trees_close(p1, p2, atol=0, rtol=0)
    assert not torch.equal(p1["0"]["weight"], p3["0"]["weight"])
    assert torch.equal(x1, x2) and torch.equal(l1, l2) and torch.equal(y1, y2)


def test_wrong_input_shape_names_the_layer_and_what_it_expected():
    model = fnn.serial(*DISK_MLP)
    _, params = model.init(fnn.random.key(0), (-1, 2))
    with pytest.raises(
        ValueError, match=r"serial\[0\] Dense: expected input of shape \(\.\.\., 2\), got \(5, 3\)"
    ):
        model.apply(params, torch.ones(5, 3))
    wrong = {**params, "2": {**params["2"], "weight": torch.ones(25, 7)}}
    with pytest.raises(
        ValueError, match=r"serial\[2\] Dense: expected input of shape \(\.\.\., 7\), got \(5, 25\)"
    ):
        model.apply(wrong, torch.ones(5, 2))
    with pytest.raises(ValueError, match=r"serial\[4\] Dense: params missing \['bias'\]"):
        model.apply({**params, "4": {"weight": params["4"]["weight"]}}, torch.ones(5, 2))
    with pytest.raises(TypeError, match=r"serial\[0\] Dense: expected a floating-point input"):
        model.apply(params, torch.ones(5, 2, dtype=torch.int64))
    with pytest.raises(
        ValueError, match=r"serial\[0\] Dense: input dtype torch.float64 does not match"
    ):
        model.apply(params, torch.ones(5, 2, dtype=torch.float64))


def test_wrong_cotangent_shape_names_the_layer():
    model = fnn.serial(L.Dense(3), L.Relu(), L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 4))
    _, vjp = model.apply(params, torch.ones(5, 4))
    with pytest.raises(
        ValueError,
        match=r"serial\[2\] Dense VJP: expected a cotangent of the output's shape \(5, 2\), got \(5, 3\)",
    ):
        vjp(torch.ones(5, 3))


def test_init_errors_name_the_layer():
    with pytest.raises(
        ValueError,
        match=r"serial\[0\] Relu: expected an input shape as a tuple of ints, got 'oops'",
    ):
        fnn.serial(L.Relu(), L.Dense(2)).init(fnn.random.key(0), "oops")
    with pytest.raises(
        ValueError, match=r"serial\[1\] Dense: input features \(last dimension\) must be ≥ 1"
    ):
        fnn.serial(L.Relu(), L.Dense(2)).init(fnn.random.key(0), (-1, 0))
    with pytest.raises(ValueError, match="Dense: out_features must be a positive int"):
        L.Dense(0)
    with pytest.raises(ValueError, match=r"Dropout: rate must be a number in \[0, 1\]"):
        L.Dropout(1.5)
    with pytest.raises(TypeError, match="fnn.random key"):
        fnn.serial(L.Dense(2)).init(42, (-1, 3))


def test_check_vjp_catches_a_wrong_backward_and_names_the_leaf():
    def init(key, input_shape, *, dtype=torch.float32, device="cpu"):
        return input_shape, {"scale": torch.ones(input_shape[-1], dtype=dtype, device=device)}

    def apply(params, x, **kwargs):
        return x * params["scale"], fnn.VJP(wrong_scale_backward, (x, params["scale"]))

    layer = fnn.Layer(init, apply)
    _, params = layer.init(fnn.random.key(0), (-1, 3))
    with pytest.raises(
        AssertionError,
        match=r"params\['scale'\]: VJP differs from central differences: max abs error",
    ):
        fnn.testing.check_vjp(layer, params, randn(0, 4, 3))
    model = fnn.serial(L.Dense(3), layer)
    _, params = model.init(fnn.random.key(0), (-1, 3))
    with pytest.raises(AssertionError, match=r"params\['1'\]\['scale'\]"):
        fnn.testing.check_vjp(model, params, randn(0, 4, 3))


# y = x·s   ⇒   dx = dy·s, ds = Σ dy·x — but this one forgets the sum over the batch (a bug to catch)
def wrong_scale_backward(residuals, dy):
    x, scale = residuals
    return {"scale": (dy * x)[0]}, dy * scale


def test_engines_leave_grad_mode_as_they_found_it_even_when_they_raise():
    """value_and_grad, update, optimizers and train_step switch grad mode off while they
    run (fnn/_no_grad.py) and back on after, also when a bad input makes them raise."""
    model = fnn.serial(*DISK_MLP)
    _, params = model.init(fnn.random.key(0), (-1, 2))
    params = fnn.tree.map(lambda t: t.requires_grad_(True), params)
    x, labels = fnn.data.disk(fnn.random.key(1), 8)
    opt = fnn.optim.sgd(lr=0.1, momentum=0.9)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    step = fnn.train_step(model.apply, fnn.losses.cross_entropy, opt)
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode):
            loss, grads = loss_and_grads(params, x, labels)
            new, state = opt.update(params, grads, opt.init(params))
            plain = fnn.update(params, grads, lr=0.1)
            value, stepped, _ = step(params, opt.init(params), x, labels)
            assert torch.is_grad_enabled() is grad_mode
            for t in [loss, value, *fnn.tree.leaves([grads, new, state, plain, stepped])]:
                assert not (isinstance(t, torch.Tensor) and t.requires_grad)
            with pytest.raises(FnnError):
                loss_and_grads(params, x, labels.float().unsqueeze(1))
            with pytest.raises(FnnError):
                step(params, opt.init(params), x, labels + 5)
            assert torch.is_grad_enabled() is grad_mode
