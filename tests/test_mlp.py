"""Mlp: serial(Dense, Gelu, Dense)'s numbers, bit for bit, with a leaner VJP."""

from __future__ import annotations

import pytest
import torch

import fnn
from fnn import layers as L

from .helpers import randn


def _pair(hidden=8, out=None, approximate="none", bias=True):
    fused = L.Mlp(hidden, out, approximate=approximate, bias=bias)
    plain = fnn.serial(
        L.Dense(hidden, bias=bias), L.Gelu(approximate), L.Dense(out or 4, bias=bias)
    )
    return fused, plain


def _equal(a, b):
    leaves_a, leaves_b = fnn.tree.leaves(a), fnn.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 4), (2, 5, 4)])
def test_the_serials_params_outputs_and_gradients_bit_for_bit(approximate, bias, shape):
    fused, plain = _pair(approximate=approximate, bias=bias)
    in_shape = (-1, *shape[1:])
    out_fused, params = fused.init(fnn.random.key(3), in_shape)
    out_plain, params_plain = plain.init(fnn.random.key(3), in_shape)
    assert out_fused == out_plain
    _equal(params, params_plain)  # the same init from the same key: a drop-in replacement
    x = randn(0, *shape, dtype=torch.float32)
    y, vjp = fused.apply(params, x)
    y_plain, vjp_plain = plain.apply(params, x)
    assert torch.equal(y, y_plain)
    dy = randn(1, *y.shape, dtype=torch.float32)
    expected = vjp_plain(dy)
    _equal(vjp(dy), expected)
    _equal(vjp(dy), expected)  # the backward changes no residual: it can run again
    grads, dx = fnn.core.backprop([vjp, dy.clone()], need_dx=False)
    assert dx is None
    _equal(grads, expected[0])
    per_example = fnn.per_example_grads(fused.apply, fnn.losses.mse)(params, x, y_plain + 1)
    per_example_plain = fnn.per_example_grads(plain.apply, fnn.losses.mse)(params, x, y_plain + 1)
    _equal(per_example, per_example_plain)


def test_the_vjp_keeps_the_input_and_pre_activation_only():
    fused, plain = _pair(hidden=16)
    text = fnn.summary(fused, (-1, 10, 4))
    plain_text = fnn.summary(plain, (-1, 10, 4))
    # per example: x (10·4) and h (10·16) floats, where the serial also keeps gelu(h)
    assert "Mlp" in text
    assert f"{(10 * 4 + 10 * 16) * 4}" in text
    assert f"{(10 * 4 + 2 * 10 * 16) * 4}" in plain_text
    _, params = fused.init(fnn.random.key(0), (-1, 4))
    x = randn(0, 3, 4, dtype=torch.float32)
    _, vjp = fused.apply(params, x)
    tensors = [t for t in vjp.residuals if isinstance(t, torch.Tensor)]
    assert tensors[0] is x and [tuple(t.shape) for t in tensors[1:]] == [(3, 16), (16, 4), (4, 16)]


def test_loads_a_torch_sequential_and_defaults_out_to_the_input_size():
    torch_mlp = torch.nn.Sequential(
        torch.nn.Linear(6, 12), torch.nn.GELU(), torch.nn.Linear(12, 6)
    ).double()
    params = fnn.tree.from_state_dict(torch_mlp.state_dict())
    out_shape, init_params = L.Mlp(12).init(fnn.random.key(0), (-1, 6))
    assert out_shape == (-1, 6)
    assert fnn.tree.flatten(init_params)[1] == fnn.tree.flatten(params)[1]
    x = randn(0, 5, 6, dtype=torch.float64)
    y, _ = L.Mlp(12).apply(params, x)
    torch.testing.assert_close(y, torch_mlp(x).detach(), atol=1e-12, rtol=1e-12)


def test_clear_errors():
    with pytest.raises(fnn.FnnError, match="Mlp: hidden_features"):
        L.Mlp(0)
    with pytest.raises(fnn.FnnError, match="Mlp: approximate"):
        L.Mlp(4, approximate="erf")
    with pytest.raises(fnn.errors.FnnTypeError, match="Mlp: bias"):
        L.Mlp(4, bias=1)
    _, params = L.Mlp(8, 3).init(fnn.random.key(0), (-1, 4))
    with pytest.raises(fnn.errors.TreeError, match=r"Mlp: expected params \{'0'"):
        L.Mlp(8, 3).apply({"0": params["0"]}, torch.ones(2, 4))
    with pytest.raises(fnn.errors.ShapeError, match=r"Mlp: params\['0.weight'\] has shape"):
        L.Mlp(8, 3).apply(params, torch.ones(2, 5))
    with pytest.raises(fnn.errors.ShapeError, match=r"Mlp: params\['2.weight'\] has shape"):
        L.Mlp(8, 2).apply(params, torch.ones(2, 4))
    with pytest.raises(fnn.FnnError, match="Mlp: input dtype"):
        L.Mlp(8, 3).apply(params, torch.ones(2, 4, dtype=torch.float64))
    _, vjp = L.Mlp(8, 3).apply(params, torch.ones(2, 4))
    with pytest.raises(fnn.errors.ShapeError, match="Mlp VJP: expected a cotangent"):
        vjp(torch.ones(2, 4))
    with pytest.raises(fnn.errors.ShapeError, match="Mlp: per-example gradients need"):
        _, vjp = L.Mlp(8, 3).apply(params, torch.ones(4))
        fnn.core.per_example_rule(vjp)(vjp.residuals, torch.ones(3), True)


@pytest.mark.parametrize("layout", ["empty", "batch 1", "non-contiguous"])
def test_vjp_against_autograd_and_central_differences(layout):
    """float64: the VJP equals torch.autograd's on the torch computation and central
    differences, on an empty batch, one example and a transposed (strided) input."""
    import torch.nn.functional as F

    from .helpers import autograd_vjp

    layer = L.Mlp(5, 3)
    _, params = layer.init(fnn.random.key(0), (-1, 4), dtype=torch.float64)
    if layout == "non-contiguous":
        x = randn(1, 4, 2, dtype=torch.float64).t()
        assert not x.is_contiguous()
    else:
        x = randn(1, 0 if layout == "empty" else 1, 4, dtype=torch.float64)
    y, vjp = layer.apply(params, x)
    dy = randn(2, *y.shape, dtype=torch.float64)
    dparams, dx = vjp(dy)

    def torch_mlp(p, x):
        hidden = F.gelu(F.linear(x, p["0"]["weight"], p["0"]["bias"]))
        return F.linear(hidden, p["2"]["weight"], p["2"]["bias"])

    expected_dparams, expected_dx = autograd_vjp(torch_mlp, params, x, dy)
    torch.testing.assert_close(dx, expected_dx, atol=1e-12, rtol=1e-12)
    for mine, theirs in zip(fnn.tree.leaves(dparams), fnn.tree.leaves(expected_dparams)):
        torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=1e-12)
    eps, flat = 1e-6, x.reshape(-1)
    numeric = torch.zeros_like(flat)
    for i in range(flat.numel()):
        moved = [flat.clone(), flat.clone()]
        moved[0][i] += eps
        moved[1][i] -= eps
        up, down = (layer.apply(params, m.reshape(x.shape))[0] for m in moved)
        numeric[i] = ((up - down) * dy).sum() / (2 * eps)
    torch.testing.assert_close(dx.reshape(-1), numeric, atol=1e-7, rtol=1e-7)
