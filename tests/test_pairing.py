"""Pairing params with grads in `update` and the optimizers (fnn/_dicts.py): every call
checks structure, shapes and dtypes, by name, with nothing remembered between calls."""

import sys

import pytest
import torch

import fnn
from fnn import _dicts
from fnn import layers as L
from fnn.errors import FnnError, TreeError


def _setup(batch=5):
    model = fnn.serial(L.Dense(4), L.Relu(), L.Dense(3))
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x = fnn.random.normal(fnn.random.key(1), (batch, 2))
    target = fnn.random.normal(fnn.random.key(2), (batch, 3))
    return fnn.value_and_grad(model.apply, fnn.losses.mse), params, x, target


def _expected(params, grads, lr):
    return fnn.tree.map(lambda p, g: torch.add(p, g, alpha=-lr), params, grads)


def _equal(a, b):
    same_structure = fnn.tree.structure(a) == fnn.tree.structure(b)
    return same_structure and all(
        torch.equal(x, y) for x, y in zip(fnn.tree.leaves(a), fnn.tree.leaves(b))
    )


def test_no_module_level_records():
    modules = [_dicts, sys.modules["fnn.update"], sys.modules["fnn.optim.sgd"]]
    for name in ("FRESH", "BUILT", "_LAYOUTS", "_LAST_LAYOUT", "_SCALARS"):
        assert not any(hasattr(module, name) for module in modules), name


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(4),  # would broadcast into the (4, 2) weight
        torch.zeros(1, 2),  # would broadcast too
        torch.zeros(4, 2, dtype=torch.float64),  # would promote the param to float64
    ],
    ids=["row", "broadcastable", "float64"],
)
@pytest.mark.parametrize("how", ["update", "sgd", "adam"])
def test_a_replaced_gradient_is_checked(bad, how):
    loss_and_grads, params, x, target = _setup()
    _, grads = loss_and_grads(params, x, target)
    grads["0"]["weight"] = bad
    with pytest.raises(FnnError, match="weight"):
        if how == "update":
            fnn.update(params, grads, lr=0.1)
        else:
            opt = getattr(fnn.optim, how)(lr=0.1)
            opt.update(params, grads, opt.init(params))


@pytest.mark.parametrize("how", ["update", "sgd"])
def test_params_resized_in_place_after_an_update_are_checked(how):
    """The same check on fresh params and on params an update made: nothing vouches."""
    loss_and_grads, params, x, target = _setup()
    opt = fnn.optim.sgd(lr=0.1, momentum=0.9)
    state = opt.init(params)
    for _ in range(2):
        _, grads = loss_and_grads(params, x, target)
        if how == "update":
            params = fnn.update(params, grads, lr=0.1)
        else:
            params, state = opt.update(params, grads, state)
    params["2"]["bias"].data = torch.zeros(1)  # a (3,) gradient would broadcast into it
    with pytest.raises(FnnError, match="bias"):
        if how == "update":
            fnn.update(params, grads, lr=0.1)
        else:
            opt.update(params, grads, state)


def test_other_params_than_the_grads_were_made_for_are_checked():
    loss_and_grads, params, x, target = _setup()
    _, grads = loss_and_grads(params, x, target)
    other = fnn.tree.map(torch.clone, params)
    other["2"]["bias"] = torch.zeros(1)
    with pytest.raises(FnnError, match="bias"):
        fnn.update(other, grads, lr=0.1)


def test_pair_accepts_exactly_what_matches():
    params = {"0": {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, "1": {}}
    grads = fnn.tree.map(torch.zeros_like, params)
    paired = _dicts.pair(params, grads, "test")
    assert paired.names() == ["0.weight", "0.bias"]
    assert all(a is b for a, b in zip(paired.params, fnn.tree.leaves(params)))
    assert all(a is b for a, b in zip(paired.grads, fnn.tree.leaves(grads)))
    assert _equal(paired.rebuild(paired.params), params)
    assert list(paired.rebuild(paired.params)) == ["0", "1"]
    # the grads' dict order does not matter: pairing is by key
    swapped = {"1": {}, "0": {"bias": grads["0"]["bias"], "weight": grads["0"]["weight"]}}
    assert all(a is b for a, b in zip(_dicts.pair(params, swapped, "test").grads, paired.grads))
    cases = [
        {"0": dict(grads["0"])},  # missing "1"
        {**grads, "2": {}},  # extra key
        {"0": {"weight": grads["0"]["weight"]}, "1": {}},  # missing bias
        {"0": {**grads["0"], "extra": torch.ones(1)}, "1": {}},
        {"0": {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, "1": {}},  # transposed
        {"0": {"weight": grads["0"]["weight"], "bias": torch.zeros(2).double()}, "1": {}},
        {"0": {"weight": grads["0"]["weight"], "bias": 0.0}, "1": {}},  # not a tensor
        {"0": grads["0"], "1": {"x": torch.ones(1)}},
        [grads["0"], grads["1"]],
    ]
    for bad in cases:
        with pytest.raises(FnnError, match="test:"):
            _dicts.pair(params, bad, "test")


def test_update_and_optimizers_work_on_every_tree():
    params = {"b": {"bias": torch.ones(2), "weight": torch.ones(2, 2)}, "a": {}}  # odd order
    grads = fnn.tree.map(torch.ones_like, params)
    new = fnn.update(params, grads, lr=0.5)
    assert list(new) == ["b", "a"] and list(new["b"]) == ["bias", "weight"]
    assert _equal(new, _expected(params, grads, 0.5))
    nested = {"a": {"b": {"c": torch.ones(2)}}, "d": [torch.ones(1)], "e": (torch.ones(3), None)}
    paired = _dicts.pair(nested, nested, "test")
    assert paired.names() == list(fnn.tree.to_state_dict(nested)) == ["a.b.c", "d.0", "e.0"]
    new = fnn.update(nested, fnn.tree.map(torch.ones_like, nested), lr=0.5)
    assert _equal(new, fnn.tree.map(lambda t: t * 0.5, nested))
    opt = fnn.optim.sgd(lr=0.5, momentum=0.9)
    for tree in (params, nested, params):
        state = opt.init(tree)
        new, state = opt.update(tree, fnn.tree.map(torch.ones_like, tree), state)
        assert _equal(new, fnn.tree.map(lambda t: t * 0.5, tree))


def test_lr_too_large_for_the_dtype_is_named():
    """`lr=1e39` on float32 params: torch cannot convert it; the message says so (issue 15.9)."""
    params = {"w": torch.ones(2)}
    with pytest.raises(
        FnnError, match=r"update: lr=1e\+39 does not fit the params' dtype torch.float32"
    ) as info:
        fnn.update(params, params, lr=1e39)
    assert not isinstance(info.value, TreeError)
    assert (
        fnn.update(
            fnn.tree.map(torch.Tensor.double, params),
            fnn.tree.map(torch.Tensor.double, params),
            lr=1e39,
        )["w"].dtype
        == torch.float64
    )
    opt = fnn.optim.sgd(lr=1e39)
    with pytest.raises(FnnError, match=r"sgd: lr=1e\+39 does not fit"):
        opt.update(params, params, opt.init(params))
