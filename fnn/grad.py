"""`value_and_grad`: forward, loss and the chained VJPs in one call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, overload

import torch
from typing_extensions import Protocol

from . import losses
from ._no_grad import without_grad
from .core import VJP, ApplyFn, Params, backprop, check_keywords, layer_info
from .errors import FnnError, FnnTypeError, describe

__all__ = ["value_and_grad", "Loss", "ValueAndGradFn"]

Loss = Callable[[Any, Any], tuple[torch.Tensor, VJP]]
"""`loss(pred, target) -> (value, vjp)` with `vjp(dvalue) -> dpred`."""

_Value = TypeVar("_Value", covariant=True)


class ValueAndGradFn(Protocol[_Value]):
    """`f(params, x, target, **kwargs) -> (value, grads)`, made by `value_and_grad`.

    `value` is the loss (`_Value` is `torch.Tensor`), or `(loss, y)` with `has_aux=True`.
    Given `state=`, `f` returns `(value, grads, new_state)`: the type says "a tuple" there,
    as for `ApplyFn`, so that both forms unpack.
    """

    @overload
    def __call__(
        self, params: Params, x: Any, target: Any, *, state: Mapping[str, Any], **kwargs: Any
    ) -> tuple[Any, ...]: ...
    @overload
    def __call__(
        self, params: Params, x: Any, target: Any, *, state: None = ..., **kwargs: Any
    ) -> tuple[_Value, Params]: ...


# fnn's own losses accept a Python number as cotangent, which saves a tensor op per step;
# users' losses get a tensor, as the contract says.
_SCALAR_COTANGENT_LOSSES = frozenset((losses.mse, losses.cross_entropy, losses.bce_with_logits))


@overload
def value_and_grad(
    apply: ApplyFn, loss: Loss, has_aux: Literal[False] = False
) -> ValueAndGradFn[torch.Tensor]: ...
@overload
def value_and_grad(
    apply: ApplyFn, loss: Loss, has_aux: Literal[True]
) -> ValueAndGradFn[tuple[torch.Tensor, Any]]: ...
@overload
def value_and_grad(apply: ApplyFn, loss: Loss, has_aux: bool) -> ValueAndGradFn[Any]: ...
def value_and_grad(apply: ApplyFn, loss: Loss, has_aux: bool = False) -> ValueAndGradFn[Any]:
    """Turn `apply` and `loss` into `f(params, x, target, **kwargs) -> (value, grads)`.

    Args:
        apply: a model's `apply(params, x, **kwargs) -> (y, vjp)`, e.g. `serial(...).apply`.
        loss: `loss(pred, target) -> (value, vjp)` giving a 0-d value, e.g. `fnn.losses.mse`.
        has_aux: also return the model's output `y`, so metrics need no second forward pass.

    Returns:
        `f(params, x, target, **kwargs)`, with `x` of the model's input shape, e.g.
            `(batch, in_features)`, `target` what `loss` takes, and keywords (`key=`) given
            to `apply`. It returns `(value, grads)`, `value` the 0-d loss tensor and `grads`
            mirroring `params`, each leaf of its parameter's shape; with `has_aux=True`,
            `((value, y), grads)`. Given `state=` (a model with BatchNorm; see `fnn.state`),
            `f` also returns the new state, last: `(value, grads, new_state)`.

    Raises:
        FnnTypeError: `apply` or `loss` is not a function (e.g. a layer instead of its apply).
        FnnError: (from `f`) a loss value that is not 0-d.

    Example:
        >>> init, apply = fnn.serial(L.Dense(2))
        >>> _, params = init(fnn.random.key(0), (-1, 3))
        >>> f = fnn.value_and_grad(apply, fnn.losses.cross_entropy)
        >>> loss, grads = f(params, torch.ones(4, 3), torch.tensor([0, 1, 1, 0]))
        >>> grads["0"]["weight"].shape
        torch.Size([2, 3])
    """
    if not callable(apply) or not callable(loss):
        raise FnnTypeError(
            "value_and_grad: expected value_and_grad(apply, loss) with two functions, got "
            f"{describe(apply)} and {describe(loss)} (pass layer.apply, not the layer)"
        )

    info = layer_info(apply)
    scalar_cotangent = loss in _SCALAR_COTANGENT_LOSSES

    def loss_and_grads(params: Params, x: Any, target: Any, **kwargs: Any) -> tuple[Any, ...]:
        if kwargs:
            check_keywords("value_and_grad", info, kwargs)
        # inputs that require grad must not build a graph
        return without_grad(_loss_and_grads, params, x, target, kwargs)

    def _loss_and_grads(
        params: Params, x: Any, target: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        stateful = (
            "state" in kwargs
        )  # a model with running statistics (BatchNorm): see fnn/state.py
        if stateful:
            y, vjp, new_state = apply(params, x, **kwargs)
        else:
            y, vjp = apply(params, x, **kwargs)
        value, loss_vjp = loss(y, target)
        if value.ndim:
            raise FnnError(
                f"value_and_grad: the loss must be a 0-d tensor (use reduction='mean' or 'sum'), "
                f"got shape {tuple(value.shape)}"
            )
        if not has_aux:
            del y  # the loss keeps what its VJP needs; the output itself may die now
        dvalue = 1.0 if scalar_cotangent else torch.ones_like(value)
        box = [vjp, loss_vjp(dvalue)]
        del vjp, loss_vjp  # `backprop` frees residuals and cotangents as soon as they are used
        grads, _ = backprop(box, need_dx=False)
        result = ((value, y), grads) if has_aux else (value, grads)
        return (*result, new_state) if stateful else result

    return loss_and_grads
