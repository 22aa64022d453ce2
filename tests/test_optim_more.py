"""nadam, radam, adamax and adadelta against torch.optim, step for step (issue 16): bit for
bit against torch's foreach implementation (the same kernels in the same order), to 1e-9
against its single-tensor one."""

from __future__ import annotations

import pytest
import torch

import fnn
from fnn import tree
from fnn.errors import FnnError, FnnTypeError

from .test_optim import loss_fn, make_data, make_params

O = fnn.optim
F64 = torch.float64

TORCH = {
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
    "adadelta": torch.optim.Adadelta,
}

CASES = [
    ("nadam", dict()),
    ("nadam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("nadam", dict(lr=0.01, momentum_decay=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("nadam", dict(lr=0.01, maximize=True, weight_decay=0.05)),
    ("radam", dict()),
    ("radam", dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)),  # both branches
    ("radam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("radam", dict(lr=0.01, maximize=True, weight_decay=0.05)),
    ("adamax", dict()),
    ("adamax", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adamax", dict(lr=0.01, maximize=True)),
    ("adamax", dict(lr=0.01, maximize=True, weight_decay=0.05)),
    ("adadelta", dict()),
    ("adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1)),
    ("adadelta", dict(lr=0.5, maximize=True)),
    ("adadelta", dict(lr=0.5, maximize=True, weight_decay=0.05, rho=1.0)),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CASES)]


def run_both(opt, torch_opt_of, steps, dtype=F64, groups=None):
    """Train fnn's `opt` and a torch optimizer side by side on torch's gradients; return
    the largest relative deviation of the params, and both final states."""
    params = make_params(dtype=dtype)
    x, y = make_data(dtype=dtype)
    torch_params = tree.map(lambda t: t.clone().requires_grad_(True), params)
    leaves = tree.leaves(torch_params)
    torch_opt = torch_opt_of(leaves if groups is None else groups(leaves))
    state = opt.init(params)
    worst = 0.0
    for _ in range(steps):
        torch_opt.zero_grad()
        with torch.enable_grad():
            loss_fn(torch_params, x, y).backward()
        grads = tree.map(lambda t: t.grad.clone(), torch_params)
        torch_opt.step()
        params, state = opt.update(params, grads, state)
        for mine, theirs in zip(tree.leaves(params), leaves):
            scale = max(1.0, theirs.detach().abs().max().item())
            worst = max(worst, (mine - theirs.detach()).abs().max().item() / scale)
    return worst, state, torch_opt, leaves


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_bit_for_bit_with_torch_foreach(name, kwargs, dtype):
    opt = getattr(O, name)(**kwargs)
    worst, *_ = run_both(opt, lambda p: TORCH[name](p, foreach=True, **kwargs), 25, dtype)
    assert worst == 0.0, f"{name}{kwargs}: deviates from torch.optim by {worst:.3g}"


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_close_to_torch_single_tensor(name, kwargs):
    opt = getattr(O, name)(**kwargs)
    worst, *_ = run_both(opt, lambda p: TORCH[name](p, foreach=False, **kwargs), 25)
    assert worst <= 1e-9, f"{name}{kwargs}: deviates from torch.optim by {worst:.3g}"


def test_defaults_and_state_are_torchs():
    """No arguments but the params: the same trajectory; each buffer equals torch's
    per-parameter state of the same name (NAdam's mu_product included)."""
    keys = {
        "nadam": ["mu_product", "exp_avg", "exp_avg_sq"],
        "radam": ["exp_avg", "exp_avg_sq"],
        "adamax": ["exp_avg", "exp_inf"],
        "adadelta": ["square_avg", "acc_delta"],
    }
    for name, cls in TORCH.items():
        worst, state, torch_opt, leaves = run_both(
            getattr(O, name)(), lambda p: cls(p, foreach=True), 20
        )
        assert worst == 0.0, name
        assert list(state) == ["step", *keys[name]]
        assert state["step"] == 20 == int(torch_opt.state[leaves[0]]["step"])
        for key in keys[name]:
            for mine, p in zip(state[key].values(), leaves):
                theirs = torch_opt.state[p][key]
                assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), (name, key)


@pytest.mark.parametrize("name", list(TORCH))
def test_mask_matches_torch_param_groups(name):
    kwargs = dict(lr=0.01, weight_decay=0.2)
    decay = tree.leaves(O.decay_mask(make_params()))

    def groups(leaves):
        return [
            {"params": [p for p, d in zip(leaves, decay) if d]},
            {"params": [p for p, d in zip(leaves, decay) if not d], "weight_decay": 0.0},
        ]

    opt = getattr(O, name)(mask=O.decay_mask, **kwargs)
    worst, *_ = run_both(opt, lambda g: TORCH[name](g, foreach=True, **kwargs), 20, groups=groups)
    assert worst == 0.0


@pytest.mark.parametrize("name", list(TORCH))
def test_schedule_matches_torch_scheduler(name):
    """`lr=schedule` equals torch's optimizer driven by the matching lr_scheduler."""
    params = make_params()
    x, y = make_data()
    torch_params = tree.map(lambda t: t.clone().requires_grad_(True), params)
    leaves = tree.leaves(torch_params)
    torch_opt = TORCH[name](leaves, lr=0.05, foreach=True)
    scheduler = torch.optim.lr_scheduler.StepLR(torch_opt, step_size=3, gamma=0.5)
    opt = getattr(O, name)(lr=O.step_decay(0.05, step_size=3, gamma=0.5))
    state = opt.init(params)
    for _ in range(10):
        torch_opt.zero_grad()
        with torch.enable_grad():
            loss_fn(torch_params, x, y).backward()
        params, state = opt.update(params, tree.map(lambda t: t.grad.clone(), torch_params), state)
        torch_opt.step()
        scheduler.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(tree.leaves(params), leaves))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: O.nadam(lr=-1.0), FnnError, r"nadam: lr must be ≥ 0, got -1.0"),
        (lambda: O.nadam(lr="0.1"), FnnTypeError, r"nadam: lr must be a number or a schedule"),
        (lambda: O.nadam(betas=(1.0, 0.9)), FnnError, r"nadam: betas\[0\] must be in \[0, 1\)"),
        (lambda: O.nadam(momentum_decay=-1), FnnError, r"nadam: momentum_decay must be ≥ 0"),
        (lambda: O.radam(eps=None), FnnTypeError, r"radam: eps must be a number, got None"),
        (lambda: O.radam(betas=0.9), FnnTypeError, r"radam: betas must be a pair"),
        (lambda: O.radam(weight_decay=-1), FnnError, r"radam: weight_decay must be ≥ 0"),
        (lambda: O.adamax(betas=(0.9, 1.5)), FnnError, r"adamax: betas\[1\] must be in"),
        (lambda: O.adamax(eps=-1.0), FnnError, r"adamax: eps must be ≥ 0"),
        (lambda: O.adadelta(rho=1.5), FnnError, r"adadelta: rho must be in \[0, 1\], got 1.5"),
        (lambda: O.adadelta(rho=-0.1), FnnError, r"adadelta: rho must be ≥ 0"),
        (lambda: O.adadelta(lr=[0.1]), FnnTypeError, r"adadelta: lr must be a number"),
    ],
)
def test_bad_hyperparameters(make, error, message):
    with pytest.raises(error, match=message):
        make()
