"""fnn.scan: a cell layer run over time. A user's own cell, torch's cells in a Python loop
under autograd, reverse, pytree carries, keys per step, the memory-freeing VJP, errors."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import fnn
from fnn import layers as L
from fnn.core import backprop

from .helpers import assert_trees_close, autograd_vjp, randn


# A user's cell: h' = tanh(x_t A + h B) (A, B as written: no transposes), y_t = 2 h'.
def _cell_init(key, input_shape, *, dtype=torch.float32, device="cpu"):
    carry_shape, x_shape = input_shape
    k1, k2 = fnn.random.split(key)
    size = carry_shape[-1]
    params = {
        "A": fnn.random.normal(k1, (x_shape[-1], size), dtype=dtype, device=device),
        "B": fnn.random.normal(k2, (size, size), dtype=dtype, device=device),
    }
    return [carry_shape, carry_shape], params


def _cell_apply(params, x, **kwargs):
    h, x_t = x
    h_new = torch.tanh(x_t @ params["A"] + h @ params["B"])
    return (h_new, 2 * h_new), fnn.VJP(_cell_backward, (params["A"], params["B"], h, x_t, h_new))


# h' = tanh(x A + h B), y = 2h'   ⇒   dpre = (dh' + 2 dy)(1 − h'²), dA = xᵀ dpre, dB = hᵀ dpre, dh = dpre Bᵀ, dx = dpre Aᵀ
def _cell_backward(residuals, dy):
    a, b, h, x_t, h_new = residuals
    dh_new, dy_t = dy
    dpre = (dh_new + 2 * dy_t) * (1 - h_new**2)
    return {"A": x_t.t() @ dpre, "B": h.t() @ dpre}, (dpre @ b.t(), dpre @ a.t())


USER_CELL = fnn.Layer(_cell_init, _cell_apply)


def _reference(params, inputs, reverse=False):
    """The same loop in plain torch (for autograd)."""
    h, xs = inputs
    ys = [None] * xs.shape[1]
    for t in reversed(range(xs.shape[1])) if reverse else range(xs.shape[1]):
        h = torch.tanh(xs[:, t] @ params["A"] + h @ params["B"])
        ys[t] = 2 * h
    return h, torch.stack(ys, 1)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape", [(3, 4, 2), (1, 1, 2), (0, 3, 2)])
def test_a_users_cell_equals_the_loop_under_autograd(reverse, shape):
    layer = fnn.scan(USER_CELL, reverse=reverse)
    out_shape, params = layer.init(
        fnn.random.key(0), [(-1, 5), (-1, shape[1], 2)], dtype=torch.float64
    )
    assert out_shape == [(-1, 5), (-1, shape[1], 5)]
    h0, xs = randn(1, shape[0], 5), randn(2, *shape)
    (h, ys), vjp = layer.apply(params, (h0, xs))
    expected = _reference(params, (h0, xs), reverse)
    assert_trees_close((h, ys), expected, atol=1e-13)
    dy = (randn(3, *h.shape), randn(4, *ys.shape))
    dparams, dx = vjp(dy)
    tdparams, tdx = autograd_vjp(lambda p, i: _reference(p, i, reverse), params, (h0, xs), dy)
    assert_trees_close((dparams, dx), (tdparams, tdx), atol=1e-12)
    if shape[0]:
        fnn.testing.check_vjp(layer, params, (h0, xs))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_torch_cells_in_a_loop(kind):
    cell = getattr(L, f"{kind}Cell")(4)
    module = getattr(torch.nn, f"{kind}Cell")(3, 4).double()
    params = fnn.tree.from_state_dict(module.state_dict())
    xs = randn(0, 2, 5, 3)
    carry = (randn(1, 2, 4), randn(2, 2, 4)) if kind == "LSTM" else randn(1, 2, 4)

    def loop(p, inputs):
        c = inputs[1:] if kind == "LSTM" else inputs[1]
        ys = []
        for t in reversed(range(5)):
            c = torch.func.functional_call(module, p, (inputs[0][:, t], c))
            ys.append(c[0] if kind == "LSTM" else c)
        return (*c, torch.stack(ys[::-1], 1)) if kind == "LSTM" else (c, torch.stack(ys[::-1], 1))

    flat_in = (xs, *carry) if kind == "LSTM" else (xs, carry)
    (final, ys), vjp = fnn.scan(cell, reverse=True).apply(params, (carry, xs))
    expected = loop(dict(module.state_dict()), flat_in)
    flat_out = (*final, ys) if kind == "LSTM" else (final, ys)
    assert_trees_close(flat_out, expected, atol=1e-12)
    dy = tuple(randn(5 + i, *t.shape) for i, t in enumerate(expected))
    dparams, (dcarry, dxs) = vjp(((dy[0], dy[1]) if kind == "LSTM" else dy[0], dy[-1]))
    tdparams, tdx = autograd_vjp(loop, dict(module.state_dict()), flat_in, dy)
    assert_trees_close(dparams, tdparams, atol=1e-10)
    flat_dx = (dxs, *dcarry) if kind == "LSTM" else (dxs, dcarry)
    assert_trees_close(flat_dx, tdx, atol=1e-10)


def test_consume_frees_each_steps_residuals_and_gives_the_same_grads():
    layer = fnn.scan(L.LSTMCell(3))
    _, params = layer.init(fnn.random.key(0), [[(-1, 3), (-1, 3)], (-1, 6, 2)], dtype=torch.float64)
    carry, xs = (randn(1, 2, 3), randn(2, 2, 3)), randn(3, 2, 6, 2)
    _, vjp = layer.apply(params, (carry, xs))
    dy = ((randn(4, 2, 3), randn(5, 2, 3)), randn(6, 2, 6, 3))
    expected = vjp(dy)
    step_residuals = [weakref.ref(v.residuals[1][2]) for v in vjp.residuals[0]]  # each step's gates
    box = [vjp, dy]
    del vjp
    grads = backprop(box, need_dx=True)
    gc.collect()
    assert box == [] and all(r() is None for r in step_residuals)
    assert_trees_close(grads, expected, atol=0, rtol=0)


def test_key_is_split_per_step_and_other_keywords_pass_through():
    def init(key, input_shape, *, dtype=torch.float32, device="cpu"):
        return list(input_shape), {}

    def apply(params, x, *, key=None, scale=1.0, **kwargs):
        h, x_t = x
        noise = fnn.random.normal(key, x_t.shape, dtype=x_t.dtype)
        return (h, scale * (x_t + noise)), fnn.VJP(_noise_backward, None)

    layer = fnn.scan(fnn.Layer(init, apply))
    xs = torch.zeros(2, 4, 3)
    (_, ys), _ = layer.apply({}, (torch.zeros(2, 3), xs), key=fnn.random.key(1), scale=2.0)
    (_, again), _ = layer.apply({}, (torch.zeros(2, 3), xs), key=fnn.random.key(1), scale=2.0)
    assert torch.equal(ys, again)
    assert not torch.equal(ys[:, 0], ys[:, 1])  # a different key at every step


def _noise_backward(residuals, dy):
    dh, dy_t = dy
    return {}, (dh, dy_t)


def test_pytree_carry_and_outputs():
    # carry (h, c), two outputs per step: the cell's y_t and its c
    def init(key, input_shape, *, dtype=torch.float32, device="cpu"):
        carry_shape, x_shape = input_shape
        return [carry_shape, [x_shape, x_shape]], {}

    def apply(params, x, **kwargs):
        (h, c), x_t = x
        return ((h + x_t, c * 2), (h + x_t, c)), fnn.VJP(_tree_backward, None)

    layer = fnn.scan(fnn.Layer(init, apply))
    out_shape, _ = layer.init(fnn.random.key(0), [[(-1, 2), (-1, 2)], (-1, 3, 2)])
    assert out_shape == [[(-1, 2), (-1, 2)], [(-1, 3, 2), (-1, 3, 2)]]
    xs = randn(0, 1, 3, 2)
    f64 = {"dtype": torch.float64}
    ((h, c), (ys, cs)), vjp = layer.apply(
        {}, ((torch.zeros(1, 2, **f64), torch.ones(1, 2, **f64)), xs)
    )
    torch.testing.assert_close(ys, xs.cumsum(1))
    torch.testing.assert_close(c, torch.full((1, 2), 8.0, **f64))
    torch.testing.assert_close(h, xs.sum(1))
    torch.testing.assert_close(cs[0, :, 0], torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    _, ((dh, dc), dxs) = vjp(
        (
            (torch.ones(1, 2, **f64), torch.ones(1, 2, **f64)),
            (torch.ones(1, 3, 2, **f64), torch.zeros(1, 3, 2, **f64)),
        )
    )
    torch.testing.assert_close(dxs[0, :, 0], torch.tensor([4.0, 3.0, 2.0], **f64))
    torch.testing.assert_close(dc, torch.full((1, 2), 8.0, **f64))
    torch.testing.assert_close(dh, torch.full((1, 2), 4.0, **f64))


# h' = h + x, c' = 2c, outputs (h', c)   ⇒   dh = dh' + dy₀, dc = 2 dc' + dy₁, dx = dh' + dy₀
def _tree_backward(residuals, dy):
    (dh, dc), (dy0, dy1) = dy
    return {}, ((dh + dy0, 2 * dc + dy1), dh + dy0)


def test_errors():
    layer = fnn.scan(L.RNNCell(3))
    _, params = layer.init(fnn.random.key(0), [(-1, 3), (-1, 4, 2)])
    with pytest.raises(
        fnn.errors.ShapeError, match=r"scan\(RNNCell\): expected an input \(carry0, xs\)"
    ):
        layer.apply(params, torch.zeros(2, 4, 2))
    with pytest.raises(fnn.errors.ShapeError, match="T ≥ 1"):
        layer.apply(params, (torch.zeros(2, 3), torch.zeros(2, 0, 2)))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"scan\(RNNCell\) step 0 RNNCell: expected a carry"
    ):
        layer.apply(params, (torch.zeros(2, 5), torch.zeros(2, 4, 2)))
    with pytest.raises(fnn.errors.ShapeError, match=r"expected input shapes \[carry_shape"):
        layer.init(fnn.random.key(0), (-1, 4, 2))
    _, vjp = layer.apply(params, (torch.zeros(2, 3), torch.zeros(2, 4, 2)))
    with pytest.raises(fnn.errors.ShapeError, match=r"expected dys of shape \(N, 4, ...\)"):
        vjp((torch.zeros(2, 3), torch.zeros(2, 5, 3)))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"scan step 3 RNN_TANH cell VJP: expected dcarry"
    ):
        vjp((torch.zeros(2, 4), torch.zeros(2, 4, 3)))
    with pytest.raises(fnn.errors.FnnTypeError, match="expected a cell Layer"):
        fnn.scan(L.RNNCell)
    bad = fnn.scan(
        fnn.Layer(lambda *a, **k: ([(-1, 1), (-1, 1)], {}), lambda p, x, **k: (x[0], None))
    )
    with pytest.raises(fnn.errors.FnnTypeError, match=r"must return \(\(carry, y_t\), vjp\)"):
        bad.apply({}, (torch.zeros(1, 1), torch.zeros(1, 2, 1)))
