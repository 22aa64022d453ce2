"""Rematerialisation: trade compute for memory by recomputing a layer's forward in its VJP.

`remat(layer)`'s VJP keeps only the layer's params and input; its backward runs the
forward again and then the original backward on the fresh residuals, so the
gradients are exactly the plain layer's while the activations inside the layer are
freed between the forward and the backward pass.
"""

from __future__ import annotations

from typing import Any

from .core import VJP, ApplyFn, Layer, Params, backprop, layer_name, register_consumer
from .errors import FnnTypeError, describe

__all__ = ["remat"]

# The wrapped layers' `apply` functions, by number. A remat VJP names its layer by this
# number (a plain int), not by the `apply` closure itself, so the VJP stays closure-free
# data and pickles; it can be replayed in the process that made it.
_APPLIES: list[ApplyFn] = []


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
    index = len(_APPLIES)
    _APPLIES.append(layer.apply)
    inner = layer.apply

    def apply(params: Params, x: Any, **kwargs: Any) -> tuple[Any, VJP]:
        y, _ = inner(params, x, **kwargs)  # the residuals are dropped here
        return y, VJP(remat_backward, (index, params, x, kwargs))

    apply.__dict__.update(layer_name=f"remat({layer_name(layer)})", wrapped=layer)
    return Layer(layer.init, apply)


# y = f(params, x)   ⇒   recompute (y, vjp_f) = f(params, x), then (dparams, dx) = vjp_f(dy)
def remat_backward(
    residuals: tuple[int, Params, Any, dict[str, Any]], dy: Any
) -> tuple[Params, Any]:
    index, params, x, kwargs = residuals
    _, vjp = _APPLIES[index](params, x, **kwargs)
    grads: tuple[Params, Any] = vjp(dy)
    return grads


def remat_consume(box: list[Any], need_dx: bool) -> tuple[Params, Any]:
    """`remat_backward` for `fnn.core.backprop`: the recomputed residuals are freed as used."""
    dy = box.pop()
    index, params, x, kwargs = box.pop()
    _, vjp = _APPLIES[index](params, x, **kwargs)
    del x
    return backprop([vjp, dy], need_dx)


register_consumer(remat_backward, remat_consume)
