"""Data-parallel training on `torch.distributed`: average gradients, share state, shard data.

fnn brings no transport of its own. Every collective here is a `torch.distributed`
call on the process group the user started (gloo on CPU, NCCL on GPU), usually
under `torchrun`. Each rank runs the same script on its share of every batch:

    dist.init_process_group("gloo")                      # torchrun sets RANK, WORLD_SIZE, ...
    params = fnn.distributed.broadcast(params)           # every rank starts from rank 0's
    state = fnn.distributed.broadcast(opt.init(params))
    for epoch in range(epochs):
        for xb, yb in fnn.distributed.batches(fnn.random.fold_in(key, epoch), x, y, batch_size=100):
            loss, grads = loss_and_grads(params, xb, yb)      # this rank's 100 / world_size examples
            grads = fnn.distributed.all_reduce_mean(grads)   # the gradient of the whole batch
            params, state = opt.update(params, grads, state)
    fnn.distributed.log("done")                          # printed by rank 0 only

With equal shards and a mean loss, the mean of the ranks' gradients is the
gradient of the whole batch, so a run follows single-process training with
`fnn.data.batches(key, x, y, batch_size=100)` up to float rounding.

Without a process group, `rank()`, `world_size()`, the collectives and `batches`
(unless given `rank=` and `world_size=`) raise `FnnError`; `log` just prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from . import random, tree
from .core import Key, PyTree
from .errors import FnnError, FnnTypeError, ShapeError, describe

__all__ = [
    "CollectiveError",
    "is_initialized",
    "rank",
    "world_size",
    "all_reduce_mean",
    "broadcast",
    "batches",
    "rank_key",
    "log",
]

ProcessGroup = Any  # torch.distributed.ProcessGroup, or None for the default (world) group

DEFAULT_BUCKET_MB = 1024.0
"""Leaves of one dtype and device travel in one flat tensor up to this size (MiB): one
collective per step for any model that fits, which measured fastest (docs/distributed.md)."""


class CollectiveError(FnnError, RuntimeError):
    """A `torch.distributed` collective failed under fnn: a peer died, the connection
    broke, or the process group's timeout ran out while a peer did not join."""


def is_initialized() -> bool:
    """Whether a default `torch.distributed` process group exists.

    Returns:
        `True` once `torch.distributed.init_process_group` has run (and until the group is
            destroyed), else `False`.

    Example:
        >>> fnn.distributed.is_initialized()
        False
    """
    return dist.is_available() and dist.is_initialized()


def _require(where: str) -> None:
    if not is_initialized():
        raise FnnError(
            f"fnn.distributed.{where}: no torch.distributed process group is initialised; call "
            "torch.distributed.init_process_group(backend) first (under torchrun, which sets "
            "RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)"
        )


def rank(group: ProcessGroup = None) -> int:
    """This process's rank in `group`.

    Args:
        group: a `torch.distributed` process group; `None` for the world.

    Returns:
        The rank, from 0 to `world_size(group) - 1`.

    Raises:
        FnnError: no process group is initialised.

    Example:
        A single-process group (a real job starts one per process, under `torchrun`):

        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> fnn.distributed.rank(), fnn.distributed.world_size()
        (0, 1)
        >>> dist.destroy_process_group()
    """
    _require("rank")
    return dist.get_rank(group)


def world_size(group: ProcessGroup = None) -> int:
    """The number of processes in `group`.

    Args:
        group: a `torch.distributed` process group; `None` for the world.

    Returns:
        The number of processes, ≥ 1.

    Raises:
        FnnError: no process group is initialised.

    Example:
        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> fnn.distributed.world_size()
        1
        >>> dist.destroy_process_group()
    """
    _require("world_size")
    return dist.get_world_size(group)


def _where(group: ProcessGroup) -> str:
    return f"rank {dist.get_rank(group)} of {dist.get_world_size(group)}, backend {dist.get_backend(group)}"


def _failed(what: str, group: ProcessGroup, error: RuntimeError) -> CollectiveError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CollectiveError(
        f"fnn.distributed.{what} failed on {_where(group)}: {first_line}. Another rank probably "
        "died, or stopped calling the same collectives, or did not join within the process "
        "group's timeout; look at the other ranks' output"
    )


# ---------------------------------------------------------------------------------------------
# Buckets: leaves of one dtype and device, concatenated into one flat tensor per collective.


def _buckets(leaves: list[torch.Tensor], cap_bytes: float) -> list[list[int]]:
    """Leaf indices grouped into runs of one (dtype, device), each run cut at `cap_bytes`
    (a leaf bigger than the cap gets a bucket of its own). Order within a bucket is leaf order."""
    open_buckets: dict[tuple[torch.dtype, torch.device], tuple[list[int], int]] = {}
    done: list[list[int]] = []
    for i, leaf in enumerate(leaves):
        kind = (leaf.dtype, leaf.device)
        size = leaf.numel() * leaf.element_size()
        bucket, filled = open_buckets.get(kind, ([], 0))
        if bucket and filled + size > cap_bytes:
            done.append(bucket)
            bucket, filled = [], 0
        bucket.append(i)
        open_buckets[kind] = (bucket, filled + size)
    return done + [bucket for bucket, _ in open_buckets.values()]


def _pack(leaves: list[torch.Tensor], bucket: list[int]) -> torch.Tensor:
    """A new flat tensor holding the bucket's leaves one after another."""
    return torch.cat([leaves[i].reshape(-1) for i in bucket])


def _unpack(
    flat: torch.Tensor, leaves: list[torch.Tensor], bucket: list[int], out: list[Any]
) -> None:
    """Cut `flat` back into tensors of the bucket's leaf shapes (views, no copy) into `out`."""
    # torch's Tensor.split is a Python method without annotations
    pieces = flat.split([leaves[i].numel() for i in bucket])  # type: ignore[no-untyped-call]
    for i, piece in zip(bucket, pieces):
        out[i] = piece.view(leaves[i].shape)


def _wire(flat: torch.Tensor) -> torch.Tensor:
    # bool tensors travel as their bytes, uint8, which every backend sends (a view: received in place).
    return flat.view(torch.uint8) if flat.dtype == torch.bool else flat


def _cap_bytes(where: str, bucket_mb: float) -> float:
    if isinstance(bucket_mb, bool) or not isinstance(bucket_mb, int | float) or not bucket_mb > 0:
        raise FnnError(
            f"fnn.distributed.{where}: bucket_mb must be a positive number, got {bucket_mb!r}"
        )
    return bucket_mb * 2**20


def _check_devices(
    where: str, paths: list[str], leaves: list[torch.Tensor], group: ProcessGroup
) -> None:
    if dist.get_backend(group) == "nccl":
        for path, leaf in zip(paths, leaves):
            if leaf.device.type != "cuda":
                raise FnnError(
                    f"fnn.distributed.{where}: the nccl backend needs CUDA tensors, but leaf "
                    f"{path or '(the tree)'} is on {leaf.device}; move the tree to this rank's GPU first"
                )


# ---------------------------------------------------------------------------------------------
# Gradients: all-reduce-mean.


def all_reduce_mean(
    grads: PyTree, *, bucket_mb: float = DEFAULT_BUCKET_MB, group: ProcessGroup = None
) -> PyTree:
    """The mean over all ranks of a pytree of floating-point tensors (a gradient), on every rank.

    Every rank must call it with the same tree structure, shapes and dtypes, and the same
    number of times. Any pytree works, so a loss value can ride along:
    `grads, loss = all_reduce_mean((grads, loss))`. In a 2-process job,
    `all_reduce_mean({"w": torch.full((3,), float(rank()))})` gives
    `{"w": tensor([0.5, 0.5, 0.5])}` on both ranks.

    Args:
        grads: a pytree of floating-point tensors of any shapes, on the group's devices.
        bucket_mb: leaves travel concatenated in flat tensors of at most this many MiB
            (1024: in practice one collective per dtype and device).
        group: a `torch.distributed` process group; `None` for the world.

    Returns:
        A tree mirroring `grads`, each leaf of its shape and dtype (views of the reduced
            buckets); `grads` itself is not changed.

    Raises:
        FnnError: no process group is initialised, or a bad `bucket_mb`.
        FnnTypeError: a leaf that is not a floating-point tensor (named by its path).
        CollectiveError: the collective failed (a rank died or timed out).

    Example:
        With one process, the mean is the tree itself:

        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> fnn.distributed.all_reduce_mean({"w": torch.ones(3)})
        {'w': tensor([1., 1., 1.])}
        >>> dist.destroy_process_group()
    """
    _require("all_reduce_mean")
    cap = _cap_bytes("all_reduce_mean", bucket_mb)
    leaves, treedef = tree.flatten(grads)
    paths = tree.paths(grads)
    for path, leaf in zip(paths, leaves):
        if not isinstance(leaf, torch.Tensor) or not (
            leaf.is_floating_point() or leaf.is_complex()
        ):
            raise FnnTypeError(
                f"fnn.distributed.all_reduce_mean: expected floating-point tensor leaves, got "
                f"{describe(leaf)} at {path or '(the tree)'}"
            )
    _check_devices("all_reduce_mean", paths, leaves, group)
    count = dist.get_world_size(group)
    if count == 1:
        return tree.unflatten(treedef, leaves)
    out: list[Any] = list(leaves)
    try:  # one flat tensor per bucket, one blocking collective each (measured faster than
        # overlapping asynchronous buckets on CPU: docs/distributed.md)
        for bucket in _buckets(leaves, cap):
            flat = _pack(leaves, bucket)
            if flat.numel():
                dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
                _unpack(flat.div_(count), leaves, bucket, out)
    except RuntimeError as error:
        raise _failed("all_reduce_mean", group, error) from error
    return tree.unflatten(treedef, out)


# ---------------------------------------------------------------------------------------------
# Params and optimizer state: broadcast from one rank.


def _spec(leaf: Any) -> tuple[Any, ...]:
    if isinstance(leaf, torch.Tensor):
        return ("tensor", tuple(leaf.shape), str(leaf.dtype))
    return ("value", type(leaf).__name__)


Layout = tuple[list[str], list[tuple[Any, ...]]]  # a tree's leaf paths and leaf specs


def _spec_mismatch(mine: Layout, theirs: Layout) -> str | None:
    """The first difference between this rank's tree layout and the source's, if any."""
    my_paths, my_specs = mine
    their_paths, their_specs = theirs
    if my_paths != their_paths:
        for a, b in zip(my_paths, their_paths):
            if a != b:
                return f"leaf {a} where the source has {b}"
        return f"{len(my_paths)} leaves where the source has {len(their_paths)}"
    for path, my_spec, their_spec in zip(my_paths, my_specs, their_specs):
        if my_spec != their_spec:
            return (
                f"{path or 'the tree'} is {_show(my_spec)} where the source has {_show(their_spec)}"
            )
    return None


def _show(spec: tuple[Any, ...]) -> str:
    return f"a tensor of shape {spec[1]}, {spec[2]}" if spec[0] == "tensor" else f"a {spec[1]}"


def broadcast(
    tree_: PyTree, src: int = 0, *, bucket_mb: float = DEFAULT_BUCKET_MB, group: ProcessGroup = None
) -> PyTree:
    """Rank `src`'s copy of a pytree (params, optimizer state), returned on every rank.

    Every rank passes its own tree of the same structure, shapes and dtypes, e.g. freshly
    initialised params (`params = broadcast(params)`: rank 0's initial weights everywhere)
    or `opt.init(params)`.

    Args:
        tree_: a pytree of tensors and plain values (a step count).
        src: the rank in `group` whose tree is sent.
        bucket_mb: tensors travel concatenated in buckets of at most this many MiB.
        group: a `torch.distributed` process group; `None` for the world.

    Returns:
        `src`'s tree, mirroring `tree_`: on other ranks new tensors of the same shapes on
            their own leaves' devices, and `src`'s non-tensor leaves; `src` gets its own
            leaves back.

    Raises:
        FnnError: no process group is initialised, a bad `src` or `bucket_mb`, or a tree
            that does not match `src`'s (raised on every rank, none left waiting; the rank
            that differs names the first difference).
        CollectiveError: the collective failed (a rank died or timed out).

    Example:
        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> fnn.distributed.broadcast({"w": torch.ones(2), "step": 3})
        {'w': tensor([1., 1.]), 'step': 3}
        >>> dist.destroy_process_group()
    """
    _require("broadcast")
    cap = _cap_bytes("broadcast", bucket_mb)
    count = dist.get_world_size(group)
    if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < count:
        raise FnnError(
            f"fnn.distributed.broadcast: src must be a rank in [0, {count}), got {src!r}"
        )
    leaves, treedef = tree.flatten(tree_)
    if count == 1:
        return tree.unflatten(treedef, leaves)
    me = dist.get_rank(group)
    where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
    tensors = [leaves[i] for i in where]
    mine = (tree.paths(tree_), [_spec(leaf) for leaf in leaves])
    _check_devices("broadcast", [mine[0][i] for i in where], tensors, group)
    src_global = src if group is None else dist.get_global_rank(group, src)
    device = _object_device(group, tensors)
    try:
        # 1. The source's layout and plain values. Every rank checks its tree against
        # them, then all learn which ranks differ, so all raise together: none hangs.
        box: list[Any] = [(mine, [None if isinstance(v, torch.Tensor) else v for v in leaves])]
        if me != src:
            box = [None]
        dist.broadcast_object_list(box, src=src_global, group=group, device=device)
        theirs, values = box[0]
        problem = _spec_mismatch(mine, theirs)
        flags = torch.zeros(count, dtype=torch.int32, device=device)
        flags[me] = problem is not None
        dist.all_reduce(flags, group=group)
        differ = flags.nonzero().flatten().tolist()
        if differ:
            detail = f": rank {me}'s {problem}" if problem else "; see the error on those ranks"
            raise FnnError(
                f"fnn.distributed.broadcast: the tree on rank(s) {differ} does not match rank "
                f"{src}'s{detail}"
            )
        # 2. The tensors, bucket by bucket.
        received: list[Any] = list(tensors)
        pending = []
        for bucket in _buckets(tensors, cap):
            if me == src:
                flat = _pack(tensors, bucket)
            else:
                first = tensors[bucket[0]]
                numel = sum(tensors[i].numel() for i in bucket)
                flat = torch.empty(numel, dtype=first.dtype, device=first.device)
            if flat.numel():
                pending.append(
                    (
                        dist.broadcast(_wire(flat), src=src_global, group=group, async_op=True),
                        flat,
                        bucket,
                    )
                )
        for work, flat, bucket in pending:
            if work is not None:  # None on torch builds that return no handle
                work.wait()
            if me != src:
                _unpack(flat, tensors, bucket, received)
    except RuntimeError as error:
        raise _failed("broadcast", group, error) from error
    if me == src:
        return tree.unflatten(treedef, leaves)
    out = list(values)
    for i, leaf in zip(where, received):
        out[i] = leaf
    return tree.unflatten(treedef, out)


def _object_device(group: ProcessGroup, tensor_leaves: list[torch.Tensor]) -> torch.device:
    """Where object collectives stage their bytes: CPU for gloo, this rank's GPU for nccl."""
    if dist.get_backend(group) == "nccl":
        if tensor_leaves:
            return tensor_leaves[0].device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Data: each rank its share of every batch; per-rank keys; logging from rank 0.


def _rank_and_size(where: str, rank_: int | None, size: int | None) -> tuple[int, int]:
    if rank_ is None or size is None:
        if rank_ is not None or size is not None:
            raise FnnError(f"fnn.distributed.{where}: give both rank= and world_size=, or neither")
        if not is_initialized():
            raise FnnError(
                f"fnn.distributed.{where}: no torch.distributed process group is initialised; call "
                "torch.distributed.init_process_group(backend) first, or pass rank= and world_size="
            )
        return dist.get_rank(), dist.get_world_size()
    for name, value in (("rank", rank_), ("world_size", size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise FnnTypeError(f"fnn.distributed.{where}: {name} must be an int, got {value!r}")
    if not 0 <= rank_ < size:
        raise FnnError(
            f"fnn.distributed.{where}: rank must lie in [0, world_size={size}), got {rank_}"
        )
    return rank_, size


def batches(
    key: Key | None,
    *arrays: torch.Tensor,
    batch_size: int,
    drop_last: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """This rank's share of each shuffled batch: yields `(x_part, y_part, …)`.

    Every rank holds the same `arrays` and passes the same `key`, so every rank
    draws the same shuffle (the one `fnn.data.batches(key, …)` draws) and cuts the
    same global batches of `batch_size`; rank r takes the r-th of `world_size`
    equal, contiguous slices of each, `batch_size // world_size` examples. The
    shares are disjoint, together they are the global batch, and the same key
    gives the same shares. Use a new key per epoch: `fnn.random.fold_in(key, epoch)`.

    Every rank yields the same number of equal-sized parts, so the mean of the
    ranks' mean-loss gradients is the global batch's gradient. A last, short
    batch of m examples gives each rank m // world_size of them (the at most
    world_size − 1 left over are skipped this epoch).

    Args:
        key: an `fnn.random` key for the shuffle, the same on every rank; `None` keeps
            the order.
        *arrays: tensors of shapes `(N, ...)`, with the same `N`, the same on every rank.
        batch_size: size of the global batch, a multiple of the world size.
        drop_last: skip the last global batch when it is short.
        rank: this rank; default the process group's (give both or neither).
        world_size: the number of ranks; default the process group's.

    Yields:
        Tuples `(x_part, y_part, ...)`: this rank's slice `(batch_size // world_size, ...)`
            of each tensor's global batch, the same rows in each.

    Raises:
        FnnError: no process group and no `rank=`/`world_size=`, a rank out of range, no
            tensor, or a `batch_size` that is not a positive multiple of the world size.
        FnnTypeError: `rank` or `world_size` not an int, or an array without a batch axis.
        ShapeError: the tensors' first dimensions differ.

    Example:
        >>> x, y = torch.arange(8.0), torch.arange(8)
        >>> parts = fnn.distributed.batches(None, x, y, batch_size=4, rank=1, world_size=2)
        >>> [b[1].tolist() for b in parts]
        [[2, 3], [6, 7]]
    """
    r, size = _rank_and_size("batches", rank, world_size)
    if not arrays:
        raise FnnError("fnn.distributed.batches: give at least one tensor")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FnnError(
            f"fnn.distributed.batches: batch_size must be a positive int, got {batch_size!r}"
        )
    if batch_size % size:
        raise FnnError(
            f"fnn.distributed.batches: batch_size={batch_size} must be a multiple of the world size "
            f"{size}, so every rank gets an equal share"
        )
    for i, a in enumerate(arrays):
        if not isinstance(a, torch.Tensor) or a.ndim == 0:
            raise FnnTypeError(
                f"fnn.distributed.batches: array {i} must be a tensor with a batch axis, got {describe(a)}"
            )
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ShapeError(
            f"fnn.distributed.batches: all tensors need the same first dimension, got {[a.shape[0] for a in arrays]}"
        )
    # The same permutation as fnn.data.batches, but each rank gathers only its own rows.
    order = random.permutation(key, n, device=arrays[0].device) if key is not None else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        share = (min(batch_size, n - start)) // size
        if share == 0:
            break
        lo = start + r * share
        if order is None:
            yield tuple(a[lo : lo + share] for a in arrays)
        else:
            rows = order[lo : lo + share]
            yield tuple(a[rows] for a in arrays)


def rank_key(key: Key, rank: int | None = None) -> Key:
    """A key of this rank's own, for randomness that must differ between ranks (dropout masks).

    Keys that must agree on every rank (init, shuffles for `batches`) are used as they are.

    Args:
        key: an `fnn.random` key, the same on every rank.
        rank: the rank to make the key for; default this process's rank in the world.

    Returns:
        `fnn.random.fold_in(key, rank)`, a key of shape `(2,)`.

    Raises:
        FnnError: `rank` is not a non-negative int, or `None` without a process group.

    Example:
        >>> k = fnn.random.key(0)
        >>> bool((rank_key(k, rank=0) != rank_key(k, rank=1)).any())
        True
    """
    if rank is None:
        _require("rank_key")
        rank = dist.get_rank()
    elif isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise FnnError(f"fnn.distributed.rank_key: rank must be a non-negative int, got {rank!r}")
    return random.fold_in(key, rank)


def log(*values: Any, group: ProcessGroup = None, **print_kwargs: Any) -> None:
    """`print(*values)` on rank 0 of `group` only (flushed); other ranks print nothing.

    Without a process group it just prints, so single-process runs log as usual.

    Args:
        *values: what to print, as `print` takes it.
        group: a `torch.distributed` process group; `None` for the world.
        **print_kwargs: passed to `print` (`sep=`, `end=`, `file=`); `flush` defaults to True.

    Example:
        >>> fnn.distributed.log("epoch", 1)
        epoch 1
    """
    if is_initialized() and dist.get_rank(group) != 0:
        return
    print_kwargs.setdefault("flush", True)
    print(*values, **print_kwargs)
