"""The registry of experiments: ``names()``, ``get(name)``, ``register(experiment)``.

Built-in experiments are the modules in :data:`MODULES`; each declares ``EXPERIMENT =
lazyrich.experiments.protocol.Experiment(...)`` and is imported on first use of the registry (so
``lazyrich list`` stays cheap to start).  To add an experiment, write its module (see
:mod:`lazyrich.experiments.protocol`) and append its import path to :data:`MODULES`.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

from lazyrich.experiments.protocol import Experiment

__all__ = ["MODULES", "register", "get", "names"]

#: Import paths of the built-in experiment modules (each defines ``EXPERIMENT``).
MODULES: List[str] = ["lazyrich.experiments.cone", "lazyrich.experiments.lenet_rebalance",
                      "lazyrich.experiments.single_neuron",
                      "lazyrich.experiments.teacher_student",
                      "lazyrich.experiments.early_time",
                      "lazyrich.experiments.rhm",
                      "lazyrich.experiments.grokking", "lazyrich.experiments.filter_smoothness",
                      "lazyrich.experiments.phase_diagram"]


_REGISTRY: Dict[str, Experiment] = {}
_loaded = False


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` (replacing one of the same name); return it."""
    if not isinstance(experiment, Experiment):
        raise TypeError(f"register expects an Experiment, got {type(experiment).__name__}.")
    _REGISTRY[experiment.name] = experiment
    return experiment


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in MODULES:
            register(importlib.import_module(mod).EXPERIMENT)


def names() -> List[str]:
    """Names of every registered experiment, in registration order."""
    _load()
    return list(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment called ``name`` (ValueError naming the known ones otherwise)."""
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(_REGISTRY)} (see `lazyrich list`).")
    return _REGISTRY[name]
