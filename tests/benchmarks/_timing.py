"""Side-by-side timing: cases run interleaved in one process, so machine noise hits all alike.

    results = compare({"torch": torch_step, "fnn": fnn_step}, number=50, repeats=30)
    report("disk MLP batch 100", results, baseline="torch")

Each repeat times `number` back-to-back calls of every case, in rotating order;
the median over repeats is the figure, min–max the spread, and the ratio is
baseline median / case median (> 1 means the case is faster).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def pin_threads(n: int = 1) -> None:
    """Small cases: one thread, or two threads stall when the machine is busy."""
    torch.set_num_threads(n)


def compare(
    cases: dict[str, Callable[[], object]],
    *,
    number: int = 20,
    repeats: int = 25,
    warmup: int = 5,
) -> dict[str, list[float]]:
    """Per-call seconds of each case, one entry per repeat."""
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = cases[name]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - start) / number)
    return times


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds:8.3f} s "


def report(title: str, times: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Print median, min–max and ratio per case; return the ratios (baseline / case)."""
    base = statistics.median(times[baseline])
    print(f"\n{title}")
    print(f"  {'case':<28} {'median':>11} {'min':>11} {'max':>11}   speed-up vs {baseline}")
    ratios = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        ratios[name] = base / med
        print(f"  {name:<28} {_fmt(med)} {_fmt(min(ts))} {_fmt(max(ts))}   {ratios[name]:6.2f}×")
    return ratios
