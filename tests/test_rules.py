"""fnn.with_vjp and the shipped learning rules: feedback alignment and straight-through."""

import pickle

import pytest
import torch

import fnn
from fnn import layers as L
from fnn.errors import FnnError, FnnTypeError
from fnn.layers.dense import dense_backward
from fnn.rules import feedback_alignment_backward, straight_through_backward

from .helpers import assert_trees_close, autograd_vjp, randn


def half_dx_backward(residuals, dy):
    dparams, dx = dense_backward(residuals, dy)
    return dparams, 0.5 * dx


@pytest.mark.parametrize("batch", [1, 5])
def test_with_vjp_keeps_forward_and_residuals_and_swaps_backward(batch):
    plain = L.Dense(3)
    layer = fnn.with_vjp(plain, half_dx_backward)
    _, params = layer.init(fnn.random.key(0), (-1, 4), dtype=torch.float64)
    x, dy = randn(1, batch, 4), randn(2, batch, 3)
    y, vjp = layer.apply(params, x)
    y0, vjp0 = plain.apply(params, x)
    assert torch.equal(y, y0)
    assert vjp.backward is half_dx_backward and vjp.residuals[0] is x
    dparams, dx = vjp(dy)
    dparams0, dx0 = vjp0(dy)
    assert_trees_close(dparams, dparams0)
    torch.testing.assert_close(dx, 0.5 * dx0)
    pickle.loads(pickle.dumps(vjp))
    assert fnn.core.layer_name(layer) == "Dense"


def test_with_vjp_of_the_original_backward_matches_autograd_and_check_vjp():
    layer = fnn.with_vjp(L.Dense(3), dense_backward)
    _, params = layer.init(fnn.random.key(0), (-1, 2), dtype=torch.float64)
    x, dy = randn(1, 1, 2), randn(2, 1, 3)
    assert_trees_close(
        layer.apply(params, x)[1](dy),
        autograd_vjp(lambda p, v: layer.apply(p, v)[0], params, x, dy),
    )
    fnn.testing.check_vjp(layer, params, x)


@pytest.mark.parametrize("batch", [1, 4])
def test_feedback_alignment_dw_db_as_backprop_dx_through_fixed_b(batch):
    layer = fnn.rules.feedback_alignment(3, fnn.random.key(7))
    _, params = layer.init(fnn.random.key(0), (-1, 2), dtype=torch.float64)
    x, dy = randn(1, batch, 2), randn(2, batch, 3)
    y, vjp = layer.apply(params, x)
    (dparams_ref, dx_ref) = autograd_vjp(lambda p, v: L.Dense(3).apply(p, v)[0], params, x, dy)
    torch.testing.assert_close(y, x @ params["weight"].T + params["bias"])
    assert vjp.backward is feedback_alignment_backward
    dparams, dx = vjp(dy)
    assert_trees_close(dparams, dparams_ref)  # dW, db: backprop's
    feedback = vjp.residuals[1]
    assert feedback.shape == (3, 2) and feedback.dtype == torch.float64
    assert feedback.abs().max() <= 2**-0.5
    torch.testing.assert_close(dx, dy @ feedback)
    assert not torch.allclose(dx, dx_ref)  # not backprop's dx
    # the same key gives the same B at every apply, another key another B
    assert torch.equal(layer.apply(params, randn(3, batch, 2))[1].residuals[1], feedback)
    other = fnn.rules.feedback_alignment(L.Dense(3), fnn.random.key(8))
    assert not torch.equal(other.apply(params, x)[1].residuals[1], feedback)
    assert isinstance(pickle.loads(pickle.dumps(vjp)), fnn.VJP)


def test_feedback_alignment_in_serial_with_value_and_grad_sends_dy_b_down():
    keys = fnn.random.split(fnn.random.key(3), 2)
    layers = (
        fnn.rules.feedback_alignment(16, keys[0]),
        L.Tanh(),
        fnn.rules.feedback_alignment(2, keys[1]),
    )
    init, apply = fnn.serial(*layers)
    _, params = init(fnn.random.key(0), (-1, 2), dtype=torch.float64)
    x, target = randn(1, 5, 2), randn(2, 5, 2)
    loss, grads = fnn.value_and_grad(apply, fnn.losses.mse)(params, x, target)
    # by hand: backprop for the top layer, the fixed B2 instead of W2 below it
    p0, p2 = params["0"], params["2"]
    h = torch.tanh(x @ p0["weight"].T + p0["bias"])
    y = h @ p2["weight"].T + p2["bias"]
    dy = 2 * (y - target) / y.numel()
    b2 = layers[2].apply(p2, h)[1].residuals[1]
    dz = (dy @ b2) * (1 - h**2)
    torch.testing.assert_close(loss, ((y - target) ** 2).mean())
    torch.testing.assert_close(grads["2"]["weight"], dy.T @ h)
    torch.testing.assert_close(grads["0"]["weight"], dz.T @ x)
    torch.testing.assert_close(grads["0"]["bias"], dz.sum(0))
    assert not torch.allclose(dy @ b2, dy @ p2["weight"])


@pytest.mark.parametrize("batch", [1, 6])
def test_sign_and_straight_through(batch):
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.7, 1.0, 1.5], dtype=torch.float64).repeat(batch, 1)
    dy = randn(4, *x.shape)
    y, vjp = fnn.rules.Sign().apply({}, x)
    torch.testing.assert_close(y, torch.sign(x))
    assert torch.equal(vjp(dy)[1], torch.zeros_like(dy))
    layer = fnn.rules.straight_through()
    y, vjp = layer.apply({}, x)
    torch.testing.assert_close(y, torch.sign(x))
    assert vjp.backward is straight_through_backward
    dparams, dx = vjp(dy)
    assert dparams == {}
    # fnn's rule, dx = dy · 1{|x| ≤ 1}: the boundary x = ±1 passes the gradient
    torch.testing.assert_close(dx, dy * torch.tensor([0, 1, 1, 1, 1, 1, 0], dtype=torch.float64))
    torch.testing.assert_close(dx, dy * (x.abs() <= 1).to(dy.dtype))
    # Away from x = ±1 that is autograd's gradient of clamp(x, -1, 1). At ±1 torch's own
    # convention changed (1 up to 2.13, 0 from 2.14), so the boundary is checked above only.
    _, dx_clamp = autograd_vjp(lambda p, v: torch.clamp(v, -1.0, 1.0), {}, x, dy)
    interior = x.abs() != 1
    torch.testing.assert_close(dx[interior], dx_clamp[interior])
    pickle.loads(pickle.dumps(vjp))


def test_straight_through_backward_checks_the_cotangent():
    _, vjp = fnn.rules.straight_through().apply({}, torch.ones(2, 3))
    with pytest.raises(FnnError, match="straight_through"):
        vjp(torch.ones(2, 4))


def test_bad_arguments():
    with pytest.raises(FnnTypeError, match="with_vjp.*forget the call"):
        fnn.with_vjp(L.Relu, half_dx_backward)
    with pytest.raises(FnnTypeError, match="with_vjp: expected a backward"):
        fnn.with_vjp(L.Relu(), None)
    with pytest.raises(FnnTypeError, match="feedback_alignment"):
        fnn.rules.feedback_alignment("3", fnn.random.key(0))
    with pytest.raises(FnnTypeError, match="feedback_alignment: key"):
        fnn.rules.feedback_alignment(3, 0)
    layer = fnn.rules.feedback_alignment(L.Relu(), fnn.random.key(0))
    with pytest.raises(FnnError, match="expected a Dense layer, got a Relu"):
        layer.apply({}, torch.ones(2, 3))


def test_feedback_alignment_example_runs(capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "feedback_alignment.py"
    spec = importlib.util.spec_from_file_location("feedback_alignment_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--epochs", "3"])
    assert set(results) == {"backprop", "feedback_alignment"}
    assert all(0.0 <= test_error < 0.6 for _, test_error, _ in results.values())
    assert "feedback_alignment  train error" in capsys.readouterr().out


def test_with_vjp_refuses_a_backward_that_could_not_pickle():
    with pytest.raises(fnn.errors.FnnTypeError, match="module-level function"):
        fnn.with_vjp(L.Relu(), lambda residuals, dy: ({}, dy))

    def nested_backward(residuals, dy):
        return {}, dy

    with pytest.raises(fnn.errors.FnnTypeError, match="nested_backward"):
        fnn.with_vjp(L.Relu(), nested_backward)
