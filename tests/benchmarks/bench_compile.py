"""Disk MLP train step: torch.compile (inductor) of `fnn.train_step` vs the eager step
and torch eager + autograd. Compile time is reported apart.

    python -m tests.benchmarks.run_all compile
"""

from __future__ import annotations

import time

import torch

import fnn
from fnn import layers as L

from ._timing import compare, pin_threads, report
from .bench_disk import make_torch_step


def main() -> dict[str, float]:
    pin_threads(1)
    ratios = {}
    for batch in (10, 100, 1000):
        model = fnn.serial(
            L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
        )
        _, params = model.init(fnn.random.key(0), (-1, 2))
        x, labels = fnn.data.disk(fnn.random.key(1), batch)
        target = fnn.data.one_hot(labels, 2)
        opt = fnn.optim.sgd(lr=0.01, momentum=0.9)
        train_step = fnn.train_step(model.apply, fnn.losses.mse, opt)

        def step(params, state):
            return train_step(params, state, x, target)

        compiled = torch.compile(step, fullgraph=True)
        eager_carry = [params, opt.init(params)]
        compiled_carry = [params, opt.init(params)]
        start = time.perf_counter()
        for _ in range(3):  # step 0, then step ≥ 1 (the step count becomes dynamic): two compiles
            _, *compiled_carry = compiled(*compiled_carry)
        compile_seconds = time.perf_counter() - start

        def eager():
            _loss, eager_carry[0], eager_carry[1] = step(*eager_carry)

        def compiled_step():
            _loss, compiled_carry[0], compiled_carry[1] = compiled(*compiled_carry)

        times = compare(
            {
                "torch eager + autograd": make_torch_step(batch, "mse", "sgd", params),
                "fnn eager": eager,
                "fnn torch.compile": compiled_step,
            },
            number=20,
            repeats=25,
        )
        r = report(
            f"disk MLP, SGD momentum, batch {batch} (compile took {compile_seconds:.1f} s)",
            times,
            baseline="torch eager + autograd",
        )
        ratios[f"batch {batch} compiled"] = r["fnn torch.compile"]
        ratios[f"batch {batch} compiled/eager"] = r["fnn torch.compile"] / r["fnn eager"]
    return ratios


if __name__ == "__main__":
    main()
