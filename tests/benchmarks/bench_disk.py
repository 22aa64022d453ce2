"""Disk MLP 2→25→25→25→2 train step (forward, loss, VJP, update): fnn vs torch eager.

    python -m tests.benchmarks.run_all disk

Baseline: torch.nn.Sequential + autograd + torch.optim (SGD momentum 0.9, or Adam), one
thread. fnn runs two ways: `fnn.train_step` (the explicit fast step) and the plain path
(`value_and_grad` then `opt.update`). All three run interleaved in one process; each
trains on from its own params, as a loop does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from ..helpers import torch_disk_mlp
from ._timing import compare, pin_threads, report

BATCHES = (1, 10, 100, 1000)
TARGETS = {1: 4.5, 10: 4.5, 100: 4.0, 1000: 1.8}  # issue 14: train_step over torch eager
PLAIN_TARGETS = {100: 2.0}  # issue 14: value_and_grad + update over torch eager


def _data(batch: int, loss: str):
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    return x, (fnn.data.one_hot(labels, 2) if loss == "mse" else labels)


def _fnn_optimizer(name: str):
    return fnn.optim.sgd(lr=0.01, momentum=0.9) if name == "sgd" else fnn.optim.adam(lr=1e-3)


def make_fnn_steps(batch: int, loss: str, optimizer: str):
    model = fnn.serial(
        L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
    )
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x, target = _data(batch, loss)
    loss_fn = fnn.losses.mse if loss == "mse" else fnn.losses.cross_entropy
    opt = _fnn_optimizer(optimizer)
    step = fnn.train_step(model.apply, loss_fn, opt)
    loss_and_grads = fnn.value_and_grad(model.apply, loss_fn)
    fast = [params, opt.init(params)]
    plain = [params, opt.init(params)]

    def train_step():
        value, fast[0], fast[1] = step(fast[0], fast[1], x, target)
        return value

    def plain_step():
        value, grads = loss_and_grads(plain[0], x, target)
        plain[0], plain[1] = opt.update(plain[0], grads, plain[1])
        return value

    return train_step, plain_step, params


def make_torch_step(batch: int, loss: str, optimizer: str, params):
    seq = torch_disk_mlp(params)
    x, target = _data(batch, loss)
    loss_fn = F.mse_loss if loss == "mse" else F.cross_entropy
    if optimizer == "sgd":
        opt = torch.optim.SGD(seq.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(seq.parameters(), lr=1e-3)

    def step():
        with torch.enable_grad():
            opt.zero_grad()
            value = loss_fn(seq(x), target)
            value.backward()
            opt.step()
        return value

    return step


def main() -> dict[str, float]:
    pin_threads(1)
    ratios = {}
    for loss, optimizer in [("mse", "sgd"), ("cross_entropy", "sgd"), ("mse", "adam")]:
        for batch in BATCHES:
            train_step, plain_step, params = make_fnn_steps(batch, loss, optimizer)
            torch_step = make_torch_step(batch, loss, optimizer, params)
            times = compare(
                {
                    "torch eager + autograd": torch_step,
                    "fnn.train_step": train_step,
                    "fnn value_and_grad+update": plain_step,
                },
                number=20,
                repeats=25,
            )
            name = f"{loss}, {'SGD momentum 0.9' if optimizer == 'sgd' else 'Adam'}, batch {batch}"
            r = report(f"disk MLP train step, {name}", times, baseline="torch eager + autograd")
            ratios[name] = (r["fnn.train_step"], r["fnn value_and_grad+update"], TARGETS[batch])
    print("\nsummary (speed-up over torch eager + autograd + torch.optim, one thread):")
    print(f"  {'case':<40} {'train_step':>10} {'target':>7} {'':6} {'plain':>7} {'target':>7}")
    for case, (fast, plain, target) in ratios.items():
        mark = "met" if fast >= target else "MISSED"
        plain_target = PLAIN_TARGETS.get(int(case.rsplit(" ", 1)[1]))
        plain_mark = ""
        if plain_target is not None:
            met = "met" if plain >= plain_target else "MISSED"
            plain_mark = f" {plain_target:6.1f}×  {met}"
        print(f"  {case:<40} {fast:9.2f}× {target:6.1f}×  {mark:6} {plain:6.2f}×{plain_mark}")
    return {k: v[0] for k, v in ratios.items()}


if __name__ == "__main__":
    main()
