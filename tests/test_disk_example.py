"""examples/disk.py runs, learns, and matches torch.nn + autograd step for step."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def disk():
    spec = importlib.util.spec_from_file_location("disk_example", ROOT / "examples" / "disk.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_short_run_learns_and_matches_torch(disk, capsys):
    results = disk.main(["--epochs", "40", "--log-every", "20", "--compare-torch"])
    run = results[0]
    out = capsys.readouterr().out
    assert "epoch   40" in out and "max |loss_fnn − loss_torch|" in out
    assert len(run.step_losses) == 40 * 10
    assert run.torch_gap <= 1e-4
    assert run.step_losses[-1] < 0.5 * run.step_losses[0]
    assert run.test_error < 0.15


@pytest.mark.parametrize(
    "options", [["--activation", "tanh", "--loss", "cross_entropy"], ["--optimizer", "sgd"]]
)
def test_variants_run(disk, options):
    results = disk.main(["--epochs", "5", "--n-train", "200", "--n-test", "200", *options])
    assert 0.0 <= results[0].test_error <= 0.6


def test_seeds_baselines_and_plot(disk, tmp_path, capsys):
    disk.main(["--epochs", "2", "--seeds", "2", "--n-train", "200", "--n-test", "200"])
    assert "median" in capsys.readouterr().out
    disk.main(
        [
            "--epochs",
            "2",
            "--n-train",
            "200",
            "--n-test",
            "200",
            "--baselines",
            "--plot",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert "sklearn SVC(rbf)" in out and "LogisticRegression" in out
    assert (tmp_path / "decision_boundary.png").stat().st_size > 1000
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000


def _open_figures(monkeypatch):
    """Keep the example's figures open (it closes them) so a test can read them back."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    close = plt.close
    close("all")
    monkeypatch.setattr(plt, "close", lambda *args: None)
    return plt, close


def test_plot_with_compare_torch_draws_both_curves_labelled(disk, tmp_path, monkeypatch, capsys):
    plt, close = _open_figures(monkeypatch)
    options = ["--epochs", "3", "--n-train", "200", "--n-test", "200", "--compare-torch"]
    disk.main([*options, "--plot", str(tmp_path), "--progress"])
    captured = capsys.readouterr()
    assert (tmp_path / "decision_boundary.png").stat().st_size > 1000
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    boundary, curves = (plt.figure(n).axes[0] for n in plt.get_fignums())
    assert (boundary.get_xlabel(), boundary.get_ylabel()) == ("x₁", "x₂")
    labels = [t.get_text() for t in boundary.get_legend().get_texts()]
    assert any("predicted: inside" in t for t in labels) and any("true disk" in t for t in labels)
    assert curves.get_xlabel() == "epoch" and "training loss" in curves.get_ylabel()
    labels = [t.get_text() for t in curves.get_legend().get_texts()]
    assert labels[0] == "fnn" and labels[1].startswith("torch.nn + autograd")
    fnn_line, torch_line = curves.get_lines()
    assert len(fnn_line.get_ydata()) == len(torch_line.get_ydata()) == 3
    # the one-line progress bar (tqdm, in the dev and examples extras): steps/s and the loss,
    # on stderr, for both runs
    if importlib.util.find_spec("tqdm") is not None:
        assert (
            "step/s" in captured.err and "loss=" in captured.err and "torch, seed 0" in captured.err
        )
    close("all")


def test_no_progress_prints_no_bar(disk, capsys):
    disk.main(["--epochs", "2", "--n-train", "100", "--n-test", "100", "--no-progress"])
    assert "step/s" not in capsys.readouterr().err
