"""Layer constructors (stax style): each call returns a `Layer(init, apply)`."""

from ..combinators import parallel, serial
from .activations import (
    Elu,
    Gelu,
    Identity,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
    elementwise,
)
from .attention import MultiHeadAttention
from .conv import Conv
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .fan import FanInConcat, FanInSum, FanOut
from .norm import BatchNorm, LayerNorm
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
    "Flatten",
    "Reshape",
    "Dropout",
    "FanOut",
    "FanInSum",
    "FanInConcat",
    "serial",
    "parallel",
    "elementwise",
    # sequence layers (attn branch)
    "Embedding",
    "MultiHeadAttention",
]
