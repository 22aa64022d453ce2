"""Learning-rate schedules: functions `step -> lr`, equal to `torch.optim.lr_scheduler`'s.

A schedule is called with the optimizer's step count (0 at the first update), so
`schedule(k)` is the learning rate torch uses after `k` calls of `scheduler.step()`.
Each is the closed form of its torch counterpart, computed in Python floats: no
tensor, no device sync, and no state to save (the step count is in the optimizer
state). Torch updates most schedulers recursively, so its values can differ from
the closed form in the last few bits (relative 1e-15 after 100 steps).

    >>> schedule = join_schedules([linear_warmup(0.1, 0.1, total_iters=2), cosine_decay(0.1, T_max=4)], [2])
    >>> [round(schedule(k), 4) for k in range(7)]
    [0.01, 0.055, 0.1, 0.0854, 0.05, 0.0146, 0.0]
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Sequence

from ..errors import FnnError, FnnTypeError
from .base import Schedule, check_hyper

__all__ = [
    "constant",
    "step_decay",
    "exponential_decay",
    "cosine_decay",
    "linear_warmup",
    "piecewise_constant",
    "join_schedules",
]


def _check_count(name: str, what: str, value: object, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FnnTypeError(f"{name}: {what} must be an int, got {value!r}")
    if value < low:
        raise FnnError(f"{name}: {what} must be ≥ {low}, got {value!r}")


def constant(lr: float, factor: float = 1.0, total_iters: int = 0) -> Schedule:
    """`lr · factor` for the first `total_iters` steps, then `lr`: `ConstantLR`.

    With the defaults it is the constant `lr` (torch's `ConstantLR` defaults are
    `factor=1/3, total_iters=5`).

    Args:
        lr: the base learning rate, ≥ 0.
        factor: the multiplier of `lr` during the first steps, in [0, 1].
        total_iters: number of steps at `lr · factor`, ≥ 0.

    Returns:
        A schedule: a function from the step count (0 at the first update) to the learning
            rate, a Python float.

    Raises:
        FnnTypeError: an argument of the wrong type.
        FnnError: an argument out of range.

    Example:
        >>> [constant(0.1, factor=0.5, total_iters=2)(k) for k in range(4)]
        [0.05, 0.05, 0.1, 0.1]
    """
    check_hyper("constant", "lr", lr)
    check_hyper("constant", "factor", factor)
    if factor > 1:
        raise FnnError(f"constant: factor must be in [0, 1], got {factor!r}")
    _check_count("constant", "total_iters", total_iters, low=0)

    def constant_schedule(step: int) -> float:
        return lr * (factor + (step >= total_iters) * (1 - factor))

    return constant_schedule


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """`lr · gamma^⌊step / step_size⌋`: `StepLR(step_size, gamma)`.

    Args:
        lr: the initial learning rate, ≥ 0.
        step_size: number of steps between decays, ≥ 1.
        gamma: the decay factor, ≥ 0.

    Returns:
        A schedule: a function from the step count (0 at the first update) to the learning
            rate, a Python float.

    Raises:
        FnnTypeError: an argument of the wrong type.
        FnnError: an argument out of range.

    Example:
        >>> [step_decay(1.0, step_size=2, gamma=0.5)(k) for k in range(5)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    check_hyper("step_decay", "lr", lr)
    _check_count("step_decay", "step_size", step_size)
    check_hyper("step_decay", "gamma", gamma)

    def step_decay_schedule(step: int) -> float:
        return lr * gamma ** (step // step_size)

    return step_decay_schedule


def exponential_decay(lr: float, gamma: float) -> Schedule:
    """`lr · gamma^step`: `ExponentialLR(gamma)`.

    Args:
        lr: the initial learning rate, ≥ 0.
        gamma: the decay factor per step, ≥ 0.

    Returns:
        A schedule: a function from the step count (0 at the first update) to the learning
            rate, a Python float.

    Raises:
        FnnTypeError: an argument of the wrong type.
        FnnError: an argument out of range.

    Example:
        >>> [exponential_decay(1.0, gamma=0.5)(k) for k in range(4)]
        [1.0, 0.5, 0.25, 0.125]
    """
    check_hyper("exponential_decay", "lr", lr)
    check_hyper("exponential_decay", "gamma", gamma)

    def exponential_decay_schedule(step: int) -> float:
        return lr * gamma**step

    return exponential_decay_schedule


def cosine_decay(lr: float, T_max: int, eta_min: float = 0.0) -> Schedule:
    """`eta_min + (lr − eta_min) (1 + cos(π step / T_max)) / 2`: `CosineAnnealingLR`.

    From `lr` at step 0 to `eta_min` at step `T_max`. As torch's, it does not stop
    there: past `T_max` the cosine climbs back to `lr` at `2 T_max` (join it with
    `constant(eta_min)` to stay at the minimum).

    Args:
        lr: the initial (maximum) learning rate, ≥ 0.
        T_max: number of steps from `lr` down to `eta_min`, ≥ 1.
        eta_min: the minimum learning rate, ≥ 0.

    Returns:
        A schedule: a function from the step count (0 at the first update) to the learning
            rate, a Python float.

    Raises:
        FnnTypeError: an argument of the wrong type.
        FnnError: an argument out of range.

    Example:
        >>> [round(cosine_decay(1.0, T_max=4)(k), 4) for k in range(6)]
        [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.1464]
    """
    check_hyper("cosine_decay", "lr", lr)
    _check_count("cosine_decay", "T_max", T_max)
    check_hyper("cosine_decay", "eta_min", eta_min)

    def cosine_decay_schedule(step: int) -> float:
        return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * step / T_max)) / 2

    return cosine_decay_schedule


def linear_warmup(
    lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
) -> Schedule:
    """`lr` times a factor going linearly from `start_factor` to `end_factor`: `LinearLR`.

    The factor reaches `end_factor` after `total_iters` steps and stays there, as
    `LinearLR(start_factor, end_factor, total_iters)`.

    Args:
        lr: the base learning rate, ≥ 0.
        start_factor: the multiplier at step 0, in (0, 1].
        end_factor: the multiplier from step `total_iters` on, in [0, 1].
        total_iters: number of steps of the ramp, ≥ 1.

    Returns:
        A schedule: a function from the step count (0 at the first update) to the learning
            rate, a Python float.

    Raises:
        FnnTypeError: an argument of the wrong type.
        FnnError: an argument out of range.

    Example:
        >>> [round(linear_warmup(1.0, start_factor=0.25, total_iters=3)(k), 4) for k in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    check_hyper("linear_warmup", "lr", lr)
    check_hyper("linear_warmup", "start_factor", start_factor)
    if not 0 < start_factor <= 1:
        raise FnnError(f"linear_warmup: start_factor must be in (0, 1], got {start_factor!r}")
    check_hyper("linear_warmup", "end_factor", end_factor)
    if end_factor > 1:
        raise FnnError(f"linear_warmup: end_factor must be in [0, 1], got {end_factor!r}")
    _check_count("linear_warmup", "total_iters", total_iters)

    def linear_warmup_schedule(step: int) -> float:
        return lr * (
            start_factor + (end_factor - start_factor) * min(total_iters, step) / total_iters
        )

    return linear_warmup_schedule


def piecewise_constant(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """`lr · gamma^(number of milestones ≤ step)`: `MultiStepLR(milestones, gamma)`.

    Args:
        lr: the initial learning rate, ≥ 0.
        milestones: the steps (ints ≥ 0, any order) at which the rate is multiplied by `gamma`.
        gamma: the decay factor, ≥ 0.

    Returns:
        A schedule: a function from the step count (0 at the first update) to the learning
            rate, a Python float.

    Raises:
        FnnTypeError: an argument of the wrong type (`milestones` not a sequence).
        FnnError: an argument out of range.

    Example:
        >>> [piecewise_constant(1.0, [2, 3], gamma=0.5)(k) for k in range(5)]
        [1.0, 1.0, 0.5, 0.25, 0.25]
    """
    check_hyper("piecewise_constant", "lr", lr)
    check_hyper("piecewise_constant", "gamma", gamma)
    if not isinstance(milestones, Sequence):
        raise FnnTypeError(
            f"piecewise_constant: milestones must be a sequence of ints, got {milestones!r}"
        )
    for m in milestones:
        _check_count("piecewise_constant", "each milestone", m, low=0)
    bounds = sorted(milestones)

    def piecewise_constant_schedule(step: int) -> float:
        return lr * gamma ** bisect_right(bounds, step)

    return piecewise_constant_schedule


def join_schedules(schedules: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    """Schedules one after the other: `SequentialLR(schedulers, milestones)`.

    `schedules[i]` runs from `milestones[i − 1]` on, restarted at its own step 0.

    Args:
        schedules: n schedules (functions of the step).
        milestones: n − 1 increasing steps ≥ 1 where the next schedule takes over.

    Returns:
        A schedule: a function from the step count (0 at the first update) to the learning
            rate, a Python float.

    Raises:
        FnnTypeError: a schedule that is not callable, or a milestone that is not an int.
        FnnError: no schedule, not n − 1 milestones, or milestones not increasing from 1.

    Example:
        >>> warmup, decay = linear_warmup(1.0, 0.5, total_iters=2), exponential_decay(1.0, 0.5)
        >>> warmup_then_decay = join_schedules([warmup, decay], milestones=[2])
        >>> [warmup_then_decay(k) for k in range(5)]
        [0.5, 0.75, 1.0, 0.5, 0.25]
    """
    schedules = list(schedules)
    milestones = list(milestones)
    if not schedules:
        raise FnnError("join_schedules: expected at least one schedule, got none")
    for i, s in enumerate(schedules):
        if not callable(s):
            raise FnnTypeError(
                f"join_schedules: schedules[{i}] must be a function of the step, got {s!r}"
            )
    if len(milestones) != len(schedules) - 1:
        raise FnnError(
            f"join_schedules: {len(schedules)} schedules need {len(schedules) - 1} milestones, "
            f"got {len(milestones)}"
        )
    for m in milestones:
        _check_count("join_schedules", "each milestone", m)
    if any(b <= a for a, b in itertools.pairwise(milestones)):
        raise FnnError(f"join_schedules: milestones must be increasing, got {milestones}")
    starts = [0, *milestones]

    def joined_schedule(step: int) -> float:
        i = bisect_right(milestones, step)
        return schedules[i](step - starts[i])

    return joined_schedule
