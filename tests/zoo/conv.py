"""Zoo cases: n-D convolutions, transposed convolutions, pooling, Upsample and Pad.

(Conv, MaxPool and AvgPool in 2-D with default options are in basic.py.)"""

import torch

from fnn import layers as L

from . import Case

nn = torch.nn

CASES = [
    Case(
        "Conv1d",
        lambda: L.Conv(4, (3,), stride=2, padding=1, groups=2),
        (-1, 2, 7),
        torch_twin=lambda: nn.Conv1d(2, 4, 3, stride=2, padding=1, groups=2),
    ),
    Case(
        "Conv2d-same-reflect",
        lambda: L.Conv(3, (2, 3), padding="same", padding_mode="reflect", dilation=(1, 2)),
        (-1, 2, 5, 6),
        torch_twin=lambda: nn.Conv2d(
            2, 3, (2, 3), padding="same", padding_mode="reflect", dilation=(1, 2)
        ),
    ),
    Case(
        "Conv3d-nobias",
        lambda: L.Conv(2, (2, 2, 2), padding=(1, 0, 1), bias=False),
        (-1, 2, 3, 3, 3),
        torch_twin=lambda: nn.Conv3d(2, 2, 2, padding=(1, 0, 1), bias=False),
    ),
    Case(
        "ConvTranspose1d",
        lambda: L.ConvTranspose(3, (4,), stride=2, padding=1),
        (-1, 2, 5),
        torch_twin=lambda: nn.ConvTranspose1d(2, 3, 4, stride=2, padding=1),
    ),
    Case(
        "ConvTranspose2d",
        lambda: L.ConvTranspose(4, 3, stride=2, padding=1, output_padding=1, groups=2),
        (-1, 2, 3, 4),
        torch_twin=lambda: nn.ConvTranspose2d(
            2, 4, 3, stride=2, padding=1, output_padding=1, groups=2
        ),
    ),
    Case(
        "ConvTranspose3d",
        lambda: L.ConvTranspose(2, (2, 2, 2), stride=2),
        (-1, 1, 2, 2, 3),
        torch_twin=lambda: nn.ConvTranspose3d(1, 2, 2, stride=2),
    ),
    Case(
        "MaxPool1d",
        lambda: L.MaxPool((3,), stride=2, padding=1, ceil_mode=True),
        (-1, 2, 8),
        torch_twin=lambda: nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True),
    ),
    Case(
        "MaxPool2d-dilation",
        lambda: L.MaxPool(2, stride=1, dilation=2),
        (-1, 2, 5, 5),
        torch_twin=lambda: nn.MaxPool2d(2, stride=1, dilation=2),
    ),
    Case(
        "MaxPool3d",
        lambda: L.MaxPool((2, 2, 2)),
        (-1, 2, 4, 4, 4),
        torch_twin=lambda: nn.MaxPool3d(2),
    ),
    Case(
        "MaxPool2d-indices",
        lambda: L.MaxPool(2, return_indices=True),
        (-1, 2, 4, 4),
        notes="output (y, indices): the VJP takes (dy, dindices) and ignores dindices",
    ),
    Case(
        "AvgPool1d",
        lambda: L.AvgPool((3,), stride=2, padding=1, count_include_pad=False),
        (-1, 2, 7),
        torch_twin=lambda: nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False),
    ),
    Case(
        "AvgPool2d-ceil",
        lambda: L.AvgPool(3, stride=2, padding=1, ceil_mode=True, divisor_override=4),
        (-1, 2, 6, 6),
        torch_twin=lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, divisor_override=4),
    ),
    Case(
        "AvgPool3d",
        lambda: L.AvgPool((2, 2, 2), ceil_mode=True),
        (-1, 1, 3, 4, 3),
        torch_twin=lambda: nn.AvgPool3d(2, ceil_mode=True),
    ),
    Case(
        "AdaptiveAvgPool1d",
        lambda: L.AdaptiveAvgPool((3,)),
        (-1, 2, 7),
        torch_twin=lambda: nn.AdaptiveAvgPool1d(3),
    ),
    Case(
        "AdaptiveAvgPool2d-global",
        lambda: L.AdaptiveAvgPool(1),
        (-1, 3, 4, 5),
        torch_twin=lambda: nn.AdaptiveAvgPool2d(1),
    ),
    Case(
        "AdaptiveAvgPool3d",
        lambda: L.AdaptiveAvgPool((2, None, 3)),
        (-1, 1, 5, 2, 4),
        torch_twin=lambda: nn.AdaptiveAvgPool3d((2, None, 3)),
    ),
    Case(
        "Upsample-nearest",
        lambda: L.Upsample(scale_factor=2),
        (-1, 2, 3, 3),
        torch_twin=lambda: nn.Upsample(scale_factor=2),
    ),
    Case(
        "Upsample-bilinear",
        lambda: L.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
        (-1, 2, 3, 4),
        torch_twin=lambda: nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
    ),
    Case(
        "Upsample-trilinear",
        lambda: L.Upsample(scale_factor=1.5, mode="trilinear"),
        (-1, 1, 2, 3, 2),
        torch_twin=lambda: nn.Upsample(scale_factor=1.5, mode="trilinear"),
    ),
    Case(
        "Pad-constant",
        lambda: L.Pad((1, 2, 0, 1), value=0.5),
        (-1, 2, 3, 3),
        torch_twin=lambda: nn.ConstantPad2d((1, 2, 0, 1), 0.5),
    ),
    Case(
        "Pad-reflect",
        lambda: L.Pad((2, 1), mode="reflect"),
        (-1, 2, 4),
        torch_twin=lambda: nn.ReflectionPad1d((2, 1)),
    ),
    Case(
        "Pad-replicate",
        lambda: L.Pad((1, 0, 1, 1, 0, 2), mode="replicate"),
        (-1, 1, 2, 2, 3),
        torch_twin=lambda: nn.ReplicationPad3d((1, 0, 1, 1, 0, 2)),
    ),
    Case(
        "Pad-circular",
        lambda: L.Pad((1, 2, 2, 1), mode="circular"),
        (-1, 2, 3, 4),
        torch_twin=lambda: nn.CircularPad2d((1, 2, 2, 1)),
    ),
]
