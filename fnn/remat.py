"""Rematerialisation: trade compute for memory by recomputing a layer's forward in its VJP.

`remat(layer)`'s VJP keeps only the layer's params and input; its backward runs the
forward again and then the original backward on the fresh residuals, so the
gradients are exactly the plain layer's while the activations inside the layer are
freed between the forward and the backward pass.
"""

from __future__ import annotations

from typing import Any

from .core import VJP, Layer, LayerInfo, Params, backprop, backward, declare, layer_info
from .errors import FnnError, FnnTypeError, describe

__all__ = [
    "remat",
    "remat_backward",
]


class _Forward:
    """The wrapped layer's `apply`, held in a remat VJP's residuals so its backward can run
    the forward again. A layer's `apply` is usually a closure, which no pickle can carry: this
    says so clearly instead of failing deep inside pickle."""

    __slots__ = ("apply",)

    def __init__(self, apply: Any):
        self.apply = apply

    def __reduce__(self) -> Any:
        raise FnnError(
            f"remat: a remat VJP holds {layer_info(self.apply).name}'s forward function to run "
            "it again, and a layer's apply cannot be pickled; pickle the params and input "
            "instead and call the model again"
        )


def remat(layer: Layer) -> Layer:
    """`layer` with a VJP that keeps only `(params, x)` and recomputes the forward pass.

    The forward output, the params and the gradients are the plain layer's (keyword
    arguments such as `key=` are kept and given again, so a random layer draws the same
    numbers). What the VJP keeps alive is the input and the params instead of the layer's
    residuals: for `serial(Dense(256), Relu(), Dense(256), Relu())` that is the input alone
    instead of every hidden activation (`fnn.summary` shows the difference).

    Args:
        layer: any `Layer`.

    Returns:
        A `Layer(init, apply)` with `layer`'s `init`, params and shapes: `apply(params, x)`
            returns `layer`'s `y` and a `vjp` whose `vjp(dy)` gives `layer`'s `(dparams, dx)`.

    Raises:
        FnnTypeError: `layer` is not a `Layer` (e.g. `Relu` instead of `Relu()`).

    Example:
        >>> layer = fnn.remat(fnn.serial(L.Dense(8), L.Relu(), L.Dense(2)))
        >>> _, params = layer.init(fnn.random.key(0), (-1, 3))
        >>> y, vjp = layer.apply(params, torch.ones(4, 3))
        >>> dparams, dx = vjp(torch.ones(4, 2))
        >>> dx.shape
        torch.Size([4, 3])
    """
    if not (isinstance(layer, tuple) and len(layer) == 2 and all(map(callable, layer))):
        hint = " (did you forget the call, e.g. Relu()?)" if callable(layer) else ""
        raise FnnTypeError(
            f"remat: expected a Layer (init, apply) pair, got {describe(layer)}{hint}"
        )
    inner = layer.apply
    forward = _Forward(inner)

    def apply(params: Params, x: Any, **kwargs: Any) -> tuple[Any, ...]:
        if "state" in kwargs:  # (y, vjp, new_state): the recomputation sees the same state
            y, _, new_state = inner(params, x, **kwargs)
            return y, VJP(remat_backward, (forward, params, x, kwargs)), new_state
        y, _ = inner(params, x, **kwargs)  # the residuals are dropped here
        return y, VJP(remat_backward, (forward, params, x, kwargs))

    inner_info = layer_info(layer)
    info = LayerInfo(
        f"remat({inner_info.name})",
        kind="wrapper",
        children=(layer,),
        keywords=inner_info.keywords,
        init_state=inner_info.init_state,
    )
    return declare(layer.init, apply, info)


@backward
def remat_backward(
    residuals: tuple[_Forward, Params, Any, dict[str, Any]], dy: Any
) -> tuple[Params, Any]:
    """y = f(params, x)   ⇒   recompute (y, vjp_f) = f(params, x), then (dparams, dx) = vjp_f(dy)"""
    forward, params, x, kwargs = residuals
    vjp = forward.apply(params, x, **kwargs)[1]
    grads: tuple[Params, Any] = vjp(dy)
    return grads


@remat_backward.consumer
def _remat_consume(box: list[Any], need_dx: bool) -> tuple[Params, Any]:
    """`remat_backward` for `fnn.core.backprop`: the recomputed residuals are freed as used."""
    dy = box.pop()
    forward, params, x, kwargs = box.pop()
    vjp = forward.apply(params, x, **kwargs)[1]
    del x
    return backprop([vjp, dy], need_dx)
