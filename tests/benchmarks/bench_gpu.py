"""CUDA: train steps equal the CPU's, and a CUDA-graph train step against torch eager.

    python -m tests.benchmarks.run_all gpu

Prepared for a machine with an NVIDIA GPU (issue 14's GPU check); elsewhere it says so
and does nothing.

1. Equality: five steps of the disk MLP (float32 and float64; SGD momentum, MSE and
   cross-entropy) and of the digits CNN (BatchNorm state, cross-entropy) with
   `fnn.train_step` and with `value_and_grad` + `update`, on CUDA and on the CPU from the
   same params; prints the largest deviation and asserts float tolerance.
2. Speed: the disk MLP at batch 100, SGD momentum 0.9, MSE. fnn's step is a pure function
   of its inputs, so `torch.cuda.graphs` captures one call whole (static inputs; each
   replay is followed by copying the new params and momentum into them); against
   torch.nn + autograd + torch.optim.SGD in eager mode and fnn's eager step. Each timed
   step ends with `torch.cuda.synchronize()`, so the figures are per-step latencies.
   The captured state's step count stays at 1 (SGD momentum does not read it after the
   first step, and the learning rate is constant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from ..helpers import torch_disk_mlp
from ._timing import compare, report


def _disk_model():
    return fnn.serial(
        L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
    )


def _to(tree, device):
    return fnn.tree.map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def _deviation(a, b) -> float:
    worst = 0.0
    for u, v in zip(fnn.tree.leaves(a), fnn.tree.leaves(b)):
        if isinstance(u, torch.Tensor):
            scale = max(1.0, v.abs().max().item()) if v.numel() else 1.0
            worst = max(worst, (u.cpu() - v.cpu()).abs().max().item() / scale)
    return worst


def _five_steps(step, params, opt_state, x, target, **kwargs):
    for _ in range(5):
        out = step(params, opt_state, x, target, **kwargs)
        params, opt_state = out[1], out[2]
        if "state" in kwargs:
            kwargs["state"] = out[3]
    return out


def equality(device: str = "cuda") -> None:
    opt = fnn.optim.sgd(lr=0.05, momentum=0.9)
    cases = []
    for dtype in (torch.float32, torch.float64):
        model = _disk_model()
        _, params = model.init(fnn.random.key(0), (-1, 2), dtype=dtype)
        x, labels = fnn.data.disk(fnn.random.key(1), 100)
        x = x.to(dtype)
        cases.append(
            (
                f"disk MLP, MSE, {dtype}",
                model,
                fnn.losses.mse,
                params,
                x,
                fnn.data.one_hot(labels, 2).to(dtype),
                {},
            )
        )
        cases.append(
            (
                f"disk MLP, cross-entropy, {dtype}",
                model,
                fnn.losses.cross_entropy,
                params,
                x,
                labels,
                {},
            )
        )
    cnn = fnn.serial(
        L.Conv(8, 3, padding=1),
        L.BatchNorm(),
        L.Relu(),
        L.MaxPool(2),
        L.Flatten(),
        L.Dense(10),
    )
    _, cnn_params = cnn.init(fnn.random.key(0), (-1, 1, 8, 8))
    state = fnn.init_state(cnn, (-1, 1, 8, 8))
    images = fnn.random.uniform(fnn.random.key(1), (32, 1, 8, 8))
    digits = fnn.random.randint(fnn.random.key(2), (32,), 0, 10)
    cases.append(
        (
            "digits-style CNN, BatchNorm",
            cnn,
            fnn.losses.cross_entropy,
            cnn_params,
            images,
            digits,
            {"state": state, "train": True},
        )
    )
    print(f"\n{device} against CPU, five steps from the same params (largest relative deviation)")
    for name, model, loss, params, x, target, kwargs in cases:
        step = fnn.train_step(model.apply, loss, opt)
        vg = fnn.value_and_grad(model.apply, loss)

        def plain(p, s, x, t, **kw):
            out = vg(p, x, t, **kw)
            new_p, new_s = opt.update(p, out[1], s)
            return (out[0], new_p, new_s, *out[2:])

        tolerance = 1e-4 if x.dtype is torch.float32 else 1e-10
        for how, fn in (("train_step", step), ("value_and_grad + update", plain)):
            cpu = _five_steps(fn, params, opt.init(params), x, target, **dict(kwargs))
            gpu_kwargs = _to(dict(kwargs), device)
            gpu_params = _to(params, device)
            gpu = _five_steps(
                fn, gpu_params, opt.init(gpu_params), x.to(device), target.to(device), **gpu_kwargs
            )
            worst = _deviation(gpu, cpu)
            print(f"  {name:<40} {how:<26} {worst:.2e}")
            assert worst <= tolerance, f"{name}, {how}: {device} deviates from the CPU by {worst}"


def speed() -> dict[str, float]:
    batch = 100
    model = _disk_model()
    _, params = model.init(fnn.random.key(0), (-1, 2), device="cuda")
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    x, target = x.cuda(), fnn.data.one_hot(labels, 2).cuda()
    opt = fnn.optim.sgd(lr=0.01, momentum=0.9)
    step = fnn.train_step(model.apply, fnn.losses.mse, opt)
    _, params, opt_state = step(params, opt.init(params), x, target)  # past the first step

    # static inputs: the graph reads these and writes its outputs into its own memory
    static = fnn.tree.map(
        lambda t: t.clone() if isinstance(t, torch.Tensor) else t, (params, opt_state)
    )
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up off the capture
            step(static[0], static[1], x, target)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _, new_params, new_state = step(static[0], static[1], x, target)
    inputs = [t for t in fnn.tree.leaves(static) if isinstance(t, torch.Tensor)]
    outputs = [t for t in fnn.tree.leaves((new_params, new_state)) if isinstance(t, torch.Tensor)]

    def graphed():
        graph.replay()
        torch._foreach_copy_(inputs, outputs)  # the next step starts from this one's result
        torch.cuda.synchronize()

    eager_carry = [params, opt_state]

    def fnn_eager():
        _, eager_carry[0], eager_carry[1] = step(eager_carry[0], eager_carry[1], x, target)
        torch.cuda.synchronize()

    seq = torch_disk_mlp(_to(params, "cpu")).cuda()
    torch_opt = torch.optim.SGD(seq.parameters(), lr=0.01, momentum=0.9)

    def torch_eager():
        with torch.enable_grad():
            torch_opt.zero_grad()
            F.mse_loss(seq(x), target).backward()
            torch_opt.step()
        torch.cuda.synchronize()

    times = compare(
        {
            "torch eager + autograd": torch_eager,
            "fnn.train_step (eager)": fnn_eager,
            "fnn.train_step, CUDA graph": graphed,
        },
        number=50,
        repeats=25,
    )
    return report(
        f"disk MLP train step on {torch.cuda.get_device_name()}, batch {batch}, MSE, "
        "SGD momentum 0.9",
        times,
        baseline="torch eager + autograd",
    )


def main() -> dict[str, float]:
    if not torch.cuda.is_available():
        print("no CUDA device here: the GPU checks did not run")
        return {}
    equality()
    return speed()


if __name__ == "__main__":
    main()
