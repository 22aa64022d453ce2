"""The two core types: a `Layer` is `(init, apply)`; a `VJP` is `(backward, residuals)`.

A layer's `apply(params, x)` returns `(y, vjp)`. The `vjp` is closure-free: a
module-level `backward` function and the tensors it needs (`residuals`), so it
pickles, replays, and keeps alive exactly what it names:

    y, vjp = apply(params, x)
    dparams, dx = vjp(dy)          # == vjp.backward(vjp.residuals, dy)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeAlias, overload

import torch
from typing_extensions import Protocol

__all__ = [
    "Layer",
    "VJP",
    "Params",
    "Shape",
    "Shapes",
    "Key",
    "PyTree",
    "InitFn",
    "ApplyFn",
    "BackwardFn",
]

PyTree: TypeAlias = Any
"""Nested dicts, lists and tuples with tensors (or plain values) as leaves."""
Params: TypeAlias = dict[str, Any]
"""A layer's parameters: nested dicts with `str` keys and tensor leaves."""
Shape: TypeAlias = tuple[int, ...]
"""A tensor shape, batch first, with `-1` for "any batch size"."""
Shapes: TypeAlias = Shape | list["Shapes"]
"""One shape, or a list of them for layers with several inputs or outputs (nested for
`parallel` inside `parallel`)."""
Key: TypeAlias = torch.Tensor
"""An `fnn.random` key: a CPU int64 tensor of shape `(2,)`."""


class BackwardFn(Protocol):
    """`backward(residuals, dy) -> (dparams, dx)` for layers, `-> dpred` for losses."""

    def __call__(self, residuals: Any, dy: Any, /) -> Any: ...


class VJP(NamedTuple):
    """A closure-free vector-Jacobian product: `vjp(dy) == backward(residuals, dy)`.

    A layer's `apply` returns one beside its output; calling it with a cotangent `dy` of the
    output's shape gives `(dparams, dx)`, with `dparams` mirroring the params and `dx` of
    the input's shape (a loss's VJP gives `dpred`).

    Attributes:
        backward: `backward(residuals, dy)`, a module-level function, so the VJP pickles.
        residuals: what `backward` needs: a pytree of tensors and plain Python values.

    Example:
        >>> def double_backward(residuals, dy):
        ...     return {}, 2 * dy
        >>> VJP(double_backward, None)(torch.ones(3))
        ({}, tensor([2., 2., 2.]))
    """

    backward: BackwardFn
    residuals: Any

    def __call__(self, dy: Any) -> Any:
        return self.backward(self.residuals, dy)


class InitFn(Protocol):
    """`init(key, input_shape, *, dtype, device) -> (output_shape, params)`.

    `input_shape` is typed `Shapes` even for a one-input layer: `serial` hands each layer
    the previous one's output shape, so a layer checks what it gets (fnn's raise a
    `ShapeError` for a list where they expect one shape).
    """

    def __call__(
        self,
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = ...,
        device: torch.device | str = ...,
    ) -> tuple[Shapes, Params]: ...


class ApplyFn(Protocol):
    """`apply(params, x, **kwargs) -> (y, vjp)`; `x`/`y` are tensors or tuples of them.

    The first two parameters must be named `params` and `x` (callers may pass any
    keywords, so the names are part of the signature), and `**kwargs` must be accepted:
    combinators pass keywords such as `key=` to every layer.

    Given `state=` (a model with running statistics, see `fnn.state`), a model returns
    `(y, vjp, new_state)`; the type says "a tuple" there, so that both
    `y, vjp = apply(params, x)` and `y, vjp, state = apply(params, x, state=state)`
    type-check. A layer whose `apply` returns that third item declares `-> tuple[Any, ...]`.
    """

    # The state= form comes first: a state of unknown type (Any) picks it, so it unpacks too.
    @overload
    def __call__(
        self, params: Params, x: Any, *, state: Mapping[str, Any], **kwargs: Any
    ) -> tuple[Any, ...]: ...
    @overload
    def __call__(
        self, params: Params, x: Any, *, state: None = ..., **kwargs: Any
    ) -> tuple[Any, VJP]: ...


class Layer(NamedTuple):
    """A layer: a pair of pure functions, so `init, apply = Dense(25)` works.

    Attributes:
        init: `init(key, input_shape, *, dtype=torch.float32, device="cpu")` gives
            `(output_shape, params)`; shapes are tuples, batch first, `-1` for any batch size.
        apply: `apply(params, x, **kwargs)` gives `(y, vjp)`, and `vjp(dy)`, `dy` of `y`'s
            shape, gives `(dparams, dx)`, `dparams` mirroring `params` and `dx` of `x`'s shape.

    Example:
        A custom layer `y = s·x` with one scalar parameter `s`:

        >>> def scale_init(key, input_shape, *, dtype=torch.float32, device="cpu"):
        ...     return input_shape, {"s": torch.ones((), dtype=dtype, device=device)}
        >>> def scale_apply(params, x, **kwargs):
        ...     return params["s"] * x, fnn.VJP(scale_backward, (params["s"], x))
        >>> def scale_backward(residuals, dy):  # y = s x  ⇒  ds = Σ dy x,  dx = s dy
        ...     s, x = residuals
        ...     return {"s": (dy * x).sum()}, s * dy
        >>> init, apply = fnn.Layer(scale_init, scale_apply)
        >>> out_shape, params = init(fnn.random.key(0), (-1, 2))
        >>> y, vjp = apply(params, torch.ones(4, 2))
        >>> dparams, dx = vjp(torch.ones(4, 2))
        >>> out_shape, dparams, dx.shape
        ((-1, 2), {'s': tensor(8.)}, torch.Size([4, 2]))
    """

    init: InitFn
    apply: ApplyFn


# fnn's layer constructors tag their `apply` with attributes read through `getattr`:
# `layer_name` (here), `children` (serial/parallel), `init_state` (fnn.state) and `wrapped`
# (fnn.rules, fnn.remat). They set them with `apply.__dict__.update(...)`, which type
# checkers accept: they do not model attributes assigned on functions.
def layer_name(layer: Layer | ApplyFn) -> str:
    """The constructor name of a layer made by fnn ("Dense"), else its apply's name."""
    apply = layer.apply if isinstance(layer, Layer) else layer
    name = getattr(apply, "layer_name", None)
    if name:
        return str(name)
    qualname = getattr(apply, "__qualname__", type(apply).__name__)
    return qualname.split(".<locals>")[0].split(".")[0]


# Backpropagation inside fnn (value_and_grad) may *consume* a VJP instead of calling it.
# The VJP and its cotangent travel in a list, `box = [vjp, dy]`, that the callee empties:
# then no caller's frame keeps them alive, each residual and each cotangent is freed as
# soon as the backward pass is done with it (the peak memory of a large-batch step), and a
# layer may skip `dx` when nobody needs it (the first layer of a model). A layer opts in by
# registering a consumer `f(box, need_dx) -> (dparams, dx or None)` for its backward, where
# `box = [residuals, dy]`. Calling `vjp(dy)` directly is unaffected.
ConsumerFn: TypeAlias = Callable[[list[Any], bool], tuple[Params, Any]]
"""`consumer(box, need_dx) -> (dparams, dx or None)`, with `box = [residuals, dy]`."""

_CONSUMERS: dict[BackwardFn, ConsumerFn] = {}


def register_consumer(backward: BackwardFn, consumer: ConsumerFn) -> None:
    """Register `consumer(box, need_dx)` as the consuming variant of `backward`."""
    _CONSUMERS[backward] = consumer


def backprop(box: list[Any], need_dx: bool = True) -> tuple[Params, Any]:
    """`(dparams, dx)` for `box = [vjp, dy]`, emptying `box` so memory is freed as used.

    With `need_dx=False`, `dx` may be `None`. The caller must keep no other
    reference to the VJP or to `dy` for the memory to be released early.
    """
    dy = box.pop()
    backward, residuals = box.pop()
    consumer = _CONSUMERS.get(backward)
    if consumer is None:
        grads: tuple[Params, Any] = backward(residuals, dy)  # a layer's backward, not a loss's
        return grads
    box += (residuals, dy)
    del residuals, dy
    return consumer(box, need_dx)
