"""Swappable backward rules: the same forward pass with another, hand-written VJP.

`with_vjp(layer, backward)` keeps a layer's forward and its residuals and swaps the
backward function, so a learning rule is one module-level function. Two rules ship
here: feedback alignment for `Dense` (Lillicrap et al., 2016) and the
straight-through estimator for `Sign` (Bengio et al., 2013).
"""

from __future__ import annotations

from typing import Any

import torch

from . import random
from .core import (
    VJP,
    BackwardFn,
    Key,
    Layer,
    Params,
    backward,
    declare,
    layer_info,
    per_example_rule,
)
from .errors import FnnError, FnnTypeError, describe
from .layers import Dense, _checks
from .layers.activations import elementwise
from .layers.dense import dense_backward

__all__ = [
    "with_vjp",
    "feedback_alignment",
    "Sign",
    "straight_through",
    "feedback_alignment_backward",
    "sign_backward",
    "straight_through_backward",
]


def _check_layer(where: str, layer: Any) -> None:
    if not (isinstance(layer, tuple) and len(layer) == 2 and all(map(callable, layer))):
        hint = " (did you forget the call, e.g. Sign()?)" if callable(layer) else ""
        raise FnnTypeError(
            f"{where}: expected a Layer (init, apply) pair, got {describe(layer)}{hint}"
        )


def with_vjp(layer: Layer, backward: BackwardFn) -> Layer:
    """`layer` with its backward function swapped for `backward(residuals, dy) -> (dparams, dx)`.

    The forward pass, the params and the residuals are the layer's own: `backward`
    receives exactly the residuals the original VJP holds (for `Dense`,
    `(x, weight, has_bias)`). The new VJP pickles when `backward` is a module-level function.

    Args:
        layer: any `Layer`.
        backward: `backward(residuals, dy) -> (dparams, dx)`, with `dy` of `y`'s shape,
            `dparams` mirroring the params and `dx` of `x`'s shape.

    Returns:
        A `Layer(init, apply)` with `layer`'s `init` and shapes; `apply(params, x)` returns
            `layer`'s `y` and `fnn.VJP(backward, residuals)`.

    Raises:
        FnnTypeError: `layer` is not a `Layer`, or `backward` is not callable or is a lambda
            or nested function (its VJP could not pickle).

    Example:
        >>> def zero_dx_backward(residuals, dy):   # dW, db as Dense; dx = 0
        ...     dparams, dx = fnn.layers.dense.dense_backward(residuals, dy)
        ...     return dparams, torch.zeros_like(dx)
        >>> layer = fnn.with_vjp(L.Dense(2), zero_dx_backward)
        >>> _, params = layer.init(fnn.random.key(0), (-1, 3))
        >>> y, vjp = layer.apply(params, torch.ones(4, 3))
        >>> vjp(torch.ones(4, 2))[1].abs().sum()
        tensor(0.)
    """
    _check_layer("with_vjp", layer)
    if not callable(backward):
        raise FnnTypeError(
            f"with_vjp: expected a backward function (residuals, dy), got {describe(backward)}"
        )
    qualname = getattr(backward, "__qualname__", "")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise FnnTypeError(
            f"with_vjp: backward must be a module-level function, so that the VJP pickles by "
            f"name, got {qualname!r}; define it with `def` at the top level of a module"
        )
    inner = layer.apply

    def apply(params: Params, x: Any, **kwargs: Any) -> tuple[Any, ...]:
        if "state" in kwargs:
            y, vjp, new_state = inner(params, x, **kwargs)
            return y, VJP(backward, vjp.residuals), new_state
        y, vjp = inner(params, x, **kwargs)
        return y, VJP(backward, vjp.residuals)

    return declare(layer.init, apply, _wrapper_info(layer, layer_info(layer).name))


def _wrapper_info(layer: Layer, name: str) -> Any:
    """A wrapper's declaration: its own name, the wrapped layer's keywords and state, and no
    inline form for `fnn.train_step` (the step runs the wrapper's VJP, the swapped one)."""
    inner = layer_info(layer)
    return inner._replace(name=name, kind="wrapper", children=(layer,), step=None, backward=None)


def feedback_alignment(
    layer_or_out_features: Layer | int, key: Key, *, scale: float | None = None
) -> Layer:
    """A `Dense` layer trained by feedback alignment: `dx = dy B` with a fixed random `B`.

    The forward pass and `dW = dyᵀ x`, `db = Σₙ dy` are `Dense`'s; only the
    cotangent sent to the layer below changes, from `dy W` to `dy B`. `B` has the
    weight's shape `(out, in)`, is drawn uniform in ±scale (default `1/√in`, the
    weight's own init range) from `key` at each `apply` (the same key gives the same
    `B`, always), is not a parameter, and travels in the residuals
    `((x, weight, has_bias), B)`.

    Args:
        layer_or_out_features: a `Dense(...)` layer, or its `out_features`.
        key: an `fnn.random` key for `B`; give each layer its own.
        scale: half-width of `B`'s uniform range; default `1/√in`.

    Returns:
        A `Layer(init, apply)` with `Dense`'s `init`, params `{"weight": (out, in),
            "bias": (out,)}` and forward: `x` of shape `(..., in)` gives `y` of shape
            `(..., out)`; `vjp(dy)` gives `(dparams, dx)` with `dx = dy B` of `x`'s shape.

    Raises:
        FnnTypeError: neither a layer nor an int, or `key` is not a key.
        FnnError: (from `apply`) the layer is not a `Dense`.

    Example:
        >>> layer = fnn.rules.feedback_alignment(3, fnn.random.key(7))
        >>> _, params = layer.init(fnn.random.key(0), (-1, 2))
        >>> y, vjp = layer.apply(params, torch.ones(4, 2))
        >>> dparams, dx = vjp(torch.ones(4, 3))
        >>> vjp.residuals[1].shape, dx.shape
        (torch.Size([3, 2]), torch.Size([4, 2]))
    """
    if isinstance(layer_or_out_features, bool) or not isinstance(
        layer_or_out_features, int | tuple
    ):
        raise FnnTypeError(
            f"feedback_alignment: expected a Dense layer or out_features (int), got {describe(layer_or_out_features)}"
        )
    layer = (
        Dense(layer_or_out_features)
        if isinstance(layer_or_out_features, int)
        else layer_or_out_features
    )
    _check_layer("feedback_alignment", layer)
    if not (isinstance(key, torch.Tensor) and key.dtype == torch.int64 and key.shape == (2,)):
        raise FnnTypeError(
            f"feedback_alignment: key must be an fnn.random key, got {describe(key)}"
        )
    if scale is not None:
        _checks.number("feedback_alignment", "scale", scale)
    inner = layer.apply

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        y, vjp = inner(params, x, **kwargs)
        if vjp.backward is not dense_backward:
            raise FnnError(
                f"feedback_alignment: expected a Dense layer, got a {layer_info(layer).name}"
            )
        weight = vjp.residuals[1]
        bound = scale if scale is not None else weight.shape[1] ** -0.5
        feedback = random.uniform(
            key, tuple(weight.shape), -bound, bound, dtype=weight.dtype, device=weight.device
        )
        return y, VJP(feedback_alignment_backward, (vjp.residuals, feedback))

    return declare(layer.init, apply, _wrapper_info(layer, "Dense"))


@backward
def feedback_alignment_backward(
    residuals: tuple[tuple[torch.Tensor, torch.Tensor, bool], torch.Tensor], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = x Wᵀ + b   ⇒   dW = dyᵀ x,  db = Σₙ dy,  dx = dy B   (B fixed and random, not W)"""
    (x, weight, has_bias), feedback = residuals
    dparams, _ = dense_backward((x, weight, has_bias), dy)
    return dparams, dy.matmul(feedback)


def Sign() -> Layer:
    """`y = sign(x)` (−1, 0 or 1); its true gradient is 0 almost everywhere.

    Train through it with `straight_through(Sign())`.

    Returns:
        A parameter-free `Layer(init, apply)`: `init` gives the input shape back and `{}`;
            `apply({}, x)` gives `y` of `x`'s shape, and `vjp(dy)` gives `({}, dx)` with `dx`
            zeros of `x`'s shape.

    Example:
        >>> y, vjp = fnn.rules.Sign().apply({}, torch.tensor([-2.0, 0.5]))
        >>> y, vjp(torch.ones(2))
        (tensor([-1.,  1.]), ({}, tensor([0., 0.])))
    """
    return elementwise("Sign", torch.sign, sign_backward, keep="input")


@backward
def sign_backward(x: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = sign x   ⇒   dx = 0 (almost everywhere)"""
    if not isinstance(dy, torch.Tensor) or dy.shape != x.shape or dy.dtype is not x.dtype:
        _checks.cotangent_like("Sign", dy, x.shape, x)
    return {}, torch.zeros_like(dy)


def straight_through(layer: Layer | None = None) -> Layer:
    """`Sign()` (or `layer`, whose residual is its input) with the straight-through backward.

    Forward `sign(x)`; backward `dx = dy · 1{|x| ≤ 1}` (the hard-tanh gradient).

    Args:
        layer: a parameter-free layer whose VJP's residual is its input; default `Sign()`.

    Returns:
        A parameter-free `Layer(init, apply)`: `y` has `x`'s shape, and `vjp(dy)` gives
            `({}, dx)` with `dx` of `x`'s shape.

    Example:
        >>> y, vjp = fnn.rules.straight_through().apply({}, torch.tensor([-2.0, 0.5]))
        >>> y, vjp(torch.ones(2))
        (tensor([-1.,  1.]), ({}, tensor([0., 1.])))
    """
    return with_vjp(Sign() if layer is None else layer, straight_through_backward)


@backward
def straight_through_backward(x: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = sign x   ⇒   dx ≈ dy · 1{|x| ≤ 1}   (straight-through estimator)"""
    if not isinstance(dy, torch.Tensor) or dy.shape != x.shape or dy.dtype is not x.dtype:
        _checks.cotangent_like("straight_through", dy, x.shape, x)
    return {}, dy * (x.abs() <= 1).to(dy.dtype)


sign_backward.example_wise()
straight_through_backward.example_wise()


# per example: dW[n] and db[n] as Dense's rule, dx = dy B
@feedback_alignment_backward.per_example_rule
def _feedback_alignment_per_example(
    residuals: tuple[tuple[torch.Tensor, torch.Tensor, bool], torch.Tensor],
    dy: torch.Tensor,
    need_dx: bool,
) -> tuple[Params, torch.Tensor | None]:
    dense_residuals, feedback = residuals
    rule = per_example_rule(VJP(dense_backward, dense_residuals))
    dparams, _ = rule(dense_residuals, dy, False)
    return dparams, dy.matmul(feedback) if need_dx else None
