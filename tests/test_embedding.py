"""Embedding: forward and VJP equal torch.nn.Embedding's (+ autograd) for indices of any shape,
repeated indices accumulate, the padding row gets no gradient, empty inputs, per-example
gradients; state_dicts load both ways; fnn.tie routes one weight to two uses with the summed
gradient; clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from .helpers import assert_trees_close, autograd_vjp, randn


def _indices(seed, shape, num):
    return torch.randint(0, num, shape, generator=torch.Generator().manual_seed(seed))


SHAPES = [(3, 5), (1, 4), (0, 4), (2, 3, 4), (7,), ()]


@pytest.mark.parametrize("padding_idx", [None, 0, 3, -1])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_embedding_matches_torch_and_autograd(shape, padding_idx):
    num, dim = 6, 3
    layer = L.Embedding(num, dim, padding_idx=padding_idx)
    out_shape, params = layer.init(fnn.random.key(0), shape, dtype=torch.float64)
    assert out_shape == shape + (dim,)
    params = {"weight": randn(1, num, dim)}  # the padding row not zero: its gradient still is
    x = _indices(2, shape, num)
    if x.numel() > 2:
        x.view(-1)[:2] = x.view(-1)[-1]  # repeated indices
        x.view(-1)[0] = (padding_idx or 0) % num  # and the padding index

    def reference(p, x):
        return F.embedding(x, p["weight"], padding_idx=padding_idx)

    y, vjp = layer.apply(params, x)
    torch.testing.assert_close(y, reference(params, x), atol=0, rtol=0)
    dy = randn(3, *y.shape)
    dparams, dx = vjp(dy)
    expected, _ = autograd_vjp(lambda p, w: reference(p, x) * w, params, torch.ones(()), dy)
    assert_trees_close(dparams, expected, atol=1e-12)
    if padding_idx is not None:
        assert dparams["weight"][padding_idx].eq(0).all()
    assert dx.shape == x.shape and not dx.any()
    assert pickle.loads(pickle.dumps(vjp))(dy)[0]["weight"].equal(dparams["weight"])
    # finite differences see the padding row's true gradient, which torch defines as zero
    pad = (padding_idx or 0) % num
    unpadded = x if padding_idx is None else torch.where(x == pad, (pad + 1) % num, x)
    fnn.testing.check_vjp(layer, params, unpadded)


def test_embedding_init_is_torchs_and_state_dicts_load_both_ways():
    layer = L.Embedding(10, 4, padding_idx=2)
    _, params = layer.init(fnn.random.key(0), (-1, 5))
    weight = params["weight"]
    assert weight[2].eq(0).all() and weight.std().item() == pytest.approx(1.0, abs=0.35)
    module = torch.nn.Embedding(10, 4, padding_idx=2)
    module.load_state_dict(fnn.tree.to_state_dict(params))
    x = torch.tensor([[1, 2, 9, 9, 0]])
    torch.testing.assert_close(layer.apply(params, x)[0], module(x).detach())
    loaded = fnn.tree.from_state_dict(torch.nn.Embedding(10, 4).state_dict())
    assert layer.apply(loaded, x)[0].shape == (1, 5, 4)


def test_embedding_takes_non_contiguous_indices_and_cotangents():
    layer = L.Embedding(6, 4, padding_idx=1)
    params = {"weight": randn(0, 6, 4)}
    x = _indices(1, (5, 3), 6).t()
    dy = randn(2, 2, 4, 5, 3).permute(3, 2, 1, 0)[..., 0]  # (3, 5, 4), strided
    assert not x.is_contiguous() and not dy.is_contiguous()
    y, vjp = layer.apply(params, x)
    torch.testing.assert_close(y, F.embedding(x.contiguous(), params["weight"]))
    expected, _ = layer.apply(params, x.contiguous())[1](dy.contiguous())
    assert vjp(dy)[0]["weight"].equal(expected["weight"])


def test_embedding_accumulates_repeated_indices_exactly():
    layer = L.Embedding(4, 2)
    params = {"weight": torch.zeros(4, 2)}
    _, vjp = layer.apply(params, torch.tensor([[1, 1, 1], [3, 1, 0]]))
    dparams, _ = vjp(torch.ones(2, 3, 2))
    assert dparams["weight"].tolist() == [[1, 1], [4, 4], [0, 0], [1, 1]]


@pytest.mark.parametrize("padding_idx", [None, 1])
def test_embedding_per_example_grads_sum_to_the_batch_gradient(padding_idx):
    layer = L.Embedding(5, 3, padding_idx=padding_idx)
    model = fnn.serial(layer, L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 4), dtype=torch.float64)
    x = torch.tensor([[1, 1, 2, 4], [0, 1, 3, 3], [4, 4, 4, 4]])
    target = randn(1, 3, 4, 2)
    _, per_example = fnn.per_example_grads(model.apply, fnn.losses.mse)(params, x, target)
    assert per_example["0"]["weight"].shape == (3, 5, 3)
    for n in range(3):
        _, one = fnn.value_and_grad(model.apply, fnn.losses.mse)(
            params, x[n : n + 1], target[n : n + 1]
        )
        assert_trees_close(fnn.tree.map(lambda g, n=n: g[n], per_example), one, atol=1e-12)


def test_tie_routes_one_weight_to_two_uses_and_sums_their_gradients():
    model = fnn.serial(L.Embedding(7, 4), L.Dense(4), L.Tanh(), L.Dense(7, bias=False))
    tied = fnn.tie(model, {"3.weight": "0.weight"})
    shape, params = tied.init(fnn.random.key(0), (-1, 5), dtype=torch.float64)
    assert shape == (-1, 5, 7)
    assert list(fnn.tree.to_state_dict(params)) == ["0.weight", "1.weight", "1.bias"]
    x = torch.tensor([[1, 2, 3, 3, 6], [0, 0, 5, 4, 1]])
    y, vjp = tied.apply(params, x)
    full = {**params, "3": {"weight": params["0"]["weight"]}}
    y_full, vjp_full = model.apply(full, x)
    torch.testing.assert_close(y, y_full, atol=0, rtol=0)
    dy = randn(2, *y.shape)
    dparams, _ = vjp(dy)
    d_full, _ = vjp_full(dy)
    expected = {**d_full, "0": {"weight": d_full["0"]["weight"] + d_full["3"]["weight"]}}
    del expected["3"]
    assert_trees_close(dparams, expected, atol=1e-12)

    # the same model in torch, with tied parameters, by autograd
    module = torch.nn.Sequential(
        torch.nn.Embedding(7, 4),
        torch.nn.Linear(4, 4),
        torch.nn.Tanh(),
        torch.nn.Linear(4, 7, bias=False),
    ).double()
    state = fnn.tree.to_state_dict(full)
    module.load_state_dict(state)
    module[3].weight = module[0].weight
    with torch.enable_grad():
        module(x).backward(dy)
    torch.testing.assert_close(dparams["0"]["weight"], module[0].weight.grad, atol=1e-12, rtol=0)

    # value_and_grad, per_example_grads and a 2-use check_vjp go through the same VJP
    target = randn(5, 2, 5, 7)
    _, grads = fnn.value_and_grad(tied.apply, fnn.losses.mse)(params, x, target)
    fnn.tree.assert_same_structure(params, grads, "grads")
    _, per_example = fnn.per_example_grads(tied.apply, fnn.losses.mse)(params, x, target)
    assert_trees_close(fnn.tree.map(lambda g: g.mean(0), per_example), grads, atol=1e-12)
    fnn.testing.check_vjp(tied, params, x)


def test_tie_errors():
    model = fnn.serial(L.Embedding(7, 4), L.Dense(5))
    with pytest.raises(
        fnn.FnnError,
        match="tie: 1.weight has shape \\(5, 4\\) but its source 0.weight has \\(7, 4\\)",
    ):
        fnn.tie(model, {"1.weight": "0.weight"}).init(fnn.random.key(0), (-1, 2))
    with pytest.raises(fnn.FnnError, match="'2.weight' is not in the model's params"):
        fnn.tie(model, {"2.weight": "0.weight"}).init(fnn.random.key(0), (-1, 2))
    with pytest.raises(fnn.FnnError, match="both a target and a source"):
        fnn.tie(model, {"1.weight": "0.weight", "0.weight": "1.bias"})
    with pytest.raises(fnn.errors.FnnTypeError, match="tie: expected ties as a dict"):
        fnn.tie(model, ["1.weight"])
    model = fnn.serial(L.Embedding(5, 4), L.Dense(5))
    tied = fnn.tie(model, {"1.weight": "0.weight"})
    _, params = tied.init(fnn.random.key(0), (-1, 2))
    untied = {**params, "1": {**params["1"], "weight": params["0"]["weight"]}}
    with pytest.raises(fnn.errors.TreeError, match="tie: the params hold the tied entry 'weight'"):
        tied.apply(untied, torch.tensor([[1, 2]]))


def test_embedding_errors_name_the_layer():
    layer = L.Embedding(5, 3)
    _, params = layer.init(fnn.random.key(0), (-1, 2))
    with pytest.raises(
        fnn.FnnError, match=r"Embedding: indices must be in \[0, 5\), got values in \[0, 5\]"
    ):
        layer.apply(params, torch.tensor([[0, 5]]))
    with pytest.raises(fnn.errors.FnnTypeError, match="Embedding: expected integer indices"):
        layer.apply(params, torch.zeros(2, 2))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Embedding: params\['weight'\] must be a tensor of shape \(5, 3\)",
    ):
        layer.apply({"weight": torch.zeros(4, 3)}, torch.tensor([[0, 1]]))
    with pytest.raises(fnn.errors.TreeError, match=r"Embedding: params missing \['weight'\]"):
        layer.apply({}, torch.tensor([[0, 1]]))
    with pytest.raises(
        fnn.FnnError, match="Embedding: padding_idx must be None or an int in \\[-5, 5\\), got 5"
    ):
        L.Embedding(5, 3, padding_idx=5)
    with pytest.raises(fnn.FnnError, match="Embedding: embedding_dim must be a positive int"):
        L.Embedding(5, 0)
    _, vjp = layer.apply(params, torch.tensor([[0, 1]]))
    with pytest.raises(
        fnn.errors.ShapeError, match="Embedding VJP: expected a cotangent of shape \\(1, 2\\)"
    ):
        vjp(torch.ones(1, 3, 3))
