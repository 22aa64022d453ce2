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


# The state follows names (issue 15.5), clear errors (15.8, 15.9), one error family.

EVERY = {
    "sgd": lambda **kw: O.sgd(momentum=0.9, **kw),
    "adam": lambda **kw: O.adam(amsgrad=True, **kw),
    "adamw": O.adamw,
    "rmsprop": lambda **kw: O.rmsprop(momentum=0.5, centered=True, **kw),
    "adagrad": O.adagrad,
    "nadam": O.nadam,
    "radam": O.radam,
    "adamax": O.adamax,
    "adadelta": O.adadelta,
}


def grads_of(params):
    x, y = make_data()
    p = tree.map(lambda t: t.detach().requires_grad_(True), params)
    with torch.enable_grad():
        grads = torch.autograd.grad(loss_fn(p, x, y), tree.leaves(p))
    return tree.unflatten(tree.structure(params), list(grads))


def reordered(params):
    """The same keys and tensors, every dict in reverse order."""
    if isinstance(params, dict):
        return {k: reordered(params[k]) for k in reversed(list(params))}
    return params


@pytest.mark.parametrize("name", list(EVERY))
def test_state_follows_names_when_the_params_dict_is_reordered(name):
    opt = EVERY[name](lr=0.01, weight_decay=0.1, mask=O.decay_mask)
    params = make_params()
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.update(params, grads_of(params), state)
    ref_params, ref_state = params, state
    params = reordered(params)  # mid-training: each buffer must still go to its own leaf
    for _ in range(3):
        ref_params, ref_state = opt.update(ref_params, grads_of(ref_params), ref_state)
        params, state = opt.update(params, grads_of(params), state)
    assert list(params) == list(reordered(ref_params))  # the new order is kept
    mine, theirs = tree.to_state_dict(params), tree.to_state_dict(ref_params)
    assert set(mine) == set(theirs) and all(torch.equal(mine[n], theirs[n]) for n in mine)
    for key, table in state.items():
        if key != "step":
            assert list(table) == list(mine)  # the state lists the names in the new order
            assert all(torch.equal(table[n], ref_state[key][n]) for n in table), key


@pytest.mark.parametrize("name", list(EVERY))
@pytest.mark.parametrize(
    "value, error, message",
    [
        (None, FnnTypeError, r"the schedule must give a real number, got None at step 0"),
        ("0.1", FnnTypeError, r"the schedule must give a real number, got '0.1'"),
        (0.1 + 0.2j, FnnTypeError, r"the schedule must give a real number, got \(0.1\+0.2j\)"),
        (torch.tensor(0.1 + 0j), FnnTypeError, r"the schedule must give a real number"),
        (True, FnnTypeError, r"the schedule must give a real number, got True"),
        (-0.1, FnnError, r"the schedule gave a negative or NaN learning rate -0.1 at step 0"),
        (float("nan"), FnnError, r"the schedule gave a negative or NaN learning rate nan"),
    ],
    ids=["None", "str", "complex", "complex-tensor", "bool", "negative", "nan"],
)
def test_bad_schedule_values(name, value, error, message):
    opt = EVERY[name](lr=lambda step: value)
    params = {"w": torch.ones(2)}
    with pytest.raises(error, match=rf"^{name}: {message}"):
        opt.update(params, params, opt.init(params))


def test_schedule_giving_a_tensor_or_numpy_number_is_read():
    np = pytest.importorskip("numpy")
    params = {"w": torch.ones(2)}
    for value in (torch.tensor(0.5), np.float32(0.5), 1):
        opt = O.sgd(lr=lambda step, value=value: value)
        new, _ = opt.update(params, params, opt.init(params))
        assert torch.equal(new["w"], torch.full((2,), 0.5 if value != 1 else 0.0))


@pytest.mark.parametrize("name", list(EVERY))
def test_negative_or_bad_step_count_is_a_clear_error(name):
    opt = EVERY[name]()
    params = {"w": torch.ones(2)}
    state = {**opt.init(params), "step": -1}
    with pytest.raises(FnnError, match=rf"^{name}: the state's step must be ≥ 0, got -1"):
        opt.update(params, params, state)
    for bad in (1.0, True, torch.tensor(1)):
        with pytest.raises(FnnTypeError, match=rf"^{name}: the state's step must be an int"):
            opt.update(params, params, {**opt.init(params), "step": bad})


def test_a_string_lr_is_the_same_error_everywhere():
    """One error family: `FnnTypeError` (an `FnnError` and a `TypeError`) in `update` and in
    every optimizer; a negative lr is an `FnnError` (not a TypeError) in all of them."""
    params = {"w": torch.ones(2)}
    with pytest.raises(FnnTypeError, match=r"^update: lr must be a number"):
        fnn.update(params, params, lr="0.1")
    with pytest.raises(FnnError, match=r"^update: lr must be ≥ 0") as info:
        fnn.update(params, params, lr=-0.1)
    assert not isinstance(info.value, TypeError)
    with pytest.raises(FnnTypeError, match=r"^update: lr must be a number"):
        fnn.update(params, params, lr=O.constant(0.1))
    for name, make in EVERY.items():
        with pytest.raises(FnnTypeError, match=rf"^{name}: lr must be a number or a schedule"):
            make(lr="0.1")
        with pytest.raises(FnnError, match=rf"^{name}: lr must be ≥ 0") as info:
            make(lr=-0.1)
        assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize("name", list(EVERY))
def test_lr_that_overflows_float32_is_named(name):
    """Issue 15.9: not "grads tree does not match" but the real cause."""
    params = {"w": torch.ones(2)}
    opt = EVERY[name](lr=1e39)
    state = opt.init(params)
    try:
        new, _ = opt.update(params, params, state)
    except FnnError as error:
        assert str(error).startswith(f"{name}: lr=1e+39 does not fit the params' dtype"), error
    else:  # an optimizer whose kernels take the huge lr without converting it to float32
        assert new["w"].dtype == torch.float32


# The flat form (for fnn.train_step): opt.update is pairing + exactly this.


@pytest.mark.parametrize("name", list(EVERY))
def test_flat_step_equals_update_bit_for_bit(name):
    opt = EVERY[name](lr=O.cosine_decay(0.01, 10), weight_decay=0.1, mask=O.decay_mask)
    form = O.flat_form(opt)
    assert isinstance(form, O.base.FlatForm) and form.name == name
    params = make_params()
    state = opt.init(params)
    names = list(tree.to_state_dict(params))
    leaves = tree.leaves(params)
    buffers, count = form.flat_state(state, names)
    decayed = form.decayed(params, names)
    assert decayed == (0, 2)  # the two weights
    for _ in range(4):
        grads = grads_of(params)
        params, state = opt.update(params, grads, state)
        g = tree.leaves(grads)
        before = [t.clone() for t in (*leaves, *g, *(b for bs in buffers for b in bs))]
        inputs = [*leaves, *g, *(b for bs in buffers for b in bs)]
        new_leaves, new_buffers = form.step(leaves, g, buffers, count, decayed)
        assert all(torch.equal(a, b) for a, b in zip(inputs, before))  # pure: inputs unchanged
        assert not any(n is p for n in new_leaves for p in inputs)
        leaves, buffers, count = list(new_leaves), new_buffers, count + 1
        assert all(torch.equal(a, b) for a, b in zip(leaves, tree.leaves(params)))
        rebuilt = form.tree_state(buffers, count, names)
        assert rebuilt["step"] == state["step"] == count
        for key in form.buffers:
            assert all(torch.equal(rebuilt[key][n], state[key][n]) for n in names)


def test_flat_form_is_declared_data():
    opt = O.adam(lr=0.1)
    form = O.flat_form(opt)
    assert opt.update.__self__ is form and opt.init.__self__ is form
    assert isinstance(opt, O.Optimizer) and len(opt) == 2
    with pytest.raises(AttributeError):
        form.lr = 1.0  # frozen
    assert O.flat_form(O.Optimizer(opt.init, lambda p, g, s: (p, s))) is None  # hand-made
    assert O.flat_form(O.Optimizer(O.sgd().init, opt.update)) is None  # a mixed pair
    assert O.flat_form(O.chain(O.clip_by_global_norm(1.0), opt)) is None
    assert O.flat_form(opt.update) is None
    requiring = [torch.ones(2, requires_grad=True)]
    new, buffers = form.step(
        requiring, [torch.ones(2)], [[torch.zeros(2)], [torch.zeros(2)]], 0, None
    )
    assert new[0].grad_fn is None and not new[0].requires_grad  # no autograd graph
    empty, buffers = form.step([], [], [[], []], 0, None)
    assert empty == [] and buffers == [[], []]


def test_momentum_constant_cache_cannot_change_a_result():
    """sgd's 0-d momentum constant (fnn.optim.base.scalar_for) gives torch.optim's (foreach)
    bits for float32, float64, mixed, float16 and bfloat16 leaves alike."""
    cases = [(torch.float32,) * 2, (F64,) * 2, (torch.float32, F64), (torch.bfloat16,) * 2]
    for dtypes in [*cases, (torch.float16,) * 2, (torch.float16, torch.bfloat16)]:
        g = torch.Generator().manual_seed(0)
        params = {f"p{i}": torch.randn(5, 3, generator=g).to(d) for i, d in enumerate(dtypes)}
        grads = [
            {k: torch.randn(5, 3, generator=g).to(v.dtype) for k, v in params.items()}
            for _ in range(4)
        ]
        torch_params = [p.clone() for p in params.values()]
        torch_opt = torch.optim.SGD(torch_params, lr=0.1, momentum=0.9, foreach=True)
        opt = O.sgd(lr=0.1, momentum=0.9)
        state = opt.init(params)
        for gr in grads:
            for p, v in zip(torch_params, gr.values()):
                p.grad = v.clone()
            torch_opt.step()
            params, state = opt.update(params, gr, state)
        assert all(torch.equal(a, b) for a, b in zip(params.values(), torch_params)), dtypes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "name", ["adam", "adamw", "rmsprop", "nadam", "radam", "adamax", "adadelta"]
)
def test_hyperparameter_constants_keep_torchs_foreach_bits(name, dtype):
    """Their foreach multiplies and divides take a cached 0-d tensor on float32/float64 CPU
    leaves (`exact_scalar`, twice as fast as a number) and the number itself otherwise;
    rmsprop's, which torch multiplies in place, a 0-d tensor of the leaves' dtype
    (`scalar_for`, as sgd): either way the bits of torch.optim's foreach update."""
    torch_class = {**TORCH, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(name)
    if torch_class is None:
        torch_class = getattr(torch.optim, {"rmsprop": "RMSprop"}[name])
    kwargs = {"rmsprop": dict(lr=0.01, momentum=0.5, centered=True)}.get(name, dict(lr=0.01))
    g = torch.Generator().manual_seed(1)
    params = {f"p{i}": torch.randn(4, 3, generator=g).to(dtype) for i in range(3)}
    torch_params = [p.clone() for p in params.values()]
    torch_opt = torch_class(torch_params, foreach=True, **kwargs)
    opt = getattr(O, name)(**kwargs)
    state = opt.init(params)
    for _ in range(5):
        grads = {k: torch.randn(4, 3, generator=g).to(dtype) for k in params}
        for p, v in zip(torch_params, grads.values()):
            p.grad = v.clone()
        torch_opt.step()
        params, state = opt.update(params, grads, state)
        assert all(torch.equal(a, b) for a, b in zip(params.values(), torch_params)), name
    assert O.base.exact_scalar(0.9, [torch.ones(1)]).dim() == 0  # the fast form did run
    assert O.base.exact_scalar(0.9, [torch.ones(1, dtype=dtype)]) == (
        0.9 if dtype is torch.bfloat16 else torch.tensor(0.9)
    )
