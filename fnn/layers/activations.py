"""Parameter-free activations, all made by one factory: `elementwise`.

Each activation is a forward function and a module-level backward right below
it, with the math in one comment line. The backward keeps the output where
that suffices (relu, tanh, sigmoid, softmax) and the input otherwise. The
backward kernels are aten's own (`threshold_backward`, `tanh_backward`, …): one
fused op per layer, no autograd.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from ..core import VJP, Key, Layer, Params, Shape
from . import _checks

aten = torch.ops.aten

__all__ = [
    "elementwise",
    "Relu",
    "LeakyRelu",
    "Tanh",
    "Sigmoid",
    "Elu",
    "Gelu",
    "Softplus",
    "Softmax",
    "LogSoftmax",
    "Identity",
]


def elementwise(
    name: str,
    forward: Callable[[torch.Tensor], torch.Tensor],
    backward: Callable[[Any, torch.Tensor], tuple[Params, torch.Tensor]],
    *,
    keep: str = "output",
    constants: tuple[Any, ...] = (),
    min_rank: int = 0,
) -> Layer:
    """A parameter-free layer `y = forward(x)` whose VJP is `backward(residuals, dy)`.

    `keep` says which tensor the VJP saves ("output" or "input"); the residuals
    are `(saved, *constants)`, or just `saved` when there are no constants.

    Example:
        >>> def square_backward(x, dy):   # y = x²  ⇒  dx = 2 x dy
        ...     return {}, 2 * x * dy
        >>> Square = lambda: elementwise("Square", torch.square, square_backward, keep="input")
        >>> y, vjp = Square().apply({}, torch.tensor([3.0]))
        >>> vjp(torch.ones(1))
        ({}, tensor([6.]))
    """
    if keep not in ("output", "input"):
        raise ValueError(f"elementwise: keep must be 'output' or 'input', got {keep!r}")
    keep_input = keep == "input"

    def init(
        key: Key,
        input_shape: Shape,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        return _checks.input_shape(name, input_shape, min_rank), {}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        if params:
            _checks.no_params(name, params)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < min_rank:
            _checks.float_input(name, x)
            raise _checks.ShapeError(
                f"{name}: expected an input of rank ≥ {min_rank}, got {tuple(x.shape)}"
            )
        y = forward(x)
        saved = x if keep_input else y
        return y, VJP(backward, (saved, *constants) if constants else saved)

    apply.layer_name = name  # type: ignore[attr-defined]
    return Layer(init, apply)


def _check_dy(name: str, saved: torch.Tensor, dy: object) -> None:
    if not isinstance(dy, torch.Tensor) or dy.shape != saved.shape or dy.dtype is not saved.dtype:
        _checks.cotangent_like(name, dy, saved.shape, saved)


def Identity() -> Layer:
    """`y = x`."""
    return elementwise("Identity", _identity, identity_backward, keep="output")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# y = x   ⇒   dx = dy
def identity_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Identity", y, dy)
    return {}, dy


def Relu() -> Layer:
    """`y = max(x, 0)`; the gradient at `x = 0` is 0, as in torch."""
    return elementwise("Relu", torch.relu, relu_backward)


# y = max(x, 0)   ⇒   dx = dy · [y > 0]
def relu_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Relu", y, dy)
    return {}, aten.threshold_backward.default(dy, y, 0)


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    """`y = x` for x > 0, `negative_slope · x` otherwise."""
    _checks.number("LeakyRelu", "negative_slope", negative_slope)
    forward = functools.partial(torch.nn.functional.leaky_relu, negative_slope=negative_slope)
    return elementwise(
        "LeakyRelu", forward, leaky_relu_backward, keep="input", constants=(negative_slope,)
    )


# y = x if x > 0 else a·x   ⇒   dx = dy if x > 0 else a·dy
def leaky_relu_backward(
    residuals: tuple[torch.Tensor, float], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    x, slope = residuals
    _check_dy("LeakyRelu", x, dy)
    return {}, aten.leaky_relu_backward.default(dy, x, slope, False)


def Tanh() -> Layer:
    """`y = tanh(x)`."""
    return elementwise("Tanh", torch.tanh, tanh_backward)


# y = tanh x   ⇒   dx = dy · (1 − y²)
def tanh_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Tanh", y, dy)
    return {}, aten.tanh_backward.default(dy, y)


def Sigmoid() -> Layer:
    """`y = 1 / (1 + e^−x)`."""
    return elementwise("Sigmoid", torch.sigmoid, sigmoid_backward)


# y = σ(x)   ⇒   dx = dy · y (1 − y)
def sigmoid_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Sigmoid", y, dy)
    return {}, aten.sigmoid_backward.default(dy, y)


def Elu(alpha: float = 1.0) -> Layer:
    """`y = x` for x > 0, `alpha · (eˣ − 1)` otherwise."""
    _checks.number("Elu", "alpha", alpha)
    forward = functools.partial(torch.nn.functional.elu, alpha=alpha)
    return elementwise("Elu", forward, elu_backward, keep="input", constants=(alpha,))


# y = x if x > 0 else α(eˣ − 1)   ⇒   dx = dy if x > 0 else dy · α eˣ
def elu_backward(
    residuals: tuple[torch.Tensor, float], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    x, alpha = residuals
    _check_dy("Elu", x, dy)
    return {}, aten.elu_backward.default(dy, alpha, 1.0, 1.0, False, x)


def Gelu(approximate: str = "none") -> Layer:
    """`y = x · Φ(x)` (`approximate="tanh"` for the tanh approximation), as `torch.nn.GELU`."""
    if approximate not in ("none", "tanh"):
        raise _checks.FnnError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    forward = functools.partial(torch.nn.functional.gelu, approximate=approximate)
    return elementwise("Gelu", forward, gelu_backward, keep="input", constants=(approximate,))


# y = x Φ(x)   ⇒   dx = dy · (Φ(x) + x φ(x))
def gelu_backward(
    residuals: tuple[torch.Tensor, str], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    x, approximate = residuals
    _check_dy("Gelu", x, dy)
    return {}, aten.gelu_backward.default(dy, x, approximate=approximate)


def Softplus(beta: float = 1.0, threshold: float = 20.0) -> Layer:
    """`y = log(1 + e^(βx)) / β`, linear where βx > threshold (as `torch.nn.Softplus`)."""
    _checks.number("Softplus", "beta", beta)
    _checks.number("Softplus", "threshold", threshold)
    forward = functools.partial(torch.nn.functional.softplus, beta=beta, threshold=threshold)
    return elementwise(
        "Softplus", forward, softplus_backward, keep="input", constants=(beta, threshold)
    )


# y = log(1 + e^(βx)) / β   ⇒   dx = dy · σ(βx)   (dx = dy where βx > threshold)
def softplus_backward(
    residuals: tuple[torch.Tensor, float, float], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    x, beta, threshold = residuals
    _check_dy("Softplus", x, dy)
    return {}, aten.softplus_backward.default(dy, x, beta, threshold)


def Softmax() -> Layer:
    """`y = eˣ / Σ eˣ` over the last axis."""
    return elementwise("Softmax", _softmax_last, softmax_backward, min_rank=1)


def _softmax_last(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, -1)


# y = softmax(x)   ⇒   dx = y · (dy − Σ dy·y)
def softmax_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Softmax", y, dy)
    return {}, aten._softmax_backward_data.default(dy, y, -1, y.dtype)


def LogSoftmax() -> Layer:
    """`y = x − log Σ eˣ` over the last axis (stable for large inputs)."""
    return elementwise("LogSoftmax", _log_softmax_last, log_softmax_backward, min_rank=1)


def _log_softmax_last(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, -1)


# y = x − logΣeˣ   ⇒   dx = dy − eʸ · Σ dy
def log_softmax_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("LogSoftmax", y, dy)
    return {}, aten._log_softmax_backward_data.default(dy, y, -1, y.dtype)
