"""The flat fast path of `value_and_grad` for chains of Dense and elementwise layers.

`serial` gives its `apply` a `fast_plan` when every child is a `Dense` or an
elementwise activation: one `(kind, ...)` tuple per child, read from the child's
`apply.fast_spec`. For such a model and one of fnn's own losses, `value_and_grad`
runs `compile_plan(...)`: the forward pass, the loss and the backward pass written
out as one straight-line Python function, exactly the hand-written backprop a
student would write for that model (`source(apply)` shows it). It calls the same
kernels as the layers' own `apply` and VJP, so the results are bit-identical, but
builds no VJP per layer and walks no loop, and it deletes each residual right after
its last use. An activation right after a `Dense` runs in place on the `Dense`
output, a temporary nobody else sees.

Two variants are generated: the eager one calls aten's backward kernels through
their C++ entry points (`eager_kernel`), the one `torch.compile` traces calls the
`OpOverload`s themselves and sums biases with `sum` (no cached tensors to guard on).

Every check in it is a cheap attribute read for what torch would let through
silently (a bias that broadcasts, a weight of the wrong shape, a params dict with
extra entries). Everything else (a weight of the wrong width, the wrong dtype or
device) makes a kernel raise. Anything unusual makes it return `None` (or raise),
and `value_and_grad` takes the general path, which raises the clear error naming
the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ._constants import ones_cache, ones_for
from ._dicts import FRESH
from .core import Params

__all__ = [
    "DENSE",
    "ELEMENTWISE",
    "FastLoss",
    "FastRun",
    "compile_plan",
    "eager_kernel",
    "source",
]

DENSE = "dense"  # ("dense", out_features, has_bias)
ELEMENTWISE = (
    "elementwise"  # ("elementwise", forward, forward_, dx, keep_input, constants, aten_dx)
)
"""`forward_` is an in-place forward (or `None`); `dx(saved, dy) -> dx` the backward kernel,
`saved` being the input or the output (`keep_input`), with the constants appended;
`aten_dx` is `(overload, extra)` when that kernel is the aten op `overload(dy, saved, *extra)`
(or `None`)."""

FastLoss = Callable[[list[torch.Tensor], Any], "tuple[torch.Tensor, torch.Tensor] | None"]
"""`loss([pred], target) -> (value, dpred)` (the VJP of 1.0), or `None` to take the general
path; it takes `pred` out of the list, so the model output can be freed before `dpred` exists."""
FastRun = Callable[
    [FastLoss, Params, Any, Any, bool], "tuple[torch.Tensor, torch.Tensor | None, Params] | None"
]
"""`run(loss, params, x, target, keep_y) -> (value, y or None, grads)`, or `None`."""

Plan = tuple[tuple[tuple[Any, ...], ...], tuple[str, ...], tuple[str, ...]]


def eager_kernel(overload: Any) -> Any:
    """The C++ entry point behind an aten `OpOverload` (its `_op`), which skips the overload's
    Python `__call__`: about 1 µs a call on a small CPU. Eager code only: `torch.compile`
    traces the `OpOverload` itself, not this."""
    return getattr(overload, "_op", overload)


def compile_plan(fast_plan: Plan, eager: bool = True) -> FastRun:
    """The straight-line `run` function for `serial`'s `fast_plan` (`eager=False`: the variant
    for `torch.compile` to trace)."""
    text, namespace = _generate(*fast_plan, eager=eager)
    exec(compile(text, "<fnn.fastpath>", "exec"), namespace)
    run: FastRun = namespace["run"]
    run.__dict__["source"] = text
    return run


def source(apply: Any) -> str:
    """The Python source of the (eager) fast path for a `serial` model's `apply`, for reading."""
    plan = getattr(apply, "fast_plan", None)
    if plan is None:
        raise ValueError(
            "fastpath.source: this apply has no fast plan (not a serial chain of Dense and activations)"
        )
    return _generate(*plan)[0]


def _generate(
    plan: tuple[tuple[Any, ...], ...],
    names: tuple[str, ...],
    param_names: tuple[str, ...],
    checks: bool = True,
    eager: bool = True,
) -> tuple[str, dict[str, Any]]:
    """The source of `run` and the namespace its names refer to. `checks=False` leaves the
    checks out (and assumes params for every layer): only the checks benchmark does that."""

    def unless(condition: str) -> list[str]:
        return [f"    if {condition}:", "        return None"] if checks else []

    namespace: dict[str, Any] = {"Tensor": torch.Tensor, "linear": F.linear}
    code = [
        "def run(loss, params, x, target, keep_y):",
        *unless(
            "type(params) is not dict or type(x) is not Tensor or x.ndim != 2"
            " or not x.is_floating_point()"
        ),
        "    given = tuple(params)" if checks else "",
        f"    full = given == {names!r}" if checks else "    full = True",
        *unless(f"not full and given != {param_names!r}"),
    ]
    mv_bias = eager and any(spec[0] is DENSE and spec[2] for spec in plan)
    if mv_bias:  # Σₙ dy as dyᵀ·1, as Dense's VJP does: see fnn/_scalars.py
        namespace.update(ONES=ones_cache(), ones_for=ones_for)
        code += [
            "    ones = ONES.get((x.shape[0], x.dtype, x.device))",
            "    if ones is None:",
            "        ones = ones_for(x)",
            "        if ones is None:",
            "            return None",
        ]
    # Forward: h{i} is layer i's output; `kept[i]` what its backward reads.
    kept: list[str] = []
    current, fresh, width = "x", False, None
    last_dense = max(i for i, spec in enumerate(plan) if spec[0] is DENSE) if plan else -1
    for i, (name, spec) in enumerate(zip(names, plan)):
        if spec[0] is DENSE:
            out, has_bias = spec[1], spec[2]
            code += [
                f"    # {name}: Dense({out})    y = x Wᵀ + b",
                f"    p{i} = params[{name!r}]",
                f"    w{i} = p{i}['weight']",
            ]
            # A weight of the wrong width makes `linear` raise; one of the wrong height is
            # caught by the next Dense (or, for the last, here), one of the wrong rank here.
            if width is not None:
                namespace[f"wshape{i}"] = torch.Size((out, width))
                bad = f"len(p{i}) != {1 + has_bias} or w{i}.shape != wshape{i}"
            elif i == last_dense:
                bad = f"len(p{i}) != {1 + has_bias} or w{i}.ndim != 2 or w{i}.shape[0] != {out}"
            else:
                bad = f"len(p{i}) != {1 + has_bias} or w{i}.ndim != 2"
            if has_bias:
                namespace[f"bshape{i}"] = torch.Size((out,))
                code.append(f"    b{i} = p{i}['bias']")
                bad += f" or b{i}.shape != bshape{i}"
            code += [
                *unless(bad),
                f"    h{i} = linear({current}, w{i}, {f'b{i}' if has_bias else 'None'})",
            ]
            kept.append(current)
            fresh, width = True, out
        else:
            _, forward, forward_, dx, keep_input, constants, aten_dx = spec
            inplace = fresh and forward_ is not None
            namespace[f"forward{i}"] = forward_ if inplace else forward
            code += [
                f"    # {name}: elementwise",
                *unless(f"full and params[{name!r}]"),
                f"    h{i} = forward{i}({current})" + ("  # in place" if inplace else ""),
            ]
            saved = current if keep_input else f"h{i}"
            if aten_dx is not None:
                overload, extra = aten_dx
                namespace[f"dx{i}"] = eager_kernel(overload) if eager else overload
                kept.append(saved)
            else:
                namespace[f"dx{i}"] = dx
                if constants:
                    namespace[f"constants{i}"] = constants
                    saved = f"({saved}, *constants{i})"
                kept.append(saved)
            fresh = False
        current = f"h{i}"
    # Backward, last layer first; each name is deleted after its last use.
    last_use: dict[str, int] = {}
    for i in range(len(plan)):  # the earliest layer reading a name uses it last
        for word in _names_in(kept[i]):
            last_use.setdefault(word, i)
    forward_names = ["x"] + [f"h{i}" for i in range(len(plan))]
    dead_after_forward = [n for n in forward_names if n not in last_use]
    code += [
        f"    y = {current} if keep_y else None",
        f"    box = [{current}]  # the loss takes the output out of the box: it may die early",
        f"    del {', '.join(dead_after_forward)}" if dead_after_forward else "",
        "    found = loss(box, target)",
        "    if found is None:",
        "        return None",
        "    value, dy = found",
        "    del found  # else it keeps the first cotangent alive through the backward pass",
    ]
    for i in range(len(plan) - 1, -1, -1):
        spec = plan[i]
        code.append(f"    # {names[i]}: backward")
        if spec[0] is DENSE:
            if not spec[2]:
                code += [
                    f"    gw{i} = dy.t().mm({kept[i]})",
                    f"    g{i} = {{'weight': gw{i}}}",
                ]
            elif mv_bias:
                code += [
                    "    dyt = dy.t()",
                    f"    gw{i} = dyt.mm({kept[i]})",
                    f"    gb{i} = dyt.mv(ones)",
                    f"    g{i} = {{'weight': gw{i}, 'bias': gb{i}}}",
                ]
            else:
                code += [
                    f"    gw{i} = dy.t().mm({kept[i]})",
                    f"    gb{i} = dy.sum(0)",
                    f"    g{i} = {{'weight': gw{i}, 'bias': gb{i}}}",
                ]
            if i:
                code.append(f"    dy = dy.mm(w{i})")
            if spec[2] and mv_bias:
                code.append("    del dyt  # a view: it would keep the old cotangent alive")
        elif spec[6] is not None:
            extra = "".join(f", {value!r}" for value in spec[6][1])
            code += [f"    g{i} = {{}}", f"    dy = dx{i}(dy, {kept[i]}{extra})"]
        else:
            code += [f"    g{i} = {{}}", f"    dy = dx{i}({kept[i]}, dy)"]
        dead = [w for w in _names_in(kept[i]) if last_use[w] == i]
        if dead:
            code.append(f"    del {', '.join(dead)}")
    if eager and checks:  # the tensors used and made, for update's pairing: see fnn/_dicts.py
        namespace["FRESH"] = FRESH
        made = [
            f"{kind}{i}, g{kind}{i}"
            for i, spec in enumerate(plan)
            if spec[0] is DENSE
            for kind in ("wb" if spec[2] else "w")
        ]
        code.append(f"    FRESH[0] = ({', '.join(made)})")
    full = ", ".join(f"{name!r}: g{i}" for i, name in enumerate(names))
    partial = ", ".join(f"{name!r}: g{i}" for i, name in enumerate(names) if name in param_names)
    code += [
        "    if full:",
        f"        return value, y, {{{full}}}",
        f"    return value, y, {{{partial}}}",
        "",
    ]
    return "\n".join(line for line in code if line), namespace


def _names_in(expression: str) -> list[str]:
    """The variable names (x, h3) in a residual expression like `(h3, *constants4)`."""
    return [
        w
        for w in expression.strip("()").replace("*", "").split(", ")
        if not w.startswith("constants")
    ]
