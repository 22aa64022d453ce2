"""Data-parallel step time of a 4×1024 MLP on gloo: 1 process against 2, and the all-reduce's share.

    python -m tests.benchmarks.run_all ddp
    python -m tests.benchmarks.bench_ddp --steps 10      # the same, with options

The model is 1024 → 1024 → 1024 → 1024 → 1024 (four Dense layers of 1024, ReLU between,
4.2 M params = 16.8 MB of float32 gradients: one 25 MB bucket), MSE, SGD; the global batch
of 4096 is split over the ranks. Each configuration runs in fresh processes on 127.0.0.1
(gloo, as `torchrun` would start them); the configurations take turns for `--rounds`
rounds of `--steps` steps, so load from other work hits them alike. Per configuration:
the median step, its forward + backward, its `all_reduce_mean` (waiting for the slower
rank included) and its update, the CPU seconds rank 0 spent in forward + backward
(what the wall times would be on an idle machine), and a bare all-reduce of the same
gradients behind a barrier (communication alone), bucketed and one collective per leaf.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
WIDTH, LAYERS, GLOBAL_BATCH = 1024, 4, 4096


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f} ms"


def worker(steps: int) -> None:
    import torch.distributed as dist

    import fnn
    from fnn import distributed as fd
    from fnn import layers as L

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    rank, world = fd.rank(), fd.world_size()
    layers = []
    for i in range(LAYERS):
        layers += [L.Dense(WIDTH)] + ([L.Relu()] if i < LAYERS - 1 else [])
    init, apply = fnn.serial(*layers)
    _, params = init(fnn.random.key(0), (-1, WIDTH))
    params = fd.broadcast(params)
    k_x, k_y = fnn.random.split(fnn.random.fold_in(fnn.random.key(1), rank))
    local = GLOBAL_BATCH // world
    x, y = fnn.random.normal(k_x, (local, WIDTH)), fnn.random.normal(k_y, (local, WIDTH))
    opt = fnn.optim.sgd(lr=1e-3, momentum=0.9)
    state = opt.init(params)
    loss_and_grads = fnn.value_and_grad(apply, fnn.losses.mse)

    times: dict[str, list[float]] = {
        "step": [],
        "forward+backward": [],
        "all_reduce_mean": [],
        "update": [],
        "cpu forward+backward": [],
    }
    for i in range(steps + 1):  # 1 warm-up step
        t0, c0 = time.perf_counter(), time.process_time()
        _, grads = loss_and_grads(params, x, y)
        t1, c1 = time.perf_counter(), time.process_time()
        grads = fd.all_reduce_mean(grads)
        t2 = time.perf_counter()
        params, state = opt.update(params, grads, state)
        t3 = time.perf_counter()
        if i >= 1:
            for name, dt in zip(times, (t3 - t0, t1 - t0, t2 - t1, t3 - t2, c1 - c0)):
                times[name].append(dt)

    bare: dict[str, list[float]] = {"bucketed (1 collective)": [], "per leaf (8 collectives)": []}
    leaves = fnn.tree.leaves(grads)
    for _ in range(steps):
        dist.barrier()
        t0 = time.perf_counter()
        fd.all_reduce_mean(grads)
        bare["bucketed (1 collective)"].append(time.perf_counter() - t0)
        dist.barrier()
        t0 = time.perf_counter()
        for leaf in leaves:
            leaf = leaf.clone()
            dist.all_reduce(leaf)
            leaf.div_(world)
        bare["per leaf (8 collectives)"].append(time.perf_counter() - t0)
    if rank == 0:
        print(json.dumps({"step": times, "bare": bare if world > 1 else {}}))
    dist.destroy_process_group()


def launch(world: int, threads: int, steps: int) -> dict:
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        WORLD_SIZE=str(world),
        GLOO_SOCKET_IFNAME="lo",
        OMP_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    command = [
        sys.executable,
        "-m",
        "tests.benchmarks.bench_ddp",
        "--worker",
        "--steps",
        str(steps),
    ]
    procs = [
        subprocess.Popen(
            command,
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"bench_ddp: a rank failed (codes {[p.returncode for p in procs]})")
    return json.loads(outputs[0].strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per launch")
    parser.add_argument(
        "--rounds", type=int, default=3, help="launches per configuration, taking turns"
    )
    args = parser.parse_args(argv if argv is not None else [])
    if args.worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        worker(args.steps)
        return
    print(
        f"4×{WIDTH} MLP, global batch {GLOBAL_BATCH}, gloo on 127.0.0.1, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.1f}; median of {args.rounds} rounds × {args.steps} steps (min–max)"
    )
    configs = {
        "1 process × 1 thread": (1, 1),
        "1 process × 2 threads": (1, 2),
        "2 processes × 1 thread": (2, 1),
    }
    results: dict[str, dict[str, dict[str, list[float]]]] = {
        name: {"step": {}, "bare": {}} for name in configs
    }
    for _ in range(args.rounds):
        for name, (world, threads) in configs.items():
            for kind, series in launch(world, threads, args.steps).items():
                for part, ts in series.items():
                    results[name][kind].setdefault(part, []).extend(ts)
    base = statistics.median(results["1 process × 1 thread"]["step"]["step"])
    for name, result in results.items():
        step = result["step"]
        whole = statistics.median(step["step"])
        print(
            f"\n{name}: step {_fmt(whole)} ({_fmt(min(step['step'])).strip()}–{_fmt(max(step['step'])).strip()}), "
            f"{GLOBAL_BATCH / whole:5.0f} examples/s, {base / whole:4.2f}× the speed of 1 × 1"
        )
        for part in ("forward+backward", "all_reduce_mean", "update"):
            t = statistics.median(step[part])
            print(f"  {part:<28} {_fmt(t)}  {100 * t / whole:5.1f} % of the step")
        print(
            f"  {'cpu forward+backward, rank 0':<28} {_fmt(statistics.median(step['cpu forward+backward']))}  CPU time"
        )
        for part, ts in result["bare"].items():
            print(f"  bare all-reduce, {part:<26} {_fmt(statistics.median(ts))}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
