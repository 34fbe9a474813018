"""lazyrich.experiments: reproducible experiments built on :mod:`lazyrich.dynamics`.

* :mod:`lazyrich.experiments.protocol` -- what an experiment declares (:class:`Experiment`, :class:`Preset`) and
  the shared typed-config machinery (``key=value`` overrides, type checks, field help).
* :mod:`lazyrich.experiments.registry` -- ``names()``, ``get(name)``, ``register(experiment)``.
* :mod:`lazyrich.experiments.cone` -- the cone-effect experiment (Zhou et al.), presets ``quick`` and ``paper``.
"""

from lazyrich.experiments.cone import ConeConfig, PRESETS, preset
from lazyrich.experiments.cone import run as run_cone
from lazyrich.experiments.protocol import Experiment, Preset, apply_overrides, field_help
from lazyrich.experiments import registry

__all__ = ["ConeConfig", "PRESETS", "preset", "run_cone", "Experiment", "Preset", "apply_overrides", "field_help",
           "registry"]
