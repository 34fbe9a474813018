"""Overhead and parallel speedup of the local sweep executor (issue 14, "Speed").

Run::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/sweep_overhead.py [--cells 16] [--work 1.5]

1. **Overhead**: a sweep of ``--cells`` trivial cells (no work) on 2 workers.  Overhead per cell =
   ``(wall x workers - sum of the cells' own work) / cells``: the worker-seconds spent on anything but the
   cells' work (pool start with one torch import per worker, pickling, run directory, config.json/env.json,
   done.json, aggregation), per cell.  Target < 1 s.
2. **Speedup**: 8 equal cells of ``--work`` seconds of single-threaded CPU work (a pure-Python loop,
   calibrated here) run one after another in this process (baseline, no sweep machinery) versus a 2-worker
   local sweep.  Target >= 1.7x.  The machine's own ceiling is printed beside it: the same work in one
   plain process versus two plain processes at once (no lazyrich), i.e. what 2 processes can gain right now.

The experiment used is defined in this file (registered at import, so the spawned workers find it).
Numbers depend on how busy the machine is: say so when reporting them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lazyrich.experiments import registry
from lazyrich.experiments.protocol import Experiment, Preset


@dataclass(frozen=True)
class BusyConfig:
    """Attributes
    ----------
    iters : int
        Iterations of the busy loop (0: a trivial cell).
    seed : int
        Cell index (makes the configs distinct).
    """

    iters: int = 0
    seed: int = 0


def busy(iters: int) -> int:
    s = 0
    for i in range(iters):
        s += i * i % 7
    return s


def run(config: BusyConfig, out_dir, *, progress: bool = False) -> Path:
    from lazyrich.dynamics import RunStore
    from lazyrich.dynamics.store import atomic_write_bytes

    store = RunStore(out_dir, {**asdict(config), "experiment": "sweep-bench"}, seed=config.seed)
    t = time.perf_counter()
    s = busy(config.iters)
    work = time.perf_counter() - t
    atomic_write_bytes(store.path / "results.csv", f"work_s,checksum\n{work!r},{s}\n".encode())
    return store.path


registry.register(Experiment(name="sweep-bench", description="busy-loop cells for the sweep benchmark",
                             config_class=BusyConfig, presets={"quick": Preset("trivial cells", BusyConfig)},
                             run=run))


def _sweep(out: Path, iters: int, cells: int, workers: int):
    from lazyrich.sweep import run_sweep

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    res = run_sweep("sweep-bench", "quick", [f"iters={iters}"], seeds=cells, out=out, workers=workers,
                    progress=False)
    wall = time.perf_counter() - t
    assert res.ok and len(res.table) == cells
    return wall, float(res.table.work_s.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=16, help="trivial cells of the overhead measurement")
    ap.add_argument("--work", type=float, default=1.5, help="seconds of CPU work per cell of the speedup measurement")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lazyrich-sweep-bench-"))
    try:
        print(f"cores available: {len(os.sched_getaffinity(0))}, load average: "
              f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        wall, own = _sweep(tmp / "trivial", 0, args.cells, 2)
        wall2c, _ = _sweep(tmp / "two", 0, 2, 2)
        print(f"overhead: {args.cells} trivial cells on 2 workers in {wall:.2f} s wall -> "
              f"{(wall * 2 - own) / args.cells:.3f} worker-s per cell all included (target < 1 s); "
              f"{wall / args.cells:.3f} s wall per cell")
        print(f"  of which fixed (a 2-cell sweep: pool start, one torch import per worker): {wall2c:.2f} s wall; "
              f"marginal per extra cell: {2 * (wall - wall2c) / (args.cells - 2):.3f} worker-s")

        t = time.perf_counter()
        busy(2_000_000)
        iters = int(2_000_000 * args.work / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(8):
            busy(iters)
        serial = time.perf_counter() - t
        code = f"s=0\nfor i in range({iters}): s += i * i % 7"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        one = time.perf_counter() - t
        t = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
        assert all(p.wait() == 0 for p in procs)
        two = time.perf_counter() - t
        print(f"machine ceiling: one plain process {one:.2f} s, two at once {two:.2f} s -> at most "
              f"{2 * one / two:.2f}x from 2 processes right now")
        wall2, own2 = _sweep(tmp / "busy", iters, 8, 2)
        print(f"speedup: 8 cells of {serial / 8:.2f} s work: one after another {serial:.2f} s, 2-worker sweep "
              f"{wall2:.2f} s -> {serial / wall2:.2f}x (target >= 1.7x); cells' own work in the sweep "
              f"{own2:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
