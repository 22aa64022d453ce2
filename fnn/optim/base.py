"""What every optimizer shares: the `Optimizer` and `GradientTransformation` pairs,
learning rates, hyperparameter checks, the state layout and the weight-decay mask.

Every optimizer's state is a plain dict with one layout:

    {"step": 3,                                    # updates done so far (a Python int)
     "exp_avg": {"0.weight": tensor, ...},         # one dict per buffer, keyed like
     "exp_avg_sq": {"0.weight": tensor, ...}}      # `fnn.tree.to_state_dict(params)`

Buffer names are `torch.optim`'s per-parameter state names; each buffer is a flat
dict from dotted parameter names to tensors, in the params' flattening order. A
flat dict reads back as a list with one `list(d.values())`, so the hot path walks
no nested tree, while the state stays readable and `torch.save`-able. The step is
a Python int: schedules and bias corrections read it without a device sync.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeAlias

import torch
from typing_extensions import Protocol

from .. import tree
from .._dicts import BUILT
from ..core import PyTree
from ..errors import FnnError, FnnTypeError, TreeError, with_context
from ..update import flat_pair

__all__ = [
    "Optimizer",
    "GradientTransformation",
    "Schedule",
    "LearningRate",
    "Mask",
    "TensorList",
    "StepFn",
    "build_optimizer",
    "learning_rate",
    "check_hyper",
    "check_lr",
    "check_betas",
    "MaskResolver",
    "add_weight_decay",
    "scale_leaves",
]

Schedule: TypeAlias = Callable[[int], float]
"""A function from the step count (0 at the first update) to a learning rate."""
LearningRate: TypeAlias = float | Schedule
Mask: TypeAlias = PyTree | Callable[[PyTree], PyTree] | None
"""Which leaves get weight decay: a tree of bools shaped like params, or a function
`params -> tree of bools` (e.g. `fnn.optim.decay_mask`); `None` means all leaves."""
TensorList: TypeAlias = list[torch.Tensor] | tuple[torch.Tensor, ...]
"""Tensors in the params' leaf order: what torch's `_foreach_*` ops take (they return tuples)."""


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


class GradientTransformation(NamedTuple):
    """A gradient transformation (clipping, weight decay, ...): it maps grads to new grads.

    Compose transformations with an optimizer by `fnn.optim.chain`.

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


def learning_rate(name: str, lr: LearningRate, step: int) -> float:
    """The learning rate at `step`: `lr` itself, or `lr(step)` for a schedule."""
    if not callable(lr):
        return lr
    value = lr(step)
    if isinstance(value, torch.Tensor):
        value = value.item()
    if not value >= 0:
        raise FnnError(
            f"{name}: the schedule gave a negative or NaN learning rate {value!r} at step {step}"
        )
    return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    """A learning rate is a non-negative number or a schedule (a callable)."""
    if callable(lr):
        return
    if not _is_number(lr):
        raise FnnTypeError(
            f"{name}: lr must be a number or a schedule (a function of the step), got {lr!r}"
        )
    check_hyper(name, "lr", lr)


def check_betas(name: str, betas: Any) -> tuple[float, float]:
    """`betas` is a pair of numbers in [0, 1)."""
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise FnnTypeError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
    check_hyper(name, "betas[0]", betas[0], 0, 1)
    check_hyper(name, "betas[1]", betas[1], 0, 1)
    return float(betas[0]), float(betas[1])


# The state's buffers: flat dicts {dotted name: tensor} in the params' leaf order.


class StepFn(Protocol):
    """The arithmetic of one update on flat lists, in the params' leaf order:
    `step_fn(params, treedef, leaves, grads, buffers, step) -> (new_leaves, new_buffers)`,
    `buffers` one list per state buffer, `step` the updates done before this one."""

    def __call__(
        self,
        params: PyTree,
        treedef: tree.TreeDef,
        leaves: TensorList,
        grads: TensorList,
        buffers: Sequence[TensorList],
        step: int,
        /,
    ) -> tuple[TensorList, Sequence[TensorList]]: ...


def build_optimizer(name: str, buffers: dict[str, float], step_fn: StepFn) -> Optimizer:
    """The `Optimizer` around `step_fn`; `buffers` maps each state buffer's name to its
    initial value. The state is `{"step": 0, name: {param name: tensor}, ...}`."""
    keys = tuple(buffers)
    last_layout: list[Any] = [None]  # see fnn.update.flat_pair

    def init(params: PyTree) -> PyTree:
        try:
            named_params = tree.to_state_dict(params)
        except TreeError as error:
            raise with_context(error, f"{name}: init:") from None
        state: dict[str, Any] = {"step": 0}
        for key, fill in buffers.items():
            state[key] = {n: torch.full_like(p, fill) for n, p in named_params.items()}
        return state

    def update(params: PyTree, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]:
        leaves, g, treedef, build, tag = flat_pair(params, grads, name, last_layout)
        old: list[list[torch.Tensor]] = []
        try:  # the state's step and buffers (inline and loop-free: this runs at every step)
            step = state["step"]
            for k in keys:
                old.append(list(state[k].values()))
        except (KeyError, TypeError, AttributeError):
            raise _bad_state(name, state, keys) from None
        if type(step) is not int:
            _check_step(name, step)
        for buffer in old:
            if len(buffer) != len(leaves):
                _check_lengths(name, keys, old, len(leaves))
        if not leaves:
            return params, {**state, "step": step + 1}
        try:
            new_leaves, new = step_fn(params, treedef, leaves, g, old, step)
        except RuntimeError:
            _check_shapes(name, keys, old, leaves)
            raise
        new_state: dict[str, Any] = {"step": step + 1}
        if keys:
            names = state[keys[0]]
            for key, values in zip(keys, new):
                new_state[key] = dict(zip(names, values))
        BUILT[0] = (tag, *new_leaves) if tag is not None else None  # see fnn/update.py vouch
        return build(new_leaves), new_state

    return Optimizer(init, update)


def _bad_state(name: str, state: Any, keys: tuple[str, ...]) -> FnnError:
    expected = ", ".join(repr(k) for k in ("step", *keys))
    return FnnError(
        f"{name}: the state must be the dict made by {name}'s init, with keys {expected}; "
        f"got {_describe_state(state)}"
    )


def _check_step(name: str, step: Any) -> None:
    """The step count is an int (not a bool, a float or a tensor)."""
    if isinstance(step, bool) or not isinstance(step, int):
        raise FnnTypeError(f"{name}: the state's step must be an int, got {step!r}")


def _check_lengths(
    name: str, keys: tuple[str, ...], buffers: list[list[torch.Tensor]], n: int
) -> None:
    """Each state buffer holds one tensor per params leaf."""
    for k, values in zip(keys, buffers):
        if len(values) != n:
            raise TreeError(
                f"{name}: the state's {k!r} has {len(values)} tensors but the params have {n} leaves; "
                "make the state with init(params)"
            )


def _check_shapes(
    name: str, keys: tuple[str, ...], buffers: list[list[torch.Tensor]], leaves: list[torch.Tensor]
) -> None:
    """After a torch error: blame the state if its shapes do not match the params'."""
    for k, values in zip(keys, buffers):
        for i, (b, p) in enumerate(zip(values, leaves)):
            if b.shape != p.shape:
                raise TreeError(
                    f"{name}: the state's {k!r} holds shape {tuple(b.shape)} for leaf {i} of shape "
                    f"{tuple(p.shape)}; make the state with init(params)"
                ) from None


def _describe_state(state: Any) -> str:
    if isinstance(state, dict):
        return f"a dict with keys {list(state)}"
    return type(state).__name__


# Weight decay and its mask.


class MaskResolver:
    """Turns a `Mask` into the indices of the leaves it selects (`None`: all leaves).

    A tree mask is resolved once per params structure; a callable one at every call.
    """

    __slots__ = ("_indices", "_treedef", "mask", "name")

    def __init__(self, name: str, mask: Mask):
        self.name = name
        self.mask = mask
        self._treedef: tree.TreeDef | None = None
        self._indices: list[int] | None = None

    def __call__(self, params: PyTree, treedef: tree.TreeDef) -> list[int] | None:
        if self.mask is None:
            return None
        if not callable(self.mask) and treedef == self._treedef:
            return self._indices
        flags = self.mask(params) if callable(self.mask) else self.mask
        leaves, mask_treedef = tree.flatten(flags)
        if mask_treedef != treedef:
            tree.assert_same_structure(
                tree.map(lambda _: True, params), flags, f"{self.name}: mask", shapes=False
            )
            raise TreeError(f"{self.name}: the mask's tree does not match the params tree")
        bad = [i for i, f in enumerate(leaves) if not isinstance(f, bool)]
        if bad:
            path = tree.paths(flags)[bad[0]]
            raise FnnTypeError(
                f"{self.name}: mask leaves must be True or False, got {leaves[bad[0]]!r} at {path}"
            )
        indices = [i for i, f in enumerate(leaves) if f]
        if not callable(self.mask):
            self._treedef, self._indices = treedef, indices
        return indices


def add_weight_decay(
    grads: TensorList,
    leaves: TensorList,
    weight_decay: float,
    indices: list[int] | None,
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


def scale_leaves(leaves: TensorList, factor: float, indices: list[int] | None) -> TensorList:
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
