"""CNN benchmarks: the digits CNN train step, and one conv layer's forward + VJP.

    python -m tests.benchmarks.run_all cnn

1. Digits CNN (examples/digits.py's model, imported from there: conv3×3(32)–BN–ReLU–
   maxpool–conv3×3(64)–BN–ReLU–maxpool–linear on 1×8×8 images), train step = forward, cross-entropy,
   VJP, SGD-momentum update, BatchNorm state updated; batch 32 and 256, one
   thread. Baseline: the same torch.nn.Sequential + autograd + torch.optim.SGD
   from the same weights, in torch's default (NCHW) layout; a channels-last
   torch model is timed too, for reference.
2. One Conv(64, 3, padding=1) on (64, 64, 32, 32): fnn's forward + VJP (dx, dW,
   db) vs torch autograd's forward + backward computing the same three, two threads.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from ._timing import compare, pin_threads, report


def _digits_example():
    """examples/digits.py as a module, for its model (sklearn is imported only to load data)."""
    path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "digits.py"
    spec = importlib.util.spec_from_file_location("digits_example", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def digits_steps(batch: int):
    example = _digits_example()
    model = example.make_model()
    _, params = model.init(fnn.random.key(0), (-1, 1, 8, 8))
    state = fnn.init_state(model, (-1, 1, 8, 8))
    x = fnn.random.uniform(fnn.random.key(1), (batch, 1, 8, 8))
    labels = fnn.random.randint(fnn.random.key(2), (batch,), 0, 10)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    opt = fnn.optim.sgd(lr=0.05, momentum=0.9)
    carry = [params, opt.init(params), state]
    fast = [params, opt.init(params), state]
    step = fnn.train_step(model.apply, fnn.losses.cross_entropy, opt)

    def fnn_step():
        value, grads, carry[2] = loss_and_grads(carry[0], x, labels, state=carry[2], train=True)
        carry[0], carry[1] = opt.update(carry[0], grads, carry[1])
        return value

    def fnn_train_step():
        value, fast[0], fast[1], fast[2] = step(
            fast[0], fast[1], x, labels, state=fast[2], train=True
        )
        return value

    def torch_step_for(memory_format: torch.memory_format):
        seq = example.make_torch_model()
        seq.load_state_dict(fnn.tree.to_state_dict(params) | fnn.tree.to_state_dict(state))
        seq = seq.to(memory_format=memory_format)
        xt = x.contiguous(memory_format=memory_format)
        opt_t = torch.optim.SGD(seq.parameters(), lr=0.05, momentum=0.9)

        def step():
            with torch.enable_grad():
                opt_t.zero_grad()
                value = F.cross_entropy(seq(xt), labels)
                value.backward()
                opt_t.step()
            return value

        return step

    return {
        "torch.nn (NCHW)": torch_step_for(torch.contiguous_format),
        "torch.nn (channels_last)": torch_step_for(torch.channels_last),
        "fnn.train_step": fnn_train_step,
        "fnn value_and_grad+update": fnn_step,
    }


def conv_layer_steps():
    init, apply = L.Conv(64, 3, padding=1)
    _, params = init(fnn.random.key(0), (-1, 64, 32, 32))
    x = fnn.random.normal(fnn.random.key(1), (64, 64, 32, 32))
    dy = fnn.random.normal(fnn.random.key(2), (64, 64, 32, 32))
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    conv.load_state_dict(params)
    xr = x.clone().requires_grad_(True)

    def fnn_step():
        _y, vjp = apply(params, x)
        return vjp(dy)

    def torch_step():
        with torch.enable_grad():
            conv.zero_grad(set_to_none=True)
            xr.grad = None
            conv(xr).backward(dy)
        return xr.grad

    return {"torch autograd": torch_step, "fnn": fnn_step}


def main() -> None:
    pin_threads(1)
    for batch in (32, 256):
        number = 20 if batch == 32 else 4
        report(
            f"digits CNN train step, batch {batch} (1 thread)",
            compare(digits_steps(batch), number=number, repeats=15),
            baseline="torch.nn (NCHW)",
        )
    pin_threads(2)
    report(
        "Conv(64, 3, padding=1) forward + VJP, x (64, 64, 32, 32) (2 threads)",
        compare(conv_layer_steps(), number=1, repeats=11, warmup=2),
        baseline="torch autograd",
    )


if __name__ == "__main__":
    main()
