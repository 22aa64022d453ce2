"""The feature × layer matrix: every layer kind of the zoo (tests/zoo) through every feature.

Each cell either works, checked against a reference (autograd on the torch twin, finite
differences, or fnn's own plain path), or raises the documented `FnnError` listed in
`EXPECTED_ERRORS` (and shown in docs/reliability.md's matrix table, which
`test_docs_table_is_current` keeps in sync). `python -m tests.test_matrix` prints the table.
"""

from __future__ import annotations

import io
import pickle
import sys

import pytest
import torch

import fnn

from .helpers import COMPILE_REASON, TORCH
from .zoo import Case, all_cases

CASES = all_cases()
FEATURES = (
    "value_and_grad",
    "train_step",
    "per_example_grads",
    "summary",
    "remat",
    "with_vjp",
    "torch.compile",
    "fnn.io",
    "state_dict",
    "float64",
    "bfloat16",
    "autocast",
    "meta init",
    "pickle VJP",
)

# (case name prefix, feature) -> the documented error's message fragment
EXPECTED_ERRORS: dict[tuple[str, str], str] = {
    # batch statistics mix examples: per-example gradients are not defined
    ("BatchNorm-batch-stats", "per_example_grads"): "mixes examples",
    # Flatten(0) folds the batch axis away: no example is left to take a gradient of
    ("Flatten-0", "per_example_grads"): "batch axis first",
    # under autocast, one branch is bfloat16 and the other float32: fan-in refuses to mix
    ("residual", "autocast"): "all inputs must have one dtype",
    ("concat", "autocast"): "all inputs must have one dtype",
}


def _expected_error(case: Case, feature: str) -> str | None:
    for (prefix, feat), fragment in EXPECTED_ERRORS.items():
        if feat == feature and (prefix == "*" or case.name.startswith(prefix)):
            return fragment
    return None


def _key(i: int) -> torch.Tensor:
    return fnn.random.key(1000 + i)


def _input(case: Case, batch: int, dtype: torch.dtype, seed: int = 0):
    def one(shape, k):
        if isinstance(shape, list):  # several inputs (or a tuple carry): a tuple of them
            keys = fnn.random.split(k, len(shape))
            return tuple(one(s, sub) for s, sub in zip(shape, keys))
        shape = tuple(batch if d == -1 else d for d in shape)
        if case.inputs.startswith("index:"):
            high = int(case.inputs.split(":")[1])
            return (fnn.random.uniform(k, shape) * high).floor().to(torch.int64)
        return fnn.random.normal(k, shape, dtype=dtype)

    return one(case.input_shape, _key(seed))


def _setup(case: Case, dtype=torch.float32, batch: int = 3):
    layer = case.make()
    _, params = layer.init(_key(1), case.input_shape, dtype=dtype)
    kwargs = case.apply_kwargs() if case.apply_kwargs else {}
    if case.stateful:
        kwargs = dict(
            kwargs, state=fnn.init_state(layer, case.input_shape, dtype=dtype), train=True
        )
    return layer, params, _input(case, batch, dtype), kwargs


def _apply(layer, params, x, kwargs):
    out = layer.apply(params, x, **kwargs)
    return out[0], out[1]


def _tensors(y):
    return [t for t in fnn.tree.leaves(y) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _cotangent(y, seed=5):
    keys = iter(fnn.random.split(_key(seed), max(len(fnn.tree.leaves(y)), 2)))
    return fnn.tree.map(
        lambda t: (
            fnn.random.normal(next(keys), tuple(t.shape), dtype=t.dtype)
            if t.is_floating_point()
            else torch.zeros_like(t)
        ),
        y,
    )


def _single_output(case: Case) -> bool:
    layer, params, x, kwargs = _setup(case)
    y, _ = _apply(layer, params, x, kwargs)
    return isinstance(y, torch.Tensor)


def _sum_loss(pred, target):
    """A loss for any output: Σ pred · target, so dpred = target (a fixed cotangent), in the
    prediction's dtype as fnn's losses give it (under autocast the prediction is bfloat16)."""
    value = (pred * target).sum()
    return value, fnn.VJP(_sum_loss_backward, (target, pred.dtype))


def _sum_loss_backward(residuals, dvalue):
    target, dtype = residuals
    return (target * dvalue).to(dtype)


def _negated_backward(residuals, dy):
    """A swapped backward for the with_vjp cells: the layer's own, negated (module-level, so
    the swapped VJP pickles); it finds the original through the residuals' owner below."""
    backward_fn = _ORIGINAL[0]
    return fnn.tree.map(
        lambda t: -t if isinstance(t, torch.Tensor) and t.is_floating_point() else t,
        backward_fn(residuals, dy),
    )


_ORIGINAL: list = [None]


def run_feature(case: Case, feature: str) -> None:
    if feature == "value_and_grad":
        layer, params, x, kwargs = _setup(case, torch.float64)
        if not _single_output(case):
            pytest.skip("several outputs: the VJP is checked directly (float64 feature)")
        y, _ = _apply(layer, params, x, kwargs)
        target = _cotangent(y)
        out = fnn.value_and_grad(layer.apply, _sum_loss)(params, x, target, **kwargs)
        value, grads = out[0], out[1]
        _, vjp = _apply(layer, params, x, kwargs)
        expected, _ = vjp(target)
        torch.testing.assert_close(value, (y * target).sum())
        for a, b in zip(fnn.tree.leaves(grads), fnn.tree.leaves(expected)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        if case.torch_twin is not None and not case.inputs.startswith("index"):
            twin = case.torch_twin().to(torch.float64)
            state_dict = fnn.tree.to_state_dict(params)
            if case.stateful:
                state_dict |= fnn.tree.to_state_dict(kwargs["state"])
            twin.load_state_dict(state_dict, strict=True)
            twin.train()
            x_torch = fnn.tree.map(lambda t: t.detach().clone().requires_grad_(True), x)
            with torch.enable_grad():
                y_torch = twin(x_torch)
                (y_torch * target).sum().backward()
            torch.testing.assert_close(y, y_torch.detach(), atol=1e-10, rtol=1e-9)
            twin_grads = {n: p.grad for n, p in twin.named_parameters()}
            for name, g in fnn.tree.to_state_dict(grads).items():
                torch.testing.assert_close(g, twin_grads[name], atol=1e-10, rtol=1e-9)
    elif feature == "train_step":
        if not _single_output(case):
            pytest.skip("several outputs: no loss to train on without a head")
        layer, params, x, kwargs = _setup(case)
        y, _ = _apply(layer, params, x, kwargs)
        target = _cotangent(y)
        opt = fnn.optim.sgd(0.1, momentum=0.9)
        step = fnn.train_step(layer.apply, _sum_loss, opt)
        out = step(params, opt.init(params), x, target, **kwargs)
        plain = fnn.value_and_grad(layer.apply, _sum_loss)(params, x, target, **kwargs)
        new_params, _ = opt.update(params, plain[1], opt.init(params))
        assert torch.equal(out[0], plain[0])
        for a, b in zip(fnn.tree.leaves(out[1]), fnn.tree.leaves(new_params)):
            assert torch.equal(a, b)
    elif feature == "per_example_grads":
        if not _single_output(case):
            pytest.skip("several outputs")
        layer, params, x, kwargs = _setup(case, torch.float64)
        y, _ = _apply(layer, params, x, kwargs)
        target = torch.zeros_like(y)
        f = fnn.per_example_grads(layer.apply, fnn.losses.mse)
        if case.stateful:  # evaluation mode: running statistics, example-wise
            eval_kwargs = dict(kwargs, train=False)
            losses, grads, _ = f(params, x, target, **eval_kwargs)
            _, mean_grads, _ = fnn.value_and_grad(layer.apply, fnn.losses.mse)(
                params, x, target, **eval_kwargs
            )
            with pytest.raises(fnn.FnnError, match="mixes examples"):
                f(params, x, target, **kwargs)  # training mode mixes examples
        else:
            losses, grads = f(params, x, target, **kwargs)
            _, mean_grads = fnn.value_and_grad(layer.apply, fnn.losses.mse)(
                params, x, target, **kwargs
            )
        assert losses.shape == (x.shape[0] if isinstance(x, torch.Tensor) else x[0].shape[0],)
        for a, b in zip(fnn.tree.leaves(grads), fnn.tree.leaves(mean_grads)):
            torch.testing.assert_close(a.mean(0), b, atol=1e-10, rtol=1e-8)
    elif feature == "summary":
        layer = case.make()
        indices = case.inputs.startswith("index")
        text = fnn.summary(layer, case.input_shape, input_dtype=torch.int64 if indices else None)
        assert fnn.core.layer_info(layer).name.split("(")[0] in text
    elif feature == "remat":
        layer, params, x, kwargs = _setup(case, torch.float64)
        y, vjp = _apply(layer, params, x, kwargs)
        r = fnn.remat(layer)
        y2, vjp2 = _apply(r, params, x, kwargs)
        dy = _cotangent(y)
        for a, b in zip(fnn.tree.leaves((y, vjp(dy))), fnn.tree.leaves((y2, vjp2(dy)))):
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b)
    elif feature == "with_vjp":
        layer, params, x, kwargs = _setup(case, torch.float64)
        y, vjp = _apply(layer, params, x, kwargs)
        _ORIGINAL[0] = vjp.backward
        swapped = fnn.with_vjp(layer, _negated_backward)
        y2, vjp2 = _apply(swapped, params, x, kwargs)
        assert vjp2.backward is _negated_backward
        dy = _cotangent(y)
        for a, b in zip(fnn.tree.leaves(vjp(dy)), fnn.tree.leaves(vjp2(dy))):
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                assert torch.equal(-a, b)  # the swapped rule is the one that ran
        pickle.loads(pickle.dumps(vjp2))
    elif feature == "torch.compile":
        if TORCH < (2, 13):
            pytest.skip(COMPILE_REASON)
        layer, params, x, kwargs = _setup(case)
        y, vjp = _apply(layer, params, x, kwargs)
        dy = _cotangent(y)

        def fwd_bwd(params, x, dy):
            y, vjp = _apply(layer, params, x, kwargs)
            return y, vjp(dy)

        torch._dynamo.reset()
        compiled = torch.compile(fwd_bwd, fullgraph=True, backend="eager")
        got = compiled(params, x, dy)
        want = fwd_bwd(params, x, dy)
        for a, b in zip(fnn.tree.leaves(got), fnn.tree.leaves(want)):
            if isinstance(a, torch.Tensor):
                torch.testing.assert_close(a, b)
    elif feature == "fnn.io":
        layer, params, _, kwargs = _setup(case)
        buffer = io.BytesIO()
        path = f"/tmp/fnn-matrix-{case.name}.fnn"
        fnn.io.save(path, params)
        loaded = fnn.io.load(path, like=params)
        del buffer
        for a, b in zip(fnn.tree.leaves(params), fnn.tree.leaves(loaded)):
            assert torch.equal(a, b)
    elif feature == "state_dict":
        layer, params, _, _ = _setup(case)
        flat = fnn.tree.to_state_dict(params)
        back = fnn.tree.from_state_dict(flat)
        assert fnn.tree.to_state_dict(back).keys() == flat.keys()
        if case.torch_twin is not None:
            twin_keys = {k for k, _ in case.torch_twin().named_parameters()}
            assert set(flat) == twin_keys
    elif feature == "float64":
        layer, params, x, kwargs = _setup(case, torch.float64)
        if case.stateful:
            bound = fnn.state.bind(layer, kwargs.pop("state"), **kwargs)
            fnn.testing.check_vjp(bound, params, x)
        else:
            fnn.testing.check_vjp(layer, params, x, **kwargs)
    elif feature == "bfloat16":
        layer, params, x, kwargs = _setup(case, torch.bfloat16)
        y, vjp = _apply(layer, params, x, kwargs)
        for t in _tensors(y):
            assert t.dtype == torch.bfloat16
        vjp(_cotangent(y))
    elif feature == "autocast":
        if not _single_output(case):
            pytest.skip("several outputs")
        layer, params, x, kwargs = _setup(case)
        y, _ = _apply(layer, params, x, kwargs)
        target = _cotangent(y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fnn.value_and_grad(layer.apply, _sum_loss)(params, x, target, **kwargs)
        for g, p in zip(fnn.tree.leaves(out[1]), fnn.tree.leaves(params)):
            assert g.shape == p.shape
    elif feature == "meta init":
        layer = case.make()
        _, params = layer.init(_key(1), case.input_shape, device="meta")
        assert all(t.device.type == "meta" for t in fnn.tree.leaves(params))
    elif feature == "pickle VJP":
        layer, params, x, kwargs = _setup(case)
        y, vjp = _apply(layer, params, x, kwargs)
        dy = _cotangent(y)
        again = pickle.loads(pickle.dumps(vjp))
        for a, b in zip(fnn.tree.leaves(vjp(dy)), fnn.tree.leaves(again(dy))):
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b)
        with pytest.raises(fnn.FnnError, match="a remat VJP holds"):
            pickle.dumps(_apply(fnn.remat(layer), params, x, kwargs)[1])
    else:
        raise AssertionError(feature)


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matrix(case: Case, feature: str) -> None:
    expected = _expected_error(case, feature)
    if expected is not None:
        with pytest.raises(fnn.FnnError, match=expected):
            run_feature(case, feature)
    else:
        run_feature(case, feature)


def table() -> str:
    """The matrix as a Markdown table: ✓ works (checked), or the documented error."""
    header = "| layer | " + " | ".join(FEATURES) + " |"
    rows = [header, "|" + "---|" * (len(FEATURES) + 1)]
    for case in CASES:
        cells = []
        for feature in FEATURES:
            expected = _expected_error(case, feature)
            cells.append(f"error: {expected}" if expected else "✓")
        rows.append(f"| {case.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")


def test_docs_table_is_current():
    """docs/reliability.md shows this matrix (regenerate: python -m tests.test_matrix)."""
    import pathlib

    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    start, end = "<!-- matrix:start -->\n", "\n<!-- matrix:end -->"
    assert start in doc and end in doc, "docs/reliability.md lacks the matrix markers"
    shown = doc[doc.index(start) + len(start) : doc.index(end)]
    assert shown == table(), "docs/reliability.md's matrix is stale: python -m tests.test_matrix"
