"""The flat fast path of value_and_grad (fnn/fastpath.py) is taken where it should be,
gives bit-identical results to the general path, and steps aside on anything unusual."""

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import fastpath
from fnn import layers as L
from fnn.errors import FnnError

from .helpers import autograd_loss_and_grads, torch_disk_mlp

ACTIVATIONS = [L.Relu, L.Tanh, L.Sigmoid, L.LeakyRelu, L.Gelu, L.Elu, L.Softplus, L.Identity]


def _general(apply):
    """The same model without its fast plan: value_and_grad takes the general path."""

    def plain_apply(params, x, **kwargs):
        return apply(params, x, **kwargs)

    return plain_apply


@pytest.fixture
def fast_calls(monkeypatch):
    """Counts the fast path's successful runs."""
    calls = []
    compile_plan = fastpath.compile_plan

    def counting_compile_plan(plan, eager=True):
        run = compile_plan(plan, eager)

        def counting_run(*args):
            found = run(*args)
            calls.append(found is not None)
            return found

        counting_run.__wrapped__ = run
        return counting_run

    monkeypatch.setattr(fastpath, "compile_plan", counting_compile_plan)
    return calls


def _model(activation, bias=True):
    return fnn.serial(
        L.Dense(7, bias=bias), activation(), L.Dense(5), activation(), L.Dense(3, bias=bias)
    )


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(fnn.tree.leaves(a), fnn.tree.leaves(b))) and (
        fnn.tree.structure(a) == fnn.tree.structure(b)
    )


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_equals_general_path_bit_for_bit(activation, loss, batch, dtype, fast_calls):
    init, apply = _model(activation)
    _, params = init(fnn.random.key(0), (-1, 4), dtype=dtype)
    x = fnn.random.normal(fnn.random.key(1), (batch, 4), dtype=dtype)
    if loss == "mse":
        target = fnn.random.normal(fnn.random.key(2), (batch, 3), dtype=dtype)
        loss_fn = fnn.losses.mse
    else:
        target = torch.arange(batch) % 3
        loss_fn = fnn.losses.cross_entropy
    x_before, params_before = x.clone(), fnn.tree.map(torch.clone, params)
    (value, y), grads = fnn.value_and_grad(apply, loss_fn, has_aux=True)(params, x, target)
    assert fast_calls == [True]
    (value0, y0), grads0 = fnn.value_and_grad(_general(apply), loss_fn, has_aux=True)(
        params, x, target
    )
    assert torch.equal(value, value0) and torch.equal(y, y0) and _same(grads, grads0)
    assert torch.equal(x, x_before) and _same(params, params_before)  # nothing overwritten


def test_first_layer_activation_does_not_overwrite_the_input(fast_calls):
    init, apply = fnn.serial(L.Relu(), L.Dense(2), L.Tanh())
    _, params = init(fnn.random.key(0), (-1, 3))
    x = torch.tensor([[-1.0, 2.0, -3.0]])
    _, grads = fnn.value_and_grad(apply, fnn.losses.mse)(params, x, torch.zeros(1, 2))
    assert fast_calls == [True]
    assert x.tolist() == [[-1.0, 2.0, -3.0]]
    _, grads0 = fnn.value_and_grad(_general(apply), fnn.losses.mse)(params, x, torch.zeros(1, 2))
    assert _same(grads, grads0)


def test_params_without_entries_for_activations_and_no_bias(fast_calls):
    init, apply = _model(L.Relu, bias=False)
    _, params = init(fnn.random.key(0), (-1, 4))
    params = {k: v for k, v in params.items() if v}  # as in a state_dict: no "1", "3"
    x, target = torch.randn(5, 4), torch.randn(5, 3)
    value, grads = fnn.value_and_grad(apply, fnn.losses.mse)(params, x, target)
    assert fast_calls == [True]
    assert list(grads) == ["0", "2", "4"] and list(grads["0"]) == ["weight"]
    value0, grads0 = fnn.value_and_grad(_general(apply), fnn.losses.mse)(params, x, target)
    assert torch.equal(value, value0) and _same(grads, grads0)


def test_a_key_is_accepted_and_ignored_like_the_layers_do(fast_calls):
    init, apply = _model(L.Relu)
    _, params = init(fnn.random.key(0), (-1, 4))
    x, target = torch.randn(5, 4), torch.randn(5, 3)
    f = fnn.value_and_grad(apply, fnn.losses.mse)
    value, _ = f(params, x, target, key=fnn.random.key(3))
    assert fast_calls == [True]
    assert torch.equal(value, f(params, x, target)[0])


@pytest.mark.parametrize(
    "model",
    [
        lambda: fnn.serial(L.Dense(3), L.Dropout(0.5)),  # not a fast layer
        lambda: fnn.serial(fnn.serial(L.Dense(3)), L.Relu()),  # nested serial
        lambda: fnn.serial(fnn.remat(L.Dense(3)), L.Relu()),
        lambda: fnn.serial(fnn.with_vjp(L.Dense(3), fnn.layers.dense.dense_backward)),
    ],
)
def test_models_with_other_layers_take_the_general_path(model, fast_calls):
    init, apply = model()
    _, params = init(fnn.random.key(0), (-1, 4))
    fnn.value_and_grad(apply, fnn.losses.mse)(params, torch.randn(2, 4), torch.randn(2, 3))
    assert fast_calls == []


def test_other_inputs_and_losses_take_the_general_path(fast_calls):
    init, apply = _model(L.Relu)
    _, params = init(fnn.random.key(0), (-1, 4))
    f = fnn.value_and_grad(apply, fnn.losses.mse)
    f(params, torch.randn(2, 6, 4), torch.randn(2, 6, 3))  # 3-D input
    assert fast_calls == [False]
    fnn.value_and_grad(apply, fnn.losses.bce_with_logits)(
        params, torch.randn(2, 4), torch.rand(2, 3)
    )
    with fnn.debug.check_finite():
        f(params, torch.randn(2, 4), torch.randn(2, 3))
    assert fast_calls == [False]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda p: p["2"].update(weight=torch.ones(4, 7)),
            r"serial\[2\] Dense: params\['weight'\]",
        ),
        (lambda p: p["2"].update(bias=torch.ones(1)), r"serial\[2\] Dense: params\['bias'\]"),
        (lambda p: p["2"].update(extra=torch.ones(1)), r"serial\[2\] Dense: params unexpected"),
        (lambda p: p["2"].pop("bias"), r"serial\[2\] Dense: params missing \['bias'\]"),
        (lambda p: p["1"].update(w=torch.ones(1)), r"serial\[1\] Relu: takes no parameters"),
        (lambda p: p.update({"9": {}}), r"serial: unexpected params keys \['9'\]"),
        (lambda p: p["4"].update(bias=p["4"]["bias"].double()), r"serial\[4\] Dense"),
    ],
)
def test_bad_params_get_the_general_paths_clear_error(corrupt, message, fast_calls):
    init, apply = _model(L.Relu)
    _, params = init(fnn.random.key(0), (-1, 4))
    corrupt(params)
    with pytest.raises(FnnError, match=message):
        fnn.value_and_grad(apply, fnn.losses.mse)(params, torch.randn(2, 4), torch.randn(2, 3))
    assert True not in fast_calls


@pytest.mark.parametrize(
    ("x", "target", "message"),
    [
        (torch.randn(2, 4), torch.randn(1, 3), r"mse: target shape \(1, 3\)"),
        (torch.randn(2, 4), torch.randn(2, 3).double(), r"mse: target dtype torch.float64"),
        (torch.randn(2, 4).double(), torch.randn(2, 3), r"serial\[0\] Dense: input dtype"),
        (torch.ones(2, 4, dtype=torch.int64), torch.randn(2, 3), r"serial\[0\] Dense"),
        (torch.randn(2, 5), torch.randn(2, 3), r"serial\[0\] Dense: expected input of shape"),
    ],
)
def test_bad_inputs_get_the_general_paths_clear_error(x, target, message, fast_calls):
    init, apply = _model(L.Relu)
    _, params = init(fnn.random.key(0), (-1, 4))
    with pytest.raises(FnnError, match=message):
        fnn.value_and_grad(apply, fnn.losses.mse)(params, x, target)
    assert True not in fast_calls


def test_empty_batch_takes_the_general_path(fast_calls):
    init, apply = _model(L.Relu)
    _, params = init(fnn.random.key(0), (-1, 4))
    value, grads = fnn.value_and_grad(apply, fnn.losses.mse)(
        params, torch.randn(0, 4), torch.randn(0, 3)
    )
    assert fast_calls == [False]
    assert torch.isnan(value) and grads["0"]["weight"].shape == (7, 4)


def test_the_generated_code_reads_as_hand_written_backprop():
    text = fastpath.source(_model(L.Relu).apply)
    assert "h0 = linear(x, w0, b0)" in text and "h1 = forward1(h0)  # in place" in text
    assert "gw4 = dyt.mm(h3)" in text and "gb4 = dy.sum(0)" in text
    assert "dy = dx1(dy, h1, 0, grad_input=dy)" in text  # in place: the cotangent is the step's
    # the workspace body: the same, into buffers reused from step to step
    assert "h0 = linear(x, w0, b0, out=H0)" in text and "dy = mm(dy, w4, out=D5a)" in text
    assert "h4 = linear(h3, w4, b4, out=None if keep_y else H4)" in text
    with pytest.raises(ValueError, match="no fast plan"):
        fastpath.source(fnn.serial(L.Dropout(0.5)).apply)


def _data(batch, seed, dtype=torch.float32):
    x = fnn.random.normal(fnn.random.key(seed), (batch, 4), dtype=dtype)
    target = fnn.random.normal(fnn.random.key(seed + 1), (batch, 3), dtype=dtype)
    return x, target


def _results(fn, params, x, target):
    (value, y), grads = fn(params, x, target)
    return [value, y, *fnn.tree.leaves(grads)]


@pytest.mark.parametrize("loss", [fnn.losses.mse, fnn.losses.cross_entropy])
def test_the_workspace_never_leaks_into_what_a_step_returns(loss, fast_calls):
    """Small CPU batches run in buffers reused from step to step (fnn/fastpath.py): what a step
    returns (value, y, grads) must survive the next step untouched."""
    init, apply = _model(L.Relu)
    _, params = init(fnn.random.key(0), (-1, 4))
    fast = fnn.value_and_grad(apply, loss, has_aux=True)
    general = fnn.value_and_grad(_general(apply), loss, has_aux=True)
    first, second = _data(6, 1), _data(6, 3)
    if loss is fnn.losses.cross_entropy:
        first, second = (
            (first[0], torch.tensor([0, 1, 2, 0, 1, 2])),
            (second[0], torch.arange(6) % 2),
        )
    a = _results(fast, params, *first)
    kept = [t.clone() for t in a]
    b = _results(fast, params, *second)
    assert fast_calls == [True, True]
    for got, want in zip(a, kept):  # the first step's results, after the second step
        assert torch.equal(got, want)
    for got, want in zip(
        a + b, _results(general, params, *first) + _results(general, params, *second)
    ):
        assert torch.equal(got, want)


def _workspace_of(loss_and_grads_fn, batch):
    """The workspace the eager fast path made for `batch` rows (a test hook into its closure)."""
    runs = dict(zip(loss_and_grads_fn.__code__.co_freevars, loss_and_grads_fn.__closure__))
    eager_run = runs["fast_runs"].cell_contents[0]
    constants = getattr(eager_run, "__wrapped__", eager_run).__globals__["CONSTANTS"]
    return next(c[3] for key, c in constants.items() if key[0] == batch)


def test_a_busy_workspace_and_a_large_batch_take_the_allocating_body(fast_calls):
    init, apply = _model(L.Tanh)
    _, params = init(fnn.random.key(0), (-1, 4))
    fast = fnn.value_and_grad(apply, fnn.losses.mse, has_aux=True)
    general = fnn.value_and_grad(_general(apply), fnn.losses.mse, has_aux=True)
    small = _data(5, 7)
    _results(fast, params, *small)
    workspace = _workspace_of(fast, 5)
    assert workspace is not None
    with workspace[0]:  # as if another thread were in the middle of a step
        busy = _results(fast, params, *small)
    large = _data(8192, 9)  # beyond fastpath.WORKSPACE_BYTES: no workspace
    big = _results(fast, params, *large)
    assert _workspace_of(fast, 8192) is None
    assert fast_calls == [True, True, True]
    for got, want in zip(
        busy + big, _results(general, params, *small) + _results(general, params, *large)
    ):
        assert torch.equal(got, want)


def test_threads_sharing_a_model_get_their_own_results():
    import threading

    init, apply = _model(L.Relu)
    _, params = init(fnn.random.key(0), (-1, 4))
    fast = fnn.value_and_grad(apply, fnn.losses.mse, has_aux=True)
    general = fnn.value_and_grad(_general(apply), fnn.losses.mse, has_aux=True)
    batches = [_data(6, seed) for seed in range(0, 80, 2)]
    expected = [_results(general, params, *batch) for batch in batches]
    got: dict[int, list] = {}

    def work(indices):
        for i in indices:
            got[i] = _results(fast, params, *batches[i])

    threads = [threading.Thread(target=work, args=(range(k, len(batches), 4),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        assert all(torch.equal(a, b) for a, b in zip(got[i], want)), i


def test_a_workspace_made_under_inference_mode_serves_later_steps(fast_calls):
    init, apply = _model(L.Relu)
    _, params = init(fnn.random.key(0), (-1, 4))
    fast = fnn.value_and_grad(apply, fnn.losses.mse, has_aux=True)
    x, target = _data(3, 11)
    with torch.inference_mode():
        inside = _results(fast, params, x, target)
    outside = _results(fast, params, x, target)
    assert fast_calls == [True, True]
    assert all(torch.equal(a, b) for a, b in zip(inside, outside))


@pytest.mark.parametrize(
    "activation", [L.Relu, L.Tanh, L.Sigmoid, L.Gelu], ids=lambda a: a.__name__
)
@pytest.mark.parametrize("loss", [fnn.losses.mse, fnn.losses.cross_entropy])
@pytest.mark.parametrize("has_aux", [False, True])
def test_activations_first_and_last_match_the_general_path(activation, loss, has_aux, fast_calls):
    init, apply = fnn.serial(activation(), L.Dense(3), activation())
    _, params = init(fnn.random.key(0), (-1, 5))
    x = fnn.random.normal(fnn.random.key(1), (4, 5))
    target = torch.tensor([0, 2, 1, 2]) if loss is fnn.losses.cross_entropy else torch.randn(4, 3)
    fast = fnn.value_and_grad(apply, loss, has_aux=has_aux)
    general = fnn.value_and_grad(_general(apply), loss, has_aux=has_aux)
    for _ in range(2):  # the second step runs in the workspace made by the first
        a, b = fast(params, x, target), general(params, x, target)
        assert all(torch.equal(u, v) for u, v in zip(fnn.tree.leaves(a), fnn.tree.leaves(b)))
    assert fast_calls == [True, True]


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("batch", [1, 10, 100])
def test_disk_gradients_are_torch_autograds_bit_for_bit(loss, batch, fast_calls):
    """The same kernels in the same order as torch.nn + autograd: a training run then follows
    torch's step for step (examples/disk.py --compare-torch). A cheaper bias sum (dyᵀ·1 as a
    BLAS mv) rounds differently, and over 5000 steps the runs drift apart by 0.08 in loss."""
    init, apply = fnn.serial(
        L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
    )
    _, params = init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    target = fnn.data.one_hot(labels, 2) if loss == "mse" else labels
    for _ in range(2):  # the second step runs in the workspace the first one made
        value, grads = fnn.value_and_grad(apply, getattr(fnn.losses, loss))(params, x, target)
    torch_loss_fn = F.mse_loss if loss == "mse" else F.cross_entropy
    torch_loss, torch_grads = autograd_loss_and_grads(
        torch_disk_mlp(params), torch_loss_fn, x, target
    )
    assert fast_calls[-1] is True
    for path, mine, theirs in zip(
        fnn.tree.paths(grads), fnn.tree.leaves(grads), fnn.tree.leaves(torch_grads)
    ):
        assert torch.equal(mine, theirs), path
    torch.testing.assert_close(value, torch_loss, rtol=1e-6, atol=0)
