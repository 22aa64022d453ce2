"""The floor under the disk-MLP train step: its kernels alone, called from Python.

    python -m tests.benchmarks.run_all floor

`fnn.train_step` must give `value_and_grad` + `update`'s numbers bit for bit, so it calls
the kernels their VJPs call: per batch, 4 `linear`, 3 ReLU, the MSE's 4, per Dense
`dW = dyᵀx`, `db = Σ dy` and `dx = dy W` (no `dx` for the first), 3 ReLU backward, and
SGD momentum's 3 foreach ops over the 8 leaves (2 of them making the new params and
momentum: the update is pure). This script calls exactly those kernels, into preallocated
buffers where the step does, with nothing else around them — no checks, no dicts, no
state — and times that next to torch eager and `fnn.train_step`, interleaved in one
process, one thread. torch eager's time over the kernels' is the largest speed-up any
step computing these bits through torch's Python API could reach on this machine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from ._timing import compare, pin_threads, report
from .bench_disk import BATCHES, TARGETS, make_fnn_steps, make_torch_step

_threshold_backward = torch.ops.aten.threshold_backward.grad_input


def make_kernel_floor(batch: int, params):
    """The step's kernels alone (MSE, SGD momentum 0.9, lr 0.01), into fixed buffers."""
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    target = fnn.data.one_hot(labels, 2)
    names = [(k, leaf) for k in ("0", "2", "4", "6") for leaf in ("weight", "bias")]
    carry = [
        [params[k][leaf] for k, leaf in names],
        [torch.zeros_like(params[k][leaf]) for k, leaf in names],
    ]
    widths = [25, 25, 25, 2]
    outs = [torch.empty(batch, w) for w in widths]
    diff, dy = torch.empty(batch, 2), torch.empty(batch, 2)
    dxs = [None] + [torch.empty(batch, 25) for _ in range(3)]  # dx of Dense 1..3
    grads = [torch.empty_like(p) for p in carry[0]]
    n, two_over_n = torch.tensor(float(batch * 2)), torch.tensor(2.0 / (batch * 2))
    momentum = torch.tensor(0.9)
    diff_flat = diff.view(-1)
    # the cotangent reaching Dense i (dy for the last, else the next Dense's dx), and its
    # transposed view, made once, as the workspace does
    cotangents = [dxs[1], dxs[2], dxs[3], dy]
    transposed = [d.t() for d in cotangents]

    def step():
        leaves, buffers = carry
        w, b = leaves[0::2], leaves[1::2]
        h = x
        for i in range(4):
            F.linear(h, w[i], b[i], out=outs[i])
            if i < 3:
                torch.relu_(outs[i])
            h = outs[i]
        torch.sub(h, target, out=diff)
        value = torch.dot(diff_flat, diff_flat).div_(n)
        torch.mul(diff, two_over_n, out=dy)
        for i in (3, 2, 1, 0):
            d = cotangents[i]
            torch.mm(transposed[i], outs[i - 1] if i else x, out=grads[2 * i])
            torch.sum(d, 0, out=grads[2 * i + 1])
            if i:
                torch.mm(d, w[i], out=dxs[i])
                _threshold_backward(dxs[i], outs[i - 1], 0, grad_input=dxs[i])
        new_buffers = torch._foreach_mul(buffers, momentum)
        torch._foreach_add_(new_buffers, grads)
        carry[0] = torch._foreach_add(leaves, new_buffers, alpha=-0.01)
        carry[1] = new_buffers
        return value

    step.leaves = lambda: carry[0]  # for the check that it computes the step's numbers
    return step


def _check_same_numbers(batch: int) -> None:
    """Three steps of the floor give train_step's loss and params bit for bit (else it
    would time something else)."""
    _, _, params = make_fnn_steps(batch, "mse", "sgd")
    floor = make_kernel_floor(batch, params)
    model = fnn.serial(*[layer for _ in range(3) for layer in (L.Dense(25), L.Relu())], L.Dense(2))
    opt = fnn.optim.sgd(lr=0.01, momentum=0.9)
    step = fnn.train_step(model.apply, fnn.losses.mse, opt)
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    target = fnn.data.one_hot(labels, 2)
    state = opt.init(params)
    for _ in range(3):
        value, params, state = step(params, state, x, target)
        assert torch.equal(value, floor())
    ours = [params[k][leaf] for k in ("0", "2", "4", "6") for leaf in ("weight", "bias")]
    assert all(torch.equal(a, b) for a, b in zip(ours, floor.leaves()))


def main() -> dict[str, float]:
    pin_threads(1)
    ratios = {}
    for batch in BATCHES[:3]:
        _check_same_numbers(batch)
        train_step, _, params = make_fnn_steps(batch, "mse", "sgd")
        torch_step = make_torch_step(batch, "mse", "sgd", params)
        floor = make_kernel_floor(batch, params)
        times = compare(
            {
                "torch eager + autograd": torch_step,
                "fnn.train_step": train_step,
                "kernels alone": floor,
            },
            number=20,
            repeats=25,
        )
        r = report(
            f"disk MLP, MSE, SGD momentum, batch {batch}", times, baseline="torch eager + autograd"
        )
        ratios[batch] = (r["fnn.train_step"], r["kernels alone"])
    print("\nsummary (speed-up over torch eager + autograd + torch.optim, one thread):")
    print(f"  {'batch':>5} {'train_step':>11} {'kernels alone':>14} {'target':>7}")
    for batch, (fast, floor) in ratios.items():
        print(f"  {batch:>5} {fast:10.2f}× {floor:13.2f}× {TARGETS[batch]:6.1f}×")
    return {f"batch {b}": v[1] for b, v in ratios.items()}


if __name__ == "__main__":
    main()
