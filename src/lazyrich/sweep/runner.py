"""``run_sweep``: run (or resume) a grid of an experiment's configs into one sweep directory.

Layout::

    DIR/
      sweep.json          {"format": "lazyrich-sweep", experiment, preset, base config, grid, cells}
      cells/<hash>/       one run directory per cell (the experiment's own files, done.json, error.txt)
      results.csv         aggregated: grid keys (seed included), the results columns, cell
      failures.csv        grid keys, cell, error of every cell that failed in the latest run
      .lock               held (flock) while a sweep runs in DIR

A rerun with the same arguments skips finished cells (see :mod:`lazyrich.sweep.cells`); a directory holding a
sweep of another experiment, preset config or grid is refused, and nothing finished is deleted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import pandas as pd

from lazyrich.experiments.protocol import config_to_dict
from lazyrich.sweep import cells as _cells
from lazyrich.sweep.aggregate import aggregate
from lazyrich.sweep.executors import check_address, execute
from lazyrich.sweep.grid import build_grid, cells as grid_cells, config_hash

__all__ = ["run_sweep", "plan_sweep", "SweepPlan", "SweepResult", "SweepError", "is_sweep_dir", "FORMAT"]

FORMAT = "lazyrich-sweep"
FORMAT_VERSION = 1


class SweepError(RuntimeError):
    """A sweep directory that cannot be used for this sweep (another experiment or grid, locked, foreign)."""


@dataclass
class SweepPlan:
    """The resolved sweep: experiment, base config, ordered grid and the cells (params, config, hash)."""

    experiment: Any
    preset: str
    base: Any
    grid: Dict[str, tuple]
    cells: List[Dict[str, Any]]


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: the sweep directory, the aggregated table and the cell counts."""

    out: Path
    table: pd.DataFrame
    n_cells: int
    n_run: int
    n_skipped: int
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def ok(self) -> bool:
        """True when every cell is finished."""
        return len(self.failures) == 0


def is_sweep_dir(path) -> bool:
    """Whether ``path`` holds a ``sweep.json`` written by :func:`run_sweep`."""
    p = Path(path) / "sweep.json"
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def plan_sweep(experiment: str, preset: str = "quick", overrides: Sequence[str] = (),
               grid: Union[None, Mapping[str, Sequence[Any]], Sequence[str]] = None,
               seeds: Union[None, int, str, Sequence[int]] = None, *, use_preset_grid: bool = True) -> SweepPlan:
    """Resolve a sweep without running it (ValueError naming the fix for any bad input).

    The grid starts from the preset's own grid and seeds (``use_preset_grid``), minus the keys fixed by
    ``overrides``; ``grid`` axes replace or extend it and ``seeds`` sets the ``seed`` axis.
    """
    from lazyrich.experiments import registry

    exp = registry.get(experiment)
    if isinstance(overrides, str):
        overrides = [overrides]
    base = exp.config(preset, overrides)
    fixed = [o.partition("=")[0].strip() for o in overrides]
    p = exp.presets[preset]
    axes = build_grid(base, grid, seeds=seeds, preset_grid=p.grid if use_preset_grid else None,
                      preset_seeds=p.seeds if use_preset_grid else None, fixed=fixed, experiment=exp.name)
    if not axes:
        raise ValueError(f"the sweep has an empty grid; add --grid key=v1,v2 or --seeds N (preset {preset!r} "
                         f"of {exp.name} declares none), or use `lazyrich run` for one config.")
    cells = []
    for params, cfg in grid_cells(base, axes):
        h = config_hash(cfg, exp.name)
        cells.append({"params": params, "config": cfg, "hash": h})
    if len({c["hash"] for c in cells}) != len(cells):  # pragma: no cover - distinct values give distinct configs
        raise ValueError("two grid cells resolve to the same config; remove the duplicate grid values.")
    return SweepPlan(exp, preset, base, axes, cells)


def _manifest(plan: SweepPlan) -> Dict[str, Any]:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "experiment": plan.experiment.name,
        "preset": plan.preset, "results_file": plan.experiment.results_file,
        "base_config": config_to_dict(plan.base),
        "grid": {k: [list(v) if isinstance(v, tuple) else v for v in vals] for k, vals in plan.grid.items()},
        "cells": [{"hash": c["hash"], "params": {k: list(v) if isinstance(v, tuple) else v
                                               for k, v in c["params"].items()}} for c in plan.cells],
    }


def _check_or_write_manifest(out: Path, plan: SweepPlan) -> None:
    from lazyrich.dynamics.store import atomic_write_bytes

    man = json.loads(json.dumps(_manifest(plan)))
    path = out / "sweep.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise SweepError(f"{path} is unreadable; choose a new --out directory (nothing was changed).") from None
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            raise SweepError(f"{out} holds a sweep.json that is not a lazyrich sweep; choose a new --out directory.")
        if old.get("experiment") != man["experiment"]:
            raise SweepError(f"{out} holds a sweep of the {old.get('experiment')} experiment, not {man['experiment']}; "
                             "choose a new --out directory.")
        if old.get("grid") != man["grid"]:
            raise SweepError(f"{out} holds a sweep over another grid ({_grid_text(old.get('grid'))}); rerun with that "
                             "grid to resume it, or choose a new --out directory.")
        if old.get("base_config") != man["base_config"]:
            diff = sorted(k for k in set(old.get("base_config") or {}) | set(man["base_config"])
                          if (old.get("base_config") or {}).get(k) != man["base_config"].get(k))
            raise SweepError(f"{out} holds a sweep with another config (keys {diff} differ); rerun with the same "
                             "preset and key=value overrides to resume it, or choose a new --out directory.")
        return
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise SweepError(f"{out} is not empty and holds no sweep.json, so it is not a lazyrich sweep; "
                         "choose an empty or new --out directory.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(man, indent=2) + "\n").encode())


def _grid_text(grid: Any) -> str:
    if not isinstance(grid, dict):
        return "?"
    return " ".join(f"--grid {k}={','.join(map(str, v))}" for k, v in grid.items())


class _Lock:
    """An exclusive ``flock`` on ``DIR/.lock`` (released by the OS if the holder dies, even on ``kill -9``)."""

    def __init__(self, out: Path):
        self.path = out / ".lock"
        self.fh = None

    def __enter__(self):
        import fcntl

        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "?"
            self.fh.close()
            raise SweepError(f"{self.path.parent} is in use by another running sweep (pid {holder}); wait for it "
                             "to finish or choose another --out directory.") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the experiments extra
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="cell", file=sys.stderr, dynamic_ncols=True)


def run_sweep(experiment: str, preset: str = "quick", overrides: Sequence[str] = (),
              grid: Union[None, Mapping[str, Sequence[Any]], Sequence[str]] = None,
              seeds: Union[None, int, str, Sequence[int]] = None, *, out, executor: str = "local",
              workers: Optional[int] = None, address: Optional[str] = None, progress: bool = True,
              run_kwargs: Optional[Dict[str, Any]] = None, use_preset_grid: bool = True) -> SweepResult:
    """Run (or resume) a sweep of ``experiment`` into the directory ``out``; return a :class:`SweepResult`.

    Parameters
    ----------
    experiment, preset, overrides
        As in ``lazyrich run NAME --preset P key=value ...``: the base config of every cell.
    grid : list of ``"key=v1,v2"`` or dict ``key -> values``, optional
        Grid axes (values parsed and type-checked by the experiment's config); they replace the preset's
        axes of the same key.  The preset's own grid and seeds are used too unless ``use_preset_grid=False``
        (an override ``key=value`` removes that key's axis).
    seeds : int, ``"3,7,11"`` or list of int, optional
        A ``seed`` axis: ``N`` gives 0..N-1.
    out : str or Path
        The sweep directory (created; an existing one must hold the same sweep).
    executor : ``"local"`` or ``"ray"``; workers : int; address : str
        ``local``: that many processes (default one per core), each with its share of threads; ``ray``: Ray
        tasks on the cluster at ``address`` (default: a local one with ``num_cpus=workers``).
    progress : bool
        A tqdm bar on stderr: cells done / total, failures, elapsed, ETA.
    run_kwargs : dict, optional
        Extra keyword arguments of the experiment's ``run`` (e.g. ``device``), passed where accepted.

    Returns
    -------
    SweepResult
        ``table`` (also ``out/results.csv``) holds every finished cell; ``failures`` (also
        ``out/failures.csv``) the cells that failed, with their error (traceback in the cell's ``error.txt``).

    Raises
    ------
    ValueError
        Unknown experiment, preset, key or executor, a badly typed value, an empty grid.
    SweepError
        ``out`` holds another sweep, is not a sweep directory, or is in use.
    ConnectionError, ImportError
        Ray address unreachable; Ray not installed.
    """
    import multiprocessing

    from lazyrich.dynamics.store import atomic_write_bytes

    if multiprocessing.parent_process() is not None and multiprocessing.current_process().name.startswith(
            ("SpawnProcess", "ForkServerProcess")) and getattr(sys.modules.get("__mp_main__"), "__file__", None):
        raise RuntimeError("run_sweep was called again while a sweep worker imported your script; put the "
                           "sweep under `if __name__ == \"__main__\":` in that script.")
    if executor not in ("local", "ray"):
        raise ValueError(f"unknown executor {executor!r}; use --executor local or --executor ray.")
    if executor == "local" and address:
        raise ValueError("--address applies to the ray executor; drop it or pass --executor ray.")
    plan = plan_sweep(experiment, preset, overrides, grid, seeds, use_preset_grid=use_preset_grid)
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ImportError("the ray executor needs Ray; install it with pip install 'lazyrich[ray]' "
                              "or use --executor local.") from None
        if address:
            check_address(address)
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out} exists and is not a directory; choose another --out directory.")
    exp = plan.experiment
    results_file = exp.results_file
    _check_or_write_manifest(out, plan)
    with _Lock(out):
        for c in plan.cells:
            c["cell_dir"] = str(out / "cells" / c["hash"])
            c["finished"] = _cells.is_finished(Path(c["cell_dir"]), results_file)
        todo = [c for c in plan.cells if not c["finished"]]
        n_skipped = len(plan.cells) - len(todo)
        specs = [{"experiment": exp.name, "module": exp.run.__module__, "config": config_to_dict(c["config"]),
                  "cell_dir": c["cell_dir"], "hash": c["hash"], "results_file": results_file,
                  "run_kwargs": dict(run_kwargs or {}, progress=False), "sys_path": list(sys.path)}
                 for c in todo]
        by_hash = {c["hash"]: c for c in plan.cells}
        failed: List[Dict[str, Any]] = []
        bar = _progress(len(plan.cells), n_skipped, progress, f"sweep {exp.name}")
        t0 = time.perf_counter()
        try:
            for res in execute(specs, executor, workers, address):
                c = by_hash[res["hash"]]
                if res["ok"] and _cells.is_finished(Path(c["cell_dir"]), results_file):
                    c["finished"] = True
                else:
                    c["error"] = res.get("error") or "the cell did not finish"
                    failed.append(c)
                if bar is not None:
                    bar.set_postfix(failed=len(failed), refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        keys = list(plan.grid)
        table = aggregate(plan.cells, keys, results_file)
        atomic_write_bytes(out / "results.csv", table.to_csv(index=False).encode())
        fails = pd.DataFrame([{**{k: c["params"][k] for k in keys}, "cell": c["hash"], "error": c["error"]}
                              for c in failed], columns=[*keys, "cell", "error"])
        atomic_write_bytes(out / "failures.csv", fails.to_csv(index=False).encode())
    if progress:
        print(f"lazyrich: sweep {exp.name}: {len(plan.cells) - len(failed)}/{len(plan.cells)} cells finished "
              f"({len(todo) - len(failed)} run, {n_skipped} skipped, {len(failed)} failed) in "
              f"{time.perf_counter() - t0:.1f} s; table {out / 'results.csv'}", file=sys.stderr)
    return SweepResult(out=out, table=table, n_cells=len(plan.cells), n_run=len(todo), n_skipped=n_skipped,
                       failures=fails)
