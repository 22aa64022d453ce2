"""Differentially private SGD (Abadi et al. 2016) on the disk task, with fnn.per_example_grads.

    python examples/dp_sgd.py                 # the default recipe below
    python examples/dp_sgd.py --epochs 5      # a quick run
    python examples/dp_sgd.py --noise-multiplier 1 --clip 1   # less noise, larger ε

Each step Poisson-samples a batch (every training point joins with probability
q = batch / n), takes each example's own gradient, clips it to L2 norm ≤ C, sums
the clipped gradients, adds Gaussian noise N(0, σ²C²) to every coordinate of the
sum and divides by the expected batch size q·n. The optimizer (SGD with momentum)
only post-processes these noisy gradients, so it costs no privacy. The privacy
spent is tracked with the Rényi-DP accountant of the sampled Gaussian mechanism
(Mironov, Talwar & Zhang 2019, integer orders) and reported as (ε, δ).

Default recipe: 1000 train / 1000 test points from `fnn.data.disk`, MLP
2→25→25→25→2 with ReLU, cross-entropy, C = 0.5, σ = 3, expected batch 100,
lr 0.5 decaying linearly to 0 with momentum 0.9, 40 epochs (400 steps), δ = 1e-5:
about 3.5% test error (median of seeds 0–5) at ε ≈ 3.7, in a couple of seconds.
Without privacy (`--noise-multiplier 0 --clip 1e9 --lr 0.1`) the same recipe reaches 1–2%.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from dataclasses import dataclass

import torch

import fnn
from fnn import layers as L


@dataclass
class Result:
    """What a run produced."""

    train_error: float
    test_error: float
    epsilon: float
    steps: int
    seconds: float


def privatize(
    grads: dict, clip: float, noise_multiplier: float, expected_batch: float, key: torch.Tensor
) -> dict:
    """Clip each example's gradient to norm `clip`, sum, add N(0, (σ·clip)²) noise, divide by the batch.

    `grads` holds per-example gradients (a leading batch axis on every leaf); the
    norm of example n is taken over all its leaves together. Returns a tree like
    the params: the noisy mean gradient.
    """
    leaves, treedef = fnn.tree.flatten(grads)
    batch = leaves[0].shape[0]
    flat = [g.reshape(batch, -1) for g in leaves]
    norms = torch.cat(flat, 1).norm(dim=1) if batch else leaves[0].new_zeros(0)
    factors = (clip / (norms + 1e-12)).clamp(max=1.0)  # min(1, C / ‖gₙ‖)
    keys = fnn.random.split(key, len(leaves))
    noisy = []
    for g, leaf, k in zip(flat, leaves, keys):
        total = (factors @ g).reshape(leaf.shape[1:])  # Σₙ factorₙ gₙ
        noise = fnn.random.normal(k, total.shape, std=noise_multiplier * clip, dtype=total.dtype)
        noisy.append((total + noise) / expected_batch)
    return fnn.tree.unflatten(treedef, noisy)


def rdp_sampled_gaussian(q: float, noise_multiplier: float, alpha: int) -> float:
    """Rényi-DP of one step of the sampled Gaussian mechanism at integer order `alpha` ≥ 2.

    ε(α) = log Σₖ C(α, k) (1 − q)^(α−k) qᵏ exp((k² − k) / (2σ²)) / (α − 1); for q = 1 it is α / (2σ²).
    """
    terms = []
    for k in range(alpha + 1):
        log_binom = math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
        if (k and q == 0) or (alpha - k and q == 1):
            continue  # a term with probability 0
        log_q = k * math.log(q) if k else 0.0
        log_rest = (alpha - k) * math.log1p(-q) if alpha - k else 0.0
        terms.append(log_binom + log_q + log_rest + (k * k - k) / (2 * noise_multiplier**2))
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1)


def epsilon(q: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """(ε, δ)-DP after `steps` steps: min over orders α of steps·ε(α) + log(1/δ) / (α − 1)."""
    if noise_multiplier == 0:
        return math.inf
    return min(
        steps * rdp_sampled_gaussian(q, noise_multiplier, alpha) + math.log(1 / delta) / (alpha - 1)
        for alpha in range(2, 256)
    )


def linear_decay(lr: float, total_steps: int, step: int) -> float:
    """lr · (1 − step / total): the noise in the last steps moves the weights less."""
    return lr * (1.0 - step / total_steps)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=100, help="expected batch size q·n")
    parser.add_argument("--clip", type=float, default=0.5, help="per-example gradient norm bound C")
    parser.add_argument("--noise-multiplier", type=float, default=3.0, help="σ: noise std is σ·C")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=5, help="epochs between progress lines")
    return parser.parse_args(argv)


def error_rate(apply, params, x: torch.Tensor, labels: torch.Tensor) -> float:
    logits, _ = apply(params, x)
    return (logits.argmax(1) != labels).float().mean().item()


def main(argv: list[str] | None = None) -> Result:
    args = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)  # small tensors: one thread is fastest
    data_key, test_key, init_key, train_key = fnn.random.split(fnn.random.key(args.seed), 4)
    x_train, y_train = fnn.data.disk(data_key, args.n_train)
    x_test, y_test = fnn.data.disk(test_key, args.n_test)

    init, apply = fnn.serial(
        L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
    )
    _, params = init(init_key, (-1, 2))
    losses_and_grads = fnn.per_example_grads(apply, fnn.losses.cross_entropy)
    q = args.batch / args.n_train
    steps_per_epoch = round(1 / q)
    total_steps = args.epochs * steps_per_epoch
    opt = fnn.optim.sgd(
        lr=functools.partial(linear_decay, args.lr, total_steps), momentum=args.momentum
    )
    state = opt.init(params)
    print(
        f"DP-SGD: clip norm C = {args.clip}, noise multiplier σ = {args.noise_multiplier} "
        f"(noise std σC = {args.noise_multiplier * args.clip}), sampling rate q = {q:.3g} "
        f"(expected batch {args.batch}), {steps_per_epoch} steps per epoch, δ = {args.delta:g}"
    )
    start = time.perf_counter()
    step = 0
    for epoch in range(1, args.epochs + 1):
        epoch_loss, seen = 0.0, 0
        for _ in range(steps_per_epoch):
            sample_key, noise_key = fnn.random.split(fnn.random.fold_in(train_key, step))
            picked = fnn.random.bernoulli(sample_key, q, args.n_train).nonzero().squeeze(1)
            losses, grads = losses_and_grads(params, x_train[picked], y_train[picked])
            noisy = privatize(grads, args.clip, args.noise_multiplier, q * args.n_train, noise_key)
            params, state = opt.update(params, noisy, state)
            epoch_loss += losses.sum().item()
            seen += len(picked)
            step += 1
        if epoch % args.log_every == 0 or epoch == args.epochs:
            print(
                f"epoch {epoch:4d}  train loss {epoch_loss / max(seen, 1):.4f}  "
                f"test error {error_rate(apply, params, x_test, y_test):.3f}  "
                f"ε = {epsilon(q, args.noise_multiplier, step, args.delta):.2f}"
            )
    seconds = time.perf_counter() - start
    result = Result(
        train_error=error_rate(apply, params, x_train, y_train),
        test_error=error_rate(apply, params, x_test, y_test),
        epsilon=epsilon(q, args.noise_multiplier, step, args.delta),
        steps=step,
        seconds=seconds,
    )
    print(
        f"final: train error {result.train_error:.3f}, test error {result.test_error:.3f} after {step} steps "
        f"in {seconds:.1f} s; ({result.epsilon:.2f}, {args.delta:g})-DP with C = {args.clip}, "
        f"σ = {args.noise_multiplier}, q = {q:.3g}"
    )
    return result


if __name__ == "__main__":
    main()
