"""Large batch: 4 Dense layers of 1024 (ReLU between), batch 4096, MSE, plain SGD.

    python -m tests.benchmarks.run_all large

Compares `fnn.train_step` (and the plain value_and_grad + update) with torch.nn + autograd + torch.optim.SGD and with the
GEMM floor: the step's 11 matrix products (4 forward, 4 for the weights, 3 for the
inputs: nobody needs the gradient of the data) timed alone. Also the peak extra
memory of one step (see _memory.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from ._memory import peak_extra_bytes
from ._timing import compare, report

WIDTH, BATCH, LAYERS = 1024, 4096, 4


def main() -> dict[str, float]:
    torch.set_num_threads(2)  # big GEMMs: both cores
    model = fnn.serial(
        *[layer for _ in range(LAYERS - 1) for layer in (L.Dense(WIDTH), L.Relu())], L.Dense(WIDTH)
    )
    _, params = model.init(fnn.random.key(0), (-1, WIDTH))
    x = fnn.random.normal(fnn.random.key(1), (BATCH, WIDTH))
    target = fnn.random.normal(fnn.random.key(2), (BATCH, WIDTH))
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.mse)
    sgd = fnn.optim.sgd(lr=1e-3)
    step = fnn.train_step(model.apply, fnn.losses.mse, sgd)
    carry = [params, sgd.init(params)]
    plain = [params]

    def fnn_step():
        loss, carry[0], carry[1] = step(carry[0], carry[1], x, target)
        return loss

    def plain_step():
        loss, grads = loss_and_grads(plain[0], x, target)
        plain[0] = fnn.update(plain[0], grads, lr=1e-3)
        return loss

    seq = torch.nn.Sequential(
        *[m for _ in range(LAYERS - 1) for m in (torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU())],
        torch.nn.Linear(WIDTH, WIDTH),
    )
    seq.load_state_dict(fnn.tree.to_state_dict(params))
    opt = torch.optim.SGD(seq.parameters(), lr=1e-3)

    def torch_step():
        with torch.enable_grad():
            opt.zero_grad()
            loss = F.mse_loss(seq(x), target)
            loss.backward()
            opt.step()
        return loss.detach()

    weights = [torch.randn(WIDTH, WIDTH) for _ in range(LAYERS)]
    act = torch.randn(BATCH, WIDTH)

    def gemm_floor():
        for w in weights:  # forward
            act.mm(w.t())
        for _ in weights:  # weight gradients dyᵀ x
            act.t().mm(act)
        for w in weights[1:]:  # input gradients dy W
            act.mm(w)

    times = compare(
        {
            "torch eager + autograd": torch_step,
            "fnn": fnn_step,
            "fnn value_and_grad+update": plain_step,
            "GEMM floor (11 matmuls)": gemm_floor,
        },
        number=1,
        repeats=7,
        warmup=1,
    )
    ratios = report(
        f"{LAYERS}×Dense({WIDTH}), batch {BATCH}, train step",
        times,
        baseline="torch eager + autograd",
    )
    floor = sorted(times["GEMM floor (11 matmuls)"])[len(times["fnn"]) // 2]
    fnn_median = sorted(times["fnn"])[len(times["fnn"]) // 2]
    print(f"  fnn / GEMM floor: {fnn_median / floor:.3f}×")
    mib = 2**20
    fnn_peak = peak_extra_bytes(fnn_step) / mib
    plain_peak = peak_extra_bytes(plain_step) / mib
    torch_peak = peak_extra_bytes(torch_step) / mib
    print(
        f"  peak extra memory of a step: fnn.train_step {fnn_peak:.0f} MiB, value_and_grad+update "
        f"{plain_peak:.0f} MiB, torch autograd {torch_peak:.0f} MiB"
    )
    ratios["fnn/floor"] = fnn_median / floor
    return ratios


if __name__ == "__main__":
    main()
