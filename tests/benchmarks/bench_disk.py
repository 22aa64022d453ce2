"""Disk MLP 2→25→25→25→2 train step (forward, loss, VJP, update): fnn vs torch eager.

    python -m tests.benchmarks.run_all disk

torch baseline: torch.nn.Sequential + autograd + torch.optim.SGD (defaults), one thread.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from ..helpers import torch_disk_mlp
from ._timing import compare, pin_threads, report

BATCHES = (1, 10, 100, 1000)


def make_fnn_step(batch: int, momentum: float, loss: str = "mse"):
    model = fnn.serial(
        L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
    )
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    target = fnn.data.one_hot(labels, 2) if loss == "mse" else labels
    loss_fn = fnn.losses.mse if loss == "mse" else fnn.losses.cross_entropy
    loss_and_grads = fnn.value_and_grad(model.apply, loss_fn)
    opt = fnn.optim.sgd(lr=0.01, momentum=momentum)
    carry = [params, opt.init(params)]

    def step():
        value, grads = loss_and_grads(carry[0], x, target)
        carry[0], carry[1] = opt.update(carry[0], grads, carry[1])
        return value

    return step, params


def make_torch_step(batch: int, momentum: float, params, loss: str = "mse"):
    seq = torch_disk_mlp(params)
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    target = fnn.data.one_hot(labels, 2) if loss == "mse" else labels
    loss_fn = F.mse_loss if loss == "mse" else F.cross_entropy
    opt = torch.optim.SGD(seq.parameters(), lr=0.01, momentum=momentum)

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
    for momentum, name in [(0.0, "SGD"), (0.9, "SGD momentum 0.9")]:
        for batch in BATCHES:
            fnn_step, params = make_fnn_step(batch, momentum)
            torch_step = make_torch_step(batch, momentum, params)
            times = compare(
                {"torch eager + autograd": torch_step, "fnn": fnn_step}, number=20, repeats=25
            )
            r = report(
                f"disk MLP train step, MSE, {name}, batch {batch}",
                times,
                baseline="torch eager + autograd",
            )
            ratios[f"{name}, batch {batch}"] = r["fnn"]
    print("\nsummary (fnn speed-up over torch eager):")
    for case, ratio in ratios.items():
        print(f"  {case:<32} {ratio:5.2f}×")
    return ratios


if __name__ == "__main__":
    main()
