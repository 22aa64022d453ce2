"""fnn.remat: same outputs and gradients as the plain layer, smaller residuals."""

import pickle

import pytest
import torch

import fnn
from fnn import layers as L
from fnn.remat import remat_backward

from .helpers import assert_trees_close, autograd_vjp, randn


def block():
    return fnn.serial(L.Dense(16), L.Tanh(), L.Dense(16), L.Relu(), L.Dropout(0.3), L.Dense(3))


@pytest.mark.parametrize("batch", [1, 5])
def test_remat_gradients_equal_the_plain_layer_and_autograd(batch):
    plain = block()
    layer = fnn.remat(plain)
    _, params = layer.init(fnn.random.key(0), (-1, 4), dtype=torch.float64)
    x, dy, key = randn(1, batch, 4), randn(2, batch, 3), fnn.random.key(9)
    y, vjp = layer.apply(params, x, key=key)
    y0, vjp0 = plain.apply(params, x, key=key)
    assert torch.equal(y, y0)
    assert vjp.backward is remat_backward
    _forward, kept_params, kept_x, kwargs = vjp.residuals
    assert kept_params is params and kept_x is x and kwargs == {"key": key}
    dparams, dx = vjp(dy)
    dparams0, dx0 = vjp0(dy)
    assert_trees_close(dparams, dparams0, atol=0, rtol=0)  # bit for bit
    torch.testing.assert_close(dx, dx0, atol=0, rtol=0)
    reference = autograd_vjp(lambda p, v: plain.apply(p, v, key=key)[0], params, x, dy)
    assert_trees_close((dparams, dx), reference)
    fnn.testing.check_vjp(layer, params, x, key=key)
    # its residuals hold the layer's forward function, which cannot pickle: a clear error
    with pytest.raises(fnn.FnnError, match="remat: a remat VJP holds serial's forward function"):
        pickle.dumps(vjp)


def test_remat_inside_serial_with_value_and_grad_matches_plain():
    def model(inner):
        return fnn.serial(L.Dense(8), inner, L.Relu(), L.Dense(2))

    _, params = model(block()).init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), 64)
    plain = fnn.value_and_grad(model(block()).apply, fnn.losses.cross_entropy)(params, x, labels)
    rematted = fnn.value_and_grad(model(fnn.remat(block())).apply, fnn.losses.cross_entropy)(
        params, x, labels
    )
    torch.testing.assert_close(rematted[0], plain[0], atol=0, rtol=0)
    assert_trees_close(rematted[1], plain[1], atol=0, rtol=0)


def test_summary_shows_smaller_residuals():
    def model(inner):
        return fnn.serial(L.Dense(64), inner, L.Dense(2))

    inner = fnn.serial(L.Dense(256), L.Relu(), L.Dense(256), L.Relu())
    plain = fnn.summary(model(inner), (-1, 8)).splitlines()
    rematted = fnn.summary(model(fnn.remat(inner)), (-1, 8)).splitlines()

    def row(lines, path):
        return lines[[line.split()[0] for line in lines].index(path)].split()

    assert row(plain, "serial[1]")[-1] == str(
        (64 + 2 * 256) * 4
    )  # its input and two Relu outputs (each Dense keeps the one before)
    assert row(rematted, "serial[1]")[1] == "remat(serial)"
    assert row(rematted, "serial[1]")[-1] == str(64 * 4)  # its input only
    assert int(row(rematted, "total")[-1]) < int(row(plain, "total")[-1])


def test_remat_rejects_a_non_layer():
    with pytest.raises(fnn.errors.FnnTypeError, match="remat.*forget the call"):
        fnn.remat(L.Relu)
