"""RNN, LSTM, GRU and their cells: forward and every gradient (params, input, initial state)
equal torch.nn's modules in float64, finite differences, state_dicts both ways, dropout,
per-example gradients, with_vjp, remat, unbatched and empty inputs, errors."""

from __future__ import annotations

import pytest
import torch

import fnn
from fnn import layers as L
from fnn.core import backprop

from .helpers import assert_trees_close, autograd_vjp, randn

TORCH = {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}


def _pair(kind, hidden=4, features=3, **kw):
    """The fnn layer and the torch.nn module (float64), with torch's weights in fnn params."""
    torch_kw = {k: v for k, v in kw.items() if k != "return_state"}
    module = TORCH[kind](features, hidden, batch_first=True, **torch_kw).double()
    layer = getattr(L, kind)(hidden, **kw)
    return layer, module, fnn.tree.from_state_dict(module.state_dict())


def _torch_fn(module, kind, return_state, given_state):
    """f(params, inputs) running the torch module, outputs flattened to a tuple of tensors."""

    def fn(params, inputs):
        x, *state = inputs if isinstance(inputs, tuple) else (inputs,)
        if not given_state:
            state = []
        elif kind == "LSTM":
            state = [tuple(state)]
        y, h = torch.func.functional_call(module, params, (x, *state))
        if not return_state:
            return y
        return (y, *h) if kind == "LSTM" else (y, h)

    return fn


def _flat(out):
    """fnn's nested outputs/gradients `(y, (h, c))` as the flat tuple `(y, h, c)`."""
    if isinstance(out, tuple):
        return tuple(t for part in out for t in (part if isinstance(part, tuple) else (part,)))
    return out


def _nest(kind, flat):
    """The flat `(dy, dh, dc)` as fnn's `(dy, (dh, dc))`."""
    if not isinstance(flat, tuple):
        return flat
    return (flat[0], (flat[1], flat[2])) if kind == "LSTM" else flat


CONFIGS = [
    # kind, layer keywords, (N, T, C), given initial state
    ("LSTM", {}, (3, 4, 3), False),
    ("LSTM", {"num_layers": 2, "bidirectional": True, "return_state": True}, (2, 5, 3), True),
    ("LSTM", {"bias": False}, (1, 1, 3), False),
    ("LSTM", {"return_state": True}, (1, 3, 3), True),
    ("GRU", {}, (3, 4, 3), False),
    ("GRU", {"num_layers": 2, "bidirectional": True, "return_state": True}, (2, 5, 3), True),
    ("GRU", {"bias": False, "num_layers": 2}, (1, 1, 3), False),
    ("RNN", {}, (3, 4, 3), False),
    ("RNN", {"nonlinearity": "relu", "bidirectional": True, "return_state": True}, (2, 3, 3), True),
    ("RNN", {"num_layers": 2, "bias": False}, (1, 1, 3), True),
]


@pytest.mark.parametrize("kind, kw, shape, given_state", CONFIGS)
def test_equals_torch_forward_and_all_gradients(kind, kw, shape, given_state):
    layer, module, params = _pair(kind, **kw)
    return_state = kw.get("return_state", False)
    count = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    x = randn(1, *shape)
    states = tuple(randn(2 + i, count, shape[0], 4) for i in range(2 if kind == "LSTM" else 1))
    flat_in = (x, *states) if given_state else x
    fnn_in = (x, states if kind == "LSTM" else states[0]) if given_state else x

    fn = _torch_fn(module, kind, return_state, given_state)
    expected = fn(dict(module.state_dict()), flat_in)
    y, vjp = layer.apply(params, fnn_in)
    assert_trees_close(_flat(y), expected, atol=1e-12)

    dy = (
        tuple(randn(9 + i, *t.shape) for i, t in enumerate(expected))
        if return_state
        else randn(9, *expected.shape)
    )
    dparams, dx = vjp(_nest(kind, dy))
    tdparams, tdx = autograd_vjp(fn, dict(module.state_dict()), flat_in, dy)
    assert_trees_close(dparams, fnn.tree.from_state_dict(tdparams), atol=1e-10)
    assert list(dparams) == list(params)  # torch's state_dict order
    assert_trees_close(_flat(dx), tdx, atol=1e-10)

    # value_and_grad's memory-freeing path gives the same numbers
    box = [vjp, _nest(kind, dy)]
    consumed, cdx = backprop(box, need_dx=True)
    assert box == [] and torch.equal(
        _flat(cdx)[0] if given_state else cdx, _flat(dx)[0] if given_state else dx
    )
    assert_trees_close(consumed, dparams, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_unbatched_input_as_torch(kind):
    layer, module, params = _pair(kind, bidirectional=True, return_state=True)
    x, h0 = randn(1, 5, 3), randn(2, 2, 4)
    state = (h0, randn(3, 2, 4)) if kind == "LSTM" else h0
    (y, h), vjp = layer.apply(params, (x, state))
    ty, th = module(x, state)
    assert y.shape == (5, 8)
    assert_trees_close((y, h), (ty, th), atol=1e-12)
    dy = randn(4, 5, 8)
    dh = tuple(randn(5 + i, 2, 4) for i in range(2)) if kind == "LSTM" else randn(5, 2, 4)
    dparams, (dx, dstate) = vjp((dy, dh))
    flat_state = state if kind == "LSTM" else (state,)
    fn = _torch_fn(module, kind, True, True)
    tdparams, tdx = autograd_vjp(
        fn, dict(module.state_dict()), (x, *flat_state), (dy, *(dh if kind == "LSTM" else (dh,)))
    )
    assert_trees_close(dparams, fnn.tree.from_state_dict(tdparams), atol=1e-10)
    assert_trees_close((dx, *(dstate if kind == "LSTM" else (dstate,))), tdx, atol=1e-10)


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("LSTM", {"num_layers": 2, "bidirectional": True, "return_state": True}),
        ("GRU", {"bidirectional": True}),
        ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
        ("LSTM", {"num_layers": 2, "dropout": 0.5}),
    ],
)
def test_finite_differences(kind, kw):
    layer = getattr(L, kind)(2, **kw)
    _, params = layer.init(fnn.random.key(0), (-1, 3, 2), dtype=torch.float64)
    count = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    x = randn(1, 2, 3, 2)
    states = tuple(randn(2 + i, count, 2, 2) for i in range(2 if kind == "LSTM" else 1))
    kwargs = {"key": fnn.random.key(3)} if kw.get("dropout") else {}
    fnn.testing.check_vjp(layer, params, x, **kwargs)
    fnn.testing.check_vjp(layer, params, (x, states if kind == "LSTM" else states[0]), **kwargs)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_state_dicts_load_both_ways_and_init_matches_torch(kind):
    layer = getattr(L, kind)(6, num_layers=2, bidirectional=True)
    _, params = layer.init(fnn.random.key(0), (-1, 7, 3))
    module = TORCH[kind](3, 6, num_layers=2, bidirectional=True, batch_first=True)
    expected = module.state_dict()
    assert list(fnn.tree.to_state_dict(params)) == list(expected)
    module.load_state_dict(fnn.tree.to_state_dict(params))  # fnn → torch
    x = randn(1, 2, 7, 3, dtype=torch.float32)
    y, _ = layer.apply(fnn.tree.from_state_dict(module.state_dict()), x)  # torch → fnn
    torch.testing.assert_close(y, module(x)[0], atol=1e-6, rtol=1e-5)
    bound = 1 / 6**0.5
    for name, value in params.items():
        assert value.shape == expected[name].shape and value.dtype == torch.float32
        assert value.abs().max() <= bound and value.std() > bound / 3, name


def test_cells_equal_torch_cells_and_scan_matches_the_layer():
    for kind, cell, torch_cell in [
        ("LSTM", L.LSTMCell(4), torch.nn.LSTMCell(3, 4)),
        ("GRU", L.GRUCell(4), torch.nn.GRUCell(3, 4)),
        ("RNN", L.RNNCell(4, nonlinearity="relu"), torch.nn.RNNCell(3, 4, nonlinearity="relu")),
    ]:
        torch_cell = torch_cell.double()
        params = fnn.tree.from_state_dict(torch_cell.state_dict())
        _, own = cell.init(fnn.random.key(0), [(-1, 4), (-1, 3)])
        assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in params.items()}
        x, h = randn(1, 5, 3), randn(2, 5, 4)
        carry = (h, randn(3, 5, 4)) if kind == "LSTM" else h
        (new, y), _ = cell.apply(params, (carry, x))
        expected = torch_cell(x, carry)
        assert_trees_close(new, expected, atol=1e-12)
        assert y is (new[0] if kind == "LSTM" else new)
        fnn.testing.check_vjp(cell, params, (carry, x))
        # unbatched, as torch: x_t (C,), h (H,)
        one = tuple(c[0] for c in carry) if kind == "LSTM" else carry[0]
        (new1, _), _ = cell.apply(params, (one, x[0]))
        assert_trees_close(new1, torch_cell(x[0], one), atol=1e-12)
        fnn.testing.check_vjp(cell, params, (one, x[0]))

        # scan(cell) over a sequence == the layer with the same weights
        layer = getattr(L, kind)(4, **({"nonlinearity": "relu"} if kind == "RNN" else {}))
        layer_params = {f"{k}_l0": v for k, v in params.items()}
        xs = randn(4, 5, 6, 3)
        (_, ys), _ = fnn.scan(cell).apply(params, (carry, xs))
        state = tuple(c.unsqueeze(0) for c in carry) if kind == "LSTM" else carry.unsqueeze(0)
        y_layer, _ = layer.apply(layer_params, (xs, state))
        assert_trees_close(ys, y_layer, atol=1e-12)


def test_empty_batch_and_non_contiguous_input():
    layer = L.LSTM(4, num_layers=2, bidirectional=True, return_state=True)
    _, params = layer.init(fnn.random.key(0), (-1, 3, 5), dtype=torch.float64)
    (y, (h, c)), vjp = layer.apply(params, randn(0, 0, 3, 5))
    assert y.shape == (0, 3, 8) and h.shape == c.shape == (4, 0, 4)
    dparams, dx = vjp((torch.zeros_like(y), (torch.zeros_like(h), torch.zeros_like(c))))
    assert dx.shape == (0, 3, 5)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in fnn.tree.leaves(dparams))

    x = randn(1, 5, 3, 4).transpose(0, 1)  # (N 3, T 5, C 4), non-contiguous
    layer, module, params = _pair("GRU", features=4)
    y, vjp = layer.apply(params, x)
    assert_trees_close(y, module(x)[0], atol=1e-12)
    dy = randn(2, 3, 5, 4)
    tdparams, tdx = autograd_vjp(
        _torch_fn(module, "GRU", False, False), dict(module.state_dict()), x, dy
    )
    dparams, dx = vjp(dy)
    assert_trees_close((dparams, dx), (fnn.tree.from_state_dict(tdparams), tdx), atol=1e-10)


def test_dropout_between_layers_with_a_key_only():
    layer = L.LSTM(5, num_layers=3, dropout=0.4)
    _, params = layer.init(fnn.random.key(0), (-1, 4, 3), dtype=torch.float64)
    x = randn(1, 2, 4, 3)
    plain, _ = layer.apply(params, x)
    dropped, _ = layer.apply(params, x, key=fnn.random.key(1))
    again, _ = layer.apply(params, x, key=fnn.random.key(1))
    other, _ = layer.apply(params, x, key=fnn.random.key(2))
    assert torch.equal(dropped, again) and not torch.equal(dropped, plain)
    assert not torch.equal(dropped, other)
    # one layer: nothing between layers to drop (torch warns and does the same)
    single = L.LSTM(5, dropout=0.4)
    _, p1 = single.init(fnn.random.key(0), (-1, 4, 3), dtype=torch.float64)
    assert torch.equal(single.apply(p1, x, key=fnn.random.key(1))[0], single.apply(p1, x)[0])


def _model(kind="LSTM"):
    return fnn.serial(
        getattr(L, kind)(4, num_layers=2, bidirectional=True), L.Flatten(), L.Dense(3)
    )


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_per_example_grads_on_a_recurrent_model(kind):
    init, apply = _model(kind)
    _, params = init(fnn.random.key(0), (-1, 3, 2), dtype=torch.float64)
    x, labels = randn(1, 5, 3, 2), torch.tensor([0, 2, 1, 1, 0])
    losses, grads = fnn.per_example_grads(apply, fnn.losses.cross_entropy)(params, x, labels)
    loss_and_grads = fnn.value_and_grad(apply, fnn.losses.cross_entropy)
    for n in range(5):
        value, expected = loss_and_grads(params, x[n : n + 1], labels[n : n + 1])
        torch.testing.assert_close(losses[n], value)
        assert_trees_close(fnn.tree.map(lambda g, n=n: g[n], grads), expected, atol=1e-12)


def test_per_example_grads_vmap_fallback_equals_the_rule():
    # a swapped backward has no per-example rule: per_example_grads then vmaps the layer
    swapped = fnn.serial(fnn.with_vjp(L.LSTM(4), _no_dx_backward), L.Flatten(), L.Dense(3))
    plain = fnn.serial(L.LSTM(4), L.Flatten(), L.Dense(3))
    _, params = plain.init(fnn.random.key(0), (-1, 3, 2), dtype=torch.float64)
    x, labels = randn(1, 4, 3, 2), torch.tensor([0, 2, 1, 1])
    by_vmap = fnn.per_example_grads(swapped.apply, fnn.losses.cross_entropy)(params, x, labels)
    by_rule = fnn.per_example_grads(plain.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert_trees_close(by_vmap, by_rule, atol=1e-12)


def test_value_and_grad_remat_and_with_vjp():
    init, apply = _model()
    _, params = init(fnn.random.key(0), (-1, 3, 2), dtype=torch.float64)
    x, labels = randn(1, 4, 3, 2), torch.tensor([0, 2, 1, 1])
    value, grads = fnn.value_and_grad(apply, fnn.losses.cross_entropy)(params, x, labels)
    y, vjp = apply(params, x)
    _, loss_vjp = fnn.losses.cross_entropy(y, labels)
    plain, _ = vjp(loss_vjp(torch.ones((), dtype=torch.float64)))
    assert_trees_close(grads, plain, atol=1e-14)

    rematted = fnn.serial(
        fnn.remat(L.LSTM(4, num_layers=2, bidirectional=True)), L.Flatten(), L.Dense(3)
    )
    value2, grads2 = fnn.value_and_grad(rematted.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert torch.equal(value, value2)
    assert_trees_close(grads2, grads, atol=0, rtol=0)

    # a swapped backward is the one that runs: here, no gradient reaches the LSTM's input
    lstm = L.LSTM(4, num_layers=2, bidirectional=True)
    swapped = fnn.serial(fnn.with_vjp(lstm, _no_dx_backward), L.Flatten(), L.Dense(3))
    _, grads3 = fnn.value_and_grad(swapped.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert_trees_close(grads3, grads, atol=1e-14)
    _, vjp3 = swapped.apply(params, x)
    _, dx3 = vjp3(torch.ones(4, 3, dtype=torch.float64))
    assert torch.equal(dx3, torch.zeros_like(x))


def _no_dx_backward(residuals, dy):
    from fnn.layers.recurrent import recurrent_backward

    dparams, dx = recurrent_backward(residuals, dy)
    return dparams, torch.zeros_like(dx)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: L.LSTM(0), "hidden_size"),
        (lambda: L.LSTM(4, num_layers=0), "num_layers"),
        (lambda: L.GRU(4, dropout=1.5), "dropout"),
        (lambda: L.RNN(4, nonlinearity="sigmoid"), "nonlinearity"),
        (lambda: L.LSTM(4, bidirectional=1), "bidirectional"),
    ],
)
def test_constructor_errors(make, match):
    with pytest.raises(fnn.FnnError, match=match):
        make()


def test_apply_and_vjp_errors_name_the_layer():
    layer = L.LSTM(4, num_layers=2)
    _, params = layer.init(fnn.random.key(0), (-1, 3, 2))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"LSTM: expected an input of shape \(N, T, 2\)"
    ):
        layer.apply(params, torch.zeros(2, 3, 5))
    with pytest.raises(fnn.errors.ShapeError, match=r"LSTM: expected h0 of shape \(2, 2, 4\)"):
        layer.apply(params, (torch.zeros(2, 3, 2), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4))))
    with pytest.raises(fnn.errors.ShapeError, match="T ≥ 1"):
        layer.apply(params, torch.zeros(2, 0, 2))
    with pytest.raises(fnn.errors.TreeError, match="missing"):
        layer.apply({k: v for k, v in params.items() if k != "bias_hh_l1"}, torch.zeros(2, 3, 2))
    with pytest.raises(fnn.FnnError, match="dtype"):
        layer.apply(params, torch.zeros(2, 3, 2, dtype=torch.float64))
    _, vjp = layer.apply(params, torch.zeros(2, 3, 2))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"LSTM VJP: expected a cotangent of the output's shape \(2, 3, 4\)",
    ):
        vjp(torch.zeros(2, 3, 5))
    cell = L.LSTMCell(4)
    _, cell_params = cell.init(fnn.random.key(0), [[(-1, 4), (-1, 4)], (-1, 2)])
    with pytest.raises(
        fnn.errors.ShapeError, match=r"LSTMCell: expected a carry of shape \(2, 4\)"
    ):
        cell.apply(cell_params, ((torch.zeros(2, 4), torch.zeros(2, 3)), torch.zeros(2, 2)))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"LSTMCell: expected an input x_t of shape \(N, 2\)"
    ):
        cell.apply(cell_params, ((torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2, 3)))
    bad = dict(cell_params, weight_hh=torch.zeros(16, 5))
    with pytest.raises(fnn.errors.ShapeError, match=r"params\['weight_hh'\] has shape \(16, 5\)"):
        cell.apply(bad, ((torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2, 2)))
