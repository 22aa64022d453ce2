"""Data helpers: the disk task, one-hot targets and shuffled mini-batches."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from . import random
from .core import Key
from .errors import FnnError, FnnTypeError, ShapeError, describe

__all__ = ["disk", "DISK_RADIUS", "one_hot", "batches"]

DISK_RADIUS = 1.0 / math.sqrt(2.0 * math.pi)
"""Radius of the disk task's disk: its area is 1/2, so the classes are balanced."""


def disk(key: Key, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The disk task: `n` points uniform in the unit square, labelled inside/outside a disk.

    A label is 1 inside the disk of centre (0.5, 0.5) and radius 1/√(2π) (`DISK_RADIUS`,
    half the square's area), else 0.

    Args:
        key: an `fnn.random` key; the same key gives the same points.
        n: number of points, ≥ 0.

    Returns:
        `(x, labels)`: `x` float32 of shape `(n, 2)`, uniform in [0, 1]²; `labels` int64 of
            shape `(n,)`, each 0 or 1.

    Raises:
        FnnError: `n` is not a non-negative int.

    Example:
        >>> x, labels = disk(fnn.random.key(0), 5)
        >>> x.shape, labels.shape, labels.dtype
        (torch.Size([5, 2]), torch.Size([5]), torch.int64)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise FnnError(f"disk: n must be a non-negative int, got {n!r}")
    x = random.uniform(key, (n, 2))
    labels = ((x - 0.5).square().sum(1) < DISK_RADIUS**2).long()
    return x, labels


def one_hot(
    labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """One-hot rows: zeros with a one at each label's index.

    Args:
        labels: int64 labels of shape `(N,)` (or any shape `(...)`), each in `[0, num_classes)`.
        num_classes: length of each row.
        dtype: dtype of the result.

    Returns:
        A tensor of shape `(N, num_classes)` (`(..., num_classes)`), on `labels`' device.

    Raises:
        FnnTypeError: `labels` is not an int64 tensor.
        FnnError: a label is outside `[0, num_classes)`.

    Example:
        >>> one_hot(torch.tensor([1, 0]), 2)
        tensor([[0., 1.],
                [1., 0.]])
    """
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        raise FnnTypeError(f"one_hot: expected int64 labels, got {describe(labels)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise FnnError(
            f"one_hot: labels must lie in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    out = torch.zeros(*labels.shape, num_classes, dtype=dtype, device=labels.device)
    return out.scatter_(-1, labels.unsqueeze(-1), 1.0)


def batches(
    key: Key | None, *arrays: torch.Tensor, batch_size: int, drop_last: bool = False
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Mini-batches over the first axis of one or more tensors, shuffled by `key`.

    Args:
        key: an `fnn.random` key for the shuffle, or `None` to keep the order.
        *arrays: tensors of shapes `(N, ...)`, with the same `N`.
        batch_size: number of rows per batch; the last batch may be smaller.
        drop_last: drop the last batch when it has fewer than `batch_size` rows.

    Yields:
        Tuples `(a_batch, b_batch, ...)`: one slice `(batch_size, ...)` of each tensor, the
            same rows in each.

    Raises:
        FnnError: no tensor, or `batch_size` is not a positive int.
        ShapeError: the tensors' first dimensions differ.

    Example:
        >>> x, y = torch.arange(5.0), torch.arange(5)
        >>> [len(b[0]) for b in batches(fnn.random.key(0), x, y, batch_size=2)]
        [2, 2, 1]
    """
    if not arrays:
        raise FnnError("batches: give at least one tensor")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FnnError(f"batches: batch_size must be a positive int, got {batch_size!r}")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ShapeError(
            f"batches: all tensors need the same first dimension, got {[a.shape[0] for a in arrays]}"
        )
    if key is not None:
        order = random.permutation(key, n, device=arrays[0].device)
        arrays = tuple(a[order] for a in arrays)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield tuple(a[start : start + batch_size] for a in arrays)
