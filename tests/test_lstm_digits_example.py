"""examples/lstm_digits.py: a short run learns and matches torch.nn.LSTM step for step; the
data are the digits read row by row. (The full recipe's accuracy is measured by running the
example: see its docstring.)"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch

import fnn

pytest.importorskip("sklearn")

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def example():
    path = ROOT / "examples" / "lstm_digits.py"
    spec = importlib.util.spec_from_file_location("lstm_digits_example", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (and pickled VJPs) look their module up
    spec.loader.exec_module(module)
    return module


def test_data_are_rows_of_pixels(example):
    (x_train, y_train), (x_test, y_test) = example.load_data()
    assert x_train.shape == (1437, 8, 8) and x_test.shape == (360, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert x_train.min() == 0 and x_train.max() == 1
    assert torch.bincount(y_test).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # stratified


def test_short_run_learns_and_matches_torch(example, capsys):
    run = example.main(["--epochs", "3", "--n-train", "320", "--hidden", "32", "--compare-torch"])
    out = capsys.readouterr().out
    assert "epoch   3" in out and "max |loss_fnn − loss_torch|" in out
    assert len(run.step_losses) == 3 * 10
    assert sum(run.step_losses[-10:]) < 0.8 * sum(run.step_losses[:10])
    assert run.test_accuracy > 0.4
    assert run.torch_gap < 1e-5  # same weights, same batches: the same losses up to rounding


def test_last_step_layer(example):
    layer = example.LastStep()
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    out_shape, params = layer.init(fnn.random.key(0), (-1, 4, 2))
    assert out_shape == (-1, 2)
    y, _ = layer.apply(params, x)
    assert torch.equal(y, x[:, -1])
    fnn.testing.check_vjp(layer, params, x)
