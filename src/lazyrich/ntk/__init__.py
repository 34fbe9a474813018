"""The eNTK engine: per-layer structured rules with an autograd fallback, kernel distance,
linearization, closed-form lazy (linearized) predictions."""

from .distance import kernel_distance
from .lazy_predict import LazyPrediction, lazy_predict
from .engine import available_memory, empirical_ntk, trainable_parameters
from .linearize import LinearizedModel, linearize
from .methods import NTKMethod
from .rules import Rule, get_rule, register_rule, registered_types

__all__ = [
    "empirical_ntk",
    "kernel_distance",
    "lazy_predict",
    "LazyPrediction",
    "linearize",
    "LinearizedModel",
    "NTKMethod",
    "Rule",
    "register_rule",
    "get_rule",
    "registered_types",
    "available_memory",
    "trainable_parameters",
]
