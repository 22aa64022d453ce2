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
from .attention import MultiHeadAttention
from .conv import Conv, ConvTranspose
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .fan import FanInConcat, FanInSum, FanOut
from .mlp import Mlp
from .norm import BatchNorm, GroupNorm, LayerNorm, RMSNorm
from .pool import AdaptiveAvgPool, AvgPool, MaxPool
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .resample import Pad, Upsample
from .reshape import Flatten, Reshape

__all__ = [
    "Dense",
    "Mlp",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AvgPool",
    "AdaptiveAvgPool",
    "Upsample",
    "Pad",
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
    # recurrent layers
    "RNN",
    "LSTM",
    "GRU",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    # sequence layers (attn branch)
    "Embedding",
    "MultiHeadAttention",
]
