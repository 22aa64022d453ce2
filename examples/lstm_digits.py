"""sklearn's handwritten digits read row by row by an LSTM built with fnn.

    python examples/lstm_digits.py                  # the default recipe, seed 0
    python examples/lstm_digits.py --compare-torch  # the same run in torch.nn.LSTM + autograd

Data: the 1797 8×8 images of `sklearn.datasets.load_digits` (bundled: no download),
pixels scaled to [0, 1], split 80/20 stratified with `random_state=0` (1437 train,
360 test). Each image is a sequence of T = 8 rows of C = 8 pixels, batch first
(N, 8, 8). Model: `LSTM(64)` → the last time step's output → `Dense(10)`; cross-entropy,
Adam lr 0.01, batch 32, 12 epochs.

The last-step layer is written here as a custom layer, `Layer(init, apply)` with its own
module-level backward: the VJP of `y[:, -1]` puts `dy` in the last time step.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import torch

import fnn
from fnn import layers as L

INPUT_SHAPE = (-1, 8, 8)  # (N, T rows, C pixels)


@dataclass
class Run:
    """What one training run produced."""

    params: dict
    step_losses: list[float] = field(default_factory=list)
    test_accuracy: float = 0.0
    seconds: float = 0.0
    torch_gap: float | None = None  # max |loss_fnn − loss_torch| with --compare-torch


def LastStep() -> fnn.Layer:
    """(N, T, H) → (N, H): the output of the last time step."""

    def init(key, input_shape, *, dtype=torch.float32, device="cpu"):
        return (input_shape[0], *input_shape[2:]), {}

    def apply(params, x, **kwargs):
        return x[:, -1], fnn.VJP(last_step_backward, x.shape)

    return fnn.Layer(init, apply)


# y = x[:, −1]   ⇒   dx = 0 except dx[:, −1] = dy
def last_step_backward(shape, dy):
    dx = dy.new_zeros(shape)
    dx[:, -1] = dy
    return {}, dx


def make_model(hidden: int) -> fnn.Layer:
    return fnn.serial(L.LSTM(hidden), LastStep(), L.Dense(10))


class _TorchLastStep(torch.nn.Module):
    def forward(self, x):
        return x[:, -1]


class _TorchLSTM(torch.nn.LSTM):
    def forward(self, x):
        return super().forward(x)[0]


def make_torch_model(hidden: int) -> torch.nn.Sequential:
    """The same model in torch.nn: its `state_dict()` names are fnn's params."""
    return torch.nn.Sequential(
        _TorchLSTM(8, hidden, batch_first=True), _TorchLastStep(), torch.nn.Linear(hidden, 10)
    )


def load_data(limit: int | None = None):
    """`((x_train, y_train), (x_test, y_test))`: x float32 (n, 8, 8) in [0, 1], y int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # (n, 8 rows, 8 pixels)
    y = torch.tensor(digits.target, dtype=torch.int64)
    train, test = train_test_split(
        range(len(y)), test_size=0.2, stratify=digits.target, random_state=0
    )
    train, test = torch.tensor(train[:limit]), torch.tensor(test)
    return (x[train], y[train]), (x[test], y[test])


def accuracy(apply, params, x, y) -> float:
    logits, _ = apply(params, x)
    return (logits.argmax(1) == y).float().mean().item()


def train_fnn(args, data, log=print) -> Run:
    (x_train, y_train), (x_test, y_test) = data
    init_key, shuffle_key = fnn.random.split(fnn.random.key(args.seed))
    init, apply = make_model(args.hidden)
    _, params = init(init_key, INPUT_SHAPE)
    run = Run(params=params)
    opt = fnn.optim.adam(lr=args.lr)
    opt_state = opt.init(params)
    loss_and_grads = fnn.value_and_grad(apply, fnn.losses.cross_entropy)
    start, eval_seconds = time.perf_counter(), 0.0
    for epoch, epoch_key in enumerate(fnn.random.split(shuffle_key, args.epochs)):
        losses = []
        for xb, yb in fnn.data.batches(epoch_key, x_train, y_train, batch_size=args.batch_size):
            loss, grads = loss_and_grads(params, xb, yb)
            params, opt_state = opt.update(params, grads, opt_state)
            losses.append(loss)
        run.step_losses += torch.stack(losses).tolist()
        if log:
            eval_start = time.perf_counter()
            test_accuracy = accuracy(apply, params, x_test, y_test)
            eval_seconds += time.perf_counter() - eval_start
            log(
                f"epoch {epoch + 1:3d}  loss {sum(run.step_losses[-len(losses) :]) / len(losses):.4f}  "
                f"test acc {100 * test_accuracy:6.2f} %  ({time.perf_counter() - start:.1f} s)"
            )
    run.seconds = time.perf_counter() - start - eval_seconds
    run.params = params
    run.test_accuracy = accuracy(apply, params, x_test, y_test)
    return run


def train_torch(args, data, initial_params) -> Run:
    """The same run in torch.nn.LSTM + autograd + torch.optim.Adam: same weights, same batches."""
    (x_train, y_train), (x_test, y_test) = data
    _, shuffle_key = fnn.random.split(fnn.random.key(args.seed))
    model = make_torch_model(args.hidden)
    model.load_state_dict(fnn.tree.to_state_dict(initial_params))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    run = Run(params={})
    start = time.perf_counter()
    with torch.enable_grad():
        for epoch_key in fnn.random.split(shuffle_key, args.epochs):
            losses = []
            for xb, yb in fnn.data.batches(epoch_key, x_train, y_train, batch_size=args.batch_size):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
            run.step_losses += torch.stack(losses).tolist()
    run.seconds = time.perf_counter() - start
    with torch.no_grad():
        run.test_accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return run


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64, help="the LSTM's hidden size")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate")
    parser.add_argument(
        "--n-train", type=int, default=None, help="use only the first N training images"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--compare-torch", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> Run:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data(args.n_train)
    print(
        f"digits read row by row: {len(data[0][1])} train / {len(data[1][1])} test sequences of "
        f"8 steps × 8 pixels; LSTM({args.hidden}) → last step → Dense(10), Adam lr {args.lr}, "
        f"batch {args.batch_size}, {args.epochs} epochs"
    )
    run = train_fnn(args, data)
    print(f"fnn: test accuracy {100 * run.test_accuracy:6.2f} %  ({run.seconds:.1f} s training)")
    if args.compare_torch:
        _, initial = make_model(args.hidden).init(
            fnn.random.split(fnn.random.key(args.seed))[0], INPUT_SHAPE
        )
        reference = train_torch(args, data, initial)
        gaps = [abs(a - b) for a, b in zip(run.step_losses, reference.step_losses)]
        steps_per_epoch = -(-len(data[0][1]) // args.batch_size)
        print(
            f"torch.nn.LSTM + autograd: test accuracy {100 * reference.test_accuracy:6.2f} %  "
            f"({reference.seconds:.1f} s training)"
        )
        print(
            f"max |loss_fnn − loss_torch|: {max(gaps[:steps_per_epoch]):.2e} over the first epoch, "
            f"{max(gaps):.2e} over all {len(gaps)} steps (float32 rounding, amplified by training)"
        )
        run.torch_gap = max(gaps)
    return run


if __name__ == "__main__":
    main(sys.argv[1:])
