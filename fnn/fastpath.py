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
`OpOverload`s themselves and uses no cached tensors (nothing to guard on).

Small CPU batches are bound by per-op overhead, and a fresh tensor costs an
allocation, a Python object and, later, its release. So for a workspace of at most
`WORKSPACE_BYTES`, the eager variant keeps everything that does not leave the step
(the activations, the cotangents, the loss's residual) in buffers reused from step
to step, written with the kernels' `out=` forms, with their transposed and flat
views made once: the `.t()` before each weight gradient costs nothing then. What
the step returns (loss, gradients, and `y` for `has_aux`) is always fresh. A lock
keeps two threads from sharing a workspace: the second one takes the allocating
body, which is the same code without `out=`.

Every check in it is a cheap attribute read for what torch would let through
silently (a bias that broadcasts, a weight of the wrong shape, a params dict with
extra entries). Everything else (a weight of the wrong width, the wrong dtype or
device) makes a kernel raise. Anything unusual makes it return `None` (or raise),
and `value_and_grad` takes the general path, which raises the clear error naming
the layer. The shape reads are skipped for params the last update made from params
this model checked (`BUILT`), and the eager variant records what it checked and made
for the update (`FRESH`): see fnn/_dicts.py.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ._constants import scalar
from .core import Params

__all__ = [
    "DENSE",
    "ELEMENTWISE",
    "RECORD_BYTES",
    "WORKSPACE_BYTES",
    "BatchConstants",
    "FastLoss",
    "FastRun",
    "batch_constants",
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
(or `None`); its `grad_input=` overload writes the result in place."""

WORKSPACE_BYTES = 256 * 1024
"""The largest workspace the eager fast path keeps per model and batch shape (CPU only)."""
RECORD_BYTES = 1024 * 1024
"""The largest params for which the eager fast path records what it checked and made
(`FRESH`, fnn/_dicts.py): the record keeps them alive until the next step, and checks
matter only where a step is short anyway."""

BatchConstants = tuple[Any, ...]
"""`(n, 2 / n, 1, workspace, record)` for a batch of B rows, n = B · (the model's output
width): the 0-d constants of fnn's losses, the workspace (`None`, or a lock, the loss's
buffers and the step's buffers) and whether to record for the update (`RECORD_BYTES`),
cached per plan by `(B, dtype, device)` (see `batch_constants`)."""

FastLoss = Callable[..., "tuple[torch.Tensor, torch.Tensor] | None"]
"""`loss([pred], target, constants, buffers) -> (value, dpred)` (the VJP of 1.0), or `None` to
take the general path; it takes `pred` out of the list, so the model output can be freed
before `dpred` exists. `constants` are the batch's (`None` in the traced variant: the loss
makes its own); `buffers`, `(out, out.view(-1))` or `None`, is where it may put `dpred`."""
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


def batch_constants(
    cache: dict[Any, BatchConstants],
    width: int,
    buffer_widths: tuple[int, ...],
    transposed: tuple[bool, ...],
    param_count: tuple[int, int],
    x: torch.Tensor,
) -> BatchConstants | None:
    """The `BatchConstants` for a batch like `x` and a model of output width `width` whose
    workspace holds `(rows, w)` buffers for `buffer_widths` (the loss's buffer first, each
    followed by its transpose where `transposed` says so) and
    whose params have `a · x.shape[1] + b` elements for `param_count = (a, b)`, stored in
    `cache`; `None` (take the general path) for an empty batch or a dtype other than float32
    and float64. The same cached tensors as `fnn._constants.scalar` gives the losses, so the
    fast path rounds as the general path does."""
    rows = x.shape[0]
    if not rows or (x.dtype is not torch.float32 and x.dtype is not torch.float64):
        return None
    n = rows * width
    workspace = None
    size = rows * sum(buffer_widths) * x.element_size()
    if buffer_widths and x.device.type == "cpu" and size <= WORKSPACE_BYTES:
        # plain tensors even under inference_mode, so later steps outside it may write them
        with torch.inference_mode(False), torch.no_grad():
            buffers = [torch.empty(rows, w, dtype=x.dtype) for w in buffer_widths]
        loss_out = buffers[0]
        workspace = (
            threading.Lock(),
            (loss_out, loss_out.view(-1)),
            *(view for b, t in zip(buffers, transposed) for view in ((b, b.t()) if t else (b,))),
        )
    elements = param_count[0] * x.shape[1] + param_count[1]
    record = elements * x.element_size() <= RECORD_BYTES
    found = (scalar(float(n), x), scalar(2.0 / n, x), scalar(1.0, x), workspace, record)
    if len(cache) > 8:  # a few batch shapes: keep the workspaces few
        cache.clear()
    cache[(rows, x.dtype, x.device)] = found
    return found


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

    namespace: dict[str, Any] = {"Tensor": torch.Tensor, "linear": F.linear, "mm": torch.mm}
    code = [
        "def run(loss, params, x, target, keep_y):",
        # (an integer x makes `linear` raise, and has no batch constants)
        *unless("type(params) is not dict or type(x) is not Tensor or x.ndim != 2"),
        # (a missing key raises KeyError below: the general path then names it)
        f"    full = len(params) == {len(names)}" if checks else "    full = True",
        *unless(f"not full and len(params) != {len(param_names)}"),
    ]
    widths = _widths(plan)
    dense = [i for i, spec in enumerate(plan) if spec[0] is DENSE]
    batch = eager and bool(dense)  # per-batch constants: see batch_constants
    layout = _Workspace(plan, widths) if batch else None
    if batch:
        assert layout is not None
        cache: dict[Any, BatchConstants] = {}
        namespace.update(
            CONSTANTS=cache,
            batch_constants=functools.partial(
                batch_constants,
                cache,
                plan[dense[-1]][1],
                layout.widths,
                layout.transposed,
                _param_count(plan),
            ),
        )
        code += [
            "    constants = CONSTANTS.get((x.shape[0], x.dtype, x.device))",
            "    if constants is None:",
            "        constants = batch_constants(x)",
            "        if constants is None:",
            "            return None",
        ]
    # The params, each checked once: what torch would let through silently. A weight of the
    # wrong width makes `linear` raise; one of the wrong height or rank is caught here, and
    # so is a bias of the wrong height (it would broadcast).
    structure: list[str] = []  # extra entries
    shapes: list[str] = []
    made: list[str] = []  # the params, in params order (for BUILT and FRESH: fnn/_dicts.py)
    for i, (name, spec) in enumerate(zip(names, plan)):
        if spec[0] is DENSE:
            out, has_bias = spec[1], spec[2]
            code += [f"    p{i} = params[{name!r}]", f"    w{i} = p{i}['weight']"]
            structure.append(f"len(p{i}) != {1 + has_bias}")
            width = widths[i - 1] if i else None
            if width is not None:
                namespace[f"wshape{i}"] = torch.Size((out, width))
                shapes.append(f"w{i}.shape != wshape{i}")
            else:
                shapes.append(f"w{i}.ndim != 2 or w{i}.shape[0] != {out}")
            made.append(f"w{i}")
            if has_bias:
                namespace[f"bshape{i}"] = torch.Size((out,))
                code.append(f"    b{i} = p{i}['bias']")
                shapes.append(f"b{i}.shape != bshape{i}")
                made.append(f"b{i}")
        else:
            structure.append(f"(full and params[{name!r}])")
    if checks and structure:
        code += unless(" or ".join(structure))
    if checks and shapes:
        code += unless(" or ".join(shapes))
    if batch:
        assert layout is not None
        code += [
            "    workspace = constants[3]",
            "    if workspace is not None and workspace[0].acquire(False):",
            "        try:",
            f"            {', '.join(['_', 'buffers', *layout.names])} = workspace",
            *(
                "        " + line
                for line in _body(plan, names, param_names, namespace, layout, eager, checks)
            ),
            "        finally:",
            "            workspace[0].release()",
        ]
    code += _body(plan, names, param_names, namespace, None, eager, checks)
    return "\n".join(line for line in code if line) + "\n", namespace


def _param_count(plan: tuple[tuple[Any, ...], ...]) -> tuple[int, int]:
    """`(a, b)`: the model's params have `a · (input width) + b` elements."""
    per_input, fixed = 0, 0
    widths = _widths(plan)
    for i, spec in enumerate(plan):
        if spec[0] is DENSE:
            width = widths[i - 1] if i else None
            if width is None:
                per_input += spec[1]
            else:
                fixed += spec[1] * width
            fixed += spec[1] if spec[2] else 0
    return per_input, fixed


def _widths(plan: tuple[tuple[Any, ...], ...]) -> list[int | None]:
    """Each layer's output width where it is known before the call (after a Dense)."""
    widths: list[int | None] = []
    width: int | None = None
    for spec in plan:
        if spec[0] is DENSE:
            width = spec[1]
        widths.append(width)
    return widths


class _Workspace:
    """The workspace body's buffers, in the order `batch_constants` makes them: `L` for the
    loss's cotangent and two cotangent buffers `D{w}a` and `D{w}b` for each width a Dense's
    input gradient has (a product may not write into its own input), each with its
    transpose, and `H{i}` for each Dense output."""

    def __init__(self, plan: tuple[tuple[Any, ...], ...], widths: list[int | None]):
        dense = [i for i, spec in enumerate(plan) if spec[0] is DENSE]
        grad_widths = sorted({w for i in dense if i and (w := widths[i - 1]) is not None})
        buffers = [("L", plan[dense[-1]][1], True)]
        buffers += [(f"D{w}{half}", w, True) for w in grad_widths for half in "ab"]
        buffers += [(f"H{i}", plan[i][1], False) for i in dense]
        self.names = [n for name, _, t in buffers for n in ((name, f"{name}T") if t else (name,))]
        self.widths = tuple(w for _, w, _ in buffers)
        self.transposed = tuple(t for _, _, t in buffers)


def _body(
    plan: tuple[tuple[Any, ...], ...],
    names: tuple[str, ...],
    param_names: tuple[str, ...],
    namespace: dict[str, Any],
    workspace: _Workspace | None,
    eager: bool,
    checks: bool,
) -> list[str]:
    """Forward, loss and backward, with `out=` into the workspace's buffers if given."""
    ws = workspace is not None
    dense = [i for i, spec in enumerate(plan) if spec[0] is DENSE]
    last_dense = dense[-1] if dense else -1
    widths = _widths(plan)
    code: list[str] = []
    kept: list[str] = []
    current, fresh = "x", False
    for i, (name, spec) in enumerate(zip(names, plan)):
        if spec[0] is DENSE:
            bias = f"b{i}" if spec[2] else "None"
            if not ws:
                out = ""
            elif i == last_dense:  # only activations after it: y may leave the step, fresh
                out = f", out=None if keep_y else H{i}"
            else:
                out = f", out=H{i}"
            code += [
                f"    # {name}: Dense({spec[1]})    y = x Wᵀ + b",
                f"    h{i} = linear({current}, w{i}, {bias}{out})",
            ]
            kept.append(current)
            fresh = True
        else:
            _, forward, forward_, dx, keep_input, constants, aten_dx = spec
            inplace = fresh and forward_ is not None
            namespace[f"forward{i}"] = forward_ if inplace else forward
            code += [
                f"    # {name}: elementwise",
                f"    h{i} = forward{i}({current})" + ("  # in place" if inplace else ""),
            ]
            saved = current if keep_input else f"h{i}"
            if aten_dx is not None:
                overload, _ = aten_dx
                if eager:  # in place, into the cotangent (always the step's own)
                    namespace[f"dx{i}"] = eager_kernel(overload.overloadpacket.grad_input)
                else:
                    namespace[f"dx{i}"] = overload
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
    has_constants = eager and bool(dense)
    code += [
        f"    y = {current} if keep_y else None",
        f"    box = [{current}]  # the loss takes the output out of the box: it may die early",
        f"    del {', '.join(dead_after_forward)}" if dead_after_forward else "",
        "    found = loss(box, target, "
        + ("constants, " if has_constants else "None, ")
        + ("buffers)" if ws else "None)"),
        "    if found is None:",
        "        return None",
        "    value, dy = found",
        "    del found  # else it keeps the first cotangent alive through the backward pass",
    ]
    where = "loss"  # where dy lives: "loss" (L, or the loss's own), a buffer, or "fresh"
    turn: dict[int, int] = {}  # which half of each width's pair of cotangent buffers is next
    for i in range(len(plan) - 1, -1, -1):
        spec = plan[i]
        code.append(f"    # {names[i]}: backward")
        if spec[0] is DENSE:
            if not ws or where == "fresh":
                transposed = "dy.t()"
            elif where == "loss":
                transposed = "LT if dy is L else dy.t()"
            else:
                transposed = f"{where}T"
            code.append(f"    dyt = {transposed}")
            if not spec[2]:
                code.append(f"    gw{i} = dyt.mm({kept[i]})")
                code.append(f"    g{i} = {{'weight': gw{i}}}")
            else:
                code += [
                    f"    gw{i} = dyt.mm({kept[i]})",
                    f"    gb{i} = dy.sum(0)",  # as autograd sums it: the same bits
                    f"    g{i} = {{'weight': gw{i}, 'bias': gb{i}}}",
                ]
            code.append("    del dyt  # a view: it would keep the old cotangent alive")
            if i:
                width = widths[i - 1] if ws else None
                if width is None:
                    code.append(f"    dy = dy.mm(w{i})")
                    where = "fresh"
                else:
                    half = turn.get(width, 0)
                    if where == f"D{width}{'ab'[half]}":
                        half = 1 - half
                    turn[width] = 1 - half
                    where = f"D{width}{'ab'[half]}"
                    code.append(f"    dy = mm(dy, w{i}, out={where})")
        elif spec[6] is not None:
            extra = "".join(f", {value!r}" for value in spec[6][1])
            into = ", grad_input=dy" if eager else ""
            code += [f"    g{i} = {{}}", f"    dy = dx{i}(dy, {kept[i]}{extra}{into})"]
        else:
            code += [f"    g{i} = {{}}", f"    dy = dx{i}({kept[i]}, dy)"]
            where = "fresh"
        dead = [w for w in _names_in(kept[i]) if last_use[w] == i]
        if dead:
            code.append(f"    del {', '.join(dead)}")
    full = ", ".join(f"{name!r}: g{i}" for i, name in enumerate(names))
    partial = ", ".join(f"{name!r}: g{i}" for i, name in enumerate(names) if name in param_names)
    code += [
        "    if full:",
        f"        return value, y, {{{full}}}",
        f"    return value, y, {{{partial}}}",
    ]
    return code


def _names_in(expression: str) -> list[str]:
    """The variable names (x, h3) in a residual expression like `(h3, *constants4)`."""
    return [
        w
        for w in expression.strip("()").replace("*", "").split(", ")
        if not w.startswith("constants")
    ]
