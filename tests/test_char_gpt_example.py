"""examples/char_gpt.py: a tiny GPT runs, learns, samples, and matches torch.nn + autograd."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import pytest
import torch

import fnn

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ["--layers", "1", "--embed", "16", "--heads", "2", "--context", "16", "--batch-size", "4"]


@pytest.fixture(scope="module")
def gpt():
    spec = importlib.util.spec_from_file_location(
        "char_gpt_example", ROOT / "examples" / "char_gpt.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_tiny_run_learns_samples_and_matches_torch(gpt, capsys, tmp_path):
    run, torch_run = gpt.main(
        [*TINY, "--steps", "40", "--log-every", "20", "--eval-batches", "2", "--sample-length", "20",
         "--compare-torch", "--plot", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    vocab = len(gpt.load_corpus().chars)  # the text ships with Python: its size varies by version
    assert f"{vocab} distinct" in out and "step    40/40" in out and "k tok/s" in out
    assert "max |loss_fnn − loss_torch| over the first 40 steps" in out
    assert run.torch_gap <= 1e-4
    assert abs(run.val_loss - torch_run.val_loss) <= 1e-4
    assert run.step_losses[0] == pytest.approx(math.log(vocab), abs=0.05)  # tiny embeddings
    assert sum(run.step_losses[-5:]) / 5 < run.step_losses[0] - 0.5
    assert len(run.sample) == 20
    assert (tmp_path / "char_gpt_loss.png").stat().st_size > 1000


def test_float64_and_remat_give_the_same_curve_and_the_serial_mlp_the_twins(gpt):
    args = [
        *TINY,
        "--steps",
        "3",
        "--eval-batches",
        "1",
        "--sample-length",
        "0",
        "--dtype",
        "float64",
    ]
    plain, _ = gpt.main(args)
    for remat in ("mlp", "block"):
        rematted, _ = gpt.main([*args, "--remat", remat])
        assert rematted.step_losses == plain.step_losses
    # the MLP as serial(Dense, Gelu, Dense) (other initial weights: the keys split otherwise)
    serial, _ = gpt.main([*args, "--mlp", "serial", "--compare-torch"])
    assert serial.torch_gap <= 1e-12


def test_fixed_split_tied_head_and_the_torch_twins_names(gpt):
    corpus = gpt.load_corpus()
    vocab = len(corpus.chars)  # 103 on Python 3.11; the text differs between Python versions
    total = len(corpus.train) + len(corpus.val)
    assert 90 <= vocab <= 120 and abs(len(corpus.val) / total - 0.1) < 0.001
    assert torch.equal(gpt.load_corpus().val, corpus.val)  # a fixed split
    model = gpt.make_model(vocab, 16, 2, 1, 16)
    params = gpt.init_params(model, 16, fnn.random.key(0))
    names = {gpt.twin_name(name) for name in fnn.tree.to_state_dict(params)}
    twin = gpt.make_torch_model(vocab, 16, 2, 1, 16)
    assert set(twin.state_dict()) - names == {"4.weight"}  # the tied head, listed twice by torch
    assert "2.1.1.0.1.2.weight" in fnn.tree.to_state_dict(params)  # the fused Mlp's second Dense
    assert gpt.twin_name("2.1.1.0.1.2.weight") == "2.1.1.0.3.weight"  # the twin's Linear
    gpt.load_torch_model(twin, params, 1)
    x = corpus.train[:32].view(2, 16)
    logits, _ = model.apply(params, x)
    torch.testing.assert_close(logits, twin(x).detach(), atol=1e-5, rtol=1e-5)


def test_gradients_equal_the_torch_twins_bit_for_bit_in_float32(gpt):
    # attention sums over tokens in torch's (time-major) order, so a float32 run follows the
    # twin's loss curve instead of drifting apart by rounding
    corpus = gpt.load_corpus()
    vocab = len(corpus.chars)
    model = gpt.make_model(vocab, 16, 2, 2, 16)
    params = gpt.init_params(model, 16, fnn.random.key(0))
    x, y = gpt.batch(fnn.random.key(1), corpus.train, 4, 16)
    value, grads = fnn.value_and_grad(model.apply, gpt.sequence_cross_entropy)(params, x, y)
    twin = gpt.make_torch_model(vocab, 16, 2, 2, 16)
    gpt.load_torch_model(twin, params, 2)
    with torch.enable_grad():
        logits = twin(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        loss.backward()
    assert torch.equal(value, loss.detach())
    flat = {gpt.twin_name(k): v for k, v in fnn.tree.to_state_dict(grads).items()}
    for name, p in twin.named_parameters():
        assert torch.equal(flat[name], p.grad), name
