"""What every optimizer shares: the `Optimizer` pair, learning-rate schedules, checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Union

import torch
from typing_extensions import Protocol, TypeAlias

from ..core import PyTree
from ..errors import FnnError

__all__ = ["Optimizer", "Schedule", "LearningRate", "learning_rate", "check_hyper"]

Schedule: TypeAlias = Callable[[int], float]
"""A function from the step count (0 at the first update) to a learning rate."""
LearningRate: TypeAlias = Union[float, Schedule]


class InitFn(Protocol):
    """`init(params) -> state`."""

    def __call__(self, params: PyTree, /) -> PyTree: ...


class UpdateFn(Protocol):
    """`update(params, grads, state) -> (params, state)`."""

    def __call__(self, params: PyTree, grads: PyTree, state: PyTree, /) -> tuple[PyTree, PyTree]: ...


class Optimizer(NamedTuple):
    """An optimizer: `state = init(params)`, `params, state = update(params, grads, state)`.

    The state is an explicit pytree (dicts of tensors and a step count); neither
    function mutates its arguments.
    """

    init: InitFn
    update: UpdateFn


def learning_rate(name: str, lr: LearningRate, step: int) -> float:
    """The learning rate at `step`: `lr` itself, or `lr(step)` for a schedule."""
    if not callable(lr):
        return lr
    value = lr(step)
    if isinstance(value, torch.Tensor):
        value = value.item()
    if not value >= 0:
        raise FnnError(f"{name}: the schedule gave a negative or NaN learning rate {value!r} at step {step}")
    return float(value)


def check_hyper(name: str, what: str, value: Any, low: float = 0.0, high: float | None = None) -> None:
    """Raise a clear `FnnError` unless `low ≤ value (< high)`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low or (
        high is not None and not value < high
    ):
        bound = f"in [{low}, {high})" if high is not None else f"≥ {low}"
        raise FnnError(f"{name}: {what} must be a number {bound}, got {value!r}")


def check_lr(name: str, lr: Any) -> None:
    """A learning rate is a non-negative number or a schedule (a callable)."""
    if not callable(lr):
        check_hyper(name, "lr", lr)
