"""fnn.summary and fnn.graph_repr."""

import pytest
import torch

import fnn
from fnn import layers as L
from fnn.errors import FnnError, FnnTypeError


def rows(text):
    return {line.split()[0]: line.split()[1:] for line in text.splitlines()[1:]}


def test_summary_of_an_mlp():
    text = fnn.summary(
        fnn.serial(L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)), (-1, 2)
    )
    assert text.splitlines()[0].split() == [
        "path",
        "type",
        "output",
        "shape",
        "params",
        "residual",
        "B/example",
    ]
    r = rows(text)
    assert r["serial[0]"] == ["Dense", "(-1,", "25)", "75", str(2 * 4)]  # keeps its input x
    assert r["serial[1]"] == ["Relu", "(-1,", "25)", "0", str(25 * 4)]  # keeps its output
    assert r["serial[2]"] == [
        "Dense",
        "(-1,",
        "25)",
        "650",
        str(25 * 4),
    ]  # keeps Relu's output: shared
    assert r["serial[4]"] == ["Dense", "(-1,", "2)", "52", str(25 * 4)]
    # the total counts each storage once: x and two hidden activations
    assert r["total"] == ["777", str(2 * 4 + 2 * 25 * 4)]
    assert r["(model)"][-2:] == r["total"]


def test_summary_nested_paths_multi_shapes_and_float64():
    block = fnn.serial(L.FanOut(2), fnn.parallel(L.Dense(4), L.Identity()), L.FanInSum())
    text = fnn.summary(fnn.serial(L.Dense(4), block, L.Relu()), (-1, 3), dtype=torch.float64)
    r = rows(text)
    assert list(r) == [
        "(model)",
        "serial[0]",
        "serial[1]",
        "serial[1].serial[0]",
        "serial[1].serial[1]",
        "serial[1].serial[1].parallel[0]",
        "serial[1].serial[1].parallel[1]",
        "serial[1].serial[2]",
        "serial[2]",
        "total",
    ]
    assert r["serial[1].serial[0]"][1:] == ["[(-1,", "4),", "(-1,", "4)]", "0", "0"]
    assert r["serial[1].serial[1].parallel[0]"][-2:] == ["20", str(4 * 8)]  # float64 input kept
    assert r["total"] == ["36", str((3 + 4 + 4) * 8)]


def test_summary_counts_fixed_size_residuals_not_per_example():
    fa = fnn.rules.feedback_alignment(50, fnn.random.key(0))
    assert rows(fnn.summary(fa, (-1, 40)))["total"] == [
        "2050",
        str(40 * 4),
    ]  # B (50×40) is not per example


def test_summary_of_a_conv_net_with_batch_1_shapes():
    model = fnn.serial(L.Conv(2, 3, padding=1), L.Relu(), L.MaxPool(2), L.Flatten(), L.Dense(3))
    r = rows(fnn.summary(model, (-1, 1, 4, 4)))
    assert r["serial[2]"][:4] == ["MaxPool", "(-1,", "2,", "2,"]
    assert r["serial[4]"][-2] == str(2 * 2 * 2 * 3 + 3)


def test_graph_repr():
    block = fnn.serial(L.FanOut(2), fnn.parallel(L.Dense(4), fnn.remat(L.Identity())), L.FanInSum())
    assert fnn.graph_repr(fnn.serial(L.Dense(4), block)).splitlines() == [
        "serial",
        "├── [0] Dense",
        "└── [1] serial",
        "    ├── [0] FanOut",
        "    ├── [1] parallel",
        "    │   ├── [0] Dense",
        "    │   └── [1] remat(Identity)",
        "    └── [2] FanInSum",
    ]
    assert fnn.graph_repr(L.Relu()) == "Relu"


def test_bad_arguments():
    with pytest.raises(FnnTypeError, match="summary.*forget the call"):
        fnn.summary(L.Relu, (-1, 2))
    with pytest.raises(FnnError, match="summary: expected an input shape"):
        fnn.summary(L.Relu(), "(-1, 2)")
    with pytest.raises(FnnTypeError, match="summary: dtype"):
        fnn.summary(L.Relu(), (-1, 2), dtype=torch.int64)
    with pytest.raises(FnnTypeError, match="graph_repr"):
        fnn.graph_repr(None)
