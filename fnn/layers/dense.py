"""Dense (fully connected) layer, as `torch.nn.Linear`."""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F

from .. import random
from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..initializers import Initializer, fan_in_uniform, torch_default
from . import _checks

__all__ = [
    "dense_backward",
    "Dense",
]


def Dense(
    out_features: int,
    weight_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    bias: bool = True,
) -> Layer:
    """A fully connected layer: `y = x Wᵀ + b` on the last axis, as `torch.nn.Linear`.

    Args:
        out_features: size of the output's last axis, ≥ 1.
        weight_init: initializer of `weight`; default `torch.nn.Linear`'s, uniform in
            ±1/√in_features.
        bias_init: initializer of `bias`; default uniform in ±1/√in_features, as torch.
        bias: whether to add a bias; without it params have no `"bias"`.

    Returns:
        `Layer(init, apply)`. `init(key, (..., in_features))` gives `(..., out_features)` and
            params `{"weight": (out_features, in_features), "bias": (out_features,)}`;
            `apply(params, x)`, `x` of shape `(..., in_features)`, gives `(y, vjp)` with `y`
            of shape `(..., out_features)`; `vjp(dy)`, `dy` of `y`'s shape, gives
            `(dparams, dx)` shaped as `(params, x)`.

    Raises:
        FnnError: `out_features` is not a positive int.
        ShapeError: (from `init`, `apply` and the VJP) an input, param or cotangent of the
            wrong shape, naming what was expected.

    Example:
        >>> init, apply = Dense(3)
        >>> out_shape, params = init(fnn.random.key(0), (-1, 2))
        >>> out_shape, params["weight"].shape
        ((-1, 3), torch.Size([3, 2]))
        >>> y, vjp = apply(params, torch.ones(4, 2))
        >>> dparams, dx = vjp(torch.ones(4, 3))
    """
    _checks.positive_int("Dense", "out_features", out_features)
    weight_init = weight_init or torch_default()

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        shape = _checks.input_shape("Dense", input_shape)
        _checks.init_dtype("Dense", dtype, device)
        in_features = shape[-1]
        if in_features < 1:
            raise _checks.ShapeError(
                f"Dense: input features (last dimension) must be ≥ 1, got {shape}"
            )
        weight_key, bias_key = random.split(key)
        params = {"weight": weight_init(weight_key, (out_features, in_features), dtype, device)}
        if bias:
            make_bias = bias_init or fan_in_uniform(in_features)
            params["bias"] = make_bias(bias_key, (out_features,), dtype, device)
        return shape[:-1] + (out_features,), params

    bias_shape = torch.Size([out_features])

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs  # Dense is deterministic
        weight, b = _checks.weight_and_bias("Dense", params, bias)
        # F.linear itself rejects wrong feature sizes, dtypes and devices; we only check what it
        # would let through (a weight of the wrong height, a bias that broadcasts), then say
        # clearly what is wrong on the slow path.
        try:
            if weight.shape[0] != out_features or (b is not None and b.shape != bias_shape):
                raise ValueError
            y = F.linear(x, weight, b)
        except (RuntimeError, TypeError, AttributeError, IndexError, ValueError):
            _diagnose(out_features, x, weight, b)
            raise
        return y, VJP(dense_backward, (x, weight, bias))

    info = LayerInfo("Dense", step=("dense", out_features, bias), backward=dense_backward)
    return declare(init, apply, info)


def _diagnose(
    out_features: int, x: torch.Tensor, weight: torch.Tensor, b: torch.Tensor | None
) -> None:
    """Slow path: raise a clear error for what is wrong with the input or params."""
    _checks.input_like("Dense", x, weight)
    _checks.float_input("Dense", x)
    if weight.ndim != 2 or weight.shape[0] != out_features:
        raise _checks.ShapeError(
            f"Dense: params['weight'] has shape {tuple(weight.shape)}, expected ({out_features}, in_features)"
        )
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise _checks.ShapeError(
            f"Dense: expected input of shape (..., {weight.shape[1]}), got {tuple(x.shape)}"
        )
    _checks.param_like("Dense", "weight", weight, tuple(weight.shape), x)
    if b is not None:
        _checks.param_like("Dense", "bias", b, (out_features,), x)


@backward
def dense_backward(
    residuals: tuple[torch.Tensor, torch.Tensor, bool], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = x Wᵀ + b   ⇒   dW = dyᵀ x,  db = Σₙ dy,  dx = dy W"""
    x, weight, has_bias = residuals
    return _dense_grads(x, weight, has_bias, dy, True)


@dense_backward.consumer
def _dense_consume(box: list[Any], need_dx: bool) -> tuple[Params, torch.Tensor | None]:
    """`dense_backward` for `fnn.core.backprop`: skips `dx = dy W` when it is not needed."""
    dy = box.pop()
    x, weight, has_bias = box.pop()
    return _dense_grads(x, weight, has_bias, dy, need_dx)


# per example: dW[n] = Σₘ dy[n,m] ⊗ x[n,m],  db[n] = Σₘ dy[n,m],  dx = dy W
@dense_backward.per_example_rule
def _dense_per_example(
    residuals: tuple[torch.Tensor, torch.Tensor, bool], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor | None]:
    x, weight, has_bias = residuals
    expected = x.shape[:-1] + weight.shape[:1]
    if not isinstance(dy, torch.Tensor) or dy.shape != expected or dy.dtype is not x.dtype:
        _checks.cotangent_like("Dense", dy, expected, x)
    if x.ndim == 2:  # (N, in): one outer product per example, a single broadcast multiply
        grads = {"weight": dy.unsqueeze(2).mul(x.unsqueeze(1))}
        db = dy
        dx = dy.mm(weight) if need_dx else None
    elif x.ndim > 2:  # (N, …, in): sum the outer products over the middle axes
        batch, middle = x.shape[0], math.prod(x.shape[1:-1])
        dy3 = dy.reshape(batch, middle, dy.shape[-1])
        grads = {"weight": dy3.transpose(1, 2).bmm(x.reshape(batch, middle, x.shape[-1]))}
        db = dy3.sum(1)
        dx = dy.matmul(weight) if need_dx else None
    else:
        raise _checks.ShapeError(
            f"Dense: per-example gradients need an input with a batch axis (N, ..., in), got {tuple(x.shape)}"
        )
    if has_bias:
        grads["bias"] = db
    return grads, dx


@overload
def _dense_grads(
    x: torch.Tensor, weight: torch.Tensor, has_bias: bool, dy: torch.Tensor, need_dx: Literal[True]
) -> tuple[Params, torch.Tensor]: ...
@overload
def _dense_grads(
    x: torch.Tensor, weight: torch.Tensor, has_bias: bool, dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor | None]: ...
def _dense_grads(
    x: torch.Tensor, weight: torch.Tensor, has_bias: bool, dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor | None]:
    # The matrix products reject a cotangent of the wrong batch, rank or dtype; only its width
    # (which dW = dyᵀ x would silently take) and, for 3-D inputs, its leading axes need a check.
    try:
        if dy.shape[-1] != weight.shape[0]:
            raise ValueError
        if x.ndim == 2:
            grads = {"weight": dy.t().mm(x)}
            dx = dy.mm(weight) if need_dx else None
        else:
            if dy.shape[:-1] != x.shape[:-1]:
                raise ValueError
            dy2 = dy.reshape(-1, dy.shape[-1])
            grads = {"weight": dy2.t().mm(x.reshape(-1, x.shape[-1]))}
            dx = dy.matmul(weight) if need_dx else None
            dy = dy2
    except (RuntimeError, TypeError, AttributeError, IndexError, ValueError):
        _checks.cotangent_like("Dense", dy, x.shape[:-1] + weight.shape[:1], x)
        raise
    if has_bias:
        grads["bias"] = dy.sum(0)  # as autograd sums it: the same bits
    return grads, dx
