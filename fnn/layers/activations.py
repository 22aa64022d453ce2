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
    "Silu",
    "Mish",
    "Hardtanh",
    "Relu6",
    "Prelu",
    "Glu",
    "identity_backward",
    "relu_backward",
    "leaky_relu_backward",
    "tanh_backward",
    "sigmoid_backward",
    "elu_backward",
    "gelu_backward",
    "softplus_backward",
    "softmax_backward",
    "log_softmax_backward",
    "silu_backward",
    "mish_backward",
    "hardtanh_backward",
    "prelu_backward",
    "glu_backward",
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


@backward
def identity_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = x   ⇒   dx = dy"""
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


@backward
def relu_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = max(x, 0)   ⇒   dx = dy · [y > 0]"""
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


@backward
def leaky_relu_backward(
    residuals: tuple[torch.Tensor, float], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = x if x > 0 else a·x   ⇒   dx = dy if x > 0 else a·dy"""
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


@backward
def tanh_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = tanh x   ⇒   dx = dy · (1 − y²)"""
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


@backward
def sigmoid_backward(y: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = σ(x)   ⇒   dx = dy · y (1 − y)"""
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


@backward
def elu_backward(
    residuals: tuple[torch.Tensor, float], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = x if x > 0 else α(eˣ − 1)   ⇒   dx = dy if x > 0 else dy · α eˣ"""
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


@backward
def gelu_backward(
    residuals: tuple[torch.Tensor, str], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = x Φ(x)   ⇒   dx = dy · (Φ(x) + x φ(x))"""
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


@backward
def softplus_backward(
    residuals: tuple[torch.Tensor, float, float], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = log(1 + e^(βx)) / β   ⇒   dx = dy · σ(βx)   (dx = dy where βx > threshold)"""
    x, beta, threshold = residuals
    _check_dy("Softplus", x, dy)
    return {}, aten.softplus_backward.default(dy, x, beta, threshold)


def Softmax(dim: int = -1) -> Layer:
    """`y = eˣ / Σ eˣ` along axis `dim`, as `torch.nn.Softmax(dim)`.

    Args:
        dim: the axis to normalise over (negative counts from the end); a 0-d input takes
            `0` or `-1`, as in torch.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape with an axis `dim`, gives `(y, vjp)` with `y` of
            `x`'s shape; `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s
            shape.

    Raises:
        FnnTypeError: `dim` is not an int.
        ShapeError: (from `init` and `apply`) an input without an axis `dim`.

    Example:
        >>> y, vjp = Softmax().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.tensor([1.0, 0.0, 0.0]))
        (tensor([0.0420, 0.1142, 0.8438]), ({}, tensor([ 0.0402, -0.0048, -0.0354])))
        >>> Softmax(dim=0).apply({}, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))[0]
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    _checks.axis_arg("Softmax", "dim", dim)
    forward = functools.partial(_softmax, dim)
    return _along(
        elementwise("Softmax", forward, softmax_backward, constants=(dim,)), "Softmax", dim
    )


def _softmax(dim: int, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, _checks.axis("Softmax", "dim", dim, x.ndim))


def _along(layer: Layer, name: str, dim: int) -> Layer:
    """`layer` whose `init` also checks that its input shapes have an axis `dim`."""
    init = layer.init

    def checked_init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shapes, Params]:
        out_shape, params = init(key, input_shape, dtype=dtype, device=device)
        _checks.axis(name, "dim", dim, len(out_shape) if isinstance(out_shape, tuple) else 0)
        return out_shape, params

    return declare(checked_init, layer.apply.func, layer.apply.info)  # type: ignore[attr-defined]


@backward
def softmax_backward(
    residuals: tuple[torch.Tensor, int], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = softmax(x)   ⇒   dx = y · (dy − Σ dy·y)   (sums along dim)"""
    y, dim = residuals
    _check_dy("Softmax", y, dy)
    return {}, aten._softmax_backward_data.default(dy, y, _wrap(dim, y.ndim), y.dtype)


def _wrap(dim: int, ndim: int) -> int:
    return dim % max(ndim, 1)


def LogSoftmax(dim: int = -1) -> Layer:
    """`y = x − log Σ eˣ` along axis `dim`, stable for large inputs, as `torch.nn.LogSoftmax(dim)`.

    Args:
        dim: the axis to normalise over (negative counts from the end); a 0-d input takes
            `0` or `-1`, as in torch.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape with an axis `dim`, gives `(y, vjp)` with `y` of
            `x`'s shape; `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s
            shape.

    Raises:
        FnnTypeError: `dim` is not an int.
        ShapeError: (from `init` and `apply`) an input without an axis `dim`.

    Example:
        >>> y, vjp = LogSoftmax().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-3.1698, -2.1698, -0.1698]), ({}, tensor([ 0.8740,  0.6574, -1.5314])))
    """
    _checks.axis_arg("LogSoftmax", "dim", dim)
    forward = functools.partial(_log_softmax, dim)
    return _along(
        elementwise("LogSoftmax", forward, log_softmax_backward, constants=(dim,)),
        "LogSoftmax",
        dim,
    )


def _log_softmax(dim: int, x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, _checks.axis("LogSoftmax", "dim", dim, x.ndim))


@backward
def log_softmax_backward(
    residuals: tuple[torch.Tensor, int], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = x − logΣeˣ   ⇒   dx = dy − eʸ · Σ dy   (sums along dim)"""
    y, dim = residuals
    _check_dy("LogSoftmax", y, dy)
    return {}, torch._log_softmax_backward_data(dy, y, _wrap(dim, y.ndim), y.dtype)


def Silu() -> Layer:
    """`y = x · σ(x)` (swish), as `torch.nn.SiLU`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Example:
        >>> y, vjp = Silu().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-0.2689,  0.0000,  1.7616]), ({}, tensor([0.0723, 0.5000, 1.0908])))
    """
    return elementwise("Silu", torch.nn.functional.silu, silu_backward, keep="input")


@backward
def silu_backward(x: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = x σ(x)   ⇒   dx = dy · σ(x) (1 + x (1 − σ(x)))"""
    _check_dy("Silu", x, dy)
    return {}, aten.silu_backward.default(dy, x)


def Mish() -> Layer:
    """`y = x · tanh(softplus(x))`, as `torch.nn.Mish`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Example:
        >>> y, vjp = Mish().apply({}, torch.tensor([-1.0, 0.0, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-0.3034,  0.0000,  1.9440]), ({}, tensor([0.0592, 0.6000, 1.0693])))
    """
    return elementwise("Mish", torch.nn.functional.mish, mish_backward, keep="input")


@backward
def mish_backward(x: torch.Tensor, dy: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """y = x tanh(s), s = softplus(x)   ⇒   dx = dy · (tanh s + x σ(x) (1 − tanh² s))"""
    _check_dy("Mish", x, dy)
    return {}, aten.mish_backward.default(dy, x)


def Hardtanh(min_val: float = -1.0, max_val: float = 1.0) -> Layer:
    """`y = min(max(x, min_val), max_val)`, as `torch.nn.Hardtanh`.

    The gradient is `dy` strictly inside `(min_val, max_val)` and 0 elsewhere, as in torch.

    Args:
        min_val: the lower bound.
        max_val: the upper bound, greater than `min_val`.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: `min_val` or `max_val` is not a number.
        FnnError: `max_val` is not greater than `min_val`.

    Example:
        >>> y, vjp = Hardtanh().apply({}, torch.tensor([-2.0, 0.5, 2.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([-1.0000,  0.5000,  1.0000]), ({}, tensor([0., 1., 0.])))
    """
    return _hardtanh("Hardtanh", min_val, max_val)


def Relu6() -> Layer:
    """`y = min(max(x, 0), 6)`, as `torch.nn.ReLU6` (Hardtanh on `[0, 6]`).

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` and `{}`;
            `apply({}, x)`, `x` of any shape `(...)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Example:
        >>> y, vjp = Relu6().apply({}, torch.tensor([-1.0, 3.0, 7.0]))
        >>> y, vjp(torch.ones(3))
        (tensor([0., 3., 6.]), ({}, tensor([0., 1., 0.])))
    """
    return _hardtanh("Relu6", 0.0, 6.0)


def _hardtanh(name: str, min_val: float, max_val: float) -> Layer:
    _checks.number(name, "min_val", min_val)
    _checks.number(name, "max_val", max_val)
    if not max_val > min_val:
        raise _checks.FnnError(
            f"{name}: max_val must be greater than min_val, got min_val={min_val!r}, max_val={max_val!r}"
        )
    forward = functools.partial(torch.nn.functional.hardtanh, min_val=min_val, max_val=max_val)
    return elementwise(
        name, forward, hardtanh_backward, keep="input", constants=(min_val, max_val, name)
    )


@backward
def hardtanh_backward(
    residuals: tuple[torch.Tensor, float, float, str], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = clamp(x, a, b)   ⇒   dx = dy · [a < x < b]"""
    x, min_val, max_val, name = residuals
    _check_dy(name, x, dy)
    return {}, aten.hardtanh_backward.default(dy, x, min_val, max_val)


def Prelu(num_parameters: int = 1, init: float = 0.25) -> Layer:
    """`y = x` for x ≥ 0, `a · x` otherwise, with a learnt slope `a`, as `torch.nn.PReLU`.

    One slope for all channels (`num_parameters=1`), or one per channel, the channel axis
    being axis 1 (an input of rank < 2 has one channel), as in torch.

    Args:
        num_parameters: how many slopes: 1, or the number of channels.
        init: the initial value of every slope.

    Returns:
        `Layer(init, apply)`. `init(key, shape)` gives `shape` and params
            `{"weight": (num_parameters,)}` filled with `init`; `apply(params, x)`, `x` of
            any shape `(N, C, ...)` (`C == num_parameters` unless that is 1), gives `(y, vjp)`
            with `y` of `x`'s shape; `vjp(dy)`, `dy` of `y`'s shape, gives `(dparams, dx)`
            shaped as `(params, x)`.

    Raises:
        FnnError: `num_parameters` is not a positive int.
        FnnTypeError: `init` is not a number.
        ShapeError: (from `init` and `apply`) an input whose axis 1 is not `num_parameters`
            long, or params of the wrong shape.

    Example:
        >>> layer = Prelu()
        >>> _, params = layer.init(fnn.random.key(0), (-1, 3))
        >>> y, vjp = layer.apply(params, torch.tensor([[-2.0, 0.0, 2.0]]))
        >>> y, vjp(torch.ones(1, 3))
        (tensor([[-0.5000,  0.0000,  2.0000]]), ({'weight': tensor([-2.])}, tensor([[0.2500, 0.2500, 1.0000]])))
    """
    _checks.positive_int("Prelu", "num_parameters", num_parameters)
    _checks.number("Prelu", "init", init)
    slope = init

    def init_(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key
        shape = _checks.input_shape("Prelu", input_shape, min_rank=0)
        _checks.init_dtype("Prelu", dtype, device)
        channels = shape[1] if len(shape) > 1 else 1
        if num_parameters != 1 and channels != num_parameters:
            raise _checks.ShapeError(
                f"Prelu: expected {num_parameters} channels on axis 1, got input shape {shape}"
            )
        return shape, {"weight": torch.full((num_parameters,), slope, dtype=dtype, device=device)}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        weight = _prelu_weight(params, x)
        y = aten._prelu_kernel.default(x, weight)
        return y, VJP(prelu_backward, (x, weight))

    return declare(init_, apply, LayerInfo("Prelu"))


def _prelu_weight(params: Params, x: object) -> torch.Tensor:
    """params["weight"] viewed as `(1, C, 1, …)` for `x` (torch's broadcast), or a clear error."""
    try:
        weight: torch.Tensor = params["weight"]
        if len(params) != 1:
            raise KeyError
    except (KeyError, TypeError):
        _checks.param_leaves("Prelu", params, ["weight"])
        raise
    _checks.input_like("Prelu", x, weight)
    _checks.float_input("Prelu", x)
    assert isinstance(x, torch.Tensor)
    channels = x.shape[1] if x.ndim > 1 else 1
    if weight.ndim != 1 or weight.shape[0] not in (1, channels):
        raise _checks.ShapeError(
            f"Prelu: params['weight'] of shape {tuple(weight.shape)} does not fit an input of "
            f"shape {tuple(x.shape)} (expected (1,) or ({channels},): one slope per channel, axis 1)"
        )
    view = [1] * x.ndim
    if x.ndim > 1:
        view[1] = weight.shape[0]
    return weight.reshape(view)


@backward
def prelu_backward(
    residuals: tuple[torch.Tensor, torch.Tensor], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """
    y = x if x ≥ 0 else a·x   ⇒   da = Σ dy · x · [x < 0] (per channel),  dx = dy if x ≥ 0 else a·dy
    """
    x, weight = residuals
    _check_dy("Prelu", x, dy)
    dx, dweight = aten._prelu_kernel_backward.default(dy, x, weight)
    if weight.numel() == 1:
        return {"weight": dweight.sum().reshape(1)}, dx
    return {"weight": dweight.sum([d for d in range(x.ndim) if d != 1])}, dx


# per example: da[n] = Σ over the axes of example n but the channel's
@prelu_backward.per_example_rule
def _prelu_per_example(
    residuals: tuple[torch.Tensor, torch.Tensor], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor]:
    del need_dx
    x, weight = residuals
    _check_dy("Prelu", x, dy)
    if x.ndim < 1:
        raise _checks.FnnError(
            "Prelu: per-example gradients need an input with a batch axis, got a 0-d input"
        )
    dx, dweight = aten._prelu_kernel_backward.default(dy, x, weight)
    keep = 1 if weight.numel() == 1 else 2
    grad = dweight.sum(list(range(keep, x.ndim))) if x.ndim > keep else dweight
    return {"weight": grad.reshape(x.shape[0], weight.numel())}, dx


def Glu(dim: int = -1) -> Layer:
    """`y = a · σ(b)`, `a` and `b` the two halves of `x` along `dim`, as `torch.nn.GLU(dim)`.

    Args:
        dim: the axis to split in two (negative counts from the end); its size must be even.

    Returns:
        Parameter-free `Layer(init, apply)`. `init(key, shape)` gives `shape` with axis `dim`
            halved and `{}`; `apply({}, x)` gives `(y, vjp)` with `y` of that shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `({}, dx)` with `dx` of `x`'s shape.

    Raises:
        FnnTypeError: `dim` is not an int.
        ShapeError: (from `init` and `apply`) a 0-d input, or axis `dim` missing or of odd size.

    Example:
        >>> y, vjp = Glu().apply({}, torch.tensor([[1.0, 2.0, 0.0, 1.0]]))
        >>> y, vjp(torch.ones(1, 2))
        (tensor([[0.5000, 1.4621]]), ({}, tensor([[0.5000, 0.7311, 0.2500, 0.3932]])))
    """
    _checks.axis_arg("Glu", "dim", dim)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key, dtype, device
        shape = _checks.input_shape("Glu", input_shape, min_rank=1)
        axis = _glu_axis(dim, shape)
        half = -1 if shape[axis] == -1 else shape[axis] // 2
        return shape[:axis] + (half,) + shape[axis + 1 :], {}

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        _checks.no_params("Glu", params)
        _checks.float_input("Glu", x)
        axis = _glu_axis(dim, tuple(x.shape))
        return torch.nn.functional.glu(x, axis), VJP(glu_backward, (x, axis))

    return declare(init, apply, LayerInfo("Glu"))


def _glu_axis(dim: int, shape: Shape) -> int:
    if not shape:
        raise _checks.ShapeError("Glu: expected an input of rank ≥ 1, got a 0-d input")
    axis = _checks.axis("Glu", "dim", dim, len(shape))
    if shape[axis] != -1 and shape[axis] % 2:
        raise _checks.ShapeError(
            f"Glu: axis dim={dim} must have an even size to split in two, got input shape {shape}"
        )
    return axis


@backward
def glu_backward(
    residuals: tuple[torch.Tensor, int], dy: torch.Tensor
) -> tuple[Params, torch.Tensor]:
    """y = a σ(b), x = [a, b]   ⇒   da = dy σ(b),  db = dy a σ(b) (1 − σ(b))"""
    x, axis = residuals
    out = x.shape[:axis] + (x.shape[axis] // 2,) + x.shape[axis + 1 :]
    if not isinstance(dy, torch.Tensor) or dy.shape != out or dy.dtype is not x.dtype:
        _checks.cotangent_like("Glu", dy, out, x)
    return {}, aten.glu_backward.default(dy, x, axis)


@glu_backward.per_example_rule
def _glu_per_example(
    residuals: tuple[torch.Tensor, int], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor]:
    del need_dx
    _axis_not_batch("Glu", *residuals)
    return glu_backward.function(residuals, dy)  # type: ignore[no-any-return]


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
    silu_backward,
    mish_backward,
    hardtanh_backward,
):
    _elementwise_backward.example_wise()
del _elementwise_backward


@softmax_backward.per_example_rule
def _softmax_per_example(
    residuals: tuple[torch.Tensor, int], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor]:
    del need_dx
    _axis_not_batch("Softmax", *residuals)
    return softmax_backward.function(residuals, dy)  # type: ignore[no-any-return]


@log_softmax_backward.per_example_rule
def _log_softmax_per_example(
    residuals: tuple[torch.Tensor, int], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor]:
    del need_dx
    _axis_not_batch("LogSoftmax", *residuals)
    return log_softmax_backward.function(residuals, dy)  # type: ignore[no-any-return]


def _axis_not_batch(name: str, y: torch.Tensor, dim: int) -> None:
    if y.ndim < 1 or _wrap(dim, y.ndim) == 0:
        raise _checks.FnnError(
            f"{name}: on an input of shape {tuple(y.shape)}, dim={dim} is the batch axis, so it "
            "mixes examples and per-example gradients are not defined"
        )
