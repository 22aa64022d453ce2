"""Zoo cases: the norms with torch.nn's options, the §7 activations, Flatten's axes, Dropout 1."""

import torch

import fnn
from fnn import layers as L

from . import Case

nn = torch.nn

CASES = [
    Case(
        "LayerNorm-2d",
        lambda: L.LayerNorm((3, 4)),
        (-1, 3, 4),
        torch_twin=lambda: nn.LayerNorm((3, 4)),
    ),
    Case(
        "LayerNorm-nobias",
        lambda: L.LayerNorm(5, bias=False),
        (-1, 5),
        torch_twin=lambda: nn.LayerNorm(5, bias=False),
    ),
    Case(
        "LayerNorm-noaffine",
        lambda: L.LayerNorm(elementwise_affine=False),
        (-1, 5),
        torch_twin=lambda: nn.LayerNorm(5, elementwise_affine=False),
    ),
    Case("RMSNorm", L.RMSNorm, (-1, 5), torch_twin=lambda: nn.RMSNorm(5)),
    Case(
        "RMSNorm-noaffine",
        lambda: L.RMSNorm((2, 3), eps=1e-3, elementwise_affine=False),
        (-1, 2, 3),
        torch_twin=lambda: nn.RMSNorm((2, 3), eps=1e-3, elementwise_affine=False),
    ),
    Case("GroupNorm", lambda: L.GroupNorm(2), (-1, 4, 3, 3), torch_twin=lambda: nn.GroupNorm(2, 4)),
    Case(
        "GroupNorm-noaffine",
        lambda: L.GroupNorm(1, affine=False),
        (-1, 3, 5),
        torch_twin=lambda: nn.GroupNorm(1, 3, affine=False),
    ),
    Case(
        "BatchNorm1d",
        lambda: L.BatchNorm(momentum=0.2),
        (-1, 3),
        torch_twin=lambda: nn.BatchNorm1d(3, momentum=0.2),
        stateful=True,
        per_example=False,
    ),
    Case(
        "BatchNorm1d-L-noaffine",
        lambda: L.BatchNorm(affine=False),
        (-1, 2, 5),
        torch_twin=lambda: nn.BatchNorm1d(2, affine=False),
        stateful=True,
        per_example=False,
    ),
    Case(
        "BatchNorm3d",
        L.BatchNorm,
        (-1, 2, 2, 3, 2),
        torch_twin=lambda: nn.BatchNorm3d(2),
        stateful=True,
        per_example=False,
    ),
    Case(
        "BatchNorm-batch-stats",
        lambda: L.BatchNorm(track_running_stats=False),
        (-1, 3, 4),
        torch_twin=lambda: nn.BatchNorm1d(3, track_running_stats=False),
        per_example=False,
        notes="no state; always the batch statistics, so the output mixes examples",
    ),
    Case("Softmax-dim1", lambda: L.Softmax(1), (-1, 3, 4), torch_twin=lambda: nn.Softmax(1)),
    Case(
        "LogSoftmax-dim1", lambda: L.LogSoftmax(1), (-1, 3, 4), torch_twin=lambda: nn.LogSoftmax(1)
    ),
    Case("Silu", L.Silu, (-1, 5), torch_twin=nn.SiLU),
    Case("Mish", L.Mish, (-1, 5), torch_twin=nn.Mish),
    Case(
        "Hardtanh",
        lambda: L.Hardtanh(-0.5, 0.5),
        (-1, 5),
        torch_twin=lambda: nn.Hardtanh(-0.5, 0.5),
    ),
    Case("Relu6", L.Relu6, (-1, 5), torch_twin=nn.ReLU6),
    Case("Gelu-tanh", lambda: L.Gelu("tanh"), (-1, 5), torch_twin=lambda: nn.GELU("tanh")),
    Case("Prelu", L.Prelu, (-1, 5), torch_twin=nn.PReLU),
    Case(
        "Prelu-channels",
        lambda: L.Prelu(3, init=0.1),
        (-1, 3, 4),
        torch_twin=lambda: nn.PReLU(3, init=0.1),
    ),
    Case("Glu", L.Glu, (-1, 6), torch_twin=nn.GLU),
    Case("Glu-dim1", lambda: L.Glu(1), (-1, 4, 3), torch_twin=lambda: nn.GLU(1)),
    Case(
        "Flatten-1-2", lambda: L.Flatten(1, 2), (-1, 2, 3, 2), torch_twin=lambda: nn.Flatten(1, 2)
    ),
    Case(
        "Flatten-0",
        lambda: L.Flatten(0),
        (-1, 2, 3),
        torch_twin=lambda: nn.Flatten(0),
        per_example=False,
        notes="merges the batch axis",
    ),
    Case(
        "Dropout-1",
        lambda: L.Dropout(1.0),
        (-1, 6),
        apply_kwargs=lambda: {"key": fnn.random.key(5)},
    ),
]
