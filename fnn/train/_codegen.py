"""The train step's code: one straight-line function per model, written out as text.

`generate(plan, given, ...)` writes the forward pass, the loss, the backward pass and the
optimizer update of one model as Python source — the hand-written backprop a student
would write for it — and compiles it. Inline layers (Dense, elementwise activations)
call the very kernels their own `apply` and backward call, so the results are the same
bits; every other layer runs through its own `apply` and VJP. Each residual is deleted
right after its last use, so the step keeps no more alive than `value_and_grad` does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core import backprop
from ..layers.dense import _dense_grads
from ._plan import Node, Plan, stateful


def generate(
    plan: Plan,
    given: tuple[str, ...],
    *,
    has_aux: bool,
    scalar_cotangent: bool,
    with_state: bool,
    flat_update: bool,
) -> tuple[str, dict[str, Any]]:
    """`(source, namespace)` of `step(params, opt_state, x, target, kwargs)` for params whose
    top-level keys are `given` (in that order)."""
    ns: dict[str, Any] = {"linear": F.linear, "dense_grads": _dense_grads, "backprop": backprop}
    nodes = plan.nodes
    lines = [
        "def step(params, opt_state, x, target, kwargs, loss, update, form, child_kwargs, bad):",
        f'    """{len(nodes)} layers; inline: '
        + ", ".join(n.where for n in nodes if n.inline)
        + '."""',
    ]
    emit = lines.append
    if with_state:
        emit("    state = kwargs['state']")
        emit("    new_state = {}")
    if any(not n.inline for n in nodes):
        emit("    kws = child_kwargs(kwargs)  # as serial: a key= split among the layers")
    emit("    # forward")
    emit("    h = x")
    # the value of h each node saves: name of the variable holding it
    saved: dict[int, str] = {}
    for i, node in enumerate(nodes):
        key = node.path[0]
        v = f"_{i}"
        if node.inline and node.info.step[0] == "dense":
            _, out_features, has_bias = node.info.step
            emit(f"    # {node.where}: h = h Wᵀ + b")
            emit(f"    p{v} = params[{key!r}]")
            if has_bias:
                emit(f"    w{v}, b{v} = p{v}['weight'], p{v}['bias']")
                emit(
                    f"    if len(p{v}) != 2 or w{v}.shape[0] != {out_features} or b{v}.shape != w{v}.shape[:1]:"
                )
            else:
                emit(f"    w{v}, b{v} = p{v}['weight'], None")
                emit(f"    if len(p{v}) != 1 or w{v}.shape[0] != {out_features}:")
            emit(f"        bad({node.where!r})")
            emit(f"    x{v} = h")
            emit(f"    h = linear(h, w{v}, b{v})")
            saved[i] = f"x{v}"
        elif node.inline:
            _, forward, inplace, keep_input, constants, kernel = node.info.step
            ns[f"f{v}"] = forward
            if key in given:
                emit(f"    if params[{key!r}]:")
                emit(f"        bad({node.where!r})")
            prev_dense = i > 0 and nodes[i - 1].inline and nodes[i - 1].info.step[0] == "dense"
            if keep_input:
                emit(f"    x{v} = h")
                emit(f"    h = f{v}(h)  # {node.where}")
                saved[i] = f"x{v}"
            else:
                if inplace is not None and prev_dense:
                    ns[f"f{v}_"] = inplace
                    emit(f"    h = f{v}_(h)  # {node.where}, in place on the Dense output")
                else:
                    emit(f"    h = f{v}(h)  # {node.where}")
                emit(f"    y{v} = h")
                saved[i] = f"y{v}"
        else:
            ns[f"apply{v}"] = node.apply
            emit(f"    # {node.where}: its own apply and VJP")
            params_expr = f"params[{key!r}]" if key in given else "{}"
            idx = int(key)
            if with_state and stateful(node.info):
                emit(f"    s{v} = state.get({key!r})")
                emit(f"    if s{v}:")
                emit(
                    f"        h, vjp{v}, new_state[{key!r}] = apply{v}({params_expr}, h, state=s{v}, **kws[{idx}])"
                )
                emit("    else:")
                emit(f"        h, vjp{v} = apply{v}({params_expr}, h, **kws[{idx}])")
            else:
                emit(f"    h, vjp{v} = apply{v}({params_expr}, h, **kws[{idx}])")
    emit("    # the loss")
    emit("    value, loss_vjp = loss(h, target)")
    emit("    if value.ndim:")
    emit("        bad('loss')")
    if has_aux:
        emit("    y = h")
    emit("    del h")
    emit(f"    dh = loss_vjp({'1.0' if scalar_cotangent else 'torch.ones_like(value)'})")
    emit("    del loss_vjp")
    emit("    # backward")
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        v = f"_{i}"
        need_dx = "True" if i > 0 else "False"
        if node.inline and node.info.step[0] == "dense":
            has_bias = node.info.step[2]
            emit(f"    # {node.where}: dW = dhᵀ x,  db = Σₙ dh,  dx = dh W")
            emit(f"    g{v}, dh = dense_grads(x{v}, w{v}, {has_bias}, dh, {need_dx})")
            emit(f"    del x{v}")
        elif node.inline:
            _, forward, inplace, keep_input, constants, kernel = node.info.step
            if kernel is not None:
                op, extra = kernel
                extra_args = "".join(f", {e!r}" for e in extra)
                out_form = getattr(op.overloadpacket, "grad_input", None)  # aten's out= form
                if out_form is not None and _fresh_cotangent(nodes, i):
                    # dh was made here, by the next layer's kernel, and nothing else holds it
                    ns[f"k{v}_"] = getattr(out_form, "_op", out_form)  # its C++ entry point
                    ns[f"k{v}__traced"] = _returning(op)
                    emit(
                        f"    dh = k{v}_(dh, {saved[i]}{extra_args}, grad_input=dh)  # {node.where}, in place"
                    )
                else:
                    ns[f"k{v}"] = getattr(op, "_op", op)  # aten's C++ entry point, eager
                    ns[f"k{v}_traced"] = op
                    emit(f"    dh = k{v}(dh, {saved[i]}{extra_args})  # {node.where}")
            else:
                ns[f"b{v}"] = node.info.backward.function
                residuals = f"({saved[i]}, *c{v})" if constants else saved[i]
                if constants:
                    ns[f"c{v}"] = constants
                emit(f"    dh = b{v}({residuals}, dh)[1]  # {node.where}")
            emit(f"    del {saved[i]}")
        else:
            emit(f"    g{v}, dh = backprop([vjp{v}, dh], {need_dx})  # {node.where}")
            emit(f"    del vjp{v}")
    dense = [n for n in nodes if n.inline and n.info.step[0] == "dense"]
    with_params = {n.path[0] for n in dense} | {n.path[0] for n in nodes if not n.inline}
    if flat_update and all(n.inline for n in nodes) and with_params <= set(given):
        # every parameter is a Dense's: hand the leaves to the optimizer's flat form
        leaves, grad_leaves, names = [], [], []
        for i, n in enumerate(nodes):
            if n.inline and n.info.step[0] == "dense":
                key = n.path[0]
                for leaf in ("weight", "bias") if n.info.step[2] else ("weight",):
                    leaves.append(f"{leaf[0]}_{i}")
                    grad_leaves.append(f"g_{i}[{leaf!r}]")
                    names.append(f"{key}.{leaf}")
        emit("    # the optimizer: its flat form on the leaves, no pairing of trees")
        emit(f"    names = {tuple(names)!r}")
        emit("    buffers, count = form.flat_state(opt_state, names)")
        emit(f"    leaves = [{', '.join(leaves)}]")
        emit(f"    grads = [{', '.join(grad_leaves)}]")
        emit(
            "    new, buffers = form.step(leaves, grads, buffers, count, form.decayed(params, names))"
        )
        emit("    del leaves, grads")
        built, j = [], 0
        for k in given:
            node = next(n for n in nodes if n.path[0] == k)
            if node.inline and node.info.step[0] == "dense":
                entries = [f"'weight': new[{j}]"] + (
                    [f"'bias': new[{j + 1}]"] if node.info.step[2] else []
                )
                j += len(entries)
                built.append(f"{k!r}: {{{', '.join(entries)}}}")
            else:
                built.append(f"{k!r}: {{}}")
        emit(f"    params = {{{', '.join(built)}}}")
        emit("    opt_state = form.tree_state(buffers, count + 1, names)")
    else:
        grads = ", ".join(f"{k!r}: {_grad_expr(nodes, k)}" for k in given)
        emit(f"    grads = {{{grads}}}")
        emit("    # the optimizer")
        emit("    params, opt_state = update(params, grads, opt_state)")
    out = "(value, y)" if has_aux else "value"
    emit(f"    return {out}, params, opt_state{', new_state' if with_state else ''}")
    return "\n".join(lines) + "\n", ns


def _fresh_cotangent(nodes: tuple[Node, ...], i: int) -> bool:
    """Whether node i's cotangent is a tensor the step itself just made, held by nothing
    else: the dx of an inline Dense, or what an inline activation's aten kernel returned
    (a new tensor, or its own cotangent written in place). A loss's, an opaque layer's or
    a Python backward's result may be shared, so it is never written into."""
    if i + 1 >= len(nodes) or not nodes[i + 1].inline:
        return False
    step = nodes[i + 1].info.step
    return step[0] == "dense" or step[-1] is not None  # (elementwise: its kernel)


def _returning(op: Any) -> Any:
    """`op`'s out-of-place call in place of its out= form, for traced code (a graph
    computes the same values without writing into its input)."""

    def call(dy: Any, saved: Any, *extra: Any, grad_input: Any) -> Any:
        del grad_input
        return op(dy, saved, *extra)

    return call


def _grad_expr(nodes: tuple[Node, ...], key: str) -> str:
    for i, node in enumerate(nodes):
        if node.path[0] == key:
            inline_elementwise = node.inline and node.info.step[0] == "elementwise"
            return "{}" if inline_elementwise else f"g_{i}"
    raise AssertionError(key)


def compile_source(source: str, ns: dict[str, Any], traced: bool) -> Any:
    namespace = dict(ns, torch=torch)
    if traced:  # torch.compile traces aten's OpOverloads, not their C++ entry points
        for name in [n for n in namespace if n.endswith("_traced")]:
            namespace[name[: -len("_traced")]] = namespace[name]
    exec(compile(source, "<fnn.train_step>", "exec"), namespace)
    return namespace["step"]
