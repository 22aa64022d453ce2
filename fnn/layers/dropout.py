"""Dropout: zero each element with probability `rate`, drawn from an explicit key."""

from __future__ import annotations

from typing import Any

import torch

from .. import random
from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import FnnError, KeyArrayError
from . import _checks

__all__ = [
    "Dropout",
    "dropout_backward",
]

aten = torch.ops.aten


def Dropout(rate: float) -> Layer:
    """Zero each element with probability `rate` and scale the rest by 1/(1−rate).

    Only when `apply` is given `key=`; without a key it is the identity (evaluation mode).
    The same key drops the same elements, eagerly and under `torch.compile(fullgraph=True)`
    (the mask is drawn from the key with tensor ops only). `rate=1` zeroes everything
    (`y = 0 · x`, as torch).

    Args:
        rate: probability of zeroing an element, in `[0, 1]` (PyTorch's `p`).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x, key=None)` gives `(y, vjp)` with `y` of `x`'s shape; `vjp(dy)`,
            `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape (`dy` masked and
            scaled like `x`).

    Raises:
        FnnError: `rate` is not a number in `[0, 1]`.
        KeyArrayError: (from `apply`) a `key=` that is not an `fnn.random` key.

    Example:
        >>> init, apply = Dropout(0.5)
        >>> y, vjp = apply({}, torch.ones(2, 4), key=fnn.random.key(0))
        >>> y
        tensor([[2., 0., 2., 2.],
                [2., 2., 2., 2.]])
        >>> torch.equal(apply({}, torch.ones(2, 4))[0], torch.ones(2, 4))
        True
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise FnnError(f"Dropout: rate must be a number in [0, 1], got {rate!r}")
    scale = 1.0 / (1.0 - rate) if rate < 1.0 else 0.0

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        return _checks.input_shape("Dropout", input_shape, min_rank=0), {}

    def apply(
        params: Params, x: torch.Tensor, *, key: Key | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, VJP]:
        del kwargs
        _checks.no_params("Dropout", params)
        _checks.float_input("Dropout", x)
        if key is None or rate == 0.0:
            return x, VJP(dropout_backward, (None, 1.0, x.shape))
        try:
            if rate == 1.0:  # torch's p = 1: y = 0 · x
                random._check_key(key)
                return x * 0.0, VJP(dropout_backward, (None, 0.0, x.shape))
            keep = random._bernoulli_traceable(key, 1.0 - rate, tuple(x.shape), x.device)
        except KeyArrayError as error:
            raise KeyArrayError(f"Dropout: bad key: {error}") from None
        return aten.native_dropout_backward.default(x, keep, scale), VJP(
            dropout_backward, (keep, scale, x.shape)
        )

    return declare(init, apply, LayerInfo("Dropout", keywords=frozenset({"key"})))


@backward
def dropout_backward(
    residuals: tuple[torch.Tensor | None, float, torch.Size], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = x · m / (1 − p)   ⇒   dx = dy · m / (1 − p)      (m the kept-mask; p = 1: dx = 0 · dy)"""
    keep, scale, shape = residuals
    if not isinstance(dy, torch.Tensor) or dy.shape != shape:
        _checks.cotangent("Dropout", dy, shape)
    if keep is None:
        return {}, dy if scale == 1.0 else dy * scale
    return {}, aten.native_dropout_backward.default(dy, keep, scale)


dropout_backward.example_wise()
