"""What an update costs before and after the pairing rewrite (no FRESH/BUILT records,
pairing by name at every call, one rule object per optimizer).

    python -m tests.benchmarks.bench_update [BEFORE_REV]    (default: 34e23d4, main before)

The "before" package is `git archive BEFORE_REV fnn`, unpacked to a temporary folder
and imported as `fnn_before` next to this tree's `fnn`, so both run in one process, one
thread, interleaved (tests/benchmarks/_timing.py). The model is the disk MLP
2→25→25→25→2 (8 leaves); each version computes its own gradients with its own
`value_and_grad`. Cases:

- `update` / `sgd(momentum=0.9)` / `adam` alone, on fixed params and grads: the pairing,
  the checks and the foreach math. Before, this path used the generated pairing code
  (no fresh record, since the grads are reused).
- the full plain step at batch 10 (`value_and_grad` then `sgd(momentum=0.9).update`),
  each version training from its own last params. Before, the fast path recorded its
  fresh grads (FRESH) and the update vouched for its params (BUILT), skipping checks.
  This case also measures whatever else changed in `value_and_grad` between the two
  trees (from main at d4b1ff8 on, the implicit fast path is gone: `fnn.train_step` is
  the fast way), so only the first three isolate the update.

The results of both versions are asserted bit-identical first. On a shared, busy
machine the medians drift with the load; the minimum over the 100 short repeats is the
steadier figure of what each version costs.
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

import fnn

from ._timing import compare, pin_threads, report


def load_before(rev: str) -> object:
    root = Path(__file__).resolve().parents[2]
    data = subprocess.run(
        ["git", "archive", rev, "fnn"], cwd=root, check=True, capture_output=True
    ).stdout
    tmp = Path(tempfile.mkdtemp(prefix="fnn_before_"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / "fnn").rename(tmp / "fnn_before")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("fnn_before")


def setup(lib, batch):
    model = lib.serial(
        lib.layers.Dense(25),
        lib.layers.Relu(),
        lib.layers.Dense(25),
        lib.layers.Relu(),
        lib.layers.Dense(25),
        lib.layers.Relu(),
        lib.layers.Dense(2),
    )
    _, params = model.init(lib.random.key(0), (-1, 2))
    x, labels = lib.data.disk(lib.random.key(1), batch)
    loss_and_grads = lib.value_and_grad(model.apply, lib.losses.cross_entropy)
    return params, x, labels, loss_and_grads


def main(rev: str = "34e23d4") -> None:
    pin_threads(1)
    before = load_before(rev)
    libs = {"before": before, "after": fnn}
    made = {name: setup(lib, 10) for name, lib in libs.items()}
    first = [fnn.tree.leaves(made[name][0]) for name in libs]
    assert all(torch.equal(a, b) for a, b in zip(*first))  # the same initial params
    cases_alone = {}
    for name, lib in libs.items():
        params, x, labels, lg = made[name]
        _, grads = lg(params, x, labels)
        sgd, adam = lib.optim.sgd(lr=0.1, momentum=0.9), lib.optim.adam(lr=1e-3)
        s_state, a_state = sgd.update(params, grads, sgd.init(params))[1], adam.init(params)
        cases_alone[f"{name} update"] = lambda p=params, g=grads, lib=lib: lib.update(p, g, lr=0.1)
        cases_alone[f"{name} sgd momentum"] = lambda p=params, g=grads, o=sgd, s=s_state: o.update(
            p, g, s
        )
        cases_alone[f"{name} adam"] = lambda p=params, g=grads, o=adam, s=a_state: o.update(p, g, s)
    # the same bits from both versions
    for what in ("update", "sgd momentum", "adam"):
        a, b = cases_alone[f"before {what}"](), cases_alone[f"after {what}"]()
        la = fnn.tree.leaves(a if what == "update" else a[0])
        lb = fnn.tree.leaves(b if what == "update" else b[0])
        assert all(torch.equal(u, v) for u, v in zip(la, lb)), what
    times = compare(cases_alone, number=50, repeats=100)
    for what in ("update", "sgd momentum", "adam"):
        report(
            f"{what} alone, disk MLP (8 leaves)",
            {k: v for k, v in times.items() if k.endswith(what)},
            baseline=f"before {what}",
        )

    loops = {}
    for name, lib in libs.items():
        params, x, labels, lg = made[name]
        opt = lib.optim.sgd(lr=0.1, momentum=0.9)
        box = [params, opt.init(params)]

        def step(lg=lg, opt=opt, box=box, x=x, labels=labels):
            _, grads = lg(box[0], x, labels)
            box[0], box[1] = opt.update(box[0], grads, box[1])

        loops[name] = step
    times = compare(loops, number=50, repeats=100)
    report("value_and_grad + sgd momentum update, batch 10", times, baseline="before")


if __name__ == "__main__":
    main(*sys.argv[1:])
