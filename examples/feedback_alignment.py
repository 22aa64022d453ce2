"""The disk task trained with feedback alignment, next to the same network trained by backprop.

Feedback alignment (Lillicrap et al., 2016) sends the error down through fixed
random matrices B instead of the transposed weights: each hidden Dense layer gets
`dx = dy B`, while its own `dW = dyᵀ x`, `db = Σₙ dy` are as usual. In fnn that is
a swapped backward rule, `fnn.rules.feedback_alignment(out_features, key)`.

    python examples/feedback_alignment.py               # 500 epochs, seed 0
    python examples/feedback_alignment.py --epochs 100 --seed 1

Recipe (examples/disk.py's): MLP 2→25→25→25→2 with ReLU, MSE on one-hot targets,
SGD momentum 0.9, learning rate 0.1 decaying linearly to 0, batch 100,
1000 train / 1000 test points.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch

import fnn
from fnn import layers as L

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from disk import error_rate, linear_decay, make_data


def make_model(rule: str, key: fnn.Key) -> fnn.Layer:
    """The disk MLP; with rule "feedback_alignment" every Dense gets its own fixed B."""
    if rule == "backprop":
        dense = [L.Dense(n) for n in (25, 25, 25, 2)]
    else:
        keys = fnn.random.split(key, 4)
        dense = [fnn.rules.feedback_alignment(n, k) for n, k in zip((25, 25, 25, 2), keys)]
    return fnn.serial(dense[0], L.Relu(), dense[1], L.Relu(), dense[2], L.Relu(), dense[3])


def train(rule: str, args, data) -> tuple[float, float, float]:
    """(train error, test error, seconds) of one run; both rules start from the same weights."""
    (x_train, y_train), (x_test, y_test) = data
    init_key, shuffle_key, feedback_key = fnn.random.split(fnn.random.key(args.seed), 3)
    init, apply = make_model(rule, feedback_key)
    _, params = init(init_key, (-1, 2))
    steps = args.epochs * -(-len(x_train) // args.batch_size)
    opt = fnn.optim.sgd(lr=linear_decay(args.lr, steps), momentum=0.9)
    state = opt.init(params)
    loss_and_grads = fnn.value_and_grad(apply, fnn.losses.mse)
    targets = fnn.data.one_hot(y_train, 2)
    start = time.perf_counter()
    for epoch_key in fnn.random.split(shuffle_key, args.epochs):
        for xb, tb in fnn.data.batches(epoch_key, x_train, targets, batch_size=args.batch_size):
            _, grads = loss_and_grads(params, xb, tb)
            params, state = opt.update(params, grads, state)
    seconds = time.perf_counter() - start
    return (
        error_rate(apply, params, x_train, y_train),
        error_rate(apply, params, x_test, y_test),
        seconds,
    )


def main(argv=None) -> dict[str, tuple[float, float, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = make_data(args.seed, 1000, 1000)
    print(
        f"disk task, MLP 2→25→25→25→2, relu, mse, momentum 0.9, lr {args.lr} → 0, batch "
        f"{args.batch_size}, {args.epochs} epochs, seed {args.seed}"
    )
    results = {}
    for rule in ("backprop", "feedback_alignment"):
        results[rule] = train_error, test_error, seconds = train(rule, args, data)
        print(
            f"  {rule:<19} train error {100 * train_error:5.2f} %  test error {100 * test_error:5.2f} %"
            f"  ({seconds:.1f} s)"
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
