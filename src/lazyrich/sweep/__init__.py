"""lazyrich.sweep: grids of an experiment's configs, run on a local process pool or a Ray cluster.

* :func:`run_sweep` -- run or resume a sweep into one directory (cells keyed by config hash, ``done.json``
  markers, ``results.csv`` aggregated, ``failures.csv``); :func:`plan_sweep` resolves one without running.
* :func:`mean_ci` -- mean and 95 % t-interval over seeds of an aggregated table.
* :mod:`lazyrich.sweep.grid`, :mod:`~lazyrich.sweep.cells`, :mod:`~lazyrich.sweep.executors`,
  :mod:`~lazyrich.sweep.aggregate`, :mod:`~lazyrich.sweep.runner` -- the parts.

Example::

    from lazyrich.sweep import run_sweep, mean_ci
    res = run_sweep("lenet-rebalance", "quick", ["steps=50"], grid={"alpha": [1.0, 10.0]}, seeds=2,
                    out="runs/lr-sweep", workers=2)
    mean_ci(res.table[res.table.step == 50], ["kernel_distance"], by=["alpha"])
"""

from lazyrich.sweep.aggregate import aggregate, mean_ci, read_results
from lazyrich.sweep.runner import SweepError, SweepPlan, SweepResult, is_sweep_dir, plan_sweep, run_sweep

__all__ = ["run_sweep", "plan_sweep", "SweepPlan", "SweepResult", "SweepError", "is_sweep_dir", "mean_ci",
           "aggregate", "read_results"]
