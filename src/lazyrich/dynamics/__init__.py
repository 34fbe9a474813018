"""lazyrich.dynamics: record, store and analyse training runs.

* :class:`Tracker` records the eNTK on a probe set, losses, parameter distances, RD (Luo et al. eq. 16),
  Hamming distances of activation patterns and conserved quantities (Kunin et al.) at scheduled steps;
* :func:`train` is a deterministic, resumable training loop;
* :class:`RunStore` is the on-disk run directory; :func:`load_run` opens one for the cone-effect analyses
  (Zhou et al. eqs. (4), (5)).
"""

from .analysis import Run, load_run, streaming_gram
from .regime import Regime, classify_regime, regime_table
from .batched import BatchedResult, batched_top_eigenvalue, train_two_layer_batched
from .store import RunStore, RunStoreError, environment_record
from .tracker import ActivationRecorder, Schedule, Tracker, compute_loss, parse_schedule
from .train import data_order_seed, lr_factor, train

__all__ = [
    "classify_regime",
    "regime_table",
    "Regime",
    "train_two_layer_batched",
    "batched_top_eigenvalue",
    "BatchedResult",
    "RunStore",
    "RunStoreError",
    "Tracker",
    "train",
    "load_run",
    "Run",
    "Schedule",
    "parse_schedule",
    "ActivationRecorder",
    "compute_loss",
    "streaming_gram",
    "environment_record",
    "data_order_seed",
    "lr_factor",
]
