"""The train step of a chain of Dense layers and activations, writing into a workspace.

A small batch spends most of its step on per-kernel overhead, and each fresh tensor
costs an allocation, a Python object and later its release. For such a model, when the
optimizer is fused (its flat form), nothing computed inside the step leaves it except
the loss, the new params and the new optimizer state, which the optimizer makes fresh.
So everything else — each layer's output, each cotangent, each gradient, the transposed
views the weight gradients read — can live in a workspace the step object owns and
reuses, written with the kernels' `out=` forms: the same kernels as the allocating code,
so the same bits. fnn's MSE and cross-entropy (default options) are computed inline too,
with the kernels their own forward and VJP call.

`generate(...)` writes that function for one model; it returns the source, its namespace
and the workspace's slots (a name and what to put there, per batch shape). A step object
makes one workspace per batch shape (at most a few, each at most `WORKSPACE_BYTES`) and
holds a lock while a call uses it; a second thread takes the allocating code instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .. import losses
from .._constants import scalar
from ._plan import Plan

__all__ = ["WORKSPACE_BYTES", "INLINE_LOSSES", "applies", "generate", "make_workspace"]

WORKSPACE_BYTES = 1 << 20
"""The largest workspace a step keeps for one batch shape (CPU only)."""

INLINE_LOSSES = {
    losses.mse: ("mse", losses.mse_backward),
    losses.cross_entropy: ("cross_entropy", losses.cross_entropy_backward),
}
"""fnn's losses the workspace code computes inline (with their default options), each with
the backward that must still be its module's for the inline code to run."""

_aten = torch.ops.aten
_MSE_KERNELS = {"sub": torch.sub, "dot": torch.dot, "mul": torch.mul}
_CE_KERNELS = {  # the kernels cross_entropy and its VJP call: torch's Python bindings where
    # they exist, else aten's C++ entry points (`_op`), both cheaper to call than an OpOverload
    "log_softmax": torch._log_softmax,
    "nll_loss": _aten.nll_loss_forward.default._op,
    "nll_loss_dx": _aten.nll_loss_backward.grad_input._op,
    "log_softmax_dx": torch._log_softmax_backward_data,
}

Slot = tuple[str, tuple[Any, ...]]
"""`(name, spec)`: a buffer `("rows", width)`, `("rows_like_input", i)` (node i's input
width), `("weight", i)` / `("bias", i)` (node i's param shape); a view of an earlier slot,
`("t", name)` (transposed) or `("flat", name)`; or a 0-d constant of the loss,
`("scalar", "n" | "2/n" | "1")`. Every shape follows from the batch's shape alone."""


def applies(plan: Plan, given: tuple[str, ...], has_aux: bool) -> bool:
    """Whether the model is a chain of inline Dense and kernel-backed activations whose
    params are exactly `given` in init's layout (the workspace code covers nothing else)."""
    if has_aux or not plan.serial or not plan.nodes:
        return False
    for node in plan.nodes:
        if not node.inline:
            return False
        if node.info.step[0] == "elementwise":
            _, _, inplace, keep_input, _, kernel = node.info.step
            if inplace is None or keep_input or kernel is None:
                return False
    first, last = plan.nodes[0], plan.nodes[-1]
    dense = first.info.step[0] == "dense" and last.info.step[0] == "dense"
    return dense and given == plan.top_keys


def generate(
    plan: Plan, loss_kind: str | None, scalar_cotangent: bool
) -> tuple[str, dict[str, Any], list[Slot]]:
    """`(source, namespace, slots)` of the workspace step (see the module docstring);
    `loss_kind`: "mse" or "cross_entropy" (computed inline) or `None` (the step calls the
    loss and its VJP)."""
    nodes = plan.nodes
    slots: list[Slot] = []

    def slot(name: str, *spec: Any) -> str:
        slots.append((name, spec))
        return name

    ns: dict[str, Any] = {"linear": F.linear, "mm": torch.mm, "sum_": torch.sum}
    body: list[str] = []
    emit = body.append
    emit("    # forward: each Dense writes its output into its buffer; an activation right")
    emit("    # after it works in place there")
    h = "x"
    kept: dict[int, str] = {}  # what each node's backward reads: its input or its output
    checks: list[str] = []
    loads: list[str] = []
    for i, node in enumerate(nodes):
        key = node.path[0]
        if node.info.step[0] == "dense":
            _, out_features, has_bias = node.info.step
            loads.append(f"    p_{i} = params[{key!r}]")
            if has_bias:
                loads.append(f"    w_{i}, b_{i} = p_{i}['weight'], p_{i}['bias']")
                ns[f"bias_shape_{i}"] = torch.Size([out_features])
                checks.append(
                    f"len(p_{i}) != 2 or w_{i}.shape[0] != {out_features} or b_{i}.shape != bias_shape_{i}"
                )
            else:
                loads.append(f"    w_{i} = p_{i}['weight']")
                checks.append(f"len(p_{i}) != 1 or w_{i}.shape[0] != {out_features}")
            out = slot(f"out_{i}", "rows", out_features)
            bias = f"b_{i}" if has_bias else "None"
            emit(f"    linear({h}, w_{i}, {bias}, out={out})  # {node.where}: x Wᵀ + b")
            kept[i] = h
            h = out
        else:
            _, forward, inplace, _, _, (op, extra) = node.info.step
            if key in plan.top_keys:
                checks.append(f"params[{key!r}]")
            if nodes[i - 1].info.step[0] == "dense":  # its output buffer is ours: in place
                ns[f"f_{i}_"] = inplace
                emit(f"    f_{i}_({h})  # {node.where}, in place")
            else:  # the previous activation's output is kept for its backward: a new tensor
                ns[f"f_{i}"] = forward
                emit(f"    y_{i} = f_{i}({h})  # {node.where}")
                h = f"y_{i}"
            kept[i] = h
            out_form = op.overloadpacket.grad_input  # aten's out= form of the same kernel
            ns[f"k_{i}"] = getattr(out_form, "_op", out_form)  # its C++ entry point
    prologue = [
        *loads,
        "    # params laid out as init gives them (a wrong in-width makes linear raise)",
        f"    if {' or '.join(f'({c})' for c in checks)}:",
        "        bad('params')",
    ]
    width = nodes[-1].info.step[1]
    if loss_kind == "mse":
        ns.update(_MSE_KERNELS)
        diff, dy = slot("diff", "rows", width), slot("dy", "rows", width)
        slot("diff_flat", "flat", diff)
        slot("n", "scalar", "n")
        slot("two_over_n", "scalar", "2/n")
        emit("    # the loss: fnn.losses.mse, L = Σ (h − t)² / n  ⇒  dh = 2 (h − t) / n")
        emit(
            f"    if target.shape != {h}.shape or target.dtype != x.dtype or target.device != x.device:"
        )
        emit("        bad('mse')")
        emit(f"    sub({h}, target, out={diff})")
        emit("    value = dot(diff_flat, diff_flat).div_(n)")
        emit(f"    mul({diff}, two_over_n, out={dy})")
    elif loss_kind == "cross_entropy":
        ns.update(_CE_KERNELS)
        lp, dlp = slot("log_probs", "rows", width), slot("dlog_probs", "rows", width)
        dy = slot("dy", "rows", width)
        slot("one", "scalar", "1")
        emit("    # the loss: fnn.losses.cross_entropy, L = −Σ log softmax(h)[label] / n")
        emit("    #   ⇒  dh = (softmax(h) − one_hot(label)) / n; a label out of range makes")
        emit("    #   nll_loss raise, and the general path then names it")
        emit(
            "    if target.dtype != torch.int64 or target.shape != x.shape[:1] or target.device != x.device:"
        )
        emit("        bad('cross_entropy')")
        emit(f"    log_softmax({h}, 1, False, out={lp})")
        emit(f"    value, total_weight = nll_loss({lp}, target, None, 1, -100)")
        emit(f"    nll_loss_dx(one, {lp}, target, None, 1, -100, total_weight, grad_input={dlp})")
        emit(f"    log_softmax_dx({dlp}, {lp}, 1, x.dtype, out={dy})")
    else:
        emit("    # the loss, and its VJP")
        emit(f"    value, loss_vjp = loss({h}, target)")
        emit("    if value.ndim:")
        emit("        bad('loss')")
        emit(f"    dy = loss_vjp({'1.0' if scalar_cotangent else 'torch.ones_like(value)'})")
        emit("    del loss_vjp")
        dy = "dy"
    emit("    # backward: the cotangent dy lives in a buffer; so do the gradients")
    dy_t = slot(f"{dy}_t", "t", dy) if loss_kind else None
    grads: list[str] = []
    names: list[str] = []
    leaves: list[str] = []
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        key = node.path[0]
        if node.info.step[0] == "dense":
            _, out_features, has_bias = node.info.step
            emit(f"    # {node.where}: dW = dyᵀ x,  db = Σₙ dy,  dx = dy W")
            gw = slot(f"grad_w_{i}", "weight", i)
            transposed = dy_t if dy_t is not None else f"{dy}.t()"
            emit(f"    mm({transposed}, {kept[i]}, out={gw})")
            entry = [(f"{key}.weight", f"w_{i}", gw)]
            if has_bias:
                gb = slot(f"grad_b_{i}", "bias", i)
                emit(f"    sum_({dy}, 0, out={gb})")
                entry.append((f"{key}.bias", f"b_{i}", gb))
            if i > 0:
                dx = slot(f"dx_{i}", "rows_like_input", i)
                dy_t = slot(f"dx_{i}_t", "t", dx)
                emit(f"    mm({dy}, w_{i}, out={dx})")
                dy = dx
            for n, leaf, g in reversed(entry):
                names.insert(0, n)
                leaves.insert(0, leaf)
                grads.insert(0, g)
        else:
            _, _, _, _, _, (op, extra) = node.info.step
            extra_args = "".join(f", {e!r}" for e in extra)
            emit(
                f"    k_{i}({dy}, {kept[i]}{extra_args}, grad_input={dy})  # {node.where}, in place"
            )
    emit("    # the optimizer: its flat form makes fresh params and state from the gradients")
    emit(f"    names = {tuple(names)!r}")
    emit("    buffers, count = form.flat_state(opt_state, names)")
    emit(
        f"    new, buffers = form.step([{', '.join(leaves)}], [{', '.join(grads)}], buffers, count,"
    )
    emit("                             form.decayed(params, names))")
    built, j = [], 0
    for k in plan.top_keys:
        node = next(n for n in nodes if n.path[0] == k)
        if node.info.step[0] == "dense":
            entries = [f"'weight': new[{j}]"] + (
                [f"'bias': new[{j + 1}]"] if node.info.step[2] else []
            )
            j += len(entries)
            built.append(f"{k!r}: {{{', '.join(entries)}}}")
        else:
            built.append(f"{k!r}: {{}}")
    emit(f"    params = {{{', '.join(built)}}}")
    emit("    return value, params, form.tree_state(buffers, count + 1, names)")
    head = [
        "def step(params, opt_state, x, target, loss, form, bad, ws):",
        '    """The same step writing its intermediates into the workspace `ws`."""',
        f"    ({', '.join(name for name, _ in slots)},) = ws",
    ]
    return "\n".join(head + prologue + body) + "\n", ns, slots


def make_workspace(
    slots: list[Slot], plan: Plan, x_shape: torch.Size, dtype: torch.dtype
) -> tuple[Any, ...] | None:
    """The workspace for a batch `x` of `x_shape` (`None` if it would exceed
    `WORKSPACE_BYTES`)."""
    nodes = plan.nodes
    rows = x_shape[0]
    in_width = {}  # each Dense's input width: the batch's, or the last Dense's output's
    width = x_shape[1]
    for i, node in enumerate(nodes):
        if node.info.step[0] == "dense":
            in_width[i], width = width, node.info.step[1]
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (kind, *arg) in slots:
        if kind == "rows":
            shapes[name] = (rows, arg[0])
        elif kind == "rows_like_input":
            shapes[name] = (rows, in_width[arg[0]])
        elif kind == "weight":
            shapes[name] = (nodes[arg[0]].info.step[1], in_width[arg[0]])
        elif kind == "bias":
            shapes[name] = (nodes[arg[0]].info.step[1],)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if sum(torch.Size(s).numel() for s in shapes.values()) * itemsize > WORKSPACE_BYTES:
        return None
    found: dict[str, Any] = {}
    like = torch.empty((), dtype=dtype)
    n = float(rows * width)  # the prediction's elements
    constants = {"n": n, "2/n": 1.0 * (2.0 / n), "1": 1.0}  # as fnn.losses.mse rounds them
    with torch.inference_mode(False), torch.no_grad():  # writable later, outside inference mode
        for name, (kind, *arg) in slots:
            if name in shapes:
                found[name] = torch.empty(shapes[name], dtype=dtype)
            elif kind == "t":
                found[name] = found[arg[0]].t()
            elif kind == "flat":
                found[name] = found[arg[0]].view(-1)
            else:  # the cached 0-d constants fnn's losses use: the same bits
                found[name] = scalar(constants[arg[0]], like)
    return tuple(found[name] for name, _ in slots)
