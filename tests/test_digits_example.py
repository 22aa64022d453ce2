"""examples/digits.py: the split, a short run that learns and matches torch.nn step for
step, the confusion matrix, seeds and baselines. (The full recipe's accuracy is measured
by running the example: see its docstring.)"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch

pytest.importorskip("sklearn")

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits():
    spec = importlib.util.spec_from_file_location("digits_example", ROOT / "examples" / "digits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_data_is_the_stratified_80_20_split_scaled_to_unit_interval(digits):
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert x_train.min() == 0 and x_train.max() == 1
    assert torch.bincount(y_test).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # stratified


def test_short_run_learns_and_matches_torch(digits, capsys):
    run = digits.main(["--epochs", "2", "--n-train", "500", "--compare-torch"])[0]
    out = capsys.readouterr().out
    assert "epoch   2" in out and "confusion matrix" in out and "max |loss_fnn − loss_torch|" in out
    assert len(run.step_losses) == 2 * 16
    assert run.step_losses[-1] < 0.5 * run.step_losses[0]
    assert run.test_accuracy > 0.8
    assert (
        run.torch_gap < 1e-5
    )  # same weights, same batches: the same losses up to float32 rounding
    assert run.confusion.sum() == 360
    assert run.confusion.diagonal().sum() / 360 == pytest.approx(run.test_accuracy)
    # The running statistics were updated by the steps and the example evaluates with them.
    assert int(run.state["1"]["num_batches_tracked"]) == 2 * 16
    assert not torch.equal(run.state["5"]["running_var"], torch.ones(64))


def test_seeds_and_baselines(digits, capsys):
    results = digits.main(["--epochs", "1", "--n-train", "200", "--seeds", "2", "--baselines"])
    out = capsys.readouterr().out
    assert sorted(results) == [0, 1]
    assert "sklearn SVC(rbf)" in out and "sklearn k-NN" in out and "mean" in out


def test_plot_draws_the_confusion_matrix_and_loss_curves(digits, tmp_path, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    close = plt.close
    close("all")
    monkeypatch.setattr(plt, "close", lambda *args: None)  # keep the figures to read them back
    options = ["--epochs", "1", "--n-train", "160", "--compare-torch", "--progress"]
    run = digits.main([*options, "--plot", str(tmp_path)])[0]
    captured = capsys.readouterr()
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    matrix, curves = (plt.figure(n).axes[0] for n in plt.get_fignums())
    assert (matrix.get_xlabel(), matrix.get_ylabel()) == ("predicted digit", "true digit")
    assert torch.equal(torch.as_tensor(matrix.get_images()[0].get_array()), run.confusion)
    assert curves.get_xlabel() == "step (batch)" and "cross-entropy" in curves.get_ylabel()
    labels = [t.get_text() for t in curves.get_legend().get_texts()]
    assert labels[:2] == ["fnn, each step", "fnn, epoch mean"]
    assert labels[2].startswith("torch.nn + autograd")
    assert [len(line.get_ydata()) for line in curves.get_lines()] == [5, 1, 5]
    if importlib.util.find_spec("tqdm") is not None:  # the progress bar (dev/examples extras)
        assert "step/s" in captured.err and "loss=" in captured.err
    close("all")
