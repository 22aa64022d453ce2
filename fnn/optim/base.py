"""What every optimizer shares: the `Optimizer` and `Transform` pairs, learning rates,
hyperparameter checks, the state layout, weight decay with its mask, and the flat form.

## The state

Every optimizer's state is a plain dict with one layout:

    {"step": 3,                                    # updates done so far (a Python int)
     "exp_avg": {"0.weight": tensor, ...},         # one dict per buffer, keyed like
     "exp_avg_sq": {"0.weight": tensor, ...}}      # `fnn.tree.to_state_dict(params)`

Buffer names are `torch.optim`'s per-parameter state names. Each buffer is a flat dict
from dotted parameter names to tensors, and it is read by name: reorder the params
dict between two updates (same keys, same tensors) and each buffer still goes with the
leaf of its name (the new state lists the names in the new order). A params leaf with
no entry in the state, or a state entry with no leaf, is a `TreeError`. The step is a
Python int: schedules and bias corrections read it without a device sync.

## One rule object per optimizer

An optimizer is `Optimizer(init, update)`, two bound methods of one frozen rule object,
a `FlatForm` subclass (`fnn.optim.sgd` makes an `_Sgd`, ...). The base class does what
every optimizer shares, once: the checks of `lr` and `weight_decay`, the learning rate
(a number or a schedule of the step count), `maximize`, weight decay (added to the
gradient, or decoupled: `θ ← θ (1 − η λ)`) and its mask, pairing params with grads by
name, and reading and writing the state. A subclass holds its own hyperparameters and
only its update math, `_math`, on flat lists of tensors with torch's `_foreach_*` ops,
the same ops as `torch.optim`'s foreach implementations so the trajectories agree bit
for bit.

## The flat form

`flat_form(optimizer)` gives that rule object (`None` for an `Optimizer` made by hand or
by `chain`), for engines such as a fused train step that already hold the params as a
list and need no pairing of trees:

    form = fnn.optim.flat_form(opt)
    names = list(fnn.tree.to_state_dict(params))            # the params' leaf order
    buffers, count = form.flat_state(state, names)            # one list per buffer
    decayed = form.decayed(params, names)                     # the weight-decay mask
    new_leaves, new_buffers = form.step(leaves, grads, buffers, count, decayed)
    state = form.tree_state(new_buffers, count + 1, names)

`form.step` is pure: it writes into none of its inputs and returns new lists. `opt.update`
is exactly `pair` then these calls, so the two agree bit for bit by construction.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeAlias

import torch
from typing_extensions import Protocol

from .. import tree
from .._dicts import Paired, check_devices, pair
from .._no_grad import without_grad
from ..core import PyTree
from ..errors import FnnError, FnnTypeError, TreeError, with_context

__all__ = [
    "InitFn",
    "UpdateFn",
    "TransformFn",
    "Optimizer",
    "Transform",
    "FlatForm",
    "Moments",
    "flat_form",
    "Schedule",
    "LearningRate",
    "Mask",
    "TensorList",
    "Buffers",
    "learning_rate",
    "check_hyper",
    "check_lr",
    "check_betas",
    "flat_mask",
    "decay_indices",
    "add_weight_decay",
    "scale_leaves",
    "scalar_for",
    "exact_scalar",
    "explain_lr_overflow",
]

Schedule: TypeAlias = Callable[[int], float]
"""A function from the step count (0 at the first update) to a learning rate."""
LearningRate: TypeAlias = float | Schedule
Mask: TypeAlias = PyTree | Callable[[PyTree], PyTree] | None
"""Which leaves get weight decay: a tree of bools shaped like params, or a function
`params -> tree of bools` (e.g. `fnn.optim.decay_mask`); `None` means all leaves."""
TensorList: TypeAlias = list[torch.Tensor] | tuple[torch.Tensor, ...]
"""Tensors in the params' leaf order: what torch's `_foreach_*` ops take (they return tuples)."""
Buffers: TypeAlias = Sequence[TensorList]
"""The flat state: one list per state buffer, each aligned with the params' leaves."""


class InitFn(Protocol):
    """`init(params) -> state`."""

    def __call__(self, params: PyTree, /) -> PyTree: ...


class UpdateFn(Protocol):
    """`update(params, grads, state) -> (params, state)`."""

    def __call__(
        self, params: PyTree, grads: PyTree, state: PyTree, /
    ) -> tuple[PyTree, PyTree]: ...


class TransformFn(Protocol):
    """`update(params, grads, state) -> (grads, state)`."""

    def __call__(
        self, params: PyTree, grads: PyTree, state: PyTree, /
    ) -> tuple[PyTree, PyTree]: ...


class Optimizer(NamedTuple):
    """An optimizer: `state = init(params)`, `params, state = update(params, grads, state)`.

    The state is an explicit pytree (dicts of tensors and a step count); neither
    function mutates its arguments. `sgd`, `adam`, … and `chain` make them.

    Attributes:
        init: `init(params)` gives the initial state for a params pytree.
        update: `update(params, grads, state)`, `grads` mirroring `params` (each leaf of its
            parameter's shape), gives the new `(params, state)`.

    Example:
        >>> opt = fnn.optim.sgd(lr=0.1)
        >>> params = {"w": torch.ones(2)}
        >>> state = opt.init(params)
        >>> params, state = opt.update(params, {"w": torch.ones(2)}, state)
        >>> params["w"], state["step"]
        (tensor([0.9000, 0.9000]), 1)
    """

    init: InitFn
    update: UpdateFn


class Transform(NamedTuple):
    """A gradient transformation (clipping, weight decay, ...): it maps grads to new grads.

    Its `update` takes its arguments in the order of `Optimizer.update`,
    `(params, grads, state)`. (optax's `GradientTransformation.update` takes
    `(updates, state, params)`: hence another name.) Compose transformations with an
    optimizer by `fnn.optim.chain`.

    Attributes:
        init: `init(params)` gives the initial state for a params pytree.
        update: `update(params, grads, state)`, `grads` mirroring `params`, gives the new
            `(grads, state)`, the new grads mirroring `grads`.

    Example:
        >>> clip = fnn.optim.clip_by_global_norm(1.0)
        >>> params = {"w": torch.zeros(2)}
        >>> grads, state = clip.update(params, {"w": torch.tensor([3.0, 4.0])}, clip.init(params))
        >>> grads["w"]
        tensor([0.6000, 0.8000])
    """

    init: InitFn
    update: TransformFn


# Hyperparameters and learning rates.


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def learning_rate(name: str, lr: LearningRate, step: int) -> float:
    """The learning rate at `step`: `lr` itself, or `lr(step)` for a schedule, checked to
    be a real number ≥ 0 (a 0-d real tensor is read with `.item()`)."""
    if not callable(lr):
        return lr
    value: Any = lr(step)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FnnTypeError(
            f"{name}: the schedule must give a real number, got {value!r} at step {step}"
        )
    if not float(value) >= 0:
        raise FnnError(
            f"{name}: the schedule gave a negative or NaN learning rate {value!r} at step {step}"
        )
    return float(value)


def check_hyper(
    name: str, what: str, value: Any, low: float = 0.0, high: float | None = None
) -> None:
    """Raise a clear `FnnError` unless `value` is a number with `low ≤ value (< high)`."""
    if not _is_number(value):
        raise FnnTypeError(f"{name}: {what} must be a number, got {value!r}")
    if not value >= low or (high is not None and not value < high):
        bound = f"in [{low:g}, {high:g})" if high is not None else f"≥ {low:g}"
        raise FnnError(f"{name}: {what} must be {bound}, got {value!r}")


def check_lr(name: str, lr: Any) -> None:
    """A learning rate is a non-negative number or a schedule (a callable): else an
    `FnnTypeError` (not a number) or an `FnnError` (negative or NaN), in `fnn.update` and
    in every optimizer alike."""
    if callable(lr):
        return
    if not _is_number(lr):
        raise FnnTypeError(
            f"{name}: lr must be a number or a schedule (a function of the step), got {lr!r}"
        )
    check_hyper(name, "lr", lr)


def check_betas(name: str, betas: Any) -> tuple[float, float]:
    """`betas` is a pair of numbers in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise FnnTypeError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
    check_hyper(name, "betas[0]", betas[0], 0, 1)
    check_hyper(name, "betas[1]", betas[1], 0, 1)
    return float(betas[0]), float(betas[1])


def _check_count(name: str, count: Any) -> None:
    """The step count is an int ≥ 0 (not a bool, a float or a tensor)."""
    if type(count) is not int:
        raise FnnTypeError(f"{name}: the state's step must be an int, got {count!r}")
    if count < 0:
        raise FnnError(f"{name}: the state's step must be ≥ 0, got {count}")


def explain_lr_overflow(name: str, lr: float, leaves: TensorList) -> None:
    """After a torch error: raise a clear `FnnError` if `lr` does not fit the dtype of a
    floating-point leaf (`lr=1e39` on float32 params); return if it fits everywhere."""
    for p in leaves:
        if p.is_floating_point() and abs(lr) > torch.finfo(p.dtype).max:
            raise FnnError(
                f"{name}: lr={lr!r} does not fit the params' dtype {p.dtype} "
                f"(largest {torch.finfo(p.dtype).max:.4g})"
            )


# Constant 0-d tensors.

_CONSTANTS: dict[tuple[float, torch.dtype], torch.Tensor] = {}
"""The one module-level cache of fnn.optim, and why it cannot change a result: it holds
CPU 0-d tensors of hyperparameter values (a momentum factor, Adam's β₂ and its bias
correction, which changes every step), created on first use and never written to or
handed out, at most `_MAX_CONSTANTS` of them (then cleared: a value is the same tensor
whether cached or made afresh). On small CPU tensors
`_foreach_mul(xs, t)` with a 0-d `t` of the lists' dtype takes half the time of
`_foreach_mul(xs, 0.9)` (measured: 6 against 14 µs for 8 leaves of 25×25). It gives
torch.optim's bits: for float32 and float64 a Python number is rounded to the same
opmath type; for float16 and bfloat16, torch's foreach SGD multiplies in place
(`_foreach_mul_(bufs, 0.9)`), which on the CPU rounds the number to the lists' dtype
first, as the 0-d tensor does. `scalar_for` uses it only where all leaves are on the
CPU (with mixed dtypes, one constant per leaf, as torch groups leaves by dtype);
elsewhere the number itself goes to the kernel, as in torch.optim (on a GPU, a Python
number is no slower and torch's kernels keep it in the opmath type)."""
_MAX_CONSTANTS = 64


def scalar_for(value: float, leaves: TensorList) -> torch.Tensor | list[torch.Tensor] | float:
    """What `_foreach_mul(leaves, ·)` should take to multiply by `value` as torch.optim's
    in-place foreach ops do: on the CPU, a cached 0-d tensor of the leaves' dtype (one per
    leaf when their dtypes differ); elsewhere, or for non-float leaves, `value` itself."""
    dtype = leaves[0].dtype
    uniform = True
    for t in leaves:
        if not t.is_cpu or not t.is_floating_point():
            return value
        uniform = uniform and t.dtype is dtype
    if uniform:
        return _constant(value, dtype)
    return [_constant(value, t.dtype) for t in leaves]


def exact_scalar(value: float, leaves: TensorList) -> torch.Tensor | float:
    """What a foreach op should take to multiply or divide `leaves` by `value` with the
    bits of the plain number: a cached 0-d tensor where all leaves are CPU float32 (or all
    float64), whose kernels read a number in that very type, so either gives the same bits
    (the 0-d tensor in half the time: measured 7 against 16 µs for `_foreach_mul` over 8
    small leaves); `value` itself for anything else (float16 and bfloat16 kernels read a
    number in float32)."""
    dtype = leaves[0].dtype
    if dtype is not torch.float32 and dtype is not torch.float64:
        return value
    for t in leaves:
        if t.dtype is not dtype or not t.is_cpu:
            return value
    return _constant(value, dtype)


def _constant(value: float, dtype: torch.dtype) -> torch.Tensor:
    key = (value, dtype)
    found = _CONSTANTS.get(key)
    if found is None:
        if len(_CONSTANTS) >= _MAX_CONSTANTS:
            _CONSTANTS.clear()
        found = _CONSTANTS[key] = torch.tensor(value, dtype=dtype)
    return found


# Weight decay and its mask.


def flat_mask(name: str, mask: Mask) -> dict[str, Any] | None:
    """A tree mask as `{dotted name: flag}` (read once, when the optimizer is made);
    `None` for no mask or a callable one."""
    if mask is None or callable(mask):
        return None
    try:
        return tree.to_state_dict(mask)
    except TreeError as error:
        raise with_context(error, f"{name}: mask:") from None


def decay_indices(
    name: str, mask: Mask, by_name: dict[str, Any] | None, params: PyTree, names: Sequence[str]
) -> tuple[int, ...] | None:
    """The positions (in `names`) of the leaves that decay; `None`: all of them.

    `by_name` is `flat_mask(name, mask)`; a callable mask is called on `params` now.
    """
    if mask is None:
        return None
    if by_name is None:
        flags_tree = mask(params)
        try:
            by_name = tree.to_state_dict(flags_tree)
        except TreeError:
            by_name = {}
    else:
        flags_tree = mask
    flags = [by_name.get(n) for n in names]
    if len(by_name) != len(names) or any(type(f) is not bool for f in flags):
        _bad_mask(name, params, flags_tree)
    return tuple([i for i, f in enumerate(flags) if f])


def _bad_mask(name: str, params: PyTree, flags: PyTree) -> None:
    tree.assert_same_structure(
        tree.map(lambda _: True, params), flags, f"{name}: mask", shapes=False
    )
    for path, f in zip(tree.paths(flags), tree.leaves(flags)):
        if not isinstance(f, bool):
            raise FnnTypeError(f"{name}: mask leaves must be True or False, got {f!r} at {path}")
    raise TreeError(f"{name}: the mask's tree does not match the params tree")


def add_weight_decay(
    grads: TensorList, leaves: TensorList, weight_decay: float, indices: Sequence[int] | None
) -> TensorList:
    """`g + λ θ` on the selected leaves (torch's `grad.add(param, alpha=weight_decay)`)."""
    if indices is None:
        return torch._foreach_add(grads, leaves, alpha=weight_decay)
    if not indices:
        return grads
    decayed = torch._foreach_add(
        [grads[i] for i in indices], [leaves[i] for i in indices], alpha=weight_decay
    )
    grads = list(grads)
    for i, g in zip(indices, decayed):
        grads[i] = g
    return grads


def scale_leaves(leaves: TensorList, factor: float, indices: Sequence[int] | None) -> TensorList:
    """`factor · θ` on the selected leaves, the others as they are (decoupled weight decay)."""
    if indices is None:
        return torch._foreach_mul(leaves, factor)
    if not indices:
        return leaves
    scaled = torch._foreach_mul([leaves[i] for i in indices], factor)
    leaves = list(leaves)
    for i, p in zip(indices, scaled):
        leaves[i] = p
    return leaves


# The rule object: what every optimizer shares, once.


@dataclass(frozen=True, kw_only=True, eq=False)
class FlatForm(ABC):
    """One optimizer as data: its hyperparameters, its state buffers and its update math.

    `opt.init` and `opt.update` are bound methods of one `FlatForm`; `flat_form(opt)`
    gives it back. Subclasses (one per optimizer) add their hyperparameters as fields and
    define `_check` (of those), `buffers` and `_math`; this class does the rest, the same
    for all.

    Attributes:
        name: the optimizer's name, for messages (`"adam"`).
        lr: η, a number ≥ 0 or a schedule (a function of the step count, 0 first).
        weight_decay: λ ≥ 0.
        decoupled: decay as `θ ← θ (1 − η λ)` (AdamW) instead of adding `λ θ` to the
            gradient.
        maximize: ascend instead of descend (the gradient is negated first).
        mask: the leaves weight decay applies to (see `Mask`); all by default.
    """

    name: str
    lr: LearningRate
    weight_decay: float = 0.0
    decoupled: bool = False
    maximize: bool = False
    mask: Mask = None
    _by_name: dict[str, Any] | None = field(init=False, default=None, repr=False)
    _keys: tuple[str, ...] = field(init=False, default=(), repr=False)  # buffers' names

    scalar_buffers: ClassVar[tuple[str, ...]] = ()
    """Buffers holding one 0-d tensor per leaf (NAdam's `mu_product`), not one of the
    leaf's shape; `_init_buffer` makes them."""

    def __post_init__(self) -> None:
        check_lr(self.name, self.lr)
        check_hyper(self.name, "weight_decay", self.weight_decay)
        self._check()
        object.__setattr__(self, "_by_name", flat_mask(self.name, self.mask))
        object.__setattr__(self, "_keys", tuple(self.buffers))

    @abstractmethod
    def _check(self) -> None:
        """Check the subclass's own hyperparameters (raise a clear `FnnError`)."""

    @property
    @abstractmethod
    def buffers(self) -> dict[str, float]:
        """Each state buffer's name (torch's) and the value `init` fills it with."""

    @abstractmethod
    def _math(
        self, params: TensorList, grads: TensorList, state: Buffers, count: int, lr: float
    ) -> tuple[TensorList, Buffers]:
        """The optimizer's own update on non-empty flat lists, after `maximize` and weight
        decay: `(new params, new buffers)`, `count` the updates done before this one."""

    def _init_buffer(self, key: str, fill: float, p: torch.Tensor) -> torch.Tensor:
        """The initial value of buffer `key` for leaf `p`: `fill` in `p`'s shape."""
        return torch.full_like(p, fill)

    def optimizer(self) -> Optimizer:
        """`Optimizer(self.init, self.update)`."""
        return Optimizer(self.init, self.update)

    # --- the flat form

    def step(
        self,
        params: TensorList,
        grads: TensorList,
        state: Buffers,
        count: int,
        decayed: Sequence[int] | None,
    ) -> tuple[TensorList, Buffers]:
        """One update on flat lists; pure (it writes into none of its arguments).

        `state` holds one list per buffer (in `buffers`' order) aligned with `params`,
        `count` is the number of updates done before this one, `decayed` the positions of
        the leaves weight decay applies to (`decayed(params_tree, names)`; `None`: all).
        Returns `(new params, new state)` in the same layout. It builds no autograd graph,
        whatever its inputs require.
        """
        _check_count(self.name, count)
        if not params:
            return [], [[] for _ in self._keys]
        lr = self.lr if not callable(self.lr) else learning_rate(self.name, self.lr, count)
        # params that require grad must not build a graph
        return without_grad(self._step, params, grads, state, count, decayed, lr)

    def _step(
        self,
        params: TensorList,
        grads: TensorList,
        state: Buffers,
        count: int,
        decayed: Sequence[int] | None,
        lr: float,
    ) -> tuple[TensorList, Buffers]:
        """`step`'s work once `lr` is known, run with grad mode off: maximize, weight
        decay, then the subclass's math."""
        if self.maximize:
            grads = torch._foreach_neg(grads)
        if self.weight_decay:
            if self.decoupled:
                params = scale_leaves(params, 1 - lr * self.weight_decay, decayed)
            else:
                grads = add_weight_decay(grads, params, self.weight_decay, decayed)
        return self._math(params, grads, state, count, lr)

    def decayed(self, params: PyTree, names: Sequence[str]) -> tuple[int, ...] | None:
        """The positions in `names` of the leaves weight decay applies to (`None`: all)."""
        if not self.weight_decay:
            return None
        return decay_indices(self.name, self.mask, self._by_name, params, names)

    def flat_state(self, state: PyTree, names: Sequence[str]) -> tuple[Buffers, int]:
        """`(buffers, count)` from the state: each buffer as a list in the order of `names`
        (the params' dotted names), and the step count."""
        if type(state) is not dict or "step" not in state:
            raise self._bad_state(state)
        buffers = []
        for k in self._keys:
            table = state.get(k)
            if type(table) is not dict:
                raise self._bad_state(state)
            try:
                buffers.append([table[n] for n in names])
            except KeyError:
                missing = [n for n in names if n not in table]
                raise TreeError(
                    f"{self.name}: the state's {k!r} has no entry for params leaf {missing[0]!r} "
                    f"(it has {list(table)[:8]}); make the state with init(params)"
                ) from None
            if len(table) != len(names):
                extra = [n for n in table if n not in set(names)]
                raise TreeError(
                    f"{self.name}: the state's {k!r} has entries for {extra[:8]}, which the "
                    f"params have not; make the state with init(params)"
                )
        return buffers, state["step"]

    def tree_state(self, buffers: Buffers, count: int, names: Sequence[str]) -> PyTree:
        """The state from flat `buffers` (as `step` returns them) and the step count to
        record (after a step: the count it was given, plus 1)."""
        state: dict[str, Any] = {"step": count}
        for k, values in zip(self._keys, buffers):
            state[k] = dict(zip(names, values))
        return state

    # --- Optimizer(init, update)

    def init(self, params: PyTree) -> PyTree:
        """The initial state: step 0 and each buffer filled with its initial value."""
        try:
            named = tree.to_state_dict(params)
        except TreeError as error:
            raise with_context(error, f"{self.name}: init:") from None
        state: dict[str, Any] = {"step": 0}
        for key, fill in self.buffers.items():
            state[key] = {n: self._init_buffer(key, fill, p) for n, p in named.items()}
        return state

    def update(self, params: PyTree, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]:
        """Pair the trees by name, then `flat_state`, `decayed`, `step` and `tree_state`."""
        paired = pair(params, grads, self.name)
        names = paired.names()
        buffers, count = self.flat_state(state, names)
        decayed = self.decayed(params, names)
        try:
            new_params, new_buffers = self.step(
                paired.params, paired.grads, buffers, count, decayed
            )
        except RuntimeError:
            self._explain(params, grads, paired, buffers, count)
            raise
        return paired.rebuild(new_params), self.tree_state(new_buffers, count + 1, names)

    # --- errors

    def _explain(
        self, params: PyTree, grads: PyTree, paired: Paired, buffers: Buffers, count: int
    ) -> None:
        """After a torch error: name its cause if it is one fnn knows, else return."""
        check_devices(params, grads, self.name)
        for k, values in zip(self.buffers, buffers):
            if k in self.scalar_buffers:
                continue
            for n, b, p in zip(paired.names(), values, paired.params):
                if b.shape != p.shape:
                    raise TreeError(
                        f"{self.name}: the state's {k!r} holds shape {tuple(b.shape)} for "
                        f"{n!r} of shape {tuple(p.shape)}; make the state with init(params)"
                    ) from None
        lr = self.lr if not callable(self.lr) else learning_rate(self.name, self.lr, count)
        explain_lr_overflow(self.name, lr, paired.params)

    def _bad_state(self, state: Any) -> FnnError:
        expected = ", ".join(repr(k) for k in ("step", *self.buffers))
        got = f"a dict with keys {list(state)}" if isinstance(state, dict) else type(state).__name__
        return FnnError(
            f"{self.name}: the state must be the dict made by {self.name}'s init, with keys "
            f"{expected}; got {got}"
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Moments(FlatForm):
    """The hyperparameters Adam and its relatives (AdamW, Adamax, NAdam, RAdam) share:
    `betas` (β₁, β₂), the decay rates of the moving moments, each in [0, 1), and `eps`
    (ε ≥ 0), checked once here. A subclass adds its own fields (and checks them in
    `_check`, after `super()._check()`), its `buffers` and `_math`."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def _check(self) -> None:
        check_betas(self.name, self.betas)
        check_hyper(self.name, "eps", self.eps)


def flat_form(optimizer: Any) -> FlatForm | None:
    """The flat form of an fnn optimizer (its rule object), or `None` for any other.

    Engines that hold the params as a list (a fused train step) call `form.step` on
    lists instead of `optimizer.update` on trees; `optimizer.update` runs the very same
    `step` after pairing the trees, so both give the same bits. See the module
    docstring of `fnn.optim.base` for the full recipe.

    Args:
        optimizer: an `Optimizer` (or anything else).

    Returns:
        The `FlatForm` whose bound methods `optimizer.init` and `optimizer.update` are, or
            `None` (an `Optimizer(init, update)` made by hand or by `chain`).

    Example:
        >>> opt = fnn.optim.sgd(lr=0.5)
        >>> form = fnn.optim.flat_form(opt)
        >>> new, buffers = form.step([torch.ones(2)], [torch.ones(2)], [], 0, None)
        >>> new[0], fnn.optim.flat_form(fnn.optim.Optimizer(opt.init, opt.update)) is form
        (tensor([0.5000, 0.5000]), True)
    """
    if not isinstance(optimizer, Optimizer):
        return None
    rule = getattr(optimizer.update, "__self__", None)
    if isinstance(rule, FlatForm) and getattr(optimizer.init, "__self__", None) is rule:
        return rule
    return None
