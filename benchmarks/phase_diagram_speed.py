"""One phase-diagram point with all five paper widths, trained to convergence (issue 14, "Speed").

Usage::

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/phase_diagram_speed.py [--points 0.5,0 1.75,0]
        [--seeds 3] [--threads 2] [--baseline]

For each ``gamma,gamma'`` point: the 1-d four-point problem of Luo et al. Fig. 2, the ``paper`` preset's
settings (widths 1000, 5000, 10000, 20000, 40000, loss_tol 1e-8, float64, antisymmetric init), all seeds of
a width trained together (:func:`lazyrich.dynamics.train_two_layer_batched`, the step adapted to the
stability limit).  Prints per width the wall time, steps, flow time, worst final loss and whether every seed
converged, then the point's total against the 2-minute target and the fitted slope ``S_w`` (eq. (19)).

``--baseline``: the same point again with the seeds trained one after another (one call per seed and
width), the same numbers (checked): the gain of batching the seeds, measured in this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import torch

from lazyrich.experiments.phase_diagram import _paper, _train_width, problem_data
from lazyrich.theory.phase_diagram import slope_over_widths


def point(gamma: float, gamma_prime: float, seeds: int, one_by_one: bool = False):
    cfg = dataclasses.replace(_paper(), gamma=gamma, gamma_prime=gamma_prime, n_seeds=seeds)
    x, y = problem_data(cfg)
    rows, per = [], {}
    for m in cfg.widths:
        t0 = time.perf_counter()
        if one_by_one:
            parts = [_train_width(dataclasses.replace(cfg, seed=cfg.seed + s, n_seeds=1), m, x, y) for s in range(seeds)]
            out = {k: np.concatenate([p[k] for p in parts]) for k in ("rd_w", "loss", "steps", "flow_time", "converged")}
        else:
            out = _train_width(cfg, m, x, y)
        dt = time.perf_counter() - t0
        per[m] = out
        rows.append((m, dt, int(out["steps"].max()), float(out["flow_time"].max()), float(out["loss"].max()),
                     bool(out["converged"].all())))
    slopes = [slope_over_widths(list(cfg.widths), [per[m]["rd_w"][i] for m in cfg.widths]) for i in range(seeds)]
    return rows, per, float(np.mean(slopes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", nargs="+", default=["0.5,0", "1.75,0"], help="gamma,gamma' pairs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline", action="store_true", help="also train the seeds one after another")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}, {args.seeds} seeds per width")
    for p in args.points:
        g, gp = (float(v) for v in p.split(","))
        rows, per, s_w = point(g, gp, args.seeds)
        total = sum(r[1] for r in rows)
        print(f"\ngamma={g:g} gamma'={gp:g}: all widths {total:.1f} s (target <= 120 s), S_w = {s_w:+.3f}")
        print("  m       time (s)  steps   flow time   max loss    all converged")
        for m, dt, steps, ft, loss, conv in rows:
            print(f"  {m:<7d} {dt:8.2f}  {steps:6d}  {ft:10.3g}  {loss:10.2e}  {conv}")
        if args.baseline:
            brows, bper, _ = point(g, gp, args.seeds, one_by_one=True)
            btotal = sum(r[1] for r in brows)
            err = max(float(np.max(np.abs(per[m]["rd_w"] - bper[m]["rd_w"]) / np.abs(bper[m]["rd_w"]))) for m in per)
            print(f"  seeds one after another: {btotal:.1f} s -> batched is {btotal / total:.2f}x faster; "
                  f"max relative difference of RD_w {err:.1e}")


if __name__ == "__main__":
    main()
