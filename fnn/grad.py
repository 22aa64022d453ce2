"""`value_and_grad`: forward, loss and the chained VJPs in one call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import losses
from .core import VJP, ApplyFn, Params, backprop
from .errors import FnnError, FnnTypeError, describe

__all__ = ["value_and_grad", "Loss"]

Loss = Callable[[Any, Any], tuple[torch.Tensor, VJP]]
"""`loss(pred, target) -> (value, vjp)` with `vjp(dvalue) -> dpred`."""

# fnn's own losses accept a Python number as cotangent, which saves a tensor op per step;
# users' losses get a tensor, as the contract says.
_SCALAR_COTANGENT_LOSSES = frozenset((losses.mse, losses.cross_entropy, losses.bce_with_logits))


def value_and_grad(
    apply: ApplyFn, loss: Loss, has_aux: bool = False
) -> Callable[..., tuple[Any, Params]]:
    """Turn `apply` and `loss` into `f(params, x, target, **kwargs) -> (value, grads)`.

    `value` is the 0-d loss tensor and `grads` mirrors `params`. With
    `has_aux=True`, `f` returns `((value, y), grads)`, `y` being the model's
    output, so metrics need no second forward pass. Keywords (`key=`) go to `apply`.
    Given `state=` (a model with BatchNorm; see `fnn.state`), `f` also returns the
    new state, last: `(value, grads, new_state)` or `((value, y), grads, new_state)`.

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

    def loss_and_grads(params: Params, x: Any, target: Any, **kwargs: Any) -> tuple[Any, Params]:
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
        dvalue = 1.0 if loss in _SCALAR_COTANGENT_LOSSES else torch.ones_like(value)
        box = [vjp, loss_vjp(dvalue)]
        del vjp, loss_vjp  # `backprop` frees residuals and cotangents as soon as they are used
        grads, _ = backprop(box, need_dx=False)
        result = ((value, y), grads) if has_aux else (value, grads)
        return (*result, new_state) if stateful else result  # type: ignore[return-value]

    return loss_and_grads
