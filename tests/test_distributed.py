"""fnn.distributed: 2 gloo processes on 127.0.0.1, spawned here with a free port and a timeout.

The workers are this file run as a script (`python tests/test_distributed.py OUT_DIR`, with
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, as torchrun would). One launch serves all
the two-rank tests, to pay for starting Python and torch only once: the ranks train, save
what they saw, check the collectives, and at the end rank 1 crashes in the middle of a loop
of all-reduces. The tests read what the ranks saved and printed.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fnn
from fnn import distributed as fd
from fnn import layers as L

ROOT = Path(__file__).resolve().parent.parent
WORLD = 2
PG_TIMEOUT_S = 15  # the process group's own timeout, for collectives a peer never joins
JOB_TIMEOUT_S = 60  # the test's bound on a whole launch: it kills the ranks and fails after this

# The training problem both the ranks and the single-process reference run.
N, BATCH, EPOCHS, WARMUP_STEPS = 68, 16, 2, 2  # 68 = 4 full batches + a short one of 4


def model() -> fnn.Layer:
    return fnn.serial(L.Dense(16), L.Tanh(), L.Dense(16), L.Relu(), L.Dense(3))


def problem():
    k_data, k_target, k_shuffle = fnn.random.split(fnn.random.key(42), 3)
    x = fnn.random.normal(k_data, (N, 5))
    y = fnn.random.normal(k_target, (N, 3))
    opt = fnn.optim.sgd(lr=lambda step: 0.1 / (1 + step), momentum=0.9)
    return x, y, k_shuffle, opt, fnn.value_and_grad(model().apply, fnn.losses.mse)


def warm_up(seed: int):
    """Params and optimizer state after a few local steps: a rank 'resuming' its own run."""
    x, y, _, opt, loss_and_grads = problem()
    _, params = model().init(fnn.random.key(seed), (-1, 5))
    state = opt.init(params)
    for step in range(WARMUP_STEPS + seed):  # the ranks differ even in their step counts
        _, grads = loss_and_grads(params, x[step::7], y[step::7])
        params, state = opt.update(params, grads, state)
    return params, state


def mixed_tree(rank: int) -> dict:
    """Leaves of two dtypes, a 0-d and an empty one, with values that differ by rank."""
    k = fnn.random.fold_in(fnn.random.key(7), rank)
    a, b, c, d = fnn.random.split(k, 4)
    return {
        "0": {"weight": fnn.random.normal(a, (6, 4)), "bias": fnn.random.normal(b, (6,))},
        "1": {},
        "2": {"weight": fnn.random.normal(c, (3, 6), dtype=torch.float64), "empty": torch.zeros(0)},
        "scale": fnn.random.normal(d, ()),
        "pair": (
            torch.full((2,), float(rank)),
            torch.full((2, 2), rank + 0.5, dtype=torch.float64),
        ),
    }


# ---------------------------------------------------------------------------------------------
# The workers (run as a script in each rank).


def worker_main(out: Path) -> None:
    rank = fd.rank()
    x, y, k_shuffle, opt, loss_and_grads = problem()
    saved: dict = {}

    # 1. Rank 0's warmed-up params and state reach rank 1, then data-parallel steps.
    params, state = warm_up(seed=rank)
    params = fd.broadcast(params)
    state = fd.broadcast(state)
    saved["start"] = (params, state)
    ids, losses = [], []
    for epoch in range(EPOCHS):
        key = fnn.random.fold_in(k_shuffle, epoch)
        for xb, yb, ib in fd.batches(key, x, y, torch.arange(N), batch_size=BATCH):
            loss, grads = loss_and_grads(params, xb, yb)
            grads, loss = fd.all_reduce_mean((grads, loss))
            params, state = opt.update(params, grads, state)
            ids.append(ib)
            losses.append(loss)
    saved["end"] = (params, state)
    saved["ids"], saved["losses"] = ids, losses

    # 2. Bucketed all-reduce against one collective per leaf, counting the collectives.
    tree = mixed_tree(rank)
    calls = []
    all_reduce = torch.distributed.all_reduce

    def counting(tensor, *args, **kwargs):
        calls.append(tensor.numel())
        return all_reduce(tensor, *args, **kwargs)

    fd.dist.all_reduce = counting
    saved["bucketed"] = fd.all_reduce_mean(tree)
    saved["bucketed_calls"] = list(calls)
    calls.clear()
    saved["small_buckets"] = fd.all_reduce_mean(tree, bucket_mb=100 / 2**20)  # 100 bytes
    saved["small_bucket_calls"] = list(calls)
    fd.dist.all_reduce = all_reduce
    saved["tree"] = tree
    per_leaf = []
    for leaf in fnn.tree.leaves(tree):
        leaf = leaf.clone()
        torch.distributed.all_reduce(leaf)
        per_leaf.append(leaf / WORLD)
    saved["per_leaf"] = fnn.tree.unflatten(fnn.tree.structure(tree), per_leaf)

    # 3. A tree that does not match rank 0's: both ranks raise, neither waits.
    mine = {"w": torch.zeros(3 if rank == 0 else 4), "step": 5}
    try:
        fd.broadcast(mine)
        saved["mismatch"] = None
    except fnn.FnnError as error:
        saved["mismatch"] = str(error)
    saved["after_mismatch"] = fd.all_reduce_mean({"w": torch.full((2,), float(rank))})
    try:  # checked before any collective, so no rank waits for the other
        fd.all_reduce_mean({"w": torch.ones(2), "count": torch.ones(2, dtype=torch.int64)})
        saved["int_leaf"] = None
    except fnn.errors.FnnTypeError as error:
        saved["int_leaf"] = str(error)

    fd.log(f"hello from rank {rank}")
    torch.save(saved, out / f"rank{rank}.pt")


def worker_die(out: Path) -> None:
    rank = fd.rank()
    params = fd.broadcast(mixed_tree(rank))
    (out / f"rank{rank}.dying").write_text(repr(time.time()))
    for step in range(5):
        if rank == 1 and step == 3:
            os._exit(7)  # a crash: no clean-up, no goodbye
        params = fd.all_reduce_mean(params)
        (out / f"rank{rank}.step").write_text(str(step))


def run_worker(out: Path) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
    worker_main(out)
    worker_die(out)  # rank 0 raises CollectiveError from here, rank 1 exits with code 7
    torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# The launcher.


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path) -> tuple[list[int], list[str], list[float]]:
    """Run the workers on WORLD ranks: (return codes, outputs, end times). Fails on a hang."""
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        WORLD_SIZE=str(WORLD),
        GLOO_SOCKET_IFNAME="lo",  # gloo's own connections on loopback too
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    logs = [out / f"rank{r}.log" for r in range(WORLD)]
    start = time.monotonic()
    procs = []
    for r in range(WORLD):
        with open(logs[r], "w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, str(out)],
                    env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    ends = [0.0] * WORLD
    while any(p.poll() is None for p in procs):  # poll both, to see when each one ends
        if time.monotonic() > start + JOB_TIMEOUT_S:
            for p in procs:
                p.kill()
            pytest.fail(
                f"the ranks did not finish within {JOB_TIMEOUT_S} s:\n"
                + "\n".join(f.read_text() for f in logs)
            )
        for r, p in enumerate(procs):
            if p.poll() is not None and not ends[r]:
                ends[r] = time.time()
        time.sleep(0.05)
    ends = [end or time.time() for end in ends]
    return [p.returncode for p in procs], [f.read_text() for f in logs], ends


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    codes, logs, ends = launch(out)
    return out, codes, logs, ends


@pytest.fixture(scope="module")
def main_run(launched):
    out, _, logs, _ = launched
    saved = [out / f"rank{r}.pt" for r in range(WORLD)]
    assert all(f.exists() for f in saved), "\n".join(logs)
    return [torch.load(f, weights_only=False) for f in saved], logs


def assert_trees_equal(a, b, atol=0.0):
    la, da = fnn.tree.flatten(a)
    lb, db = fnn.tree.flatten(b)
    assert da == db
    for path, x, y in zip(fnn.tree.paths(a), la, lb):
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape, path
            err = (x - y).abs().max().item() if x.numel() else 0.0
            assert err <= atol, f"{path}: max difference {err:.3g} > {atol}"
        else:
            assert x == y, path


# ---------------------------------------------------------------------------------------------
# Two ranks.


def test_data_parallel_steps_equal_single_process_on_the_whole_batch(main_run):
    ranks, _ = main_run
    assert_trees_equal(ranks[0]["end"], ranks[1]["end"])  # bit for bit
    # The reference: rank 0's start, then plain fnn.data.batches over the same shuffles.
    x, y, k_shuffle, opt, loss_and_grads = problem()
    params, state = warm_up(seed=0)
    losses = []
    for epoch in range(EPOCHS):
        for xb, yb in fnn.data.batches(
            fnn.random.fold_in(k_shuffle, epoch), x, y, batch_size=BATCH
        ):
            loss, grads = loss_and_grads(params, xb, yb)
            params, state = opt.update(params, grads, state)
            losses.append(loss)
    assert len(ranks[0]["losses"]) == len(losses) == EPOCHS * 5
    assert_trees_equal(ranks[0]["end"], (params, state), atol=1e-6)
    torch.testing.assert_close(
        torch.stack(ranks[0]["losses"]), torch.stack(losses), rtol=1e-5, atol=1e-6
    )
    # and the run did move the params
    start, _ = warm_up(seed=0)
    assert (ranks[0]["end"][0]["4"]["weight"] - start["4"]["weight"]).abs().max() > 1e-2


def test_broadcast_gives_every_rank_rank0s_params_and_state(main_run):
    ranks, _ = main_run
    expected = warm_up(seed=0)
    assert_trees_equal(ranks[0]["start"], expected)
    assert_trees_equal(ranks[1]["start"], expected)  # rank 1 had other weights and step count
    with pytest.raises(AssertionError):
        assert_trees_equal(warm_up(seed=1), expected)


def test_batches_give_each_rank_a_disjoint_half_of_each_global_batch(main_run):
    ranks, _ = main_run
    _, _, k_shuffle, _, _ = problem()
    step = 0
    for epoch in range(EPOCHS):
        key = fnn.random.fold_in(k_shuffle, epoch)
        for (ids,) in fnn.data.batches(key, torch.arange(N), batch_size=BATCH):
            half = len(ids) // 2
            assert ranks[0]["ids"][step].tolist() == ids[:half].tolist()
            assert ranks[1]["ids"][step].tolist() == ids[half:].tolist()
            step += 1


def test_bucketed_all_reduce_equals_per_leaf_all_reduce(main_run):
    ranks, _ = main_run
    for saved in ranks:
        assert_trees_equal(saved["bucketed"], saved["per_leaf"])
        assert_trees_equal(saved["small_buckets"], saved["per_leaf"])
    expected = fnn.tree.map(lambda a, b: (a + b) / 2, ranks[0]["tree"], ranks[1]["tree"])
    assert_trees_equal(ranks[0]["bucketed"], expected, atol=1e-7)
    # 7 leaves (one empty), two dtypes: one collective per dtype under the default cap, and
    # with a 100-byte cap a new bucket whenever the next leaf does not fit.
    assert sorted(ranks[0]["bucketed_calls"]) == [18 + 4, 24 + 6 + 0 + 1 + 2]
    assert ranks[0]["small_bucket_calls"] == [24, 18, 6 + 0 + 1 + 2, 4]


def test_broadcast_of_a_mismatched_tree_raises_on_every_rank(main_run):
    ranks, _ = main_run
    assert "does not match rank 0's" in ranks[0]["mismatch"]
    assert "rank 1's ['w'] is a tensor of shape (4,)" in ranks[1]["mismatch"]
    assert "shape (3,)" in ranks[1]["mismatch"]
    for saved in ranks:  # and the group still works afterwards
        assert saved["after_mismatch"]["w"].tolist() == [0.5, 0.5]


def test_all_reduce_mean_rejects_non_float_leaves(main_run):
    ranks, _ = main_run
    for saved in ranks:
        assert (
            "expected floating-point tensor leaves, got tensor of shape (2,), dtype torch.int64"
            in saved["int_leaf"]
        )
        assert "['count']" in saved["int_leaf"]


def test_log_prints_on_rank_0_only(main_run):
    _, logs = main_run
    assert "hello from rank 0" in logs[0]
    assert "hello from rank" not in logs[1]


def test_a_dead_rank_makes_the_other_fail_with_a_clear_error(launched):
    out, codes, logs, ends = launched
    assert codes[1] == 7, logs[1]
    assert codes[0] == 1, logs[0]  # the uncaught CollectiveError, not a hang nor a kill
    assert (
        "CollectiveError: fnn.distributed.all_reduce_mean failed on rank 0 of 2, backend gloo"
        in logs[0]
    )
    assert "Another rank probably died" in logs[0]
    assert (out / "rank0.step").read_text() == "2"  # it failed at the step rank 1 missed
    seconds = ends[0] - float((out / "rank0.dying").read_text())
    assert seconds < PG_TIMEOUT_S, f"rank 0 took {seconds:.1f} s to fail"


# ---------------------------------------------------------------------------------------------
# One process.


def test_without_a_process_group_everything_but_log_says_so(capsys):
    assert not fd.is_initialized()
    for call in [
        fd.rank,
        fd.world_size,
        lambda: fd.all_reduce_mean({"w": torch.ones(2)}),
        lambda: fd.broadcast({"w": torch.ones(2)}),
        lambda: fd.rank_key(fnn.random.key(0)),
        lambda: next(fd.batches(None, torch.ones(4), batch_size=2)),
    ]:
        with pytest.raises(fnn.FnnError, match="no torch.distributed process group is initialised"):
            call()
    fd.log("still", "prints")
    assert capsys.readouterr().out == "still prints\n"


def test_batches_shares_are_equal_disjoint_and_reproducible():
    key, x = fnn.random.key(3), torch.arange(10.0)
    shares = [list(fd.batches(key, x, batch_size=4, rank=r, world_size=2)) for r in range(2)]
    whole = list(fnn.data.batches(key, x, batch_size=4))
    # batches of 4, 4 and 2: halves of 2, 2 and 1
    assert [len(b) for (b,) in shares[0]] == [len(b) for (b,) in shares[1]] == [2, 2, 1]
    for (a,), (b,), (w,) in zip(*shares, whole):
        assert torch.cat([a, b]).tolist() == w.tolist()
    again = list(fd.batches(key, x, batch_size=4, rank=0, world_size=2))
    assert [b.tolist() for (b,) in again] == [b.tolist() for (b,) in shares[0]]
    other = list(fd.batches(fnn.random.key(4), x, batch_size=4, rank=0, world_size=2))
    assert [b.tolist() for (b,) in other] != [b.tolist() for (b,) in shares[0]]
    # a short batch of 3 on 2 ranks: one example each, the third skipped; drop_last skips it all
    assert [
        b.tolist() for (b,) in fd.batches(None, torch.arange(7), batch_size=4, rank=1, world_size=2)
    ] == [[2, 3], [5]]
    assert (
        len(
            list(
                fd.batches(
                    None, torch.arange(7), batch_size=4, rank=1, world_size=2, drop_last=True
                )
            )
        )
        == 1
    )
    # a short batch of 1 on 4 ranks gives them nothing
    assert [
        b.tolist() for (b,) in fd.batches(None, torch.arange(5), batch_size=4, rank=1, world_size=4)
    ] == [[1]]


def test_batches_reject_bad_arguments():
    x = torch.arange(8.0)
    with pytest.raises(fnn.FnnError, match="multiple of the world size 3"):
        next(fd.batches(None, x, batch_size=4, rank=0, world_size=3))
    with pytest.raises(fnn.FnnError, match="rank must lie in"):
        next(fd.batches(None, x, batch_size=4, rank=2, world_size=2))
    with pytest.raises(fnn.FnnError, match="both rank= and world_size="):
        next(fd.batches(None, x, batch_size=4, rank=0))
    with pytest.raises(fnn.FnnError, match="same first dimension"):
        next(fd.batches(None, x, torch.ones(7), batch_size=4, rank=0, world_size=2))


def test_rank_key_differs_by_rank_and_is_fold_in():
    k = fnn.random.key(0)
    assert torch.equal(fd.rank_key(k, rank=1), fnn.random.fold_in(k, 1))
    assert not torch.equal(fd.rank_key(k, rank=0), fd.rank_key(k, rank=1))


if __name__ == "__main__":
    run_worker(Path(sys.argv[1]))
