"""Gradient transformations: global_norm and clip_grad_norm against torch.nn.utils, chain, masks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn import tree
from fnn.errors import FnnError, FnnTypeError

from .test_optim import loss_fn, make_data, make_params

O = fnn.optim
F64 = torch.float64
NORMS = [2.0, 1.0, 3.0, math.inf]


def grads_tree(scale=1.0, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tree.map(
        lambda t: scale * torch.randn(t.shape, generator=g, dtype=dtype), make_params(dtype=dtype)
    )


def as_torch_params(grads):
    """Parameters whose .grad are clones of the tree's leaves, for torch.nn.utils."""
    params = []
    for g in tree.leaves(grads):
        p = torch.zeros_like(g, requires_grad=True)
        p.grad = g.clone()
        params.append(p)
    return params


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("norm_type", NORMS)
def test_global_norm_equals_torch(norm_type, dtype):
    grads = grads_tree(dtype=dtype)
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch ≥ 2.6
        expected = torch.nn.utils.get_total_norm(tree.leaves(grads), norm_type)
    else:  # the norm clip_grad_norm_ computes (and returns) on older releases
        expected = torch.nn.utils.clip_grad_norm_(as_torch_params(grads), math.inf, norm_type)
    got = O.global_norm(grads, norm_type)
    assert got.shape == () and got.dtype == dtype
    assert torch.equal(got, expected)
    flat = torch.cat([t.reshape(-1) for t in tree.leaves(grads)])
    torch.testing.assert_close(got, torch.linalg.vector_norm(flat, norm_type))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("max_norm", [0.0, 0.5, 3.0, 1e3])
def test_clip_grad_norm_equals_torch(max_norm, norm_type, dtype):
    grads = grads_tree(dtype=dtype)
    params = as_torch_params(grads)
    expected_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
    clipped, norm = O.clip_grad_norm(grads, max_norm, norm_type)
    assert torch.equal(norm, expected_norm)
    assert tree.structure(clipped) == tree.structure(grads)
    for mine, p in zip(tree.leaves(clipped), params):
        assert torch.equal(mine, p.grad)
    assert O.global_norm(clipped, norm_type) <= max_norm + 1e-12 or max_norm >= norm


def test_clip_grad_norm_is_pure_and_keeps_small_trees():
    grads = grads_tree()
    before = tree.map(torch.clone, grads)
    norm = O.global_norm(grads)
    _clipped, _ = O.clip_grad_norm(grads, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(grads), tree.leaves(before)))
    # a tree well inside the ball comes back bit for bit
    same, same_norm = O.clip_grad_norm(grads, 2 * norm.item())
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(same), tree.leaves(grads)))
    assert torch.equal(same_norm, norm)


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(1e-3, 1e3), max_norm=st.floats(1e-2, 1e2), norm_type=st.sampled_from(NORMS))
def test_clipping_twice_changes_nothing(scale, max_norm, norm_type):
    once, norm = O.clip_grad_norm(grads_tree(scale), max_norm, norm_type)
    twice, norm_once = O.clip_grad_norm(once, max_norm, norm_type)
    assert norm_once <= max_norm * (1 + 1e-12)
    # torch's factor max_norm / (norm + 1e-6) leaves the clipped tree within 1e-6 relative
    for a, b in zip(tree.leaves(twice), tree.leaves(once)):
        torch.testing.assert_close(a, b, rtol=1e-6 / max_norm + 1e-12, atol=0.0)
    if norm <= max_norm - 1e-6:
        assert all(torch.equal(a, b) for a, b in zip(tree.leaves(twice), tree.leaves(once)))


def test_empty_trees():
    assert torch.equal(O.global_norm({}), torch.tensor(0.0))
    assert O.clip_grad_norm({"a": {}}, 1.0) == ({"a": {}}, torch.tensor(0.0))


def test_decay_mask():
    params = {
        "0": {"weight": torch.ones(3, 2), "bias": torch.ones(3)},
        "1": {},
        "conv": {"weight": torch.ones(4, 3, 3, 3)},
        "norm": {"weight": torch.ones(4), "bias": torch.ones(4)},
    }
    assert O.decay_mask(params) == {
        "0": {"weight": True, "bias": False},
        "1": {},
        "conv": {"weight": True},
        "norm": {"weight": False, "bias": False},
    }


def test_chain_matches_torch_clip_then_adam_with_param_groups():
    """chain(clip, masked L2 decay, adam) == clip_grad_norm_ then Adam with a no-decay group."""
    params = make_params()
    x, y = make_data()
    decay = tree.leaves(O.decay_mask(params))
    torch_params = tree.map(lambda t: t.clone().requires_grad_(True), params)
    leaves = tree.leaves(torch_params)
    torch_opt = torch.optim.Adam(
        [
            {"params": [p for p, d in zip(leaves, decay) if d], "weight_decay": 0.1},
            {"params": [p for p, d in zip(leaves, decay) if not d]},
        ],
        lr=0.02,
    )
    opt = O.chain(
        O.clip_by_global_norm(0.3), O.add_decayed_weights(0.1, mask=O.decay_mask), O.adam(lr=0.02)
    )
    state = opt.init(params)
    assert isinstance(opt, O.Optimizer) and len(state) == 3 and state[:2] == ({}, {})
    for _ in range(50):
        torch_opt.zero_grad()
        with torch.enable_grad():
            loss_fn(torch_params, x, y).backward()
        grads = tree.map(lambda t: t.grad.clone(), torch_params)
        torch.nn.utils.clip_grad_norm_(leaves, 0.3)
        torch_opt.step()
        params, state = opt.update(params, grads, state)
    for mine, theirs in zip(tree.leaves(params), leaves):
        torch.testing.assert_close(mine, theirs.detach(), rtol=0, atol=1e-12)
    assert state[2]["step"] == 50


def test_chain_of_transformations_only():
    t = O.chain(O.add_decayed_weights(1.0), O.clip_by_global_norm(1.0))
    assert isinstance(t, O.Transform)
    params = {"w": torch.tensor([3.0, 0.0])}
    grads, state = t.update(params, {"w": torch.tensor([0.0, 4.0])}, t.init(params))
    torch.testing.assert_close(grads["w"], torch.tensor([0.6, 0.8]))
    assert state == ({}, {})


def test_add_decayed_weights_equals_sgd_weight_decay():
    params = make_params()
    grads = tree.map(torch.ones_like, params)
    a = O.chain(O.add_decayed_weights(0.1), O.sgd(lr=0.5, momentum=0.9))
    b = O.sgd(lr=0.5, momentum=0.9, weight_decay=0.1)
    sa, sb = a.init(params), b.init(params)
    pa = pb = params
    for _ in range(3):
        pa, sa = a.update(pa, grads, sa)
        pb, sb = b.update(pb, grads, sb)
    assert all(torch.equal(u, v) for u, v in zip(tree.leaves(pa), tree.leaves(pb)))


def test_transformation_errors():
    with pytest.raises(FnnError, match=r"clip_grad_norm: max_norm must be ≥ 0, got -1"):
        O.clip_grad_norm({"w": torch.ones(2)}, -1)
    with pytest.raises(FnnError, match=r"clip_grad_norm: norm_type must be > 0"):
        O.clip_grad_norm({"w": torch.ones(2)}, 1.0, norm_type=0)
    with pytest.raises(FnnTypeError, match=r"global_norm: norm_type must be a number"):
        O.global_norm({"w": torch.ones(2)}, norm_type="fro")
    with pytest.raises(FnnError, match=r"clip_by_global_norm: max_norm must be ≥ 0"):
        O.clip_by_global_norm(-0.5)
    with pytest.raises(FnnError, match=r"add_decayed_weights: weight_decay must be ≥ 0"):
        O.add_decayed_weights(-0.5)
    with pytest.raises(ValueError, match=r"add_decayed_weights: grads tree does not match"):
        O.add_decayed_weights(0.1).update({"w": torch.ones(2)}, {"v": torch.ones(2)}, {})
    meta = {"w": torch.ones(2, device="meta")}  # meta stands in for another device
    with pytest.raises(
        FnnError, match=r"add_decayed_weights: the gradient of params\['w'\] is on meta"
    ):
        O.add_decayed_weights(0.1).update({"w": torch.ones(2)}, meta, {})


def test_chain_errors():
    with pytest.raises(FnnError, match=r"chain: expected at least one"):
        O.chain()
    with pytest.raises(
        FnnTypeError, match=r"chain: argument 0 must be a Transform \(only the last"
    ):
        O.chain(O.sgd(), O.clip_by_global_norm(1.0))
    with pytest.raises(FnnTypeError, match=r"chain: the last argument must be"):
        O.chain(O.clip_by_global_norm(1.0), "adam")
    opt = O.chain(O.clip_by_global_norm(1.0), O.sgd())
    params = {"w": torch.ones(2)}
    with pytest.raises(FnnError, match=r"chain: the state must be the tuple of 2 states"):
        opt.update(params, params, O.sgd().init(params))
