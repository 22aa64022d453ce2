"""What fnn's input checks cost: a batch-100 disk train step with and without them.

    python -m tests.benchmarks.run_all checks

The step is the disk task's: the 2→25→25→25→2 MLP with Relu, cross-entropy,
`fnn.value_and_grad` and `fnn.update`, batch 100. Two figures:

1. The step as users run it. For this model `value_and_grad` runs its generated
   fast path (fnn/fastpath.py). "checks bypassed" runs the same generated code
   with its check lines left out (`fastpath._generate(..., checks=False)`), a
   copy of the cross-entropy kernel without its label check, and `update` without
   its `lr` check, its pairing done by the same generated code (fnn/_dicts.py)
   without its structure, shape, dtype and fresh-record checks.
2. The general path (each layer's `apply` and VJP, walked by `serial`), which
   models outside the fast path use (Dropout, Conv, a custom layer):
   check-free copies of `serial`'s apply, Dense's and Relu's apply and
   backward, cross-entropy, value_and_grad's 0-d test and `update`.

Both variants use the same kernels in the same order (the results are asserted
to be bit-identical), so the difference is the cost of the checks. Each trains on
from its own last params, as a training loop does (so the fast path meets params
its previous update made, which it need not check again: fnn/_dicts.py). The figure is
a paired median: each repeat times a short block of both steps back to back, so
both see the same machine load. The issue asks for < 5 %.
"""

from __future__ import annotations

import inspect
import statistics

import torch
import torch.nn.functional as F

import fnn
from fnn import _dicts, core, fastpath
from fnn import layers as L
from fnn.combinators import serial_backward
from fnn.core import VJP, Layer
from fnn.update import flat_pair

from ._timing import compare, pin_threads, report

aten = torch.ops.aten
_backprop = getattr(core, "backprop", None)
_register = getattr(core, "register_consumer", None)
# fnn.core.backprop's protocol: `backprop([vjp, dy], need_dx)` now, `backprop([vjp], dy, need_dx)` before.
_BOX_HOLDS_DY = _backprop is not None and len(inspect.signature(_backprop).parameters) == 2


# --------------------------------------------------------------------------- check-free copies
# Each copy is fnn's code line for line with the check lines taken out (and nothing else).


def _dense_apply(params, x, **kwargs):
    del kwargs
    weight = params["weight"]
    b = params["bias"]
    return F.linear(x, weight, b), VJP(nocheck_dense_backward, (x, weight, True))


# y = x Wᵀ + b   ⇒   dW = dyᵀ x,  db = Σₙ dy,  dx = dy W      (fnn's Dense backward minus its checks)
def nocheck_dense_backward(residuals, dy):
    x, weight, has_bias = residuals
    return _dense_grads(x, weight, has_bias, dy, True)


def nocheck_dense_consume(
    box, *rest
):  # (box=[residuals, dy], need_dx), or (box=[residuals], dy, need_dx)
    dy = box.pop() if len(rest) == 1 else rest[0]
    x, weight, has_bias = box.pop()
    return _dense_grads(x, weight, has_bias, dy, rest[-1])


def _dense_grads(x, weight, has_bias, dy, need_dx):
    if x.ndim == 2:
        grads = {"weight": dy.t().mm(x)}
        dx = dy.mm(weight) if need_dx else None
    else:
        dy2 = dy.reshape(-1, dy.shape[-1])
        grads = {"weight": dy2.t().mm(x.reshape(-1, x.shape[-1]))}
        dx = dy.matmul(weight) if need_dx else None
        dy = dy2
    if has_bias:
        grads["bias"] = dy.sum(0)
    return grads, dx


if _register is not None:  # fnn's Dense skips dx for the first layer this way: so do we
    _register(nocheck_dense_backward, nocheck_dense_consume)


def _relu_apply(params, x, **kwargs):
    del kwargs
    y = torch.relu(x)
    saved = y
    return y, VJP(nocheck_relu_backward, saved)


# y = max(x, 0)   ⇒   dx = dy · [y > 0]
def nocheck_relu_backward(y, dy):
    return {}, aten.threshold_backward.default(dy, y, 0)


def _serial(*applies):
    names = tuple(str(i) for i in range(len(applies)))
    positions = tuple(range(len(applies)))

    def apply(params, x):
        child_params = [params[k] for k in names]
        vjps = []
        for i, child_apply in enumerate(applies):
            try:
                x, vjp = child_apply(child_params[i], x)
            except fnn.FnnError:
                raise
            vjps.append(vjp)
        return x, VJP(serial_backward, (tuple(vjps), names, positions))

    return apply


_ONES: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
_REDUCTION_ENUM = {"none": 0, "mean": 1, "sum": 2}


def _cross_entropy(logits, labels, reduction="mean"):
    log_probs = torch.log_softmax(logits, 1)
    value, total_weight = aten.nll_loss_forward.default(
        log_probs, labels, None, _REDUCTION_ENUM[reduction], -100
    )
    return value, VJP(nocheck_cross_entropy_backward, (log_probs, labels, reduction, total_weight))


# L = mean(−log softmax(z)[y])   ⇒   dz = dL · (softmax(z) − one_hot(y)) / n
def nocheck_cross_entropy_backward(residuals, dvalue):
    log_probs, labels, reduction, total_weight = residuals
    one = _ONES.get((log_probs.dtype, log_probs.device))
    if one is None:
        one = _ONES[(log_probs.dtype, log_probs.device)] = torch.ones((), dtype=log_probs.dtype)
    dlog_probs = aten.nll_loss_backward.default(
        one, log_probs, labels, None, _REDUCTION_ENUM[reduction], -100, total_weight
    )
    return aten._log_softmax_backward_data.default(dlog_probs, log_probs, 1, log_probs.dtype)


def _value_and_grad(apply, loss):
    def loss_and_grads(params, x, target):
        y, vjp = apply(params, x)
        value, loss_vjp = loss(y, target)
        dy = loss_vjp(1.0)
        del loss_vjp, y
        if _backprop is None:
            grads, _ = vjp(dy)
            return value, grads
        if _BOX_HOLDS_DY:
            box = [vjp, dy]
            del vjp, dy
            grads, _ = _backprop(box, False)
        else:
            box = [vjp]
            del vjp
            grads, _ = _backprop(box, dy, False)
        return value, grads

    return loss_and_grads


def _update(params, grads, lr):
    leaves, treedef = fnn.tree.flatten(params)
    grad_leaves = fnn.tree.leaves(grads)
    if not leaves:
        return fnn.tree.unflatten(treedef, [])
    return fnn.tree.unflatten(treedef, torch._foreach_add(leaves, grad_leaves, alpha=-lr))


# --------------------------------------------------------------------------- the two steps


def _model() -> Layer:
    return fnn.serial(
        L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
    )


def _general(apply):
    """`apply` without its fast plan: `value_and_grad` takes the general path."""

    def general_apply(params, x, **kwargs):
        return apply(params, x, **kwargs)

    return general_apply


def make_general_steps(batch: int = 100):
    _, params = _model().init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    loss_and_grads = fnn.value_and_grad(_general(_model().apply), fnn.losses.cross_entropy)
    nocheck_loss_and_grads = _value_and_grad(
        _serial(*[_dense_apply, _relu_apply] * 3, _dense_apply), _cross_entropy
    )

    carry = [params, params]  # each step trains on from its own last params, as a loop does

    def fnn_step():
        _, grads = loss_and_grads(carry[0], x, labels)
        carry[0] = fnn.update(carry[0], grads, lr=0.1)
        return carry[0]

    def nocheck_step():
        _, grads = nocheck_loss_and_grads(carry[1], x, labels)
        carry[1] = _update(carry[1], grads, 0.1)
        return carry[1]

    return fnn_step, nocheck_step


# --------------------------------------------------------------------------- fast path


_NLL_LOSS_FORWARD = fastpath.eager_kernel(aten.nll_loss_forward.default)
_NLL_LOSS_BACKWARD = fastpath.eager_kernel(aten.nll_loss_backward.default)
_LOG_SOFTMAX_BACKWARD = torch._log_softmax_backward_data


def _cross_entropy_kernel(box, labels, constants=None, buffers=None):
    """fnn.losses.cross_entropy_value_and_dlogits_eager minus its label check."""
    logits = box.pop()
    log_probs = torch.log_softmax(logits, 1)
    del logits
    one = constants[2]
    value, total_weight = _NLL_LOSS_FORWARD(log_probs, labels, None, 1, -100)
    dlog_probs = _NLL_LOSS_BACKWARD(one, log_probs, labels, None, 1, -100, total_weight)
    out = None if buffers is None else buffers[0]
    return value, _LOG_SOFTMAX_BACKWARD(dlog_probs, log_probs, 1, log_probs.dtype, out=out)


def _update_dict_of_dicts(layout):
    """fnn.update minus its checks: its `lr` check gone, and flat_pair given the same generated
    pairing code (fnn/_dicts.py) with the structure, shape, dtype and fresh-record checks left
    out; nor does it vouch for what it made."""
    slot = [layout]

    def update(params, grads, lr):
        leaves, grad_leaves, _, build, _ = flat_pair(params, grads, "update", slot)
        return build(torch._foreach_add(leaves, grad_leaves, alpha=-lr))

    return update


def make_fast_steps(batch: int = 100):
    model = _model()
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    text, namespace = fastpath._generate(*model.apply.fast_plan, checks=False)
    exec(compile(text, "<fast path without checks>", "exec"), namespace)
    nocheck_run = namespace["run"]

    carry = [params, params]  # each step trains on from its own last params, as a loop does

    def fnn_step():
        _, grads = loss_and_grads(carry[0], x, labels)
        carry[0] = fnn.update(carry[0], grads, lr=0.1)
        return carry[0]

    nocheck_update = _update_dict_of_dicts(_dicts.DictsLayout(_dicts.layout_of(params).keys, False))

    def nocheck_step():
        _, _, grads = nocheck_run(_cross_entropy_kernel, carry[1], x, labels, False)
        carry[1] = nocheck_update(carry[1], grads, 0.1)
        return carry[1]

    return fnn_step, nocheck_step


# --------------------------------------------------------------------------- measuring


def _paired_cost(title, fnn_step, nocheck_step, rounds=3):
    for _ in range(5):  # the same training run, step by step
        a, b = fnn_step(), nocheck_step()
    for path, u, v in zip(fnn.tree.paths(a), fnn.tree.leaves(a), fnn.tree.leaves(b)):
        assert torch.equal(u, v), (
            f"the check-free copy computes something else at {path}: update it"
        )
    # Paired: each repeat times a short block of each case back to back, so both see the
    # same machine load; the figure is the median over repeats of (with − without) / with.
    costs = []
    for _ in range(rounds):
        times = compare(
            {"fnn (with checks)": fnn_step, "checks bypassed": nocheck_step}, number=20, repeats=151
        )
        report(title, times, baseline="fnn (with checks)")
        costs.append(
            statistics.median(
                (a - b) / a for a, b in zip(times["fnn (with checks)"], times["checks bypassed"])
            )
        )
    return statistics.median(costs), costs


def main() -> dict[str, float]:
    pin_threads(1)
    fast, fast_rounds = _paired_cost(
        "disk MLP train step, batch 100, as run (value_and_grad's fast path + update)",
        *make_fast_steps(),
    )
    general, general_rounds = _paired_cost(
        "disk MLP train step, batch 100, general path (apply + VJP + update)",
        *make_general_steps(),
    )
    for name, cost, rounds in [
        ("the step as run (fast path)", fast, fast_rounds),
        ("the general path", general, general_rounds),
    ]:
        print(
            f"\n  checks cost {100 * cost:.1f} % of {name} "
            f"(paired medians of 3 rounds: {', '.join(f'{100 * r:.1f} %' for r in rounds)})"
        )
    print("  the target is < 5 %")
    return {"fast path": fast, "general path": general}


if __name__ == "__main__":
    main()
