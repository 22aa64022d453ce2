"""Optimizers as `Optimizer(init, update)` pairs with explicit state, matching `torch.optim`
step for step; learning-rate schedules; gradient clipping and `chain`.

    opt = fnn.optim.adam(lr=1e-3)   # or sgd, adamw, rmsprop, adagrad, nadam, radam, adamax, adadelta
    state = opt.init(params)
    params, state = opt.update(params, grads, state)
"""

from .adadelta import adadelta
from .adagrad import adagrad
from .adam import adam, adamw
from .adamax import adamax
from .base import LearningRate, Mask, Optimizer, Schedule, Transform, flat_form
from .nadam import nadam
from .radam import radam
from .rmsprop import rmsprop
from .schedules import (
    constant,
    cosine_decay,
    cyclic,
    exponential_decay,
    join_schedules,
    linear_warmup,
    one_cycle,
    piecewise_constant,
    step_decay,
)
from .sgd import sgd
from .transforms import (
    add_decayed_weights,
    chain,
    clip_by_global_norm,
    clip_grad_norm,
    decay_mask,
    global_norm,
)

__all__ = [
    "Optimizer",
    "Transform",
    "flat_form",
    "Schedule",
    "LearningRate",
    "Mask",
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "adagrad",
    "nadam",
    "radam",
    "adamax",
    "adadelta",
    "constant",
    "step_decay",
    "exponential_decay",
    "cosine_decay",
    "linear_warmup",
    "piecewise_constant",
    "join_schedules",
    "one_cycle",
    "cyclic",
    "global_norm",
    "clip_grad_norm",
    "clip_by_global_norm",
    "add_decayed_weights",
    "decay_mask",
    "chain",
]
