"""Layer constructors (stax style): each call returns a `Layer(init, apply)`."""

from ..combinators import parallel, serial
from .activations import (
    Elu,
    Gelu,
    Glu,
    Hardtanh,
    Identity,
    LeakyRelu,
    LogSoftmax,
    Mish,
    Prelu,
    Relu,
    Relu6,
    Sigmoid,
    Silu,
    Softmax,
    Softplus,
    Tanh,
    elementwise,
)
from .conv import Conv
from .dense import Dense
from .dropout import Dropout
from .fan import FanInConcat, FanInSum, FanOut
from .norm import BatchNorm, GroupNorm, LayerNorm, RMSNorm
from .pool import AvgPool, MaxPool
from .reshape import Flatten, Reshape

__all__ = [
    "Dense",
    "Conv",
    "MaxPool",
    "AvgPool",
    "LayerNorm",
    "BatchNorm",
    "Relu",
    "LeakyRelu",
    "Tanh",
    "Sigmoid",
    "Elu",
    "Gelu",
    "Softplus",
    "Softmax",
    "LogSoftmax",
    "Identity",
    "Silu",
    "Mish",
    "Hardtanh",
    "Relu6",
    "Prelu",
    "Glu",
    "RMSNorm",
    "GroupNorm",
    "Flatten",
    "Reshape",
    "Dropout",
    "FanOut",
    "FanInSum",
    "FanInConcat",
    "serial",
    "parallel",
    "elementwise",
]
