"""The disk task, trained with fnn: an MLP 2→25→25→25→2 learns whether a point of
[0, 1]² lies inside the disk of centre (0.5, 0.5) and radius 1/√(2π).

    python examples/disk.py                      # the default recipe, seed 0
    python examples/disk.py --seeds 10           # seeds 0..9: median and max test error
    python examples/disk.py --compare-torch      # same run in torch.nn + autograd
    python examples/disk.py --baselines          # sklearn MLP, RBF-SVM, logistic regression
    python examples/disk.py --plot out/          # decision boundary and loss curves (PNG)
    python examples/disk.py --plot out/ --compare-torch   # fnn's and torch's loss curves

A one-line progress bar (loss, steps/s) shows on a terminal when tqdm is installed (the
`examples` extra); `--progress`/`--no-progress` force it on or off.

Default recipe: 1000 train / 1000 test points, ReLU, MSE on one-hot targets,
SGD with momentum 0.9, learning rate 0.1 decaying linearly to 0, batch 100,
500 epochs.
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

ACTIVATIONS = {"relu": L.Relu, "tanh": L.Tanh}
LOSSES = {"mse": fnn.losses.mse, "cross_entropy": fnn.losses.cross_entropy}
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.01}


@dataclass
class Run:
    """What one training run produced."""

    params: dict
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    train_error: float = 0.0
    test_error: float = 0.0
    seconds: float = 0.0
    torch_gap: float | None = None  # max |loss_fnn − loss_torch| with --compare-torch


def make_model(activation: str) -> fnn.Layer:
    act = ACTIVATIONS[activation]
    return fnn.serial(L.Dense(25), act(), L.Dense(25), act(), L.Dense(25), act(), L.Dense(2))


def make_optimizer(name: str, schedule) -> fnn.optim.Optimizer:
    if name == "sgd":
        return fnn.optim.sgd(lr=schedule)
    if name == "momentum":
        return fnn.optim.sgd(lr=schedule, momentum=0.9)
    return getattr(fnn.optim, name)(lr=schedule)


def targets_for(loss: str, labels: torch.Tensor) -> torch.Tensor:
    return fnn.data.one_hot(labels, 2) if loss == "mse" else labels


def error_rate(apply, params, x: torch.Tensor, labels: torch.Tensor) -> float:
    logits, _ = apply(params, x)
    return (logits.argmax(1) != labels).float().mean().item()


def linear_decay(lr: float, total_steps: int):
    """lr · (1 − step / total): from lr at the first step to 0 after the last."""

    def schedule(step: int) -> float:
        return lr * (1.0 - step / total_steps)

    return schedule


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


def advance(bar, steps: int, loss: float) -> None:
    """Move the bar on by one epoch's steps and show that epoch's mean loss."""
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.5f}", refresh=False)
        bar.update(steps)


def train_fnn(args, seed: int, data, log=print) -> Run:
    (x_train, y_train), (x_test, y_test) = data
    init_key, shuffle_key = fnn.random.split(fnn.random.key(seed))
    init, apply = make_model(args.activation)
    _, params = init(init_key, (-1, 2))
    run = Run(params=params)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    opt = make_optimizer(args.optimizer, linear_decay(args.lr, args.epochs * steps_per_epoch))
    state = opt.init(params)
    loss_and_grads = fnn.value_and_grad(apply, LOSSES[args.loss])
    targets = targets_for(args.loss, y_train)

    bar = progress_bar(args.progress, args.epochs * steps_per_epoch, f"fnn, seed {seed}")
    if log and bar is not None:
        log = bar.write  # log lines above the bar, not through it
    start = time.perf_counter()
    for epoch, epoch_key in enumerate(fnn.random.split(shuffle_key, args.epochs)):
        batch_losses = []
        for xb, tb in fnn.data.batches(epoch_key, x_train, targets, batch_size=args.batch_size):
            loss, grads = loss_and_grads(params, xb, tb)
            params, state = opt.update(params, grads, state)
            batch_losses.append(loss)
        losses = torch.stack(batch_losses).tolist()
        run.step_losses += losses
        run.epoch_losses.append(sum(losses) / len(losses))
        advance(bar, len(losses), run.epoch_losses[-1])
        if log and (epoch + 1) % args.log_every == 0:
            log(
                f"epoch {epoch + 1:4d}  loss {run.epoch_losses[-1]:.5f}  "
                f"train error {100 * error_rate(apply, params, x_train, y_train):5.2f} %  "
                f"test error {100 * error_rate(apply, params, x_test, y_test):5.2f} %"
            )
    run.seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    run.params = params
    run.train_error = error_rate(apply, params, x_train, y_train)
    run.test_error = error_rate(apply, params, x_test, y_test)
    return run


def train_torch(args, seed: int, data, initial_params) -> Run:
    """The same run in torch.nn + autograd + torch.optim, from the same weights and batches."""
    (x_train, y_train), (x_test, y_test) = data
    _, shuffle_key = fnn.random.split(fnn.random.key(seed))
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[args.activation]
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 25),
        act(),
        torch.nn.Linear(25, 25),
        act(),
        torch.nn.Linear(25, 25),
        act(),
        torch.nn.Linear(25, 2),
    )
    model.load_state_dict(fnn.tree.to_state_dict(initial_params))
    if args.optimizer not in ("sgd", "momentum"):
        raise SystemExit("--compare-torch supports --optimizer sgd and momentum")
    momentum = 0.9 if args.optimizer == "momentum" else 0.0
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=momentum)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    schedule = linear_decay(args.lr, args.epochs * steps_per_epoch)
    loss_fn = {
        "mse": torch.nn.functional.mse_loss,
        "cross_entropy": torch.nn.functional.cross_entropy,
    }[args.loss]
    targets = targets_for(args.loss, y_train)
    run = Run(params={})
    step = 0
    bar = progress_bar(args.progress, args.epochs * steps_per_epoch, f"torch, seed {seed}")
    start = time.perf_counter()
    with torch.enable_grad():
        for epoch_key in fnn.random.split(shuffle_key, args.epochs):
            batch_losses = []
            for xb, tb in fnn.data.batches(epoch_key, x_train, targets, batch_size=args.batch_size):
                for group in opt.param_groups:
                    group["lr"] = schedule(step)
                opt.zero_grad()
                loss = loss_fn(model(xb), tb)
                loss.backward()
                opt.step()
                batch_losses.append(loss.detach())
                step += 1
            losses = torch.stack(batch_losses).tolist()
            run.step_losses += losses
            run.epoch_losses.append(sum(losses) / len(losses))
            advance(bar, len(losses), run.epoch_losses[-1])
    run.seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    with torch.no_grad():
        run.train_error = (model(x_train).argmax(1) != y_train).float().mean().item()
        run.test_error = (model(x_test).argmax(1) != y_test).float().mean().item()
    return run


def make_data(seed: int, n_train: int, n_test: int):
    train_key, test_key = fnn.random.split(fnn.random.fold_in(fnn.random.key(seed), 0xD15C))
    return fnn.data.disk(train_key, n_train), fnn.data.disk(test_key, n_test)


def baselines(data) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    (x_train, y_train), (x_test, y_test) = data
    models = {
        "sklearn MLPClassifier(25, 25, 25)": MLPClassifier(
            (25, 25, 25), max_iter=2000, random_state=0
        ),
        "sklearn SVC(rbf)": SVC(kernel="rbf", C=10.0),
        "sklearn LogisticRegression": LogisticRegression(),
    }
    for name, model in models.items():
        model.fit(x_train.numpy(), y_train.numpy())
        error = 1.0 - model.score(x_test.numpy(), y_test.numpy())
        print(f"  {name:<36} test error {100 * error:5.2f} %")


def plot(directory: str, args, seed: int, run: Run, data, reference: Run | None = None) -> list:
    """Write decision_boundary.png and loss_curves.png to `directory`; return their paths.

    `reference` (the torch.nn run of --compare-torch) adds torch's loss curve.
    """
    import pathlib

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _, apply = make_model(args.activation)
    (_, _), (x_test, y_test) = data
    grid = torch.linspace(0, 1, 200)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    logits, _ = apply(run.params, torch.stack([gx.flatten(), gy.flatten()], 1))
    cmap = matplotlib.colormaps["coolwarm"]
    outside, inside = cmap(0.0), cmap(1.0)
    fig, ax = plt.subplots(figsize=(5.5, 6.5))
    ax.contourf(
        gx,
        gy,
        logits.argmax(1).reshape(gx.shape),
        levels=[-0.5, 0.5, 1.5],
        colors=[outside, inside],
        alpha=0.25,
    )
    ax.scatter(
        x_test[:, 0], x_test[:, 1], c=[inside if y else outside for y in y_test.tolist()], s=4
    )
    ax.add_patch(matplotlib.patches.Circle((0.5, 0.5), fnn.data.DISK_RADIUS, fill=False, ls="--"))
    ax.set(
        title=f"fnn decision boundary: test error {100 * run.test_error:.2f} %",
        xlabel="x₁",
        ylabel="x₂",
        xlim=(0, 1),
        ylim=(0, 1),
        aspect="equal",
    )
    ax.legend(
        handles=[
            Patch(color=inside, alpha=0.25, label="predicted: inside (label 1)"),
            Patch(color=outside, alpha=0.25, label="predicted: outside (label 0)"),
            Line2D([], [], ls="", marker="o", ms=3, color=inside, label="test point, label 1"),
            Line2D([], [], ls="", marker="o", ms=3, color=outside, label="test point, label 0"),
            Line2D([], [], ls="--", color="black", label="true disk, radius 1/√(2π)"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=2,
        fontsize="small",
    )
    fig.savefig(out / "decision_boundary.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    epochs = range(1, len(run.epoch_losses) + 1)
    ax.semilogy(epochs, run.epoch_losses, lw=2.5, label="fnn")
    if reference is not None:
        ax.semilogy(
            epochs,
            reference.epoch_losses,
            ls="--",
            color="black",
            label=f"torch.nn + autograd (max step gap {run.torch_gap:.1e})",
        )
    ax.set(
        title=f"disk task, seed {seed}: mean training loss per epoch",
        xlabel="epoch",
        ylabel=f"training loss ({args.loss}, log scale)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)
    plt.close(fig)
    paths = [out / "decision_boundary.png", out / "loss_curves.png"]
    print(f"wrote {paths[0]} and {paths[1]}")
    return paths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds", type=int, default=None, help="run seeds 0..N-1, print median and max"
    )
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    parser.add_argument("--loss", choices=sorted(LOSSES), default="mse")
    parser.add_argument("--optimizer", choices=sorted(DEFAULT_LR), default="momentum")
    parser.add_argument(
        "--lr", type=float, default=None, help="initial learning rate (decays linearly to 0)"
    )
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest for this size)"
    )
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument("--baselines", action="store_true")
    parser.add_argument(
        "--plot", metavar="DIR", default=None, help="write the decision boundary and loss curves"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a one-line progress bar on stderr (default: when stderr is a terminal)",
    )
    args = parser.parse_args(argv)
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds)) if args.seeds else [args.seed]
    recipe = (
        f"{args.activation}, {args.loss}, {args.optimizer} lr {args.lr} → 0, "
        f"batch {args.batch_size}, {args.epochs} epochs"
    )
    print(f"disk task: MLP 2→25→25→25→2, {recipe}")
    results = {}
    for seed in seeds:
        data = make_data(seed, args.n_train, args.n_test)
        log = print if len(seeds) == 1 else None
        run = train_fnn(args, seed, data, log=log)
        results[seed] = run
        print(
            f"seed {seed}: train error {100 * run.train_error:5.2f} %, "
            f"test error {100 * run.test_error:5.2f} %  ({run.seconds:.1f} s)"
        )
        reference = None  # the torch.nn run, with --compare-torch
        if args.compare_torch:
            _, init_params = make_model(args.activation).init(
                fnn.random.split(fnn.random.key(seed))[0], (-1, 2)
            )
            reference = train_torch(args, seed, data, init_params)
            gap = max(abs(a - b) for a, b in zip(run.step_losses, reference.step_losses))
            print(
                f"  torch.nn + autograd: train error {100 * reference.train_error:5.2f} %, test error "
                f"{100 * reference.test_error:5.2f} %  ({reference.seconds:.1f} s, "
                f"fnn {reference.seconds / run.seconds:.1f}× faster)"
            )
            print(f"  max |loss_fnn − loss_torch| over all {len(run.step_losses)} steps: {gap:.2e}")
            run.torch_gap = gap
        if args.baselines:
            baselines(data)
        if args.plot:
            plot(args.plot, args, seed, run, data, reference)
    if len(seeds) > 1:
        errors = [100 * r.test_error for r in results.values()]
        print(
            f"test error over seeds 0..{len(seeds) - 1}: median {statistics.median(errors):.2f} %, "
            f"max {max(errors):.2f} %, mean time {statistics.mean(r.seconds for r in results.values()):.1f} s"
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
