"""fnn.train_step: the same numbers as value_and_grad + optimizer.update, bit for bit; the
layers' own (possibly patched) backward always honoured; clear errors; compiles."""

import pickle
import sys

import pytest
import torch

import fnn
from fnn import layers as L

from .helpers import randn, requires_compile


def mlp(activation=L.Relu):
    return fnn.serial(
        L.Dense(6), activation(), L.Dense(5), activation(), L.Dense(3, bias=False), L.Dense(2)
    )


def cnn():
    return fnn.serial(
        L.Conv(3, 3, padding=1),
        L.BatchNorm(),
        L.Relu(),
        L.MaxPool(2),
        L.Flatten(),
        L.Dropout(0.2),
        L.Dense(4),
        L.Tanh(),
        L.Dense(2),
    )


def leaves_equal(a, b):
    fnn.tree.assert_same_structure(a, b)
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(fnn.tree.leaves(a), fnn.tree.leaves(b))
    )


def run_both(model, loss, opt, params, x, target, steps=3, has_aux=False, **kwargs):
    """`steps` steps of train_step and of value_and_grad + update, each from its own params."""
    step = fnn.train_step(model.apply, loss, opt, has_aux=has_aux)
    f = fnn.value_and_grad(model.apply, loss, has_aux=has_aux)
    fast = [params, opt.init(params), kwargs.get("state")]
    plain = [params, opt.init(params), kwargs.get("state")]
    for i in range(steps):
        kw = dict(kwargs)
        if "key" in kw:
            kw["key"] = fnn.random.split(kwargs["key"], steps)[i]
        if "state" in kw:
            out = step(fast[0], fast[1], x, target, **dict(kw, state=fast[2]))
            value, fast[0], fast[1], fast[2] = out
            v2, grads, plain[2] = f(plain[0], x, target, **dict(kw, state=plain[2]))
        else:
            value, fast[0], fast[1] = step(fast[0], fast[1], x, target, **kw)
            v2, grads = f(plain[0], x, target, **kw)
        plain[0], plain[1] = opt.update(plain[0], grads, plain[1])
        if has_aux:
            assert torch.equal(value[0], v2[0]) and torch.equal(value[1], v2[1])
        else:
            assert torch.equal(value, v2)
    assert leaves_equal(fast[0], plain[0])
    assert leaves_equal(fast[1], plain[1])
    if "state" in kwargs:
        assert leaves_equal(fast[2], plain[2])
    return step


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "activation", [L.Relu, L.Tanh, L.Sigmoid, L.Gelu, L.Elu, L.Softplus, L.LeakyRelu, L.Identity]
)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_mlp_equals_value_and_grad_and_update_bit_for_bit(batch, dtype, activation, loss):
    model = mlp(activation)
    _, params = model.init(fnn.random.key(0), (-1, 4), dtype=dtype)
    x = randn(1, batch, 4, dtype=dtype)
    labels = torch.arange(batch) % 2
    target = fnn.data.one_hot(labels, 2).to(dtype) if loss == "mse" else labels
    opt = fnn.optim.sgd(lr=0.1, momentum=0.9)
    run_both(model, getattr(fnn.losses, loss), opt, params, x, target)


@pytest.mark.parametrize("opt", [fnn.optim.sgd(0.1), fnn.optim.adam(1e-2), fnn.optim.adamw(1e-2)])
def test_optimizers_and_has_aux(opt):
    model = mlp()
    _, params = model.init(fnn.random.key(0), (-1, 4))
    x, labels = randn(2, 9, 4, dtype=torch.float32), torch.arange(9) % 2
    run_both(model, fnn.losses.cross_entropy, opt, params, x, labels, has_aux=True)


def test_params_without_activation_entries_as_from_a_state_dict():
    model = mlp()
    _, params = model.init(fnn.random.key(0), (-1, 4))
    params = {k: v for k, v in params.items() if v}  # "1", "3" dropped, as in a state_dict
    x, labels = randn(2, 5, 4, dtype=torch.float32), torch.arange(5) % 2
    run_both(model, fnn.losses.cross_entropy, fnn.optim.sgd(0.1, momentum=0.5), params, x, labels)


def test_cnn_with_batchnorm_state_and_dropout_key():
    model = cnn()
    _, params = model.init(fnn.random.key(0), (-1, 1, 6, 6))
    state = fnn.init_state(model, (-1, 1, 6, 6))
    x, labels = randn(3, 4, 1, 6, 6, dtype=torch.float32), torch.tensor([0, 1, 1, 0])
    step = run_both(
        model,
        fnn.losses.cross_entropy,
        fnn.optim.adam(1e-2),
        params,
        x,
        labels,
        state=state,
        train=True,
        key=fnn.random.key(3),
    )
    assert "its own apply and VJP" in step.source  # Conv, BatchNorm, ... run through VJPs
    assert "h = linear(" in step.source  # the Dense layers are inline


def test_a_patched_backward_is_honoured_everywhere(monkeypatch):
    """Patch the module-level function Dense's VJP names: every engine uses the patch."""
    model = fnn.serial(L.Dense(4), L.Relu(), L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 3))
    x, labels = randn(1, 6, 3, dtype=torch.float32), torch.arange(6) % 2
    _, vjp = model.apply(params, x)
    original = vjp.residuals[0][0].backward
    module = sys.modules[original.__module__]
    step = fnn.train_step(model.apply, fnn.losses.cross_entropy, fnn.optim.sgd(1.0))
    inner = fnn.serial(L.Dense(4), L.Relu())
    remat_model = fnn.serial(fnn.remat(inner), L.Dense(2))

    def zero_weight_backward(residuals, dy):
        grads, dx = original(residuals, dy)
        return dict(grads, weight=torch.zeros_like(grads["weight"])), dx

    monkeypatch.setattr(module, original.__name__, zero_weight_backward)
    _, grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert not grads["0"]["weight"].any() and not grads["2"]["weight"].any()
    assert grads["2"]["bias"].any()
    _, new_params, _ = step(params, fnn.optim.sgd(1.0).init(params), x, labels)
    assert torch.equal(new_params["0"]["weight"], params["0"]["weight"])
    assert not torch.equal(new_params["0"]["bias"], params["0"]["bias"])
    _, per_example = fnn.per_example_grads(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert not per_example["0"]["weight"].any() and per_example["0"]["bias"].any()
    remat_params = {"0": {"0": params["0"], "1": {}}, "1": params["2"]}
    _, grads = fnn.value_and_grad(remat_model.apply, fnn.losses.cross_entropy)(
        remat_params, x, labels
    )
    assert not grads["0"]["0"]["weight"].any() and not grads["1"]["weight"].any()
    monkeypatch.undo()
    _, new_params, _ = step(params, fnn.optim.sgd(1.0).init(params), x, labels)
    assert not torch.equal(new_params["0"]["weight"], params["0"]["weight"])


def test_a_swapped_backward_is_not_inlined():
    dense = fnn.rules.feedback_alignment(L.Dense(4), fnn.random.key(7))
    model = fnn.serial(dense, L.Relu(), L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 3))
    x, labels = randn(1, 6, 3, dtype=torch.float32), torch.arange(6) % 2
    step = run_both(model, fnn.losses.cross_entropy, fnn.optim.sgd(0.5), params, x, labels)
    assert "serial[0] Dense: its own apply and VJP" in step.source


def test_resized_params_fail_the_same_on_fresh_and_updated_params():
    model = mlp()
    _, params = model.init(fnn.random.key(0), (-1, 4))
    opt = fnn.optim.sgd(0.1, momentum=0.9)
    step = fnn.train_step(model.apply, fnn.losses.cross_entropy, opt)
    x, labels = randn(2, 5, 4, dtype=torch.float32), torch.arange(5) % 2
    _, updated, _ = step(params, opt.init(params), x, labels)
    for p in (fnn.tree.map(torch.clone, params), updated):
        p["0"]["bias"].resize_(1)
        with pytest.raises(fnn.errors.ShapeError, match=r"serial\[0\] Dense"):
            step(p, opt.init(p), x, labels)
        with pytest.raises(fnn.errors.ShapeError, match=r"serial\[0\] Dense"):
            fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)(p, x, labels)


def test_bad_input_gets_the_layers_clear_error():
    model = mlp()
    _, params = model.init(fnn.random.key(0), (-1, 4))
    opt = fnn.optim.sgd(0.1)
    step = fnn.train_step(model.apply, fnn.losses.cross_entropy, opt)
    with pytest.raises(fnn.errors.ShapeError, match=r"serial\[0\] Dense: expected input"):
        step(params, opt.init(params), torch.ones(3, 5), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(fnn.errors.TreeError, match="unexpected params keys"):
        step(
            dict(params, extra={}),
            opt.init(params),
            torch.ones(3, 4),
            torch.zeros(3, dtype=torch.int64),
        )
    with pytest.raises(fnn.FnnError, match=r"unexpected keyword rng="):
        step(params, opt.init(params), torch.ones(3, 4), torch.zeros(3, dtype=torch.int64), rng=1)
    with pytest.raises(fnn.errors.FnnTypeError):
        fnn.train_step(model, fnn.losses.mse, opt)


def test_no_autograd_graph_even_for_params_that_require_grad():
    model = mlp()
    _, params = model.init(fnn.random.key(0), (-1, 4))
    params = fnn.tree.map(lambda t: t.requires_grad_(True), params)
    opt = fnn.optim.sgd(0.1, momentum=0.9)
    step = fnn.train_step(model.apply, fnn.losses.cross_entropy, opt)
    x, labels = torch.ones(3, 4, requires_grad=True), torch.zeros(3, dtype=torch.int64)
    value, new_params, state = step(params, opt.init(params), x, labels)
    assert value.grad_fn is None
    assert all(getattr(t, "grad_fn", None) is None for t in fnn.tree.leaves((new_params, state)))
    assert all(t.requires_grad is False for t in fnn.tree.leaves(new_params))
    value, grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert value.grad_fn is None and all(g.grad_fn is None for g in fnn.tree.leaves(grads))
    for optimizer in (opt, fnn.optim.adam(1e-3), fnn.optim.rmsprop(1e-3)):
        new_params, new_state = optimizer.update(params, grads, optimizer.init(params))
        assert all(getattr(t, "grad_fn", None) is None for t in fnn.tree.leaves(new_state))
        assert all(t.grad_fn is None for t in fnn.tree.leaves(new_params))
    assert all(t.grad_fn is None for t in fnn.tree.leaves(fnn.update(params, grads, lr=0.1)))
    _, per_example = fnn.per_example_grads(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    assert all(g.grad_fn is None for g in fnn.tree.leaves(per_example))


def test_source_is_the_readable_backprop_and_the_general_path_is_shown():
    step = fnn.train_step(mlp().apply, fnn.losses.mse, fnn.optim.sgd(0.1))
    src = step.source
    assert "# forward" in src and "# backward" in src and "dW = dhᵀ x" in src
    assert "form.step(" in src  # the optimizer fused: its flat form on the leaves
    parallel = fnn.parallel(L.Dense(2), L.Dense(2))
    general = fnn.train_step(parallel.apply, fnn.losses.mse, fnn.optim.sgd(0.1))
    assert "value_and_grad" in general.source


def test_results_do_not_depend_on_call_history():
    model = mlp()
    _, params = model.init(fnn.random.key(0), (-1, 4))
    opt = fnn.optim.sgd(0.1, momentum=0.9)
    x, labels = randn(2, 5, 4, dtype=torch.float32), torch.arange(5) % 2
    fresh = fnn.train_step(model.apply, fnn.losses.cross_entropy, opt)
    used = fnn.train_step(model.apply, fnn.losses.cross_entropy, opt)
    for _ in range(3):
        used(params, opt.init(params), randn(9, 3, 4, dtype=torch.float32), torch.arange(3) % 2)
    a = fresh(params, opt.init(params), x, labels)
    b = used(params, opt.init(params), x, labels)
    assert leaves_equal(a, b)
    assert pickle.loads(pickle.dumps(model.apply(params, x)[1]))  # VJPs still pickle


@requires_compile
def test_torch_compile_fullgraph():
    model = mlp()
    _, params = model.init(fnn.random.key(0), (-1, 4))
    opt = fnn.optim.sgd(0.1, momentum=0.9)
    step = fnn.train_step(model.apply, fnn.losses.mse, opt)
    compiled = torch.compile(step, fullgraph=True, backend="eager")
    x, target = randn(2, 5, 4, dtype=torch.float32), randn(3, 5, 2, dtype=torch.float32)
    state = opt.init(params)
    a = compiled(params, state, x, target)
    b = step(params, state, x, target)
    torch.testing.assert_close(a[0], b[0])
    for u, v in zip(fnn.tree.leaves(a[1]), fnn.tree.leaves(b[1])):
        torch.testing.assert_close(u, v)


def test_workspace_results_stay_fresh_and_threads_agree():
    """Small CPU batches of an MSE-trained MLP write intermediates into buffers the step
    owns; what it returns is always fresh, and concurrent calls give the same bits."""
    import threading

    model = mlp()
    _, params = model.init(fnn.random.key(0), (-1, 4))
    opt = fnn.optim.sgd(0.1, momentum=0.9)
    step = fnn.train_step(model.apply, fnn.losses.mse, opt)
    assert "Small CPU batches" in step.source and ") = ws\n" in step.source
    x1, t1 = randn(1, 6, 4, dtype=torch.float32), randn(2, 6, 2, dtype=torch.float32)
    x2, t2 = randn(3, 6, 4, dtype=torch.float32), randn(4, 6, 2, dtype=torch.float32)
    first = step(params, opt.init(params), x1, t1)
    kept = fnn.tree.map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, first)
    step(first[1], first[2], x2, t2)  # reuses the workspace
    assert leaves_equal(first, kept)
    run_both(model, fnn.losses.mse, fnn.optim.adam(1e-2), params, x1, t1, steps=4)

    expected = step(params, opt.init(params), x2, t2)
    results = [None] * 4

    def worker(i):
        for _ in range(20):
            results[i] = step(params, opt.init(params), x2, t2)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(leaves_equal(r, expected) for r in results)


def test_a_patched_backward_turns_the_workspace_off(monkeypatch):
    model = fnn.serial(L.Dense(4), L.Relu(), L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 3))
    x, target = randn(1, 6, 3, dtype=torch.float32), randn(2, 6, 2, dtype=torch.float32)
    step = fnn.train_step(model.apply, fnn.losses.mse, fnn.optim.sgd(1.0))
    step(params, {"step": 0}, x, target)  # the workspace exists now
    module = sys.modules[fnn.layers.dense.dense_backward.__module__]
    original = module.dense_backward

    def zero_weight_backward(residuals, dy):
        grads, dx = original(residuals, dy)
        return dict(grads, weight=torch.zeros_like(grads["weight"])), dx

    monkeypatch.setattr(module, "dense_backward", zero_weight_backward)
    _, new_params, _ = step(params, {"step": 0}, x, target)
    assert torch.equal(new_params["0"]["weight"], params["0"]["weight"])
    assert not torch.equal(new_params["0"]["bias"], params["0"]["bias"])


@requires_compile
def test_a_patched_backward_is_honoured_under_torch_compile(monkeypatch):
    model = fnn.serial(L.Dense(4), L.Relu(), L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 3))
    opt = fnn.optim.sgd(1.0)
    compiled = torch.compile(
        fnn.train_step(model.apply, fnn.losses.mse, opt), fullgraph=True, backend="eager"
    )
    x, target = randn(1, 5, 3, dtype=torch.float32), randn(2, 5, 2, dtype=torch.float32)
    _, before, _ = compiled(params, opt.init(params), x, target)
    assert not torch.equal(before["0"]["weight"], params["0"]["weight"])
    module = sys.modules[fnn.layers.dense.dense_backward.__module__]
    original = module.dense_backward

    def zero_weight_backward(residuals, dy):
        grads, dx = original(residuals, dy)
        return dict(grads, weight=torch.zeros_like(grads["weight"])), dx

    monkeypatch.setattr(module, "dense_backward", zero_weight_backward)
    _, after, _ = compiled(params, opt.init(params), x, target)
    assert torch.equal(after["0"]["weight"], params["0"]["weight"])
    assert not torch.equal(after["0"]["bias"], params["0"]["bias"])


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("batch", [1, 6])
def test_activations_in_a_row_keep_each_ones_output(loss, batch):
    """Sigmoid then Tanh: the second may not overwrite the output the first's backward reads
    (the workspace once ran both in place on one buffer and got the gradient wrong)."""
    model = fnn.serial(L.Dense(5), L.Sigmoid(), L.Tanh(), L.Dense(3), L.Relu(), L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, 4))
    x = randn(1, batch, 4, dtype=torch.float32)
    if loss == "mse":
        loss_fn, target = fnn.losses.mse, randn(2, batch, 2, dtype=torch.float32)
    else:
        loss_fn, target = fnn.losses.cross_entropy, torch.arange(batch) % 2
    step = run_both(model, loss_fn, fnn.optim.sgd(0.1, momentum=0.9), params, x, target)
    assert "y_2 = f_2(out_0)" in step.source  # Tanh writes a new tensor


def test_inline_cross_entropy_checks_labels_and_honours_a_patched_backward(monkeypatch):
    model = fnn.serial(L.Dense(4), L.Relu(), L.Dense(3))
    _, params = model.init(fnn.random.key(0), (-1, 2))
    x = randn(1, 5, 2, dtype=torch.float32)
    opt = fnn.optim.sgd(0.5)
    step = fnn.train_step(model.apply, fnn.losses.cross_entropy, opt)
    assert "nll_loss(log_probs, target" in step.source
    labels = torch.tensor([0, 1, 2, -100, 1])  # the ignored label counts for nothing
    run_both(model, fnn.losses.cross_entropy, opt, params, x, labels)
    with pytest.raises(fnn.FnnError, match="cross_entropy"):
        step(params, opt.init(params), x, torch.tensor([0, 1, 3, 0, 1]))
    with pytest.raises(fnn.FnnError, match="cross_entropy"):
        step(params, opt.init(params), x, torch.tensor([0.0, 1, 2, 0, 1]))
    losses = sys.modules[fnn.losses.cross_entropy_backward.__module__]

    def zero_backward(residuals, dvalue):  # the logits' shape comes last
        return torch.zeros(residuals[-1])

    monkeypatch.setattr(losses, "cross_entropy_backward", zero_backward)
    _, new, _ = step(params, opt.init(params), x, labels)  # the patch runs: nothing moves
    assert leaves_equal(new, params)


def test_a_new_input_width_with_the_same_batch_gets_its_own_workspace():
    model = fnn.serial(L.Dense(4), L.Relu(), L.Dense(2))
    opt = fnn.optim.sgd(0.5)
    step = fnn.train_step(model.apply, fnn.losses.mse, opt)
    target = randn(0, 6, 2, dtype=torch.float32)
    for width in (3, 5, 3):
        _, params = model.init(fnn.random.key(width), (-1, width))
        x = randn(width, 6, width, dtype=torch.float32)
        run_both(model, fnn.losses.mse, opt, params, x, target, steps=2)
        _, new, _ = step(params, opt.init(params), x, target)
        assert new["0"]["weight"].shape == (4, width)
    with pytest.raises(fnn.errors.ShapeError, match="Dense"):  # params of width 3, x of width 5
        step(params, opt.init(params), randn(1, 6, 5, dtype=torch.float32), target)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_the_general_code_writes_a_backward_in_place_only_into_a_cotangent_it_made(loss):
    """Outside the workspace (here a 3-D input), an activation's backward runs in place on
    its cotangent when the step itself just made it (a Dense's dx, an activation kernel's
    result), and makes a new tensor when it may be shared (the loss's, or what a Python
    backward returned); the bits stay the same either way."""
    model = fnn.serial(
        L.Dense(5), L.Sigmoid(), L.Gelu(), L.Tanh(), L.Dense(3), L.Relu(), L.Dense(2), L.Tanh()
    )
    _, params = model.init(fnn.random.key(0), (-1, 3, 4))
    x = randn(3, 2, 3, 4, dtype=torch.float32)
    if loss == "mse":
        loss_fn, target = fnn.losses.mse, randn(4, 2, 3, 2, dtype=torch.float32)
    else:  # logits (N, T, 2) read as (N, C=3, d1=2)
        loss_fn, target = fnn.losses.cross_entropy, torch.tensor([[0, 2], [1, 1]])
    step = run_both(model, loss_fn, fnn.optim.sgd(0.1, momentum=0.9), params, x, target)
    general = step.source.split("# Small CPU")[0]
    assert "dh = k_7(dh, y_7)" in general  # Tanh: the loss's cotangent, left alone
    assert "dh = k_5_(dh, y_5, 0, grad_input=dh)" in general  # Relu: a Dense's dx
    assert "dh = k_3_(dh, y_3, grad_input=dh)" in general  # Tanh: a Dense's dx
    assert "dh = b_2(" in general  # Gelu: its Python backward
    assert "dh = k_1(dh, y_1)" in general  # Sigmoid: what Gelu's backward returned


@pytest.mark.parametrize("batch", [1, 7])
def test_the_floor_benchmark_times_the_steps_own_numbers(batch):
    """tests/benchmarks/bench_floor.py's bare kernels give train_step's loss and params
    bit for bit: the floor it reports is the floor of this very computation."""
    from .benchmarks import bench_floor

    bench_floor._check_same_numbers(batch)
