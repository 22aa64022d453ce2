"""The disk task trained data-parallel on torch.distributed, one process per rank.

    torchrun --nproc_per_node=2 examples/disk_ddp.py                  # 2 processes, gloo on CPU
    torchrun --nproc_per_node=2 examples/disk_ddp.py --compare-single # also the 1-process run

The recipe of examples/disk.py (same data, weights, shuffles, MSE on one-hot targets,
SGD momentum 0.9, lr 0.1 → 0, batch 100, 500 epochs), with each batch of 100 split
over the ranks: every rank computes the gradient of its 100 / world_size examples,
`fnn.distributed.all_reduce_mean` averages them into the gradient of the whole batch,
and every rank takes the same step. The run therefore follows the single-process
one up to float rounding. Only rank 0 prints. On GPUs (one per process) it uses
NCCL; `--backend` overrides the choice.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch
import torch.distributed as dist

import fnn
from fnn import distributed as fd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import disk


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument(
        "--batch-size", type=int, default=100, help="global batch, split over the ranks"
    )
    parser.add_argument(
        "--lr", type=float, default=0.1, help="initial learning rate (decays linearly to 0)"
    )
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--backend", default=None, help="gloo or nccl (default: nccl if CUDA, else gloo)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds a collective waits for a peer"
    )
    parser.add_argument(
        "--compare-single",
        action="store_true",
        help="rank 0 also runs examples/disk.py's single-process training and compares",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout))
    rank, world = fd.rank(), fd.world_size()
    fd.log(
        f"disk task on {world} process(es), backend {backend}: MLP 2→25→25→25→2, "
        f"MSE, SGD momentum 0.9, lr {args.lr} → 0, batch {args.batch_size} "
        f"({args.batch_size // world} per rank), {args.epochs} epochs"
    )

    # Every rank builds the same data and initial weights from the same keys (as disk.py);
    # the broadcasts make sure all start from rank 0's, whatever happened before.
    (x_train, y_train), (x_test, y_test) = [
        tuple(t.to(device) for t in split) for split in disk.make_data(args.seed, 1000, 1000)
    ]
    init_key, shuffle_key = fnn.random.split(fnn.random.key(args.seed))
    init, apply = disk.make_model("relu")
    _, params = init(init_key, (-1, 2), device=device)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    opt = fnn.optim.sgd(lr=disk.linear_decay(args.lr, args.epochs * steps_per_epoch), momentum=0.9)
    params = fd.broadcast(params)
    state = fd.broadcast(opt.init(params))
    loss_and_grads = fnn.value_and_grad(apply, fnn.losses.mse)
    targets = fnn.data.one_hot(y_train, 2)

    step_losses = []
    start = time.perf_counter()
    for epoch, epoch_key in enumerate(fnn.random.split(shuffle_key, args.epochs)):
        # The same shuffle on every rank; each takes its own slice of every batch.
        for xb, tb in fd.batches(epoch_key, x_train, targets, batch_size=args.batch_size):
            loss, grads = loss_and_grads(params, xb, tb)
            grads, loss = fd.all_reduce_mean((grads, loss))  # the loss rides in the same bucket
            params, state = opt.update(params, grads, state)
            step_losses.append(loss)
        if rank == 0 and (epoch + 1) % args.log_every == 0:
            epoch_loss = torch.stack(step_losses[-steps_per_epoch:]).mean().item()
            fd.log(
                f"epoch {epoch + 1:4d}  loss {epoch_loss:.5f}  "
                f"train error {100 * disk.error_rate(apply, params, x_train, y_train):5.2f} %  "
                f"test error {100 * disk.error_rate(apply, params, x_test, y_test):5.2f} %"
            )
    seconds = time.perf_counter() - start
    fd.log(
        f"{world} process(es): train error {100 * disk.error_rate(apply, params, x_train, y_train):5.2f} %, "
        f"test error {100 * disk.error_rate(apply, params, x_test, y_test):5.2f} %  ({seconds:.1f} s)"
    )

    if args.compare_single and rank == 0:
        single = disk.train_fnn(
            disk.parse_args(
                [
                    "--seed",
                    str(args.seed),
                    "--epochs",
                    str(args.epochs),
                    "--lr",
                    str(args.lr),
                    "--batch-size",
                    str(args.batch_size),
                ]
            ),
            args.seed,
            disk.make_data(args.seed, 1000, 1000),
            log=None,
        )
        gaps = [abs(a - b) for a, b in zip(torch.stack(step_losses).tolist(), single.step_losses)]
        apart = next((i for i, gap in enumerate(gaps) if gap > 1e-4), None)
        fd.log(
            f"1 process: train error {100 * single.train_error:5.2f} %, test error "
            f"{100 * single.test_error:5.2f} %  ({single.seconds:.1f} s)"
        )
        fd.log(
            f"step losses, {world} processes vs 1: max |difference| {max(gaps[:100]):.1e} over the first "
            f"100 steps, {max(gaps):.1e} over all {len(gaps)}"
            + (
                f" (rounding differences grow past 1e-4 from step {apart} on)"
                if apart is not None
                else ""
            )
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
