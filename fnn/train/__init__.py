"""`fnn.train_step`: forward, loss, backward and optimizer update in one call, fast and visible.

    step = fnn.train_step(apply, loss, optimizer)
    loss_value, params, opt_state = step(params, opt_state, x, target)
    print(step.source)                       # exactly what runs for this model

The step gives the same numbers as `fnn.value_and_grad(apply, loss)` followed by
`optimizer.update`, bit for bit, because it runs the same kernels: for a `serial` model it
writes one straight-line function (the hand-written backprop of that model, `step.source`)
in which Dense layers and elementwise activations are computed inline and every other
layer runs through its own `apply` and VJP. A layer whose backward was patched or swapped
is never inlined: the step checks, at every call, that each inlined layer's backward is
still the function its module names, and runs that layer through its VJP otherwise.

The step object owns everything that makes it fast (its generated functions, one per params
layout it has seen) and nothing that changes a result: two steps given the same inputs
return the same outputs, whatever ran before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from .. import random
from .._compat import is_compiling
from .._no_grad import without_grad
from ..core import ApplyFn, Params, PyTree, check_keywords, layer_info
from ..errors import FnnError, FnnTypeError, describe
from ..grad import _SCALAR_COTANGENT_LOSSES, Loss, value_and_grad
from ..optim.base import flat_form
from . import _workspace
from ._codegen import compile_source, generate
from ._plan import Plan, is_current, plan

__all__ = ["train_step", "TrainStep"]

_GENERAL_SOURCE = '''\
def step(params, opt_state, x, target, **kwargs):
    """The general path: value_and_grad, then the optimizer's update."""
    value, grads = fnn.value_and_grad(apply, loss, has_aux)(params, x, target, **kwargs)
    params, opt_state = optimizer.update(params, grads, opt_state)
    return value, params, opt_state     # (…, new_state) given state=
'''


class _Rejected(Exception):
    """Raised by a generated step for input it does not handle; the general path then runs
    (and raises the clear error that names the layer)."""


def _reject(where: str) -> None:
    raise _Rejected(where)


class TrainStep:
    """One training step of a model: `step(params, opt_state, x, target, **kwargs)`.

    Made by `fnn.train_step`; see there. `source` is the Python source of what runs.

    Args:
        apply: the model's `apply`.
        loss: `loss(pred, target) -> (value, vjp)`.
        optimizer: an `Optimizer(init, update)`.
        has_aux: also return the model's output.

    Example:
        >>> model = fnn.serial(L.Dense(4), L.Relu(), L.Dense(2))
        >>> step = fnn.train_step(model.apply, fnn.losses.mse, fnn.optim.sgd(0.1))
        >>> "# backward" in step.source
        True
    """

    def __init__(self, apply: ApplyFn, loss: Loss, optimizer: Any, has_aux: bool):
        self.apply = apply
        self.loss = loss
        self.optimizer = optimizer
        self.has_aux = has_aux
        self._plan: Plan = plan(apply)
        self._info = layer_info(apply)
        self._general_fn = value_and_grad(apply, loss, has_aux)
        self._scalar_cotangent = loss in _SCALAR_COTANGENT_LOSSES
        self._inline = tuple(i for i, n in enumerate(self._plan.nodes) if n.inline)
        self._backwards = tuple({self._plan.nodes[i].info.backward for i in self._inline})
        self._all_inline = (True,) * len(self._inline)
        self._top_keys = frozenset(self._plan.top_keys)
        self._form = flat_form(optimizer)
        self._steps: dict[Any, tuple[str, Callable[..., Any]]] = {}
        # Small CPU batches of a Dense/activation chain: a workspace variant
        # (fnn/train/_workspace.py) that writes intermediates into buffers this step owns.
        self._ws_code: tuple[str, Callable[..., Any], list[Any]] | None = None
        inline: tuple[str | None, Any] = next(
            (found for f, found in _workspace.INLINE_LOSSES.items() if f is loss), (None, None)
        )
        inline_loss, loss_backward = inline
        # the backwards the workspace code computes inline: each must still be its module's
        self._current_checks = self._backwards + ((loss_backward,) if loss_backward else ())
        if self._form is not None and _workspace.applies(self._plan, self._plan.top_keys, has_aux):
            source, ns, slots = _workspace.generate(self._plan, inline_loss, self._scalar_cotangent)
            self._ws_code = (source, compile_source(source, ns, False), slots)
        self._workspaces: dict[Any, tuple[Any, ...] | None] = {}
        self._lock = threading.Lock()
        if self._plan.serial:  # the layout `init` gives, made now so torch.compile finds it
            self._code(self._plan.top_keys, False, self._current_inline(), False)
            self._code(self._plan.top_keys, False, self._current_inline(), True)

    @property
    def source(self) -> str:
        """The Python source this step runs for params laid out as `init` gives them."""
        if not self._plan.serial:
            return _GENERAL_SOURCE
        source = self._code(self._plan.top_keys, False, self._current_inline(), False)[0]
        if self._ws_code is not None:
            source += (
                "\n\n# Small CPU batches (a workspace of at most "
                f"{_workspace.WORKSPACE_BYTES // 1024} KiB per batch shape) run this instead:\n"
                + self._ws_code[0]
            )
        return source

    def _current_inline(self) -> tuple[bool, ...]:
        """Which inline layers still have the backward their module names (all, unless one
        was patched: that layer then runs through its VJP, so the patch is what runs)."""
        if all(map(is_current, self._backwards)):
            return self._all_inline
        nodes = self._plan.nodes
        return tuple(is_current(nodes[i].info.backward) for i in self._inline)

    def _code(
        self, given: tuple[str, ...], with_state: bool, inline: tuple[bool, ...], traced: bool
    ) -> tuple[str, Callable[..., Any]]:
        cache_key = (given, with_state, inline, traced)
        found = self._steps.get(cache_key)
        if found is None:
            nodes = list(self._plan.nodes)
            for i, keep in zip(self._inline, inline):
                if not keep:  # a patched backward: run this layer through its VJP
                    nodes[i] = nodes[i]._replace(inline=False)
            source, ns = generate(
                self._plan._replace(nodes=tuple(nodes)),
                given,
                has_aux=self.has_aux,
                scalar_cotangent=self._scalar_cotangent,
                with_state=with_state,
                flat_update=self._form is not None,
            )
            if len(self._steps) >= 16:  # a few params layouts at most: keep it bounded
                self._steps.clear()
            found = self._steps[cache_key] = (source, compile_source(source, ns, traced))
        return found

    def _child_kwargs(self, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        count = len(self._plan.top_keys)
        rest = {k: v for k, v in kwargs.items() if k != "state"}
        key = rest.pop("key", None)
        if key is None:
            return [rest] * count
        keys = random.split(key, count).unbind(0)
        return [dict(rest, key=k) for k in keys]

    def __call__(
        self, params: Params, opt_state: PyTree, x: Any, target: Any, **kwargs: Any
    ) -> tuple[Any, ...]:
        if kwargs:
            check_keywords("train_step", self._info, kwargs)
        elif (
            self._ws_code is not None
            and not is_compiling()  # traced code allocates (nothing to guard on)
            and self._lock.acquire(blocking=False)  # one call at a time uses the workspace
        ):
            try:
                found = self._run_in_workspace(params, opt_state, x, target)
            finally:
                self._lock.release()
            if found is not None:
                return found
        # inputs that require grad must not build a graph
        return without_grad(self._step, params, opt_state, x, target, kwargs)

    def _step(
        self, params: Params, opt_state: PyTree, x: Any, target: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        if self._plan.serial and isinstance(params, dict) and self._top_keys.issuperset(params):
            traced = is_compiling()
            with_state = "state" in kwargs
            if traced:  # only code made before tracing (no exec inside a graph)
                found = self._steps.get(
                    (self._plan.top_keys, with_state, self._current_inline(), True)
                )
                if found is None:  # a patched backward, or state=: the general path, traced
                    return self._general(params, opt_state, x, target, kwargs)
                run = found[1]
            else:
                _, run = self._code(tuple(params), with_state, self._current_inline(), False)
            try:
                return run(  # type: ignore[no-any-return]
                    params,
                    opt_state,
                    x,
                    target,
                    kwargs,
                    self.loss,
                    self.optimizer.update,
                    self._form,
                    self._child_kwargs,
                    _reject,
                )
            except FnnError:
                raise
            except (_Rejected, RuntimeError, TypeError, KeyError, IndexError, AttributeError):
                # Input the inline code does not take (a wrong shape, a missing entry): the
                # general path names the layer. If it accepts the input, the error was ours.
                self._general(params, opt_state, x, target, kwargs)
                raise
        return self._general(params, opt_state, x, target, kwargs)

    def _run_in_workspace(
        self, params: Params, opt_state: PyTree, x: Any, target: Any
    ) -> tuple[Any, ...] | None:
        """The workspace variant's result, or `None` where it does not apply."""
        assert self._ws_code is not None
        if (
            type(x) is not torch.Tensor
            or type(params) is not dict
            or x.ndim != 2
            or not x.is_cpu
            or (x.dtype is not torch.float32 and x.dtype is not torch.float64)
            or not x.shape[0]
            or tuple(params) != self._plan.top_keys
            or not all(map(is_current, self._current_checks))
        ):
            return None
        workspace = self._workspaces.get((x.shape, x.dtype))
        if workspace is None:
            workspace = self._new_workspace(x)
            if workspace is None:
                return None
        try:  # inputs that require grad must not build a graph
            return without_grad(  # type: ignore[no-any-return]
                self._ws_code[1],
                params,
                opt_state,
                x,
                target,
                self.loss,
                self._form,
                _reject,
                workspace,
            )
        except FnnError:
            raise
        except (_Rejected, RuntimeError, TypeError, KeyError, IndexError, AttributeError):
            # as in _step: the general path names the layer, or our error is re-raised
            self._general(params, opt_state, x, target, {})
            raise

    def _new_workspace(self, x: torch.Tensor) -> tuple[Any, ...] | None:
        """A workspace for batches of `x`'s shape and dtype (`None`: too large for one)."""
        assert self._ws_code is not None
        shape_key = (x.shape, x.dtype)
        if shape_key in self._workspaces:
            return None  # too large for a workspace
        if len(self._workspaces) >= 4:  # a few batch shapes at most
            self._workspaces.clear()
        workspace = self._workspaces[shape_key] = _workspace.make_workspace(
            self._ws_code[2], self._plan, x.shape, x.dtype
        )
        return workspace

    def _general(
        self, params: Params, opt_state: PyTree, x: Any, target: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        out = self._general_fn(params, x, target, **kwargs)
        params, opt_state = self.optimizer.update(params, out[1], opt_state)
        if "state" in kwargs:
            return out[0], params, opt_state, out[2]
        return out[0], params, opt_state


def train_step(apply: ApplyFn, loss: Loss, optimizer: Any, has_aux: bool = False) -> TrainStep:
    """One call per training step: forward, loss, backward and the optimizer's update.

    The same numbers as `fnn.value_and_grad(apply, loss, has_aux)` followed by
    `optimizer.update`, bit for bit, faster: for a `serial` model the step runs one
    straight-line function written for it (`step.source`), with Dense layers and
    elementwise activations computed inline and every other layer through its own VJP.

    Args:
        apply: a model's `apply`, e.g. `serial(...).apply`.
        loss: `loss(pred, target) -> (value, vjp)` giving a 0-d value, e.g. `fnn.losses.mse`.
        optimizer: an `fnn.optim` optimizer (or any `Optimizer(init, update)`).
        has_aux: also return the model's output `y`.

    Returns:
        A `TrainStep`: `step(params, opt_state, x, target, **kwargs)` returns
            `(loss_value, params, opt_state)` — with `has_aux=True` the first item is
            `(loss_value, y)`; given `state=` (BatchNorm) the new state comes last. `x`,
            `target` and the keywords are what `value_and_grad`'s function takes.
            `step.source` is the Python source it runs.

    Raises:
        FnnTypeError: `apply` or `loss` is not a function, or `optimizer` has no `update`.

    Example:
        >>> init, apply = fnn.serial(L.Dense(8), L.Relu(), L.Dense(2))
        >>> _, params = init(fnn.random.key(0), (-1, 2))
        >>> opt = fnn.optim.sgd(lr=0.1, momentum=0.9)
        >>> step = fnn.train_step(apply, fnn.losses.cross_entropy, opt)
        >>> x, labels = fnn.data.disk(fnn.random.key(1), 16)
        >>> loss, params, opt_state = step(params, opt.init(params), x, labels)
        >>> loss.shape
        torch.Size([])
    """
    if not callable(apply) or not callable(loss):
        raise FnnTypeError(
            "train_step: expected train_step(apply, loss, optimizer) with two functions, got "
            f"{describe(apply)} and {describe(loss)} (pass layer.apply, not the layer)"
        )
    if not callable(getattr(optimizer, "update", None)):
        raise FnnTypeError(
            f"train_step: expected an optimizer with init and update (fnn.optim.sgd(...)), got {describe(optimizer)}"
        )
    return TrainStep(apply, loss, optimizer, has_aux)
