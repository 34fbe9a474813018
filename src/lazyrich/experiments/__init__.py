"""lazyrich.experiments: reproducible experiments built on :mod:`lazyrich.dynamics`.

* :mod:`lazyrich.experiments.cone` -- the cone-effect experiment (Zhou et al.), presets ``quick`` and ``paper``.
"""

from lazyrich.experiments.cone import ConeConfig, PRESETS, preset
from lazyrich.experiments.cone import run as run_cone

__all__ = ["ConeConfig", "PRESETS", "preset", "run_cone"]
