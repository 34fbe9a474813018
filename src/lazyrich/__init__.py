"""lazyrich: measure, explain and reproduce the learning dynamics of neural networks.

Layers (data flows one way; a lower layer never imports a higher one):
``ntk`` -> ``theory`` -> ``models``/``data`` -> ``dynamics`` -> ``experiments`` ->
``plots``/``cli``/``sweep``.

The public API is re-exported here and imported lazily, so ``import lazyrich`` is cheap:

* eNTK engine: :func:`empirical_ntk`, :func:`kernel_distance`, :func:`linearize`,
  :class:`NTKMethod`, :func:`register_rule`;
* training dynamics: :class:`Tracker`, :func:`train`, :class:`RunStore`, :func:`load_run`;
* sub-packages: :mod:`theory`, :mod:`models`, :mod:`data`, :mod:`experiments`, :mod:`plots`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "empirical_ntk": "lazyrich.ntk",
    "kernel_distance": "lazyrich.ntk",
    "linearize": "lazyrich.ntk",
    "lazy_predict": "lazyrich.ntk",
    "LinearizedModel": "lazyrich.ntk",
    "NTKMethod": "lazyrich.ntk",
    "register_rule": "lazyrich.ntk",
    "Tracker": "lazyrich.dynamics",
    "train": "lazyrich.dynamics",
    "RunStore": "lazyrich.dynamics",
    "RunStoreError": "lazyrich.dynamics",
    "load_run": "lazyrich.dynamics",
    "Run": "lazyrich.dynamics",
    "classify_regime": "lazyrich.dynamics",
    "rebalance": "lazyrich.models",
    "layer_balance": "lazyrich.models",
}
_SUBMODULES = ("ntk", "theory", "models", "data", "dynamics", "experiments", "plots", "sweep")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"lazyrich.{name}")
    else:
        raise AttributeError(f"module 'lazyrich' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
