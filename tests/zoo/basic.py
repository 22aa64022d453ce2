"""Zoo cases: Dense, activations, shape layers, fans and combinators, Dropout, a stateful model."""

import torch

import fnn
from fnn import layers as L

from . import Case

CASES = [
    Case("Dense", lambda: L.Dense(3), (-1, 4), torch_twin=lambda: torch.nn.Linear(4, 3)),
    Case(
        "Dense-nobias",
        lambda: L.Dense(3, bias=False),
        (-1, 4),
        torch_twin=lambda: torch.nn.Linear(4, 3, bias=False),
    ),
    Case("Relu", L.Relu, (-1, 5), torch_twin=torch.nn.ReLU),
    Case("Tanh", L.Tanh, (-1, 5), torch_twin=torch.nn.Tanh),
    Case("Sigmoid", L.Sigmoid, (-1, 5), torch_twin=torch.nn.Sigmoid),
    Case(
        "LeakyRelu", lambda: L.LeakyRelu(0.1), (-1, 5), torch_twin=lambda: torch.nn.LeakyReLU(0.1)
    ),
    Case("Elu", L.Elu, (-1, 5), torch_twin=torch.nn.ELU),
    Case("Gelu", L.Gelu, (-1, 5), torch_twin=torch.nn.GELU),
    Case("Softplus", L.Softplus, (-1, 5), torch_twin=torch.nn.Softplus),
    Case("Softmax", L.Softmax, (-1, 5), torch_twin=lambda: torch.nn.Softmax(-1)),
    Case("LogSoftmax", L.LogSoftmax, (-1, 5), torch_twin=lambda: torch.nn.LogSoftmax(-1)),
    Case("Identity", L.Identity, (-1, 5), torch_twin=torch.nn.Identity),
    Case("Flatten", L.Flatten, (-1, 2, 3), torch_twin=torch.nn.Flatten),
    Case(
        "Dropout", lambda: L.Dropout(0.3), (-1, 6), apply_kwargs=lambda: {"key": fnn.random.key(5)}
    ),
    Case(
        "serial",
        lambda: fnn.serial(L.Dense(4), L.Relu(), L.Dense(2)),
        (-1, 3),
        torch_twin=lambda: torch.nn.Sequential(
            torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
        ),
    ),
    Case(
        "Mlp",
        lambda: L.Mlp(8),
        (-1, 3, 4),
        torch_twin=lambda: torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 4)
        ),
    ),
    Case(
        "Mlp-tanh-nobias",
        lambda: L.Mlp(6, 3, approximate="tanh", bias=False),
        (-1, 4),
        torch_twin=lambda: torch.nn.Sequential(
            torch.nn.Linear(4, 6, bias=False),
            torch.nn.GELU("tanh"),
            torch.nn.Linear(6, 3, bias=False),
        ),
    ),
    Case(
        "residual",
        lambda: fnn.serial(L.FanOut(2), fnn.parallel(L.Dense(3), L.Identity()), L.FanInSum()),
        (-1, 3),
    ),
    Case(
        "concat",
        lambda: fnn.serial(L.FanOut(2), fnn.parallel(L.Dense(3), L.Tanh()), L.FanInConcat(1)),
        (-1, 3),
    ),
    Case("Conv", lambda: L.Conv(2, 3), (-1, 1, 5, 5), torch_twin=lambda: torch.nn.Conv2d(1, 2, 3)),
    Case("MaxPool", lambda: L.MaxPool(2), (-1, 2, 4, 4), torch_twin=lambda: torch.nn.MaxPool2d(2)),
    Case("AvgPool", lambda: L.AvgPool(2), (-1, 2, 4, 4), torch_twin=lambda: torch.nn.AvgPool2d(2)),
    Case("LayerNorm", L.LayerNorm, (-1, 5), torch_twin=lambda: torch.nn.LayerNorm(5)),
    Case(
        "BatchNorm",
        L.BatchNorm,
        (-1, 3, 4, 4),
        torch_twin=lambda: torch.nn.BatchNorm2d(3),
        stateful=True,
        per_example=False,
    ),
]
