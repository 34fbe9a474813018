"""One sweep cell: its run directory, its completion marker and the function a worker runs for it.

A cell is the run directory ``SWEEP_DIR/cells/<hash>/`` of one fully resolved config, written by the
experiment's own ``run(config, cell_dir)``.  After ``run`` returns, :func:`run_cell` writes ``done.json``
(with ``os.replace``, so it appears whole or not at all) holding the SHA-256 of the results file.  A cell
counts as finished only when ``done.json`` is readable and the results file still has that checksum
(:func:`is_finished`); anything else -- killed mid-write, results changed afterwards -- is redone: the
unverified results file is moved aside to ``<results>.incomplete`` first, so it is never aggregated nor
trusted by the experiment's own resume logic.  A cell whose ``run`` raised gets ``error.txt`` (the
traceback) and no ``done.json``; the next sweep run retries it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import inspect
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["DONE", "ERROR", "is_finished", "prepare", "run_cell", "limit_threads"]

DONE = "done.json"
ERROR = "error.txt"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_done(cell_dir: Path) -> Optional[Dict[str, Any]]:
    """The parsed ``done.json`` of a cell, or None when missing or unreadable."""
    try:
        with open(Path(cell_dir) / DONE) as fh:
            d = json.load(fh)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def is_finished(cell_dir: Path, results_file: str) -> bool:
    """True when ``done.json`` exists and the results file it names has the checksum it records."""
    d = read_done(cell_dir)
    if d is None or d.get("results_file") != results_file:
        return False
    path = Path(cell_dir) / results_file
    try:
        return path.is_file() and file_sha256(path) == d.get("sha256")
    except OSError:
        return False


def prepare(cell_dir: Path, results_file: str) -> None:
    """Make an unfinished cell ready to be (re)run: drop a stale ``done.json`` and ``error.txt`` and move an
    unverified results file aside to ``<results>.incomplete`` (nothing verified is touched)."""
    cell_dir = Path(cell_dir)
    if is_finished(cell_dir, results_file):
        return
    for name in (DONE, ERROR):
        try:
            os.unlink(cell_dir / name)
        except FileNotFoundError:
            pass
    res = cell_dir / results_file
    if res.exists():
        os.replace(res, cell_dir / (results_file + ".incomplete"))


def _write_json(path: Path, obj: Any) -> None:
    from lazyrich.dynamics.store import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def limit_threads(threads: Optional[int]) -> None:
    """Limit this process to ``threads`` intra-op threads (OMP/MKL environment and ``torch.set_num_threads``)."""
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(int(threads))


def exit_with_parent(poll_s: float = 0.2) -> None:
    """Start a daemon thread that ends this worker process at once when its parent dies (e.g. the sweep was
    killed with ``kill -9``), so no orphaned cell keeps writing into the sweep directory."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="lazyrich-parent-watch", daemon=True).start()


def _experiment(name: str, module: str):
    from lazyrich.experiments import registry

    try:
        return registry.get(name)
    except ValueError:
        mod = importlib.import_module(module)
        exp = getattr(mod, "EXPERIMENT", None)
        if exp is not None and getattr(exp, "name", None) == name:
            registry.register(exp)
        return registry.get(name)


def run_cell(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one cell in this process; return ``{"hash", "ok", "error", "seconds", "rows"}``.

    ``spec``: ``experiment`` and ``module`` (where its ``EXPERIMENT`` is declared, imported when the
    registry of this process does not know it), ``config`` (dict of the resolved config), ``cell_dir``,
    ``hash``, ``results_file``, ``threads``, ``run_kwargs`` (passed to ``run`` when its signature takes
    them) and ``sys_path`` (entries added to ``sys.path`` first, for experiments defined outside lazyrich).
    An exception in ``run`` is caught: its traceback goes to ``error.txt`` and ``ok`` is False.
    """
    t0 = time.perf_counter()
    cell_dir = Path(spec["cell_dir"])
    out = {"hash": spec["hash"], "ok": False, "error": None, "seconds": 0.0, "rows": None}
    try:
        for p in reversed(spec.get("sys_path") or []):
            if p not in sys.path:
                sys.path.insert(0, p)
        limit_threads(spec.get("threads"))
        from lazyrich.experiments.protocol import config_from_dict

        exp = _experiment(spec["experiment"], spec["module"])
        config = config_from_dict(exp.config_class, spec["config"])
        results_file = spec["results_file"]
        prepare(cell_dir, results_file)
        params = inspect.signature(exp.run).parameters
        kwargs = {k: v for k, v in (spec.get("run_kwargs") or {}).items()
                  if k in params or any(p.kind is p.VAR_KEYWORD for p in params.values())}
        if "threads" in params and spec.get("threads"):
            kwargs.setdefault("threads", spec["threads"])
        path = Path(exp.run(config, cell_dir, **kwargs) or cell_dir)
        if path.resolve() != cell_dir.resolve():
            raise RuntimeError(f"the experiment wrote into {path} instead of its cell directory {cell_dir}.")
        res = cell_dir / results_file
        if not res.is_file():
            raise FileNotFoundError(f"the experiment finished without writing {results_file} in {cell_dir}.")
        with open(res, "rb") as fh:
            rows = max(0, fh.read().count(b"\n") - 1) if results_file.endswith(".csv") else None
        out["seconds"] = time.perf_counter() - t0
        _write_json(cell_dir / DONE, {
            "hash": spec["hash"], "results_file": results_file, "sha256": file_sha256(res), "rows": rows,
            "seconds": round(out["seconds"], 3),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        out.update(ok=True, rows=rows)
    except BaseException as exc:  # noqa: B902 - a cell's failure is recorded, never raised
        if isinstance(exc, KeyboardInterrupt):
            raise
        out["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        out["seconds"] = time.perf_counter() - t0
        try:
            from lazyrich.dynamics.store import atomic_write_bytes

            atomic_write_bytes(cell_dir / ERROR, traceback.format_exc().encode())
        except OSError:
            pass
    return out
