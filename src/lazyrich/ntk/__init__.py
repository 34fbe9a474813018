"""The eNTK engine: per-layer structured rules with an autograd fallback, kernel distance,
linearization."""

from .distance import kernel_distance
from .engine import available_memory, empirical_ntk, trainable_parameters
from .linearize import LinearizedModel, linearize
from .methods import NTKMethod
from .rules import Rule, get_rule, register_rule, registered_types

__all__ = [
    "empirical_ntk",
    "kernel_distance",
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
