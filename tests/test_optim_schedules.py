"""Each fnn.optim schedule equals its torch.optim.lr_scheduler counterpart over 100 steps."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as S

import fnn
from fnn.errors import FnnError, FnnTypeError

O = fnn.optim
LR = 0.1


def torch_lrs(make_scheduler, steps=100, lr=LR):
    """The learning rate torch's optimizer uses at each of `steps` updates."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(opt)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notes, not our concern
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
    return lrs


CASES = {
    "constant": (O.constant(LR), lambda o: S.ConstantLR(o, factor=1.0, total_iters=0)),
    "constant-factor": (
        O.constant(LR, 0.25, total_iters=7),
        lambda o: S.ConstantLR(o, 0.25, total_iters=7),
    ),
    "constant-torch-defaults": (O.constant(LR, 1 / 3, 5), lambda o: S.ConstantLR(o)),
    "step_decay": (O.step_decay(LR, 10), lambda o: S.StepLR(o, 10)),
    "step_decay-gamma": (O.step_decay(LR, 3, gamma=0.7), lambda o: S.StepLR(o, 3, gamma=0.7)),
    "exponential_decay": (O.exponential_decay(LR, 0.95), lambda o: S.ExponentialLR(o, 0.95)),
    "exponential_decay-slow": (O.exponential_decay(LR, 0.999), lambda o: S.ExponentialLR(o, 0.999)),
    "cosine_decay": (O.cosine_decay(LR, 100), lambda o: S.CosineAnnealingLR(o, 100)),
    "cosine_decay-eta_min": (
        O.cosine_decay(LR, 30, eta_min=0.01),
        lambda o: S.CosineAnnealingLR(o, 30, 0.01),
    ),
    "cosine_decay-restart": (O.cosine_decay(LR, 17), lambda o: S.CosineAnnealingLR(o, 17)),
    "linear_warmup": (O.linear_warmup(LR), lambda o: S.LinearLR(o)),
    "linear_warmup-long": (
        O.linear_warmup(LR, 0.01, 1.0, 40),
        lambda o: S.LinearLR(o, 0.01, 1.0, 40),
    ),
    "linear_warmup-decay": (
        O.linear_warmup(LR, 1.0, 0.1, 60),
        lambda o: S.LinearLR(o, 1.0, 0.1, 60),
    ),
    "piecewise_constant": (
        O.piecewise_constant(LR, [20, 50, 80]),
        lambda o: S.MultiStepLR(o, [20, 50, 80]),
    ),
    "piecewise_constant-repeats": (
        O.piecewise_constant(LR, [60, 10, 10], gamma=0.5),
        lambda o: S.MultiStepLR(o, [60, 10, 10], gamma=0.5),
    ),
    "join-warmup-cosine": (
        O.join_schedules([O.linear_warmup(LR, 0.1, total_iters=10), O.cosine_decay(LR, 90)], [10]),
        lambda o: S.SequentialLR(
            o, [S.LinearLR(o, 0.1, total_iters=10), S.CosineAnnealingLR(o, 90)], [10]
        ),
    ),
    "join-three": (
        O.join_schedules(
            [O.constant(LR, 0.1, 5), O.exponential_decay(LR, 0.9), O.step_decay(LR, 5, 0.5)],
            [5, 40],
        ),
        lambda o: S.SequentialLR(
            o, [S.ConstantLR(o, 0.1, 5), S.ExponentialLR(o, 0.9), S.StepLR(o, 5, 0.5)], [5, 40]
        ),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_schedule_equals_torch_scheduler(name):
    schedule, make_scheduler = CASES[name]
    expected = torch_lrs(make_scheduler)
    got = [schedule(k) for k in range(100)]
    assert all(isinstance(v, float) for v in got)
    # torch updates recursively, fnn uses the closed form: equal up to the last bits
    for k, (a, b) in enumerate(zip(got, expected)):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (
            f"{name} step {k}: {a!r} vs torch {b!r}"
        )


CYCLES = {
    "one_cycle": (O.one_cycle(LR, 100), lambda o: S.OneCycleLR(o, LR, 100, cycle_momentum=False)),
    "one_cycle-linear-epochs": (
        O.one_cycle(LR, epochs=5, steps_per_epoch=20, pct_start=0.25, anneal_strategy="linear"),
        lambda o: S.OneCycleLR(
            o,
            LR,
            epochs=5,
            steps_per_epoch=20,
            pct_start=0.25,
            anneal_strategy="linear",
            cycle_momentum=False,
        ),
    ),
    "one_cycle-three-phase": (
        O.one_cycle(
            LR, 120, pct_start=0.4, div_factor=10.0, final_div_factor=100.0, three_phase=True
        ),
        lambda o: S.OneCycleLR(
            o,
            LR,
            120,
            pct_start=0.4,
            div_factor=10.0,
            final_div_factor=100.0,
            three_phase=True,
            cycle_momentum=False,
        ),
    ),
    "one_cycle-three-phase-linear": (
        O.one_cycle(LR, 100, anneal_strategy="linear", three_phase=True),
        lambda o: S.OneCycleLR(
            o, LR, 100, anneal_strategy="linear", three_phase=True, cycle_momentum=False
        ),
    ),
    "one_cycle-no-rise": (
        O.one_cycle(LR, 100, pct_start=0.0),
        lambda o: S.OneCycleLR(o, LR, 100, pct_start=0.0, cycle_momentum=False),
    ),
    "cyclic-triangular": (
        O.cyclic(0.01, LR, step_size_up=7),
        lambda o: S.CyclicLR(o, 0.01, LR, step_size_up=7, cycle_momentum=False),
    ),
    "cyclic-triangular-down": (
        O.cyclic(0.01, LR, step_size_up=5, step_size_down=12),
        lambda o: S.CyclicLR(o, 0.01, LR, 5, 12, cycle_momentum=False),
    ),
    "cyclic-triangular2": (
        O.cyclic(0.01, LR, 4, 9, mode="triangular2"),
        lambda o: S.CyclicLR(o, 0.01, LR, 4, 9, mode="triangular2", cycle_momentum=False),
    ),
    "cyclic-exp_range": (
        O.cyclic(0.01, LR, 6, mode="exp_range", gamma=0.97),
        lambda o: S.CyclicLR(o, 0.01, LR, 6, mode="exp_range", gamma=0.97, cycle_momentum=False),
    ),
    "cyclic-scale_fn-cycle": (
        O.cyclic(0.01, LR, 5, scale_fn=lambda x: 1 / x),
        lambda o: S.CyclicLR(o, 0.01, LR, 5, scale_fn=lambda x: 1 / x, cycle_momentum=False),
    ),
    "cyclic-scale_fn-iterations": (
        O.cyclic(
            0.01, LR, 5, mode="triangular2", scale_fn=lambda x: 0.99**x, scale_mode="iterations"
        ),
        lambda o: S.CyclicLR(
            o,
            0.01,
            LR,
            5,
            mode="triangular2",
            scale_fn=lambda x: 0.99**x,
            scale_mode="iterations",
            cycle_momentum=False,
        ),
    ),
    "cyclic-no-fall": (
        O.cyclic(0.01, LR, 5, step_size_down=0),
        lambda o: S.CyclicLR(o, 0.01, LR, 5, 0, cycle_momentum=False),
    ),
}


@pytest.mark.parametrize("name", list(CYCLES))
def test_cycles_equal_torch_bit_for_bit(name):
    """one_cycle and cyclic evaluate torch's own formulas in torch's order: the same floats."""
    schedule, make_scheduler = CYCLES[name]
    steps = 120 if "three-phase" in name and "linear" not in name else 100
    expected = torch_lrs(make_scheduler, steps=steps)
    got = [schedule(k) for k in range(steps)]
    assert all(isinstance(v, float) for v in got)
    assert got == expected, name


def test_one_cycle_past_its_steps_and_empty_phases():
    schedule = O.one_cycle(1.0, 10)
    assert schedule(10) >= 0.0  # torch allows step == total_steps
    with pytest.raises(FnnError, match=r"one_cycle: step 11 is past the cycle's total_steps=10"):
        schedule(11)
    with pytest.raises(FnnError, match=r"one_cycle: phase 0 has no steps"):
        O.one_cycle(1.0, 10, pct_start=0.1)(0)


def test_closed_forms():
    assert [O.step_decay(1.0, 2, 0.5)(k) for k in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert O.exponential_decay(2.0, 0.5)(3) == 0.25
    cosine = O.cosine_decay(1.0, 10, eta_min=0.1)
    assert cosine(0) == 1.0 and math.isclose(cosine(5), 0.55) and math.isclose(cosine(10), 0.1)
    warmup = O.linear_warmup(1.0, 0.5, 1.0, 4)
    assert [warmup(k) for k in range(6)] == [0.5, 0.625, 0.75, 0.875, 1.0, 1.0]
    assert [O.piecewise_constant(1.0, [1, 3], 0.5)(k) for k in range(4)] == [1.0, 0.5, 0.5, 0.25]
    joined = O.join_schedules([O.constant(1.0), O.constant(2.0), O.constant(3.0)], [2, 3])
    assert [joined(k) for k in range(5)] == [1.0, 1.0, 2.0, 3.0, 3.0]
    restarted = O.join_schedules([O.constant(1.0), O.step_decay(1.0, 1, 0.5)], [3])
    assert [restarted(k) for k in range(6)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: O.constant(-0.1), FnnError, r"constant: lr must be ≥ 0, got -0.1"),
        (lambda: O.constant(0.1, factor=2.0), FnnError, r"constant: factor must be in \[0, 1\]"),
        (lambda: O.step_decay(0.1, 0), FnnError, r"step_decay: step_size must be ≥ 1, got 0"),
        (lambda: O.step_decay(0.1, 2.5), FnnTypeError, r"step_decay: step_size must be an int"),
        (lambda: O.exponential_decay(0.1, -0.5), FnnError, r"exponential_decay: gamma must be ≥ 0"),
        (lambda: O.cosine_decay(0.1, 0), FnnError, r"cosine_decay: T_max must be ≥ 1"),
        (
            lambda: O.cosine_decay(0.1, 10, eta_min=-1),
            FnnError,
            r"cosine_decay: eta_min must be ≥ 0",
        ),
        (
            lambda: O.linear_warmup(0.1, start_factor=0),
            FnnError,
            r"linear_warmup: start_factor must be in \(0, 1\]",
        ),
        (
            lambda: O.linear_warmup(0.1, end_factor=1.5),
            FnnError,
            r"linear_warmup: end_factor must be in \[0, 1\]",
        ),
        (
            lambda: O.linear_warmup(0.1, total_iters=0),
            FnnError,
            r"linear_warmup: total_iters must be ≥ 1",
        ),
        (
            lambda: O.piecewise_constant(0.1, 5),
            FnnTypeError,
            r"piecewise_constant: milestones must be a sequence",
        ),
        (
            lambda: O.piecewise_constant(0.1, [5, -1]),
            FnnError,
            r"piecewise_constant: each milestone must be ≥ 0",
        ),
        (
            lambda: O.join_schedules([], []),
            FnnError,
            r"join_schedules: expected at least one schedule",
        ),
        (
            lambda: O.join_schedules([O.constant(0.1)] * 2, []),
            FnnError,
            r"2 schedules need 1 milestones, got 0",
        ),
        (
            lambda: O.join_schedules([O.constant(0.1)] * 3, [5, 5]),
            FnnError,
            r"milestones must be increasing",
        ),
        (
            lambda: O.join_schedules([O.constant(0.1), 0.1], [5]),
            FnnTypeError,
            r"schedules\[1\] must be a function",
        ),
        (lambda: O.one_cycle(0.1), FnnError, r"one_cycle: give total_steps, or both epochs"),
        (lambda: O.one_cycle(0.1, epochs=3), FnnError, r"one_cycle: give total_steps"),
        (lambda: O.one_cycle(0.1, 0), FnnError, r"one_cycle: total_steps must be ≥ 1, got 0"),
        (lambda: O.one_cycle(0.1, 10.0), FnnTypeError, r"one_cycle: total_steps must be an int"),
        (lambda: O.one_cycle(-0.1, 10), FnnError, r"one_cycle: max_lr must be ≥ 0"),
        (lambda: O.one_cycle(0.1, 10, pct_start=1.5), FnnError, r"pct_start must be in \[0, 1\]"),
        (lambda: O.one_cycle(0.1, 10, anneal_strategy="exp"), FnnError, r"'cos' or 'linear'"),
        (lambda: O.one_cycle(0.1, 10, div_factor=0.0), FnnError, r"div_factor .* must be > 0"),
        (lambda: O.cyclic(0.1, 1.0, 0), FnnError, r"cyclic: step_size_up must be ≥ 1, got 0"),
        (lambda: O.cyclic(0.1, 1.0, 2, -1), FnnError, r"cyclic: step_size_down must be ≥ 0"),
        (lambda: O.cyclic(0.1, 1.0, mode="sine"), FnnError, r"cyclic: mode must be 'triangular'"),
        (lambda: O.cyclic(0.1, 1.0, scale_mode="x"), FnnError, r"cyclic: scale_mode must be"),
        (
            lambda: O.cyclic(0.1, 1.0, scale_fn=3),
            FnnTypeError,
            r"cyclic: scale_fn must be a function",
        ),
        (lambda: O.cyclic("0.1", 1.0), FnnTypeError, r"cyclic: base_lr must be a number"),
    ],
)
def test_bad_schedule_arguments(make, error, message):
    with pytest.raises(error, match=message) as info:
        make()
    assert isinstance(info.value, ValueError)
