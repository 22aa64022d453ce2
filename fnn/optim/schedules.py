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
from collections.abc import Callable, Sequence
from typing import Literal

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
    "one_cycle",
    "cyclic",
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


def one_cycle(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """The 1cycle policy: `OneCycleLR`'s learning rates.

    From `max_lr / div_factor` up to `max_lr` over the first `pct_start` of the steps,
    then down to `max_lr / div_factor / final_div_factor` at step `total_steps − 1`,
    annealing by cosine or linearly; with `three_phase`, down to the initial rate over
    as many steps as the rise, then to the minimum. The same floats as torch's (its
    formulas, evaluated in the same order). torch's `cycle_momentum` (on by default
    there) also cycles the optimizer's momentum; an fnn schedule gives the learning rate
    only, so compare with `OneCycleLR(..., cycle_momentum=False)`.

    Args:
        max_lr: the peak learning rate, ≥ 0.
        total_steps: the number of steps of the cycle, ≥ 1; or give `epochs` and
            `steps_per_epoch` instead.
        epochs: the number of epochs (with `steps_per_epoch`), ≥ 1.
        steps_per_epoch: steps per epoch (with `epochs`), ≥ 1.
        pct_start: the fraction of the steps spent rising, in [0, 1].
        anneal_strategy: `"cos"` or `"linear"`.
        div_factor: the initial rate is `max_lr / div_factor`; > 0.
        final_div_factor: the final rate is the initial one divided by this; > 0.
        three_phase: rise, fall back to the initial rate, then anneal to the minimum.

    Returns:
        A schedule: a function from the step count (0 at the first update) to the learning
            rate, a Python float. As torch's scheduler, it raises an `FnnError` past
            step `total_steps`.

    Raises:
        FnnTypeError: an argument of the wrong type.
        FnnError: an argument out of range, or neither `total_steps` nor both `epochs` and
            `steps_per_epoch`.

    Example:
        >>> schedule = fnn.optim.one_cycle(1.0, total_steps=10, anneal_strategy="linear")
        >>> [round(schedule(k), 3) for k in (0, 2, 5, 9)]
        [0.04, 1.0, 0.571, 0.0]
    """
    check_hyper("one_cycle", "max_lr", max_lr)
    if total_steps is not None:
        _check_count("one_cycle", "total_steps", total_steps)
        total = total_steps
    elif epochs is not None and steps_per_epoch is not None:
        _check_count("one_cycle", "epochs", epochs)
        _check_count("one_cycle", "steps_per_epoch", steps_per_epoch)
        total = epochs * steps_per_epoch
    else:
        raise FnnError("one_cycle: give total_steps, or both epochs and steps_per_epoch")
    check_hyper("one_cycle", "pct_start", pct_start)
    if pct_start > 1:
        raise FnnError(f"one_cycle: pct_start must be in [0, 1], got {pct_start!r}")
    anneal = _anneal("one_cycle", anneal_strategy)
    check_hyper("one_cycle", "div_factor", div_factor)
    check_hyper("one_cycle", "final_div_factor", final_div_factor)
    if not div_factor > 0 or not final_div_factor > 0:
        raise FnnError(
            f"one_cycle: div_factor and final_div_factor must be > 0, got {div_factor!r} and "
            f"{final_div_factor!r}"
        )
    initial = max_lr / div_factor
    low = initial / final_div_factor
    rise = float(pct_start * total) - 1
    if three_phase:  # (end step, start lr, end lr) of each phase, as torch's
        phases = [(rise, initial, max_lr), (float(2 * pct_start * total) - 2, max_lr, initial)]
        phases.append((total - 1, initial, low))
    else:
        phases = [(rise, initial, max_lr), (total - 1, max_lr, low)]

    def one_cycle_schedule(step: int) -> float:
        if step > total:
            raise FnnError(
                f"one_cycle: step {step} is past the cycle's total_steps={total} (as torch's "
                "OneCycleLR, it does not extend past them)"
            )
        start = 0.0
        for i, (end, start_lr, end_lr) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                if end == start:
                    raise FnnError(
                        f"one_cycle: phase {i} has no steps (pct_start={pct_start!r} × "
                        f"total_steps={total}); torch's OneCycleLR divides by zero here"
                    )
                return float(anneal(start_lr, end_lr, (step - start) / (end - start)))
            start = end
        raise AssertionError("unreachable: the last phase always matches")

    return one_cycle_schedule


def _anneal(name: str, strategy: object) -> Callable[[float, float, float], float]:
    """torch's `_annealing_cos` / `_annealing_linear`, from `start` to `end` as pct goes 0 → 1."""
    if strategy == "cos":
        return lambda start, end, pct: end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    if strategy == "linear":
        return lambda start, end, pct: (end - start) * pct + start
    raise FnnError(f"{name}: anneal_strategy must be 'cos' or 'linear', got {strategy!r}")


def cyclic(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[float], float] | None = None,
    scale_mode: Literal["cycle", "iterations"] = "cycle",
) -> Schedule:
    """A cyclical learning rate between `base_lr` and `max_lr`: `CyclicLR`'s rates.

    Each cycle rises from `base_lr` for `step_size_up` steps and falls back for
    `step_size_down` (default: as many). The amplitude is scaled per cycle by `mode`:
    `"triangular"` (constant), `"triangular2"` (halved each cycle), `"exp_range"`
    (`gamma ** step`); or by `scale_fn(cycle)` / `scale_fn(step)` as `scale_mode` says,
    which overrides `mode`. The same floats as torch's. torch's `cycle_momentum` (on by
    default) also cycles the optimizer's momentum: an fnn schedule gives the learning
    rate only, so compare with `CyclicLR(..., cycle_momentum=False)`.

    Args:
        base_lr: the lower bound, ≥ 0.
        max_lr: the upper bound of the first cycle, ≥ 0.
        step_size_up: steps of the rising half, ≥ 1.
        step_size_down: steps of the falling half, ≥ 0 (None: `step_size_up`).
        mode: `"triangular"`, `"triangular2"` or `"exp_range"`.
        gamma: the factor of `"exp_range"`, ≥ 0.
        scale_fn: a custom scaling of the amplitude, called with the cycle number (from 1)
            or the step count; overrides `mode`.
        scale_mode: what `scale_fn` is called with: `"cycle"` or `"iterations"`.

    Returns:
        A schedule: a function from the step count (0 at the first update) to the learning
            rate, a Python float.

    Raises:
        FnnTypeError: an argument of the wrong type (`scale_fn` not callable).
        FnnError: an argument out of range, or an unknown `mode` or `scale_mode`.

    Example:
        >>> schedule = fnn.optim.cyclic(0.1, 1.0, step_size_up=2, mode="triangular2")
        >>> [round(schedule(k), 3) for k in range(9)]
        [0.1, 0.55, 1.0, 0.55, 0.1, 0.325, 0.55, 0.325, 0.1]
    """
    check_hyper("cyclic", "base_lr", base_lr)
    check_hyper("cyclic", "max_lr", max_lr)
    _check_count("cyclic", "step_size_up", step_size_up)
    if step_size_down is not None:
        _check_count("cyclic", "step_size_down", step_size_down, low=0)
    check_hyper("cyclic", "gamma", gamma)
    if scale_mode not in ("cycle", "iterations"):
        raise FnnError(f"cyclic: scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
    up = float(step_size_up)
    total = up + (float(step_size_down) if step_size_down is not None else up)
    ratio = up / total
    scale: Callable[[float], float]
    if scale_fn is not None:
        if not callable(scale_fn):
            raise FnnTypeError(f"cyclic: scale_fn must be a function, got {scale_fn!r}")
        scale, by_cycle = scale_fn, scale_mode == "cycle"
    elif mode == "triangular":
        scale, by_cycle = (lambda x: 1.0), True
    elif mode == "triangular2":
        scale, by_cycle = (lambda x: 1 / (2.0 ** (x - 1))), True
    elif mode == "exp_range":
        scale, by_cycle = (lambda x: gamma**x), False
    else:
        raise FnnError(
            f"cyclic: mode must be 'triangular', 'triangular2' or 'exp_range', got {mode!r}"
        )

    def cyclic_schedule(step: int) -> float:
        cycle = math.floor(1 + step / total)
        x = 1.0 + step / total - cycle
        factor = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        height = (max_lr - base_lr) * factor
        return float(base_lr + height * scale(cycle if by_cycle else step))

    return cyclic_schedule
