"""The train step of a chain of Dense layers and activations, writing into a workspace.

A small batch spends most of its step on per-kernel overhead, and each fresh tensor
costs an allocation, a Python object and later its release. For such a model, when the
optimizer is fused (its flat form), nothing computed inside the step leaves it except
the loss, the new params and the new optimizer state, which the optimizer makes fresh.
So everything else — each layer's output, each cotangent, each gradient — can live in
buffers the step object owns and reuses, written with the kernels' `out=` forms: the
same kernels as the allocating code, so the same bits.

`generate(...)` writes that function for one model and params layout; it returns the
source, its namespace and the buffers' shapes (`"N"` for the batch size). A step object
makes one workspace per batch shape (at most a few, each at most `WORKSPACE_BYTES`) and
holds a lock while a call uses it; a second thread takes the allocating code instead.
"""

from __future__ import annotations

from typing import Any

import torch

from ._plan import Plan

__all__ = ["WORKSPACE_BYTES", "applies", "generate", "make_buffers"]

WORKSPACE_BYTES = 1 << 20
"""The largest workspace a step keeps for one batch shape (CPU only)."""

_aten = torch.ops.aten


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
    plan: Plan, given: tuple[str, ...], inline_mse: bool, scalar_cotangent: bool
) -> tuple[str, dict[str, Any], list[Any]]:
    """`(source, namespace, buffer shapes)` of the workspace step (see the module docstring);
    `inline_mse`: the loss is fnn's MSE, computed inline, else the step calls the loss."""
    nodes = plan.nodes
    shapes: list[Any] = []

    def buffer(shape: Any) -> str:
        shapes.append(shape)
        return f"ws[{len(shapes) - 1}]"

    ns: dict[str, Any] = {
        "torch": torch,
        "addmm": torch.addmm,
        "mm": torch.mm,
        "sum_": torch.sum,
        "sub": torch.sub,
        "mul": torch.mul,
        "dot": torch.dot,
    }
    lines = [
        "def step(params, opt_state, x, target, loss, loss_scale, form, bad, ws):",
        '    """The same step writing its intermediates into the workspace `ws`."""',
    ]
    emit = lines.append
    emit("    h = x")
    width = None  # the current activation's width (None: the input's)
    kept: dict[int, str] = {}
    for i, node in enumerate(nodes):
        key = node.path[0]
        if node.info.step[0] == "dense":
            _, out_features, has_bias = node.info.step
            emit(f"    # {node.where}: h = x Wᵀ + b, into its buffer")
            emit(f"    p_{i} = params[{key!r}]")
            if has_bias:
                emit(f"    w_{i}, b_{i} = p_{i}['weight'], p_{i}['bias']")
                emit(
                    f"    if len(p_{i}) != 2 or w_{i}.shape[0] != {out_features} or b_{i}.shape != w_{i}.shape[:1]:"
                )
            else:
                emit(f"    w_{i} = p_{i}['weight']")
                emit(f"    if len(p_{i}) != 1 or w_{i}.shape[0] != {out_features}:")
            emit(f"        bad({node.where!r})")
            emit(f"    x_{i} = h")
            out = buffer(("N", out_features))
            if has_bias:
                emit(f"    h = addmm(b_{i}, h, w_{i}.t(), out={out})")
            else:
                emit(f"    h = mm(h, w_{i}.t(), out={out})")
            kept[i] = f"x_{i}"
            width = out_features
        else:
            _, _, inplace, _, _, (op, extra) = node.info.step
            ns[f"f_{i}_"] = inplace
            out_form = op.overloadpacket.grad_input  # aten's out= form of the same kernel
            ns[f"k_{i}"] = getattr(out_form, "_op", out_form)  # its C++ entry point
            if key in given:
                emit(f"    if params[{key!r}]:")
                emit(f"        bad({node.where!r})")
            emit(f"    h = f_{i}_(h)  # {node.where}, in place")
            kept[i] = f"y_{i}"
            emit(f"    y_{i} = h")
    if inline_mse:
        emit("    # the loss: mse, as fnn.losses.mse computes it")
        emit(
            "    if target.shape != h.shape or target.dtype != h.dtype or target.device != h.device:"
        )
        emit("        bad('mse')")
        diff = buffer(("N", width))
        emit(f"    diff = sub(h, target, out={diff})")
        emit("    flat = diff.view(-1)")
        emit("    value = dot(flat, flat).div_(loss_scale[0])")
        dh = buffer(("N", width))
        emit(f"    dh = mul(diff, loss_scale[1], out={dh})")
    else:
        emit("    # the loss, and its VJP")
        emit("    value, loss_vjp = loss(h, target)")
        emit("    if value.ndim:")
        emit("        bad('loss')")
        emit(f"    dh = loss_vjp({'1.0' if scalar_cotangent else 'torch.ones_like(value)'})")
        emit("    del loss_vjp")
    emit("    # backward")
    grads: list[str] = []
    names: list[str] = []
    leaves: list[str] = []
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        key = node.path[0]
        if node.info.step[0] == "dense":
            _, out_features, has_bias = node.info.step
            emit(f"    # {node.where}: dW = dhᵀ x,  db = Σₙ dh,  dx = dh W")
            gw = buffer(("W", i))
            emit(f"    gw_{i} = mm(dh.t(), x_{i}, out={gw})")
            entry = [(f"{key}.weight", f"w_{i}", f"gw_{i}")]
            if has_bias:
                gb = buffer(("B", i))
                emit(f"    gb_{i} = sum_(dh, 0, out={gb})")
                entry.append((f"{key}.bias", f"b_{i}", f"gb_{i}"))
            if i > 0:
                dx = buffer(("N", "in", i))
                emit(f"    dh = mm(dh, w_{i}, out={dx})")
            for n, leaf, g in reversed(entry):
                names.insert(0, n)
                leaves.insert(0, leaf)
                grads.insert(0, g)
        else:
            _, _, _, _, _, (op, extra) = node.info.step
            out = buffer(("N", "same", i))
            extra_args = "".join(f", {e!r}" for e in extra)
            emit(f"    dh = k_{i}(dh, {kept[i]}{extra_args}, grad_input={out})  # {node.where}")
    emit("    # the optimizer: its flat form makes fresh params and state from these buffers")
    emit(f"    names = {tuple(names)!r}")
    emit("    buffers, count = form.flat_state(opt_state, names)")
    emit(
        f"    new, buffers = form.step([{', '.join(leaves)}], [{', '.join(grads)}], buffers, count,"
    )
    emit("                             form.decayed(params, names))")
    built, j = [], 0
    for k in given:
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
    return "\n".join(lines) + "\n", ns, shapes


def make_buffers(
    shapes: list[Any], plan: Plan, params: Any, rows: int, dtype: torch.dtype
) -> list[torch.Tensor] | None:
    """The workspace for a batch of `rows` (`None` if it would exceed `WORKSPACE_BYTES`)."""
    nodes = plan.nodes
    concrete = []
    for shape in shapes:
        kind = shape[0]
        if kind == "W":
            concrete.append(tuple(params[nodes[shape[1]].path[0]]["weight"].shape))
        elif kind == "B":
            concrete.append(tuple(params[nodes[shape[1]].path[0]]["bias"].shape))
        elif shape[1] == "in":
            concrete.append((rows, params[nodes[shape[2]].path[0]]["weight"].shape[1]))
        elif shape[1] == "same":
            j = shape[2]
            while nodes[j].info.step[0] != "dense":
                j -= 1
            concrete.append((rows, nodes[j].info.step[1]))
        else:
            concrete.append((rows, shape[1]))
    size = (
        sum(torch.Size(s).numel() for s in concrete) * torch.empty((), dtype=dtype).element_size()
    )
    if size > WORKSPACE_BYTES:
        return None
    with torch.inference_mode(False), torch.no_grad():  # writable later, outside inference mode
        return [torch.empty(s, dtype=dtype) for s in concrete]
