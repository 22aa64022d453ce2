"""LSTM train step (forward, loss, VJP, SGD update): fnn vs torch.nn.LSTM + autograd.

    python -m tests.benchmarks.run_all lstm

Model: LSTM(128) on (N 32, T 50, C 128), batch first, MSE on its whole output; one
thread; torch baseline: torch.nn.LSTM(batch_first=True) + autograd + torch.optim.SGD, the
same weights. Target (issue 17): fnn no slower than 1.5× torch's time. Each case is timed
twice, interleaved: wall clock (as the other benchmarks) and this thread's CPU time, which
on a shared machine leaves out the time spent waiting for a core; the target is judged on
the CPU time.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from ._timing import compare, pin_threads, report

BATCH, STEPS, WIDTH = 32, 50, 128
TARGET = 1 / 1.5  # speed ratio torch/fnn must be at least this


def make_steps(num_layers: int = 1, bidirectional: bool = False):
    layer = L.LSTM(WIDTH, num_layers=num_layers, bidirectional=bidirectional)
    _, params = layer.init(fnn.random.key(0), (-1, STEPS, WIDTH))
    x = fnn.random.normal(fnn.random.key(1), (BATCH, STEPS, WIDTH))
    target = fnn.random.normal(
        fnn.random.key(2), (BATCH, STEPS, WIDTH * (2 if bidirectional else 1))
    )
    loss_and_grads = fnn.value_and_grad(layer.apply, fnn.losses.mse)
    opt = fnn.optim.sgd(lr=0.01)
    carry = [params, opt.init(params)]

    def fnn_step():
        value, grads = loss_and_grads(carry[0], x, target)
        carry[0], carry[1] = opt.update(carry[0], grads, carry[1])
        return value

    module = torch.nn.LSTM(
        WIDTH, WIDTH, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
    )
    module.load_state_dict(fnn.tree.to_state_dict(params))
    torch_opt = torch.optim.SGD(module.parameters(), lr=0.01)

    def torch_step():
        with torch.enable_grad():
            torch_opt.zero_grad()
            loss = F.mse_loss(module(x)[0], target)
            loss.backward()
            torch_opt.step()
        return loss

    return fnn_step, torch_step


def cpu_times(cases: dict, number: int, repeats: int) -> dict[str, list[float]]:
    """Per-call CPU time of this thread (`time.thread_time`), interleaved as `compare` does:
    on a shared machine, time spent waiting for a core does not count."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(repeats):
        for name in names[r % 2 :] + names[: r % 2]:
            start = time.thread_time()
            for _ in range(number):
                cases[name]()
            times[name].append((time.thread_time() - start) / number)
    return times


def main() -> dict[str, float]:
    pin_threads(1)
    results = {}
    for label, kwargs in (
        ("1 layer", {}),
        ("2 layers, bidirectional", {"num_layers": 2, "bidirectional": True}),
    ):
        fnn_step, torch_step = make_steps(**kwargs)
        number, repeats = (3, 10) if kwargs else (5, 20)
        cases = {"torch.nn.LSTM": torch_step, "fnn LSTM": fnn_step}
        times = compare(cases, number=number, repeats=repeats)
        title = f"LSTM train step, N {BATCH}, T {STEPS}, width {WIDTH}, {label}"
        wall = report(f"{title} (wall clock)", times, baseline="torch.nn.LSTM")["fnn LSTM"]
        cpu = cpu_times(cases, number, repeats)
        ratio = report(f"{title} (CPU time)", cpu, baseline="torch.nn.LSTM")["fnn LSTM"]
        met = "met" if ratio >= TARGET else "NOT met"
        print(
            f"  fnn time / torch time = {1 / ratio:.2f} CPU, {1 / wall:.2f} wall "
            f"(target ≤ 1.5: {met})"
        )
        results[label] = ratio
    return results


if __name__ == "__main__":
    main()
