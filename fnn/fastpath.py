"""The flat fast path of `value_and_grad` for chains of Dense and elementwise layers.

`serial` gives its `apply` a `fast_plan` when every child is a `Dense` or an
elementwise activation: one `(kind, ...)` tuple per child, read from the child's
`apply.fast_spec`. For such a model and one of fnn's own losses, `value_and_grad`
runs the forward pass, the loss and the backward pass in one loop over the plan,
with the same kernels as the layers' own `apply` and VJP (so the results are
bit-identical) but without building a VJP per layer, and it frees each residual as
the backward pass consumes it. An activation right after a `Dense` runs in place on
the `Dense` output, a temporary nobody else sees.

Every check here is a cheap attribute read for what torch would let through
silently (a weight of the wrong height, a bias that broadcasts, a target of another
shape or dtype). Anything unusual makes `run` return `None`, and `value_and_grad`
takes the general path, which raises the clear error naming the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .core import Params

__all__ = ["DENSE", "ELEMENTWISE", "run"]

DENSE = "dense"  # ("dense", out_features, has_bias)
ELEMENTWISE = "elementwise"  # ("elementwise", forward, forward_, dx, keep_input, constants)
"""`forward_` is an in-place forward (or `None`); `dx(saved, dy) -> dx` the backward kernel,
`saved` being the input or the output (`keep_input`), with the constants appended."""

FastLoss = Callable[[torch.Tensor, Any], "tuple[torch.Tensor, torch.Tensor] | None"]


def run(
    plan: tuple[tuple[Any, ...], ...],
    names: tuple[str, ...],
    param_names: tuple[str, ...],
    loss: FastLoss,
    params: Params,
    x: Any,
    target: Any,
    keep_y: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, Params] | None:
    """`(value, y, grads)` for a `serial` model with a fast plan, or `None` to take the
    general path. `names` are the children's keys, `param_names` those with params;
    `y` (the model output) is `None` unless `keep_y`."""
    if type(params) is not dict or type(x) is not torch.Tensor or x.ndim != 2:
        return None
    given = tuple(params)
    full = given == names
    if not full and given != param_names:
        return None
    if not x.is_floating_point():
        return None
    saved: list[Any] = []
    fresh = False  # is `x` a temporary made here (a Dense output), safe to overwrite?
    for name, spec in zip(names, plan):
        if spec[0] is DENSE:
            p = params[name]
            weight = p["weight"]
            if weight.shape[0] != spec[1] or len(p) != 1 + spec[2]:
                return None
            if spec[2]:
                bias = p["bias"]
                if bias.ndim != 1 or bias.shape[0] != spec[1]:
                    return None
            else:
                bias = None
            saved.append(x)
            x = F.linear(x, weight, bias)
            fresh = True
        else:
            _, forward, forward_, _, keep_input, constants = spec
            if full and params[name]:
                return None
            y = forward_(x) if fresh and forward_ is not None else forward(x)
            saved.append(
                (x if keep_input else y, *constants) if constants else (x if keep_input else y)
            )
            x = y
            fresh = False
    found = loss(x, target)
    if found is None:
        return None
    value, dy = found
    if not keep_y:
        x = None  # the loss keeps what its gradient needs; the output may die now
    grads: list[Any] = [None] * len(plan)
    for i in range(len(plan) - 1, -1, -1):
        spec = plan[i]
        kept = saved.pop()
        if spec[0] is DENSE:
            grads[i] = {"weight": dy.t().mm(kept)}
            if spec[2]:
                grads[i]["bias"] = dy.sum(0)
            if i:
                dy = dy.mm(params[names[i]]["weight"])
        else:
            grads[i] = {}
            dy = spec[3](kept, dy)
        del kept
    if full:
        return value, x, dict(zip(names, grads))
    return value, x, {name: grads[i] for i, name in enumerate(names) if name in params}
