"""Pairing params with grads in `update` and the optimizers (fnn/_dicts.py): the generated
code for dict-of-dicts params accepts exactly what the general path accepts, and the
fast path's record of fresh gradients (FRESH) never lets a mismatched gradient through."""

import pytest
import torch

import fnn
from fnn import _dicts
from fnn import layers as L
from fnn.errors import FnnError


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


def test_fast_path_records_its_gradients_and_update_consumes_them():
    loss_and_grads, params, x, target = _setup()
    _, grads = loss_and_grads(params, x, target)
    fresh = _dicts.FRESH[0]
    assert fresh is not None and len(fresh) == 9
    assert all(a is b for a, b in zip(fresh[1::2], fnn.tree.leaves(params)))
    assert all(a is b for a, b in zip(fresh[2::2], fnn.tree.leaves(grads)))
    new = fnn.update(params, grads, lr=0.1)
    assert _dicts.FRESH[0] is None
    assert _equal(new, _expected(params, grads, 0.1))
    built = _dicts.BUILT[0]  # the update vouches for what it made, for the next fast path run
    assert built[0] is fresh[0] and all(a is b for a, b in zip(built[1:], fnn.tree.leaves(new)))


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
def test_a_gradient_replaced_after_the_fast_path_is_still_checked(bad, how):
    loss_and_grads, params, x, target = _setup()
    _, grads = loss_and_grads(params, x, target)
    grads["0"]["weight"] = bad
    with pytest.raises(FnnError, match="weight"):
        if how == "update":
            fnn.update(params, grads, lr=0.1)
        else:
            opt = getattr(fnn.optim, how)(lr=0.1)
            opt.update(params, grads, opt.init(params))


def test_other_params_than_the_fast_path_saw_are_checked():
    loss_and_grads, params, x, target = _setup()
    _, grads = loss_and_grads(params, x, target)
    other = fnn.tree.map(torch.clone, params)
    other["2"]["bias"] = torch.zeros(1)  # a (3,) gradient would broadcast into it
    with pytest.raises(FnnError, match="bias"):
        fnn.update(other, grads, lr=0.1)


def test_layout_pair_rejects_what_the_general_path_must_explain():
    params = {"0": {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, "1": {}}
    grads = fnn.tree.map(torch.zeros_like, params)
    layout = _dicts.layout_of(params)
    leaves, grad_leaves, tag = layout.pair(params, grads, None)
    assert tag is None
    assert [t.shape for t in leaves] == [t.shape for t in grad_leaves] == [(2, 3), (2,)]
    assert _equal(layout.build(leaves), params)
    assert list(layout.build(leaves)) == ["0", "1"]
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
        assert layout.pair(params, bad, None) is None, bad
    reordered = {"1": {}, "0": params["0"]}
    assert layout.pair(reordered, grads, None) is None  # another layout's job
    # a fresh record of other tensors (or of another length) changes nothing
    record = ("tag", leaves[0], grad_leaves[0], leaves[1], grad_leaves[1])
    assert layout.pair(params, cases[4], record) is None
    assert layout.pair(params, grads, record[:3])[2] is None
    assert layout.pair(params, grads, record)[2] == "tag"


def test_update_and_optimizers_work_on_every_tree_the_general_path_takes():
    params = {"b": {"bias": torch.ones(2), "weight": torch.ones(2, 2)}, "a": {}}  # odd order
    grads = fnn.tree.map(torch.ones_like, params)
    new = fnn.update(params, grads, lr=0.5)
    assert list(new) == ["b", "a"] and list(new["b"]) == ["bias", "weight"]
    assert _equal(new, _expected(params, grads, 0.5))
    nested = {"a": {"b": {"c": torch.ones(2)}}, "d": [torch.ones(1)]}
    new = fnn.update(nested, fnn.tree.map(torch.ones_like, nested), lr=0.5)
    assert _equal(new, fnn.tree.map(lambda t: t * 0.5, nested))
    opt = fnn.optim.sgd(lr=0.5, momentum=0.9)
    state = opt.init(params)
    for tree in (params, nested, params):  # the optimizer's remembered layout changes
        state = opt.init(tree)
        new, state = opt.update(tree, fnn.tree.map(torch.ones_like, tree), state)
        assert _equal(new, fnn.tree.map(lambda t: t * 0.5, tree))


def test_params_an_update_made_are_trusted_only_by_the_model_that_checked_them():
    loss_and_grads, params, x, target = _setup()
    _, grads = loss_and_grads(params, x, target)
    params = fnn.update(params, grads, lr=0.1)
    assert _dicts.BUILT[0] is not None
    # the same tree, shaped for another model: its own fast path checks it
    other = fnn.serial(L.Dense(4), L.Relu(), L.Dense(2))
    other_loss_and_grads = fnn.value_and_grad(other.apply, fnn.losses.mse)
    with pytest.raises(FnnError, match=r"serial\[2\] Dense"):
        other_loss_and_grads(params, x, target[:, :2])
    # a replaced leaf is checked again
    params["2"]["bias"] = torch.zeros(1)
    with pytest.raises(FnnError, match="bias"):
        loss_and_grads(params, x, target)


def test_large_params_are_not_recorded():
    """The records keep tensors alive until the next step: only small params (≤ RECORD_BYTES,
    where checks are a noticeable share of a step) are recorded."""
    model = fnn.serial(L.Dense(600), L.Relu(), L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 500))
    assert fnn.fastpath.RECORD_BYTES < 600 * 500 * 4
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.mse)
    _dicts.FRESH[0] = None
    _, grads = loss_and_grads(params, torch.randn(3, 500), torch.randn(3, 2))
    assert _dicts.FRESH[0] is None
    new = fnn.update(params, grads, lr=0.1)
    assert _dicts.BUILT[0] is None
    assert _equal(new, _expected(params, grads, 0.1))
