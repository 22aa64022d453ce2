"""Embedding: a lookup table from integer indices to vectors, as `torch.nn.Embedding`."""

from __future__ import annotations

from typing import Any

import torch

from .. import random
from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import FnnError, FnnTypeError, ShapeError, describe
from . import _checks

__all__ = [
    "Embedding",
    "embedding_backward",
]

aten = torch.ops.aten


def Embedding(num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> Layer:
    """Look up a row of a `(num_embeddings, embedding_dim)` table for each index.

    As `torch.nn.Embedding`: the output is `weight[x]`; the gradient of `weight` adds up the
    cotangents of every position that reads a row (repeated indices accumulate), and the row
    `padding_idx` gets no gradient (it is initialised to zeros, and its output is still the
    row's value).

    Args:
        num_embeddings: number of rows (the vocabulary size), ≥ 1.
        embedding_dim: size of each vector, ≥ 1.
        padding_idx: a row that gets no gradient (its initial value is zero), in
            `[-num_embeddings, num_embeddings)` (negative counts from the end), or `None`.

    Returns:
        `Layer(init, apply)`. `init(key, shape)`, `shape` the indices' shape (any rank, e.g.
            `(-1, T)`), gives `shape + (embedding_dim,)` and params
            `{"weight": (num_embeddings, embedding_dim)}` drawn from N(0, 1), as torch;
            `apply(params, x)`, `x` an int64 (or int32) tensor of indices of any shape, gives
            `(y, vjp)` with `y` of shape `x.shape + (embedding_dim,)`; `vjp(dy)` gives
            `({"weight": dW}, dx)` where `dx` is zeros of `x`'s shape (indices have no
            gradient; a broadcast view of one zero, read-only).

    Raises:
        FnnError: a size that is not a positive int, or `padding_idx` out of range; (from
            `apply`) an index out of `[0, num_embeddings)`.
        FnnTypeError: (from `apply`) indices that are not an integer tensor.
        ShapeError: (from `apply` and the VJP) a weight or cotangent of the wrong shape.

    Example:
        >>> init, apply = Embedding(10, 3, padding_idx=0)
        >>> out_shape, params = init(fnn.random.key(0), (-1, 4))
        >>> out_shape, params["weight"].shape
        ((-1, 4, 3), torch.Size([10, 3]))
        >>> y, vjp = apply(params, torch.tensor([[0, 2, 2, 5]]))
        >>> dparams, dx = vjp(torch.ones(1, 4, 3))
        >>> dparams["weight"][[0, 2, 5]]
        tensor([[0., 0., 0.],
                [2., 2., 2.],
                [1., 1., 1.]])
    """
    _checks.positive_int("Embedding", "num_embeddings", num_embeddings)
    _checks.positive_int("Embedding", "embedding_dim", embedding_dim)
    if padding_idx is not None:
        if (
            isinstance(padding_idx, bool)
            or not isinstance(padding_idx, int)
            or not -num_embeddings <= padding_idx < num_embeddings
        ):
            raise FnnError(
                f"Embedding: padding_idx must be None or an int in [{-num_embeddings}, "
                f"{num_embeddings}), got {padding_idx!r}"
            )
        padding_idx %= num_embeddings
    pad = -1 if padding_idx is None else padding_idx  # aten's "no padding row"

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        shape = _checks.input_shape("Embedding", input_shape, min_rank=0)
        _checks.init_dtype("Embedding", dtype, device)
        weight = random.normal(key, (num_embeddings, embedding_dim), dtype=dtype, device=device)
        if padding_idx is not None:
            weight[padding_idx] = 0.0
        return shape + (embedding_dim,), {"weight": weight}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs  # Embedding is deterministic
        weight = _weight(params, num_embeddings, embedding_dim)
        if not isinstance(x, torch.Tensor) or x.dtype not in (torch.int64, torch.int32):
            raise FnnTypeError(
                f"Embedding: expected integer indices (an int64 tensor), got {describe(x)}"
            )
        try:
            y = aten.embedding.default(weight, x, pad)
        except (IndexError, RuntimeError):
            if x.device != weight.device:
                raise FnnError(
                    f"Embedding: indices are on {x.device} but params['weight'] is on {weight.device}"
                ) from None
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_embeddings):
                raise FnnError(
                    f"Embedding: indices must be in [0, {num_embeddings}), got values in "
                    f"[{int(x.min())}, {int(x.max())}]"
                ) from None
            raise
        return y, VJP(embedding_backward, (x, num_embeddings, pad, weight.dtype))

    return declare(init, apply, LayerInfo("Embedding"))


def _weight(params: Params, num: int, dim: int) -> torch.Tensor:
    """`params["weight"]`, checked: a floating tensor of shape (num, dim), the only leaf."""
    if not isinstance(params, dict) or len(params) != 1 or "weight" not in params:
        _checks.param_leaves("Embedding", params, ["weight"])
    weight = params["weight"]
    if not isinstance(weight, torch.Tensor) or weight.shape != (num, dim):
        raise ShapeError(
            f"Embedding: params['weight'] must be a tensor of shape ({num}, {dim}), "
            f"got {describe(weight)}"
        )
    if not weight.is_floating_point():
        raise FnnTypeError(
            f"Embedding: params['weight'] must be floating-point, got dtype {weight.dtype}"
        )
    return weight


@backward
def embedding_backward(
    residuals: tuple[torch.Tensor, int, int, torch.dtype], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = W[x]   ⇒   dW[i] = Σ_{positions p with x[p] = i} dy[p]  (0 for the padding row),  dx = 0"""
    x, num, pad, dtype = residuals
    return {"weight": _embedding_grad(x, num, pad, dtype, dy)}, _zero_dx(x, dy)


@embedding_backward.consumer
def _embedding_consume(box: list[Any], need_dx: bool) -> tuple[Params, torch.Tensor | None]:
    """`embedding_backward` for `fnn.core.backprop`: no `dx` unless asked (it is zeros)."""
    dy = box.pop()
    x, num, pad, dtype = box.pop()
    return {"weight": _embedding_grad(x, num, pad, dtype, dy)}, (
        _zero_dx(x, dy) if need_dx else None
    )


# per example: dW[n][i] = Σ_{p with x[n, p] = i} dy[n, p]
@embedding_backward.per_example_rule
def _embedding_per_example(
    residuals: tuple[torch.Tensor, int, int, torch.dtype], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor | None]:
    x, num, pad, dtype = residuals
    if x.ndim == 0:
        raise ShapeError(
            "Embedding: per-example gradients need indices with a batch axis (N, ...), got a 0-d index"
        )
    dy = _check_dy(x, dtype, dy)
    batch, dim = x.shape[0], dy.shape[-1]
    flat = x.reshape(batch, -1)
    rows = flat + num * torch.arange(batch, device=x.device).unsqueeze(1)  # row of (n, index)
    grad = dy.new_zeros(batch * num, dim)
    grad.index_add_(0, rows.reshape(-1), dy.reshape(-1, dim))
    grad = grad.view(batch, num, dim)
    if pad >= 0:
        grad[:, pad] = 0.0
    return {"weight": grad}, (_zero_dx(x, dy) if need_dx else None)


def _check_dy(x: torch.Tensor, dtype: torch.dtype, dy: object) -> torch.Tensor:
    if not isinstance(dy, torch.Tensor) or dy.ndim != x.ndim + 1 or dy.shape[:-1] != x.shape:
        raise ShapeError(
            f"Embedding VJP: expected a cotangent of shape {tuple(x.shape)} + (embedding_dim,), "
            f"got {describe(dy)}"
        )
    if dy.dtype != dtype:
        raise FnnTypeError(f"Embedding VJP: expected a cotangent of dtype {dtype}, got {dy.dtype}")
    return dy


def _embedding_grad(
    x: torch.Tensor, num: int, pad: int, dtype: torch.dtype, dy: torch.Tensor
) -> torch.Tensor:
    dy = _check_dy(x, dtype, dy)
    if not x.numel():  # the kernel's empty case: zeros of the table's shape
        return dy.new_zeros(num, dy.shape[-1])
    grad: torch.Tensor = aten.embedding_dense_backward.default(dy, x, num, pad, False)
    return grad


def _zero_dx(x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Indices have no gradient: zeros of `x`'s shape in `dy`'s dtype, one element broadcast."""
    return dy.new_zeros(()).expand(x.shape)
