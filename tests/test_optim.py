"""fnn.optim's optimizers against torch.optim, step for step, plus state, errors and convergence."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn import tree
from fnn.errors import FnnError, FnnTypeError, TreeError

O = fnn.optim
F64 = torch.float64

TORCH = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


# A small non-quadratic problem: a tanh MLP with a scalar gain and a log-cosh loss.


def make_params(seed: int = 0, dtype=F64) -> dict:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return {
        "0": {"weight": randn(5, 3), "bias": randn(5)},
        "1": {},
        "2": {"weight": randn(2, 5), "bias": randn(2)},
        "gain": torch.tensor(1.5, dtype=dtype),
    }


def make_data(seed: int = 1, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, generator=g, dtype=dtype), torch.randn(
        16, 2, generator=g, dtype=dtype
    )


def loss_fn(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h = torch.tanh(x @ p["0"]["weight"].T + p["0"]["bias"])
    out = p["gain"] * (h @ p["2"]["weight"].T + p["2"]["bias"])
    return torch.log(torch.cosh(out - y)).mean()


def lockstep(opt, make_torch_opt, steps=60, dtype=F64, make_scheduler=None, groups=None):
    """Run fnn's `opt` and a torch optimizer side by side, both fed the gradients torch's
    autograd computes at torch's params; return the largest relative deviation seen."""
    params = make_params(dtype=dtype)
    x, y = make_data(dtype=dtype)
    torch_params = tree.map(lambda t: t.clone().requires_grad_(True), params)
    leaves = tree.leaves(torch_params)
    torch_opt = make_torch_opt(leaves if groups is None else groups(leaves))
    scheduler = make_scheduler(torch_opt) if make_scheduler else None
    state = opt.init(params)
    worst = 0.0
    for _ in range(steps):
        torch_opt.zero_grad()
        with torch.enable_grad():
            loss_fn(torch_params, x, y).backward()
        grads = tree.map(lambda t: t.grad.clone(), torch_params)
        torch_opt.step()
        if scheduler is not None:
            scheduler.step()
        params, state = opt.update(params, grads, state)
        for mine, theirs in zip(tree.leaves(params), leaves):
            scale = max(1.0, theirs.detach().abs().max().item())
            worst = max(worst, (mine - theirs.detach()).abs().max().item() / scale)
    assert state["step"] == steps
    return worst


CASES = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1)),
    ("sgd", dict(lr=0.02, momentum=0.9, maximize=True)),
    ("adam", dict()),
    ("adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adam", dict(lr=0.02, amsgrad=True)),
    ("adam", dict(lr=0.02, amsgrad=True, maximize=True, weight_decay=0.05)),
    ("adamw", dict(lr=0.01)),
    ("adamw", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("adamw", dict(lr=0.005, betas=(0.5, 0.9), weight_decay=0.3, maximize=True)),
    ("rmsprop", dict()),
    ("rmsprop", dict(lr=1e-3, momentum=0.9)),
    ("rmsprop", dict(lr=3e-3, centered=True)),
    (
        "rmsprop",
        dict(lr=3e-3, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1, maximize=True),
    ),
    ("adagrad", dict()),
    ("adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("adagrad", dict(lr=0.05, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-8)),
    ("adagrad", dict(lr=0.1, lr_decay=0.1, maximize=True)),
]


@pytest.mark.parametrize("foreach", [False, True], ids=["torch-single", "torch-foreach"])
@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_torch_optim_float64(name, kwargs, foreach):
    opt = getattr(O, name)(**kwargs)
    worst = lockstep(opt, lambda p: TORCH[name](p, foreach=foreach, **kwargs))
    assert worst <= 1e-9, f"{name}{kwargs}: deviates from torch.optim by {worst:.3g}"
    if foreach:  # the same kernels in the same order: the same bits
        assert worst == 0.0, f"{name}{kwargs}: deviates from torch's foreach by {worst:.3g}"


@pytest.mark.parametrize("name", list(TORCH))
def test_matches_torch_optim_float32(name):
    kwargs = dict(lr=0.01, weight_decay=0.01)
    worst = lockstep(
        getattr(O, name)(**kwargs),
        lambda p: TORCH[name](p, **kwargs),
        steps=20,
        dtype=torch.float32,
    )
    assert worst <= 1e-6


def test_torch_defaults():
    # fnn's defaults are torch's: same trajectory with no arguments but the params.
    for name, cls in TORCH.items():
        assert lockstep(getattr(O, name)(), cls, steps=5) == 0.0, name


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(["sgd", "adam", "rmsprop"]),
    lr=st.floats(1e-4, 0.1),
    a=st.floats(0.0, 0.99),
    b=st.floats(0.0, 0.999),
    weight_decay=st.sampled_from([0.0, 0.01, 0.5]),
    flag=st.booleans(),
)
def test_random_hyperparameters_match_torch(name, lr, a, b, weight_decay, flag):
    kwargs = {
        "sgd": dict(lr=lr, momentum=a, nesterov=flag and a > 0, weight_decay=weight_decay),
        "adam": dict(lr=lr, betas=(a, b), amsgrad=flag, weight_decay=weight_decay),
        "rmsprop": dict(lr=lr, alpha=b, momentum=a, centered=flag, weight_decay=weight_decay),
    }[name]
    assert lockstep(getattr(O, name)(**kwargs), lambda p: TORCH[name](p, **kwargs), steps=8) <= 1e-9


# Learning-rate schedules inside the optimizer, against torch's schedulers.


def test_schedule_matches_torch_scheduler():
    schedule = O.join_schedules(
        [O.linear_warmup(0.02, 0.1, total_iters=10), O.cosine_decay(0.02, T_max=50)], [10]
    )

    def torch_scheduler(opt):
        warmup = torch.optim.lr_scheduler.LinearLR(opt, 0.1, total_iters=10)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50)
        return torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[10])

    worst = lockstep(
        O.adam(lr=schedule), lambda p: torch.optim.Adam(p, lr=0.02), make_scheduler=torch_scheduler
    )
    assert worst <= 1e-9
    worst = lockstep(
        O.sgd(lr=O.step_decay(0.1, 7, gamma=0.5), momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        make_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.5),
    )
    assert worst <= 1e-9
    worst = lockstep(
        O.adamw(lr=O.exponential_decay(0.01, 0.97), weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
        make_scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.97),
    )
    assert worst <= 1e-9


def test_schedule_gets_the_step_count():
    seen = []
    opt = O.sgd(lr=lambda step: seen.append(step) or 0.1)
    params = {"w": torch.ones(2)}
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.update(params, {"w": torch.ones(2)}, state)
    assert seen == [0, 1, 2]
    torch.testing.assert_close(params["w"], torch.full((2,), 0.7))


# Weight-decay masks: the same as torch param groups with weight_decay=0 for the skipped leaves.


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_mask_matches_torch_param_groups(name):
    kwargs = dict(lr=0.01, weight_decay=0.2)
    params = make_params()
    decay = tree.leaves(O.decay_mask(params))
    assert decay == [
        True,
        False,
        True,
        False,
        False,
    ]  # weights only: biases and the scalar gain skip

    def groups(leaves):
        return [
            {"params": [p for p, d in zip(leaves, decay) if d]},
            {"params": [p for p, d in zip(leaves, decay) if not d], "weight_decay": 0.0},
        ]

    for mask in (O.decay_mask, O.decay_mask(params)):
        opt = getattr(O, name)(mask=mask, **kwargs)
        assert lockstep(opt, lambda g: TORCH[name](g, **kwargs), steps=30, groups=groups) <= 1e-9


def test_mask_skips_leaves():
    params = {"weight": torch.ones(2, 2), "bias": torch.ones(2)}
    grads = tree.map(torch.zeros_like, params)
    opt = O.sgd(lr=0.5, weight_decay=1.0, mask={"weight": True, "bias": False})
    new, _ = opt.update(params, grads, opt.init(params))
    assert torch.equal(new["weight"], torch.full((2, 2), 0.5))
    assert torch.equal(new["bias"], torch.ones(2))
    opt = O.adamw(lr=0.5, weight_decay=1.0, mask={"weight": False, "bias": False})
    new, _ = opt.update(params, grads, opt.init(params))
    assert torch.equal(new["weight"], params["weight"]) and torch.equal(new["bias"], params["bias"])


# The state: layout, purity, save and resume.


def test_state_layout():
    params = make_params()
    names = list(tree.to_state_dict(params))
    expected = {
        "sgd": {"step"},
        "adam": {"step", "exp_avg", "exp_avg_sq"},
        "adamw": {"step", "exp_avg", "exp_avg_sq"},
        "rmsprop": {"step", "square_avg"},
        "adagrad": {"step", "sum"},
    }
    for name, keys in expected.items():
        state = getattr(O, name)().init(params)
        assert set(state) == keys and state["step"] == 0, name
        for key in keys - {"step"}:
            assert list(state[key]) == names
            assert all(
                torch.equal(b, torch.zeros_like(p))
                for b, p in zip(state[key].values(), tree.leaves(params))
            )
    assert set(O.sgd(momentum=0.9).init(params)) == {"step", "momentum_buffer"}
    assert set(O.adam(amsgrad=True).init(params)) == {
        "step",
        "exp_avg",
        "exp_avg_sq",
        "max_exp_avg_sq",
    }
    assert set(O.rmsprop(momentum=0.9, centered=True).init(params)) == {
        "step",
        "square_avg",
        "momentum_buffer",
        "grad_avg",
    }
    state = O.adagrad(initial_accumulator_value=0.25).init(params)
    assert torch.equal(state["sum"]["0.weight"], torch.full((5, 3), 0.25, dtype=F64))


def test_state_matches_torch_optimizer_state():
    # Each buffer equals torch.optim's per-parameter state of the same name.
    params = make_params()
    x, y = make_data()
    torch_params = tree.map(lambda t: t.clone().requires_grad_(True), params)
    leaves = tree.leaves(torch_params)
    torch_opt = torch.optim.Adam(leaves, lr=0.01, amsgrad=True)
    opt = O.adam(lr=0.01, amsgrad=True)
    state = opt.init(params)
    for _ in range(5):
        torch_opt.zero_grad()
        with torch.enable_grad():
            loss_fn(torch_params, x, y).backward()
        grads = tree.map(lambda t: t.grad.clone(), torch_params)
        torch_opt.step()
        params, state = opt.update(params, grads, state)
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        for mine, p in zip(state[key].values(), leaves):
            assert torch.equal(mine, torch_opt.state[p][key]), key
    assert state["step"] == int(torch_opt.state[leaves[0]]["step"])


ALL = [
    O.sgd(lr=0.05),
    O.sgd(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    O.adam(lr=0.01, amsgrad=True),
    O.adamw(lr=O.cosine_decay(0.01, 20), weight_decay=0.1, mask=O.decay_mask),
    O.rmsprop(lr=0.01, momentum=0.5, centered=True),
    O.adagrad(lr=0.1, lr_decay=0.01),
    O.chain(O.clip_by_global_norm(0.5), O.add_decayed_weights(0.01, O.decay_mask), O.adam(lr=0.01)),
    O.nadam(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    O.radam(lr=0.01, weight_decay=0.1),
    O.adamax(lr=0.01, weight_decay=0.1),
    O.adadelta(lr=0.5, weight_decay=0.1),
]
IDS = ["sgd", "momentum", "amsgrad", "adamw", "rmsprop", "adagrad", "chain"]
IDS += ["nadam", "radam", "adamax", "adadelta"]


def grads_at(params):
    x, y = make_data()
    with torch.enable_grad():
        p = tree.map(lambda t: t.detach().requires_grad_(True), params)
        leaves = tree.leaves(p)
        grads = torch.autograd.grad(loss_fn(p, x, y), leaves)
    return tree.unflatten(tree.structure(params), list(grads))


def trees_equal(a, b) -> bool:
    la, da = tree.flatten(a)
    lb, db = tree.flatten(b)
    return da == db and all(
        torch.equal(u, v) and u.dtype == v.dtype if isinstance(u, torch.Tensor) else u == v
        for u, v in zip(la, lb)
    )


@pytest.mark.parametrize("opt", ALL, ids=IDS)
def test_save_load_then_bit_identical_continuation(opt, tmp_path):
    params = make_params()
    state = opt.init(params)
    for _ in range(5):
        params, state = opt.update(params, grads_at(params), state)
    torch.save({"params": params, "opt_state": state}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert trees_equal(loaded["opt_state"], state) and trees_equal(loaded["params"], params)
    params2, state2 = loaded["params"], loaded["opt_state"]
    for _ in range(5):
        params, state = opt.update(params, grads_at(params), state)
        params2, state2 = opt.update(params2, grads_at(params2), state2)
    assert trees_equal(params2, params)
    assert trees_equal(state2, state)


@pytest.mark.parametrize("opt", ALL, ids=IDS)
def test_update_is_pure(opt):
    params = make_params()
    grads = grads_at(params)
    state = opt.init(params)
    params, state = opt.update(params, grads, state)  # buffers now non-zero
    before = [
        tree.map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, x)
        for x in (params, grads, state)
    ]
    new_params, _new_state = opt.update(params, grads, state)
    for now, then in zip((params, grads, state), before):
        assert trees_equal(now, then)
    assert not trees_equal(new_params, params)
    # the old state still gives the same step again
    again, _ = opt.update(params, grads, state)
    assert trees_equal(again, new_params)


@pytest.mark.parametrize("opt", ALL, ids=IDS)
def test_works_without_autograd_and_builds_no_graph(opt):
    params = make_params()
    grads = grads_at(params)
    with torch.no_grad():
        state = opt.init(params)
        new, state = opt.update(params, grads, state)
    new, state = opt.update(new, grads, state)
    assert all(
        not t.requires_grad and t.grad_fn is None
        for t in tree.leaves((new, state))
        if isinstance(t, torch.Tensor)
    )


@pytest.mark.parametrize("opt", ALL, ids=IDS)
def test_empty_params(opt):
    state = opt.init({})
    params, state = opt.update({}, {}, state)
    assert params == {}


# Convergence: each optimizer drives a parabola and the Rosenbrock function to their
# minima (optax's test targets; hyperparameters chosen to get there in < 4000 steps).

PARABOLA_MIN = torch.tensor([1.0, -1.0, 1.0], dtype=F64)


def parabola_grad(x: torch.Tensor) -> torch.Tensor:
    return 2 * (x - PARABOLA_MIN)  # of ‖x − (1, −1, 1)‖²


def rosenbrock_grad(x: torch.Tensor) -> torch.Tensor:
    # of (1 − x₀)² + 100 (x₁ − x₀²)², computed in Python floats (fast)
    x0, x1 = x.tolist()
    return torch.tensor(
        [-2 * (1 - x0) - 400 * x0 * (x1 - x0 * x0), 200 * (x1 - x0 * x0)], dtype=F64
    )


CONVERGENCE = [
    ("sgd", "parabola", dict(lr=1e-2, momentum=0.9), 1e-3),
    ("sgd", "rosenbrock", dict(lr=1.5e-3, momentum=0.95), 1e-3),
    ("adam", "parabola", dict(lr=0.1), 1e-3),
    ("adam", "rosenbrock", dict(lr=0.05), 1e-3),
    ("adamw", "parabola", dict(lr=0.1, weight_decay=1e-4), 1e-3),
    ("adamw", "rosenbrock", dict(lr=0.05, weight_decay=1e-4), 1e-3),
    ("rmsprop", "parabola", dict(lr=3e-3, momentum=0.9), 1e-3),
    ("rmsprop", "rosenbrock", dict(lr=1e-3, momentum=0.9), 1e-3),
    ("adagrad", "parabola", dict(lr=1.0), 1e-3),
    ("adagrad", "rosenbrock", dict(lr=1.2), 1e-2),  # Adagrad crawls along the valley
]


@pytest.mark.parametrize(
    "name, problem, kwargs, tol", CONVERGENCE, ids=[f"{n}-{p}" for n, p, _, _ in CONVERGENCE]
)
def test_drives_to_the_minimum(name, problem, kwargs, tol):
    if problem == "parabola":
        x, target, grad = torch.tensor([-1.0, 10.0, 1.0], dtype=F64), PARABOLA_MIN, parabola_grad
    else:
        x, target, grad = (
            torch.tensor([0.0, 0.0], dtype=F64),
            torch.ones(2, dtype=F64),
            rosenbrock_grad,
        )
    opt = getattr(O, name)(**kwargs)
    params = {"x": x}
    state = opt.init(params)
    for _ in range(4000):
        params, state = opt.update(params, {"x": grad(params["x"])}, state)
        if (params["x"] - target).abs().max() < tol:
            break
    error = (params["x"] - target).abs().max().item()
    assert error < tol, f"{name} on {problem}: {params['x'].tolist()} after {state['step']} steps"


# Errors: ValueError subclasses whose messages say what is wrong.


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: O.sgd(lr=-0.1), FnnError, r"sgd: lr must be ≥ 0, got -0.1"),
        (lambda: O.adam(lr=-1), FnnError, r"adam: lr must be ≥ 0, got -1"),
        (lambda: O.adam(lr="0.1"), FnnTypeError, r"adam: lr must be a number or a schedule"),
        (
            lambda: O.adam(betas=(1.5, 0.9)),
            FnnError,
            r"adam: betas\[0\] must be in \[0, 1\), got 1.5",
        ),
        (
            lambda: O.adamw(betas=(0.9, 1.0)),
            FnnError,
            r"adamw: betas\[1\] must be in \[0, 1\), got 1.0",
        ),
        (lambda: O.adam(betas=(-0.1, 0.9)), FnnError, r"adam: betas\[0\] must be in \[0, 1\)"),
        (lambda: O.adam(betas=0.9), FnnTypeError, r"adam: betas must be a pair"),
        (lambda: O.adam(eps=-1e-8), FnnError, r"adam: eps must be ≥ 0"),
        (lambda: O.adamw(weight_decay=-0.01), FnnError, r"adamw: weight_decay must be ≥ 0"),
        (lambda: O.sgd(momentum=-0.9), FnnError, r"sgd: momentum must be ≥ 0"),
        (
            lambda: O.sgd(lr=0.1, nesterov=True),
            FnnError,
            r"sgd: nesterov momentum requires momentum > 0",
        ),
        (
            lambda: O.sgd(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            FnnError,
            r"dampening = 0",
        ),
        (lambda: O.rmsprop(alpha=-0.5), FnnError, r"rmsprop: alpha must be ≥ 0"),
        (
            lambda: O.rmsprop(momentum=float("nan")),
            FnnError,
            r"rmsprop: momentum must be ≥ 0, got nan",
        ),
        (lambda: O.adagrad(lr_decay=-1), FnnError, r"adagrad: lr_decay must be ≥ 0"),
        (
            lambda: O.adagrad(initial_accumulator_value=-1),
            FnnError,
            r"adagrad: initial_accumulator_value",
        ),
        (lambda: O.adagrad(eps=None), FnnTypeError, r"adagrad: eps must be a number, got None"),
    ],
)
def test_bad_hyperparameters(make, error, message):
    with pytest.raises(error, match=message) as info:
        make()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", list(TORCH))
def test_grads_tree_must_match_params(name):
    opt = getattr(O, name)()
    params = make_params()
    state = opt.init(params)
    grads = tree.map(torch.zeros_like, params)
    missing = {**grads, "2": {"weight": grads["2"]["weight"]}}
    with pytest.raises(TreeError, match=rf"{name}: grads tree .*'bias'"):
        opt.update(params, missing, state)
    wrong_shape = {**grads, "gain": torch.zeros(3, dtype=F64)}
    with pytest.raises(TreeError, match=rf"{name}: grads tree .*\['gain'\].*shape"):
        opt.update(params, wrong_shape, state)
    with pytest.raises(ValueError, match=name):
        opt.update(params, [grads], state)


def test_bad_state():
    params = make_params()
    grads = tree.map(torch.zeros_like, params)
    with pytest.raises(
        FnnError, match=r"adam: the state must be the dict made by adam's init.*'exp_avg'"
    ):
        O.adam().update(params, grads, {})
    with pytest.raises(
        FnnError, match=r"rmsprop: the state must be .*got a dict with keys \['step', 'exp_avg'"
    ):
        O.rmsprop().update(params, grads, O.adam().init(params))
    other = {"w": torch.zeros(2)}
    with pytest.raises(
        TreeError, match=r"adam: the state's 'exp_avg' has no entry for params leaf '0.weight'"
    ):
        O.adam().update(params, grads, O.adam().init(other))
    with pytest.raises(TreeError, match=r"adam: the state's 'exp_avg' has entries for \['w'\]"):
        O.adam().update(params, grads, O.adam().init({**params, "w": torch.zeros(2)}))
    transposed = {
        **params,
        "0": {"weight": torch.zeros(3, 5, dtype=F64), "bias": params["0"]["bias"]},
    }
    with pytest.raises(
        TreeError,
        match=r"adam: the state's 'exp_avg' holds shape \(3, 5\) for '0.weight' of shape \(5, 3\)",
    ):
        O.adam().update(params, grads, O.adam().init(transposed))
    with pytest.raises(FnnTypeError, match=r"sgd: the state's step must be an int"):
        O.sgd().update(params, grads, {"step": torch.tensor(1)})
    with pytest.raises(TreeError, match=r"adam: init: .*expected a dict of params, got Tensor"):
        O.adam().init(torch.zeros(3))


def test_bad_schedule_value():
    opt = O.sgd(lr=lambda step: 0.1 - 0.1 * step)
    params = {"w": torch.ones(2)}
    state = opt.init(params)
    params, state = opt.update(params, params, state)
    params, state = opt.update(params, params, state)
    with pytest.raises(
        FnnError, match=r"sgd: the schedule gave a negative or NaN learning rate -0.1.* at step 2"
    ):
        opt.update(params, params, state)


def test_bad_masks():
    params = {"weight": torch.ones(2, 2), "bias": torch.ones(2)}
    opt = O.adamw(mask={"weight": True})
    with pytest.raises(TreeError, match=r"adamw: mask does not match.*'bias'"):
        opt.update(params, params, opt.init(params))
    opt = O.sgd(weight_decay=0.1, mask={"weight": True, "bias": 0})
    with pytest.raises(
        FnnTypeError, match=r"sgd: mask leaves must be True or False, got 0 at \['bias'\]"
    ):
        opt.update(params, params, opt.init(params))


def test_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = O.chain(O.clip_by_global_norm(1.0), O.adam(lr=O.cosine_decay(0.1, 10)))
        params = make_params()
        state = opt.init(params)
        for _ in range(3):
            params, state = opt.update(params, grads_at(params), state)
