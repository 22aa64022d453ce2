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

from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from . import _checks

# torch.ops.aten has no type annotations: its ops return Any (the no-any-return ignores below)
aten = torch.ops.aten
_threshold_backward = aten.threshold_backward.default
_tanh_backward = aten.tanh_backward.default
_sigmoid_backward = aten.sigmoid_backward.default

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

    Args:
        name: the layer's name, used in error messages (`"Square"`).
        forward: `y = forward(x)`, elementwise (or along the last axis), `y` of `x`'s shape.
        backward: a module-level `backward(residuals, dy) -> ({}, dx)`; the residuals are
            `(saved, *constants)`, or just `saved` when there are no constants.
        keep: which tensor the VJP saves: `"output"` (`y`) or `"input"` (`x`).
        constants: plain values added to the residuals (a slope, an `alpha`).
        min_rank: the least rank of an input (1 for softmax over the last axis).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of rank ≥ `min_rank`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        ValueError: `keep` is neither `"output"` nor `"input"`.

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
        input_shape: Shapes,
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

    return declare(
        init, apply, LayerInfo(name, backward=backward, step=_step(forward, keep_input, constants))
    )


def _step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    keep_input: bool,
    constants: tuple[Any, ...],
    inplace: Callable[[torch.Tensor], torch.Tensor] | None = None,
    kernel: Any = None,
) -> tuple[Any, ...]:
    """How `fnn.train_step` computes an elementwise layer inline: `(kind, forward, in-place
    forward or None, keep_input, constants, (aten op, extra args) or None)`; with an aten op,
    `dx = op(dy, saved, *extra)` is exactly what the layer's backward computes."""
    return ("elementwise", forward, inplace, keep_input, constants, kernel)


def _with_kernels(
    layer: Layer,
    inplace: Callable[[torch.Tensor], torch.Tensor],
    kernel: Any,
    *extra: Any,
) -> Layer:
    """`layer` declared with an in-place forward and the aten op its backward is, for the step."""
    info = layer.apply.info  # type: ignore[attr-defined]
    _, forward, _, keep_input, constants, _ = info.step
    step = _step(forward, keep_input, constants, inplace, (kernel, extra))
    return declare(layer.init, layer.apply.func, info._replace(step=step))  # type: ignore[attr-defined]


def _check_dy(name: str, saved: torch.Tensor, dy: object) -> None:
    if not isinstance(dy, torch.Tensor) or dy.shape != saved.shape or dy.dtype is not saved.dtype:
        _checks.cotangent_like(name, dy, saved.shape, saved)


def Identity() -> Layer:
    """`y = x`, as `torch.nn.Identity`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Example:
        >>> y, vjp = Identity().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-1.,  0.,  2.]), ({}, tensor([1., 1., 1.])))
    """
    return elementwise("Identity", _identity, identity_backward, keep="output")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# y = x   ⇒   dx = dy
@backward
def identity_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Identity", y, dy)
    return {}, dy


def Relu() -> Layer:
    """`y = max(x, 0)`, as `torch.nn.ReLU`; the gradient at `x = 0` is 0, as in torch.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Example:
        >>> y, vjp = Relu().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([0., 0., 2.]), ({}, tensor([0., 0., 1.])))
    """
    return _with_kernels(
        elementwise("Relu", torch.relu, relu_backward), torch.relu_, _threshold_backward, 0
    )


# y = max(x, 0)   ⇒   dx = dy · [y > 0]
@backward
def relu_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Relu", y, dy)
    return {}, _relu_dx(y, dy)


def _relu_dx(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return _threshold_backward(dy, y, 0)  # type: ignore[no-any-return]


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    """`y = x` for x > 0, `negative_slope · x` otherwise, as `torch.nn.LeakyReLU`.

    Args:
        negative_slope: the slope for x ≤ 0.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: `negative_slope` is not a number.

    Example:
        >>> y, vjp = LeakyRelu(0.1).apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-0.1000,  0.0000,  2.0000]), ({}, tensor([0.1000, 0.1000, 1.0000])))
    """
    _checks.number("LeakyRelu", "negative_slope", negative_slope)
    forward = functools.partial(torch.nn.functional.leaky_relu, negative_slope=negative_slope)
    return elementwise(
        "LeakyRelu", forward, leaky_relu_backward, keep="input", constants=(negative_slope,)
    )


# y = x if x > 0 else a·x   ⇒   dx = dy if x > 0 else a·dy
@backward
def leaky_relu_backward(
    residuals: tuple[torch.Tensor, float], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    x, slope = residuals
    _check_dy("LeakyRelu", x, dy)
    return {}, aten.leaky_relu_backward.default(dy, x, slope, False)


def Tanh() -> Layer:
    """`y = tanh(x)`, as `torch.nn.Tanh`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Example:
        >>> y, vjp = Tanh().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-0.7616,  0.0000,  0.9640]), ({}, tensor([0.4200, 1.0000, 0.0707])))
    """
    return _with_kernels(
        elementwise("Tanh", torch.tanh, tanh_backward), torch.tanh_, _tanh_backward
    )


# y = tanh x   ⇒   dx = dy · (1 − y²)
@backward
def tanh_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Tanh", y, dy)
    return {}, _tanh_dx(y, dy)


def _tanh_dx(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return _tanh_backward(dy, y)  # type: ignore[no-any-return]


def Sigmoid() -> Layer:
    """`y = 1 / (1 + e^−x)`, as `torch.nn.Sigmoid`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Example:
        >>> y, vjp = Sigmoid().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([0.2689, 0.5000, 0.8808]), ({}, tensor([0.1966, 0.2500, 0.1050])))
    """
    return _with_kernels(
        elementwise("Sigmoid", torch.sigmoid, sigmoid_backward), torch.sigmoid_, _sigmoid_backward
    )


# y = σ(x)   ⇒   dx = dy · y (1 − y)
@backward
def sigmoid_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Sigmoid", y, dy)
    return {}, _sigmoid_dx(y, dy)


def _sigmoid_dx(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return _sigmoid_backward(dy, y)  # type: ignore[no-any-return]


def Elu(alpha: float = 1.0) -> Layer:
    """`y = x` for x > 0, `alpha · (eˣ − 1)` otherwise, as `torch.nn.ELU`.

    Args:
        alpha: the scale of the negative part.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: `alpha` is not a number.

    Example:
        >>> y, vjp = Elu().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-0.6321,  0.0000,  2.0000]), ({}, tensor([0.3679, 1.0000, 1.0000])))
    """
    _checks.number("Elu", "alpha", alpha)
    forward = functools.partial(torch.nn.functional.elu, alpha=alpha)
    return elementwise("Elu", forward, elu_backward, keep="input", constants=(alpha,))


# y = x if x > 0 else α(eˣ − 1)   ⇒   dx = dy if x > 0 else dy · α eˣ
@backward
def elu_backward(
    residuals: tuple[torch.Tensor, float], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    x, alpha = residuals
    _check_dy("Elu", x, dy)
    return {}, aten.elu_backward.default(dy, alpha, 1.0, 1.0, False, x)


def Gelu(approximate: str = "none") -> Layer:
    """`y = x · Φ(x)`, Φ the standard normal CDF, as `torch.nn.GELU`.

    Args:
        approximate: `"none"` for the exact Φ, `"tanh"` for the tanh approximation.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnError: `approximate` is neither `"none"` nor `"tanh"`.

    Example:
        >>> y, vjp = Gelu().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-0.1587,  0.0000,  1.9545]), ({}, tensor([-0.0833,  0.5000,  1.0852])))
    """
    if approximate not in ("none", "tanh"):
        raise _checks.FnnError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    forward = functools.partial(torch.nn.functional.gelu, approximate=approximate)
    return elementwise("Gelu", forward, gelu_backward, keep="input", constants=(approximate,))


# y = x Φ(x)   ⇒   dx = dy · (Φ(x) + x φ(x))
@backward
def gelu_backward(
    residuals: tuple[torch.Tensor, str], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    x, approximate = residuals
    _check_dy("Gelu", x, dy)
    return {}, aten.gelu_backward.default(dy, x, approximate=approximate)


def Softplus(beta: float = 1.0, threshold: float = 20.0) -> Layer:
    """`y = log(1 + e^(βx)) / β`, linear where βx > threshold, as `torch.nn.Softplus`.

    Args:
        beta: β, the sharpness.
        threshold: above this value of βx, `y = x`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: `beta` or `threshold` is not a number.

    Example:
        >>> y, vjp = Softplus().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([0.3133, 0.6931, 2.1269]), ({}, tensor([0.2689, 0.5000, 0.8808])))
    """
    _checks.number("Softplus", "beta", beta)
    _checks.number("Softplus", "threshold", threshold)
    forward = functools.partial(torch.nn.functional.softplus, beta=beta, threshold=threshold)
    return elementwise(
        "Softplus", forward, softplus_backward, keep="input", constants=(beta, threshold)
    )


# y = log(1 + e^(βx)) / β   ⇒   dx = dy · σ(βx)   (dx = dy where βx > threshold)
@backward
def softplus_backward(
    residuals: tuple[torch.Tensor, float, float], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    x, beta, threshold = residuals
    _check_dy("Softplus", x, dy)
    return {}, aten.softplus_backward.default(dy, x, beta, threshold)


def Softmax() -> Layer:
    """`y = eˣ / Σ eˣ` over the last axis, as `torch.nn.Softmax(dim=-1)`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of shape `(..., features)`, gives `(y, vjp)` with `y` of
            `x`'s shape; `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s
            shape.

    Example:
        >>> y, vjp = Softmax().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.tensor([1.0, 0.0, 0.0]))
        (tensor([0.0420, 0.1142, 0.8438]), ({}, tensor([ 0.0402, -0.0048, -0.0354])))
    """
    return elementwise("Softmax", _softmax_last, softmax_backward, min_rank=1)


def _softmax_last(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, -1)


# y = softmax(x)   ⇒   dx = y · (dy − Σ dy·y)
@backward
def softmax_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("Softmax", y, dy)
    return {}, aten._softmax_backward_data.default(dy, y, -1, y.dtype)


def LogSoftmax() -> Layer:
    """`y = x − log Σ eˣ` over the last axis, stable for large inputs, as `torch.nn.LogSoftmax`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of shape `(..., features)`, gives `(y, vjp)` with `y` of
            `x`'s shape; `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s
            shape.

    Example:
        >>> y, vjp = LogSoftmax().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-3.1698, -2.1698, -0.1698]), ({}, tensor([ 0.8740,  0.6574, -1.5314])))
    """
    return elementwise("LogSoftmax", _log_softmax_last, log_softmax_backward, min_rank=1)


def _log_softmax_last(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, -1)


# y = x − logΣeˣ   ⇒   dx = dy − eʸ · Σ dy
@backward
def log_softmax_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    _check_dy("LogSoftmax", y, dy)
    return {}, aten._log_softmax_backward_data.default(dy, y, -1, y.dtype)


# Per example (fnn.per_example_grads): elementwise layers are their own rule; softmax over
# the last axis is too, unless that axis is the batch axis.
for _elementwise_backward in (
    identity_backward,
    relu_backward,
    leaky_relu_backward,
    tanh_backward,
    sigmoid_backward,
    elu_backward,
    gelu_backward,
    softplus_backward,
):
    _elementwise_backward.example_wise()
del _elementwise_backward


@softmax_backward.per_example_rule
def _softmax_per_example(
    y: torch.Tensor, dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor]:
    del need_dx
    _last_axis_not_batch("Softmax", y)
    return softmax_backward.function(y, dy)  # type: ignore[no-any-return]


@log_softmax_backward.per_example_rule
def _log_softmax_per_example(
    y: torch.Tensor, dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor]:
    del need_dx
    _last_axis_not_batch("LogSoftmax", y)
    return log_softmax_backward.function(y, dy)  # type: ignore[no-any-return]


def _last_axis_not_batch(name: str, y: torch.Tensor) -> None:
    if y.ndim < 2:
        raise _checks.FnnError(
            f"{name}: on an input of shape {tuple(y.shape)} its last axis is the batch axis, so it "
            "mixes examples and per-example gradients are not defined"
        )
