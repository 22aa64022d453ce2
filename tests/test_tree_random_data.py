"""fnn.tree, fnn.random, fnn.initializers and fnn.data."""

from __future__ import annotations

import collections
import math

import pytest
import torch

import fnn

TREE = {
    "0": {"weight": torch.ones(2, 3), "bias": torch.zeros(2)},
    "1": {},
    "2": [torch.ones(1), (torch.ones(2), None)],
}


def test_flatten_unflatten_round_trip_and_treedef_equality():
    leaves, treedef = fnn.tree.flatten(TREE)
    assert len(leaves) == 4 and treedef.num_leaves == 4
    rebuilt = fnn.tree.unflatten(treedef, leaves)
    assert fnn.tree.structure(rebuilt) == treedef
    assert rebuilt["2"][1][1] is None and rebuilt["1"] == {}
    assert fnn.tree.structure(fnn.tree.map(lambda t: t * 2, TREE)) == treedef
    assert fnn.tree.structure({"a": torch.ones(1)}) != fnn.tree.structure({"b": torch.ones(1)})
    assert fnn.tree.structure([1, 2]) != fnn.tree.structure((1, 2))
    assert hash(fnn.tree.structure(TREE)) == hash(treedef)
    with pytest.raises(ValueError, match="4 leaves, got 3"):
        fnn.tree.unflatten(treedef, leaves[:3])


def test_map_over_several_trees_and_namedtuples():
    Pair = collections.namedtuple("Pair", "a b")
    a = {"x": Pair(torch.ones(2), torch.ones(1))}
    b = {"x": Pair(torch.full((2,), 3.0), torch.full((1,), 2.0))}
    out = fnn.tree.map(torch.add, a, b)
    assert isinstance(out["x"], Pair) and out["x"].a.tolist() == [4.0, 4.0]
    with pytest.raises(ValueError, match=r"missing keys \['x'\]"):
        fnn.tree.map(torch.add, a, {"y": 1})


def test_leaves_keep_state_dict_order():
    seq = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    params = fnn.tree.from_state_dict(seq.state_dict())
    assert list(fnn.tree.to_state_dict(params)) == list(seq.state_dict())
    assert fnn.tree.paths(params)[0] == "['0']['weight']"
    assert [t.shape for t in fnn.tree.leaves(params)] == [
        t.shape for t in seq.state_dict().values()
    ]


def test_state_dict_errors():
    with pytest.raises(ValueError, match="clashes"):
        fnn.tree.from_state_dict({"a.b": torch.ones(1), "a": torch.ones(1)})
    with pytest.raises(ValueError, match="must be a non-empty str without '.'"):
        fnn.tree.to_state_dict({"a.b": torch.ones(1)})


def test_keys_are_deterministic_and_splits_independent():
    k = fnn.random.key(0)
    assert k.dtype == torch.int64 and k.shape == (2,)
    assert torch.equal(k, fnn.random.key(0)) and not torch.equal(k, fnn.random.key(1))
    a, b = fnn.random.split(k)
    assert not torch.equal(a, b) and not torch.equal(a, k)
    assert torch.equal(fnn.random.split(k, 3)[:2], fnn.random.split(k, 3)[:2])
    assert len({tuple(x.tolist()) for x in fnn.random.split(k, 1000)}) == 1000
    u1 = fnn.random.uniform(a, (1000,))
    u2 = fnn.random.uniform(b, (1000,))
    assert torch.equal(u1, fnn.random.uniform(a, (1000,)))
    assert abs(torch.corrcoef(torch.stack([u1, u2]))[0, 1]) < 0.1
    assert not torch.equal(fnn.random.fold_in(k, 1), fnn.random.fold_in(k, 2))


def test_distributions():
    k = fnn.random.key(3)
    u = fnn.random.uniform(k, (20000,), -2.0, 4.0, dtype=torch.float64)
    assert u.dtype == torch.float64 and u.min() >= -2 and u.max() < 4 and abs(u.mean() - 1) < 0.05
    z = fnn.random.normal(k, (20000,), 1.0, 2.0)
    assert abs(z.mean() - 1) < 0.05 and abs(z.std() - 2) < 0.05
    b = fnn.random.bernoulli(k, 0.3, (20000,))
    assert b.dtype == torch.bool and abs(b.float().mean() - 0.3) < 0.02
    p = fnn.random.permutation(k, 50)
    assert sorted(p.tolist()) == list(range(50)) and p.tolist() != list(range(50))
    r = fnn.random.randint(k, (1000,), 3, 7)
    assert set(r.tolist()) == {3, 4, 5, 6}


@pytest.mark.parametrize(
    "bad", [torch.zeros(3, dtype=torch.int64), torch.zeros(2), 0, "key", [1, 2]]
)
def test_a_non_key_is_rejected_clearly(bad):
    with pytest.raises(TypeError, match="expected an fnn.random key"):
        fnn.random.uniform(bad, (2,))
    with pytest.raises(ValueError, match="expected an fnn.random key"):
        fnn.random.split(bad)


@pytest.mark.parametrize(
    "make, bound_or_std, kind",
    [
        (lambda: fnn.initializers.torch_default(), lambda fi, fo: 1 / math.sqrt(fi), "uniform"),
        (
            lambda: fnn.initializers.xavier_uniform(),
            lambda fi, fo: math.sqrt(6 / (fi + fo)),
            "uniform",
        ),
        (
            lambda: fnn.initializers.xavier_normal(gain=2.0),
            lambda fi, fo: 2 * math.sqrt(2 / (fi + fo)),
            "normal",
        ),
        (
            lambda: fnn.initializers.kaiming_uniform(nonlinearity="relu"),
            lambda fi, fo: math.sqrt(6 / fi),
            "uniform",
        ),
        (
            lambda: fnn.initializers.kaiming_normal(mode="fan_out", nonlinearity="relu"),
            lambda fi, fo: math.sqrt(2 / fo),
            "normal",
        ),
        (lambda: fnn.initializers.normal(0.05), lambda fi, fo: 0.05, "normal"),
    ],
)
def test_initializers_follow_torch_nn_init(make, bound_or_std, kind):
    shape = (200, 100, 3, 3)
    fan_in, fan_out = 100 * 9, 200 * 9
    w = make()(fnn.random.key(0), shape, torch.float64, "cpu")
    assert w.shape == shape and w.dtype == torch.float64
    value = bound_or_std(fan_in, fan_out)
    if kind == "uniform":
        assert w.abs().max() <= value and w.abs().max() > 0.99 * value
        assert abs(w.std() - value / math.sqrt(3)) < 0.02 * value
    else:
        assert abs(w.std() - value) < 0.02 * value
    assert torch.equal(
        fnn.initializers.zeros()(None, (2, 2), torch.float32, "cpu"), torch.zeros(2, 2)
    )


def test_disk_task_labels_the_disk():
    x, labels = fnn.data.disk(fnn.random.key(0), 5000)
    assert x.dtype == torch.float32 and x.shape == (5000, 2) and labels.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 1
    inside = ((x - 0.5) ** 2).sum(1).sqrt() < 1 / math.sqrt(2 * math.pi)
    assert torch.equal(labels, inside.long())
    assert abs(labels.float().mean().item() - 0.5) < 0.03  # the disk has area 1/2


def test_one_hot_and_batches():
    assert fnn.data.one_hot(torch.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        fnn.data.one_hot(torch.tensor([3]), 3)
    x, y = torch.arange(10.0), torch.arange(10)
    seen = list(fnn.data.batches(fnn.random.key(0), x, y, batch_size=3))
    assert [len(b[0]) for b in seen] == [3, 3, 3, 1]
    assert sorted(torch.cat([b[1] for b in seen]).tolist()) == list(range(10))
    assert all(torch.equal(bx, by.float()) for bx, by in seen)  # rows stay paired
    assert torch.cat([b[1] for b in seen]).tolist() != list(range(10))
    again = [b[1] for b in fnn.data.batches(fnn.random.key(0), x, y, batch_size=3)]
    assert all(torch.equal(a[1], b) for a, b in zip(seen, again))
    assert [len(b[0]) for b in fnn.data.batches(None, x, batch_size=4, drop_last=True)] == [4, 4]


def test_generator_errors_give_torchs_reason():
    with pytest.raises(fnn.FnnError, match="'nonsense' is not a device"):
        fnn.random.generator(fnn.random.key(0), "nonsense")
    with pytest.raises(fnn.FnnError, match="no random generator on device meta"):
        fnn.random.generator(fnn.random.key(0), "meta")
