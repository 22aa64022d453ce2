"""sklearn's handwritten digits (8×8, bundled: no download), classified by a CNN built with fnn.

    python examples/digits.py                    # the default recipe, seed 0
    python examples/digits.py --seeds 5          # seeds 0..4: per-seed and mean test accuracy
    python examples/digits.py --compare-torch    # same run in torch.nn + autograd, same weights
    python examples/digits.py --baselines        # sklearn MLP, k-NN, RBF-SVM on the same split
    python examples/digits.py --plot out/        # confusion matrix and loss curve (PNG)

A one-line progress bar (loss, steps/s) shows on a terminal when tqdm is installed (the
`examples` extra); `--progress`/`--no-progress` force it on or off.

Data: the 1797 images of `sklearn.datasets.load_digits`, pixels scaled to
[0, 1], split 80/20 stratified with `random_state=0` (1437 train, 360 test).
Model: conv3×3(32)–BatchNorm–ReLU–maxpool2 → conv3×3(64)–BatchNorm–ReLU–maxpool2
→ linear(10), "same" padding. Recipe: cross-entropy, SGD momentum 0.9, lr
0.05 decaying linearly to 0, weight decay 5e-4, batch 32, 15 epochs.

BatchNorm's running statistics are an explicit state: `fnn.init_state` makes
it, each training step takes and returns it (`train=True`), and evaluation
reads it (`train=False`); see docs/state.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

import fnn
from fnn import layers as L

INPUT_SHAPE = (-1, 1, 8, 8)


@dataclass
class Run:
    """What one training run produced."""

    params: dict
    state: dict
    step_losses: list[float] = field(default_factory=list)
    test_accuracy: float = 0.0
    confusion: torch.Tensor | None = None
    seconds: float = 0.0
    torch_gap: float | None = None  # max |loss_fnn − loss_torch| with --compare-torch


def make_model() -> fnn.Layer:
    return fnn.serial(
        L.Conv(32, 3, padding=1), L.BatchNorm(), L.Relu(), L.MaxPool(2),
        L.Conv(64, 3, padding=1), L.BatchNorm(), L.Relu(), L.MaxPool(2),
        L.Flatten(), L.Dense(10),
    )  # fmt: skip


def make_torch_model() -> torch.nn.Sequential:
    """The same architecture in torch.nn: its `state_dict()` names are fnn's params and state."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 10),
    )  # fmt: skip


def load_data(limit: int | None = None):
    """`((x_train, y_train), (x_test, y_test))`: x float32 (n, 1, 8, 8) in [0, 1], y int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    train, test = train_test_split(
        range(len(y)), test_size=0.2, stratify=digits.target, random_state=0
    )
    train, test = torch.tensor(train[:limit]), torch.tensor(test)
    return (x[train], y[train]), (x[test], y[test])


def linear_decay(lr: float, total_steps: int):
    """lr · (1 − step / total): from lr at the first step to 0 after the last."""

    def schedule(step: int) -> float:
        return lr * (1.0 - step / total_steps)

    return schedule


def predict(apply, params, state, x: torch.Tensor) -> torch.Tensor:
    """Class predictions in evaluation mode (BatchNorm uses its running statistics)."""
    logits, _, _ = apply(params, x, state=state, train=False)
    return logits.argmax(1)


def confusion_matrix(
    labels: torch.Tensor, predicted: torch.Tensor, classes: int = 10
) -> torch.Tensor:
    """`m[i, j]`: how many test images of digit i were predicted as j."""
    return torch.bincount(labels * classes + predicted, minlength=classes * classes).reshape(
        classes, classes
    )


def progress_bar(enabled: bool | None, total: int, desc: str):
    """A one-line tqdm bar on stderr (steps/s and the loss), or None without tqdm.

    `enabled=None` shows it only when stderr is a terminal; True or False force it.
    """
    if enabled is False:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is in the `examples` extra; without it, no bar
        return None
    return tqdm(
        total=total,
        desc=desc,
        unit="step",
        disable=None if enabled is None else False,
        leave=True,  # the finished bar stays: steps, time, steps/s, last loss
        dynamic_ncols=True,
    )


def train_fnn(args, seed: int, data, log=print) -> Run:
    (x_train, y_train), (x_test, y_test) = data
    init_key, shuffle_key = fnn.random.split(fnn.random.key(seed))
    init, apply = model = make_model()
    _, params = init(init_key, INPUT_SHAPE)
    state = fnn.init_state(model, INPUT_SHAPE)  # BatchNorm's running mean/var, nested like params
    run = Run(params=params, state=state)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    opt = fnn.optim.sgd(
        lr=linear_decay(args.lr, args.epochs * steps_per_epoch),
        momentum=0.9,
        weight_decay=args.weight_decay,
    )
    opt_state = opt.init(params)
    loss_and_grads = fnn.value_and_grad(apply, fnn.losses.cross_entropy, has_aux=True)
    bar = progress_bar(args.progress, args.epochs * steps_per_epoch, f"fnn, seed {seed}")
    if log and bar is not None:
        log = bar.write  # log lines above the bar, not through it

    start, eval_seconds = time.perf_counter(), 0.0
    for epoch, epoch_key in enumerate(fnn.random.split(shuffle_key, args.epochs)):
        losses, correct = [], 0
        for xb, yb in fnn.data.batches(epoch_key, x_train, y_train, batch_size=args.batch_size):
            (loss, logits), grads, state = loss_and_grads(params, xb, yb, state=state, train=True)
            params, opt_state = opt.update(params, grads, opt_state)
            losses.append(loss)
            correct += int((logits.argmax(1) == yb).sum())
            if bar is not None:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
                bar.update()
        run.step_losses += torch.stack(losses).tolist()
        if log:
            eval_start = time.perf_counter()
            test_accuracy = (predict(apply, params, state, x_test) == y_test).float().mean().item()
            eval_seconds += time.perf_counter() - eval_start
            log(
                f"epoch {epoch + 1:3d}  loss {sum(run.step_losses[-len(losses) :]) / len(losses):.4f}  "
                f"train acc {100 * correct / len(y_train):6.2f} %  test acc {100 * test_accuracy:6.2f} %  "
                f"({time.perf_counter() - start:.1f} s)"
            )
    run.seconds = (
        time.perf_counter() - start - eval_seconds
    )  # training only, as train_torch times it
    if bar is not None:
        bar.close()
    run.params, run.state = params, state
    predicted = predict(apply, params, state, x_test)
    run.test_accuracy = (predicted == y_test).float().mean().item()
    run.confusion = confusion_matrix(y_test, predicted)
    return run


def train_torch(args, seed: int, data, initial_params, initial_state) -> Run:
    """The same run in torch.nn + autograd + torch.optim, from the same weights and batches."""
    (x_train, y_train), (x_test, y_test) = data
    _, shuffle_key = fnn.random.split(fnn.random.key(seed))
    model = make_torch_model()
    model.load_state_dict(
        fnn.tree.to_state_dict(initial_params) | fnn.tree.to_state_dict(initial_state)
    )
    opt = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay
    )
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    schedule = linear_decay(args.lr, args.epochs * steps_per_epoch)
    run = Run(params={}, state={})
    step = 0
    bar = progress_bar(args.progress, args.epochs * steps_per_epoch, f"torch, seed {seed}")
    start = time.perf_counter()
    with torch.enable_grad():
        for epoch_key in fnn.random.split(shuffle_key, args.epochs):
            model.train()
            losses = []
            for xb, yb in fnn.data.batches(epoch_key, x_train, y_train, batch_size=args.batch_size):
                for group in opt.param_groups:
                    group["lr"] = schedule(step)
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
                step += 1
                if bar is not None:
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
                    bar.update()
            run.step_losses += torch.stack(losses).tolist()
    run.seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    model.eval()
    with torch.no_grad():
        run.test_accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return run


def baselines(data) -> None:
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    (x_train, y_train), (x_test, y_test) = ((x.flatten(1).numpy(), y.numpy()) for x, y in data)
    for name, model in [
        ("sklearn MLPClassifier(100)", MLPClassifier(max_iter=1000, random_state=0)),
        ("sklearn k-NN (k=5)", KNeighborsClassifier()),
        ("sklearn SVC(rbf)", SVC()),
    ]:
        model.fit(x_train, y_train)
        print(f"  {name:<28} test accuracy {100 * model.score(x_test, y_test):6.2f} %")


def print_confusion(matrix: torch.Tensor) -> None:
    print("confusion matrix (rows: true digit, columns: predicted):")
    print("      " + "".join(f"{j:4d}" for j in range(matrix.shape[1])))
    for i, row in enumerate(matrix.tolist()):
        print(f"  {i:2d}  " + "".join(f"{v:4d}" if v else "   ." for v in row))


def plot(
    directory: str, seed: int, run: Run, steps_per_epoch: int, reference: Run | None = None
) -> list:
    """Write confusion_matrix.png and loss_curve.png to `directory`; return their paths.

    `reference` (the torch.nn run of --compare-torch) adds torch's loss curve.
    """
    import pathlib

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    matrix = run.confusion
    classes = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(6, 5.2))
    image = ax.imshow(matrix.numpy(), cmap="Blues")
    fig.colorbar(image, ax=ax, label="test images")
    for i in range(classes):
        for j in range(classes):
            count = int(matrix[i, j])
            if count:
                light = count > 0.6 * int(matrix.max())
                ax.text(j, i, count, ha="center", va="center", color="white" if light else "black")
    ax.set(
        title=f"digits, seed {seed}: test accuracy {100 * run.test_accuracy:.2f} %",
        xlabel="predicted digit",
        ylabel="true digit",
        xticks=range(classes),
        yticks=range(classes),
    )
    fig.savefig(out / "confusion_matrix.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    steps = range(1, len(run.step_losses) + 1)
    ax.semilogy(steps, run.step_losses, lw=1, alpha=0.6, label="fnn, each step")
    epoch_ends = range(steps_per_epoch, len(run.step_losses) + 1, steps_per_epoch)
    epoch_means = [
        statistics.mean(run.step_losses[end - steps_per_epoch : end]) for end in epoch_ends
    ]
    ax.semilogy(epoch_ends, epoch_means, "o-", lw=2, color="C1", label="fnn, epoch mean")
    if reference is not None:
        ax.semilogy(
            steps,
            reference.step_losses,
            ls="--",
            lw=1,
            color="black",
            label=f"torch.nn + autograd (max gap {run.torch_gap:.1e})",
        )
    ax.set(
        title=f"digits, seed {seed}: training loss per step",
        xlabel="step (batch)",
        ylabel="cross-entropy (log scale)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(out / "loss_curve.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    paths = [out / "confusion_matrix.png", out / "loss_curve.png"]
    print(f"wrote {paths[0]} and {paths[1]}")
    return paths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds", type=int, default=None, help="run seeds 0..N-1, print each and the mean"
    )
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--lr", type=float, default=0.05, help="initial learning rate (decays linearly to 0)"
    )
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument(
        "--n-train", type=int, default=None, help="use only the first N training images"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest for this size)"
    )
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument("--baselines", action="store_true")
    parser.add_argument(
        "--plot", metavar="DIR", default=None, help="write the confusion matrix and loss curve"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a one-line progress bar on stderr (default: when stderr is a terminal)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds)) if args.seeds else [args.seed]
    data = load_data(args.n_train)
    print(
        f"digits: {len(data[0][1])} train / {len(data[1][1])} test images; CNN with BatchNorm, "
        f"SGD momentum lr {args.lr} → 0, batch {args.batch_size}, {args.epochs} epochs"
    )
    if args.baselines:
        baselines(data)
    results = {}
    for seed in seeds:
        run = train_fnn(args, seed, data, log=print if len(seeds) == 1 else None)
        results[seed] = run
        print(f"seed {seed}: test accuracy {100 * run.test_accuracy:6.2f} %  ({run.seconds:.1f} s)")
        if len(seeds) == 1:
            print_confusion(run.confusion)
        reference = None  # the torch.nn run, with --compare-torch
        if args.compare_torch:
            model = make_model()
            _, init_params = model.init(fnn.random.split(fnn.random.key(seed))[0], INPUT_SHAPE)
            reference = train_torch(
                args, seed, data, init_params, fnn.init_state(model, INPUT_SHAPE)
            )
            gaps = [abs(a - b) for a, b in zip(run.step_losses, reference.step_losses)]
            steps_per_epoch = -(-len(data[0][1]) // args.batch_size)
            print(
                f"  torch.nn + autograd: test accuracy {100 * reference.test_accuracy:6.2f} %  "
                f"({reference.seconds:.1f} s; fnn {reference.seconds / run.seconds:.2f}× faster)"
            )
            print(
                f"  max |loss_fnn − loss_torch|: {max(gaps[:steps_per_epoch]):.2e} over the first epoch, "
                f"{max(gaps):.2e} over all {len(gaps)} steps (float32 rounding, amplified by training)"
            )
            run.torch_gap = max(gaps)
        if args.plot:
            steps_per_epoch = -(-len(data[0][1]) // args.batch_size)
            plot(args.plot, seed, run, steps_per_epoch, reference)
    if len(seeds) > 1:
        accuracies = [100 * r.test_accuracy for r in results.values()]
        print(
            "test accuracy over seeds 0.."
            + f"{len(seeds) - 1}: "
            + ", ".join(f"{a:.2f}" for a in accuracies)
            + f" → mean {statistics.mean(accuracies):.2f} %, min {min(accuracies):.2f} %, "
            f"mean time {statistics.mean(r.seconds for r in results.values()):.1f} s"
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
