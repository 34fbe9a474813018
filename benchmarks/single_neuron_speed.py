"""Closed-form single-neuron gradient flow vs scipy solve_ivp (Kunin et al., single-neuron model).

For random whitened problems (delta spread over [-10, 10], eta_a != eta_w, either sign
of a0) both methods evaluate a(t), w(t) on a dense time grid.  Accuracy is measured
against a very tight reference (DOP853 at rtol = 2.3e-14, solve_ivp's floor, atol = 1e-18);
the error reported is max over inits and times of |x - x_ref| / max_t |x_ref| for x in
(a, w).  Times are best-of-`--repeats` wall clock for the whole batch, measured in the
same run.  The script prints a Markdown block for benchmarks/RESULTS.md.

Usage:
    python benchmarks/single_neuron_speed.py [--n-inits 40] [--n-times 1000] [--t-max 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import scipy
from scipy.integrate import solve_ivp

from lazyrich.theory.single_neuron import solve


def make_problems(rng: np.random.Generator, n_inits: int, n: int = 5, d: int = 3) -> list[dict]:
    probs = []
    for _ in range(n_inits):
        s = rng.uniform(0.5, 2.0)
        Q, _ = np.linalg.qr(rng.normal(size=(n, d)))
        X = Q * np.sqrt(s)
        y = rng.normal(size=n)
        ea, ew = np.exp(rng.uniform(np.log(0.25), np.log(4.0), size=2))
        delta = rng.uniform(-10, 10)
        u = rng.normal(size=d)
        u /= np.linalg.norm(u)
        if delta >= 0:
            r = rng.uniform(0.1, 2.0)
            a0 = rng.choice([-1.0, 1.0]) * np.sqrt((delta + ea * r * r) / ew)
        else:
            a0 = rng.choice([-1.0, 1.0]) * rng.uniform(0.0, 2.0)
            r = np.sqrt((ew * a0 * a0 - delta) / ea)
        probs.append(dict(X=X, y=y, a0=a0, w0=r * u, eta_a=ea, eta_w=ew))
    return probs


def ode_solve(p: dict, t: np.ndarray, rtol: float, atol: float) -> tuple[np.ndarray, np.ndarray]:
    G = p["X"].T @ p["X"]
    c = p["X"].T @ p["y"]
    ea, ew = p["eta_a"], p["eta_w"]

    def rhs(_t, z):
        a, w = z[0], z[1:]
        g = a * (G @ w) - c
        return np.concatenate([[-ea * (w @ g)], -ew * a * g])

    sol = solve_ivp(rhs, (0.0, float(t[-1])), np.concatenate([[p["a0"]], p["w0"]]), method="DOP853",
                    t_eval=t, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(sol.message)
    return sol.y[0], sol.y[1:].T


def closed_form(p: dict, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tr = solve(p["X"], p["y"], p["a0"], p["w0"], p["eta_a"], p["eta_w"])
    return tr.state(t)


def max_err(results, refs) -> float:
    e = 0.0
    for (a, w), (ar, wr) in zip(results, refs):
        e = max(e, np.max(np.abs(a - ar)) / np.max(np.abs(ar)), np.max(np.abs(w - wr)) / np.max(np.abs(wr)))
    return float(e)


def timed(fn, repeats: int):
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-inits", type=int, default=40)
    ap.add_argument("--n-times", type=int, default=1000)
    ap.add_argument("--t-max", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    probs = make_problems(rng, args.n_inits)
    t = np.linspace(0.0, args.t_max, args.n_times)

    refs = [ode_solve(p, t, 2.3e-14, 1e-18) for p in probs]
    t_cf, res_cf = timed(lambda: [closed_form(p, t) for p in probs], args.repeats)
    err_cf = max_err(res_cf, refs)
    rows = [("closed form (lazyrich)", "-", err_cf, t_cf)]
    for rtol in (1e-6, 1e-8, 1e-10, 1e-12):
        t_o, res_o = timed(lambda: [ode_solve(p, t, rtol, 1e-14) for p in probs], max(1, args.repeats - 1))
        rows.append((f"solve_ivp DOP853", f"{rtol:.0e}", max_err(res_o, refs), t_o))

    # "equal accuracy": the loosest ODE rtol whose error is within 10x the closed form's
    # (if none reaches it, the tightest one, whose error is still larger than the closed form's)
    ode_rows = rows[1:]
    ok = [r for r in ode_rows if r[2] <= 10 * max(err_cf, 1e-300)]
    eq = ok[0] if ok else ode_rows[-1]

    cmd = "python benchmarks/single_neuron_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print("### Single-neuron closed form vs solve_ivp (`lazyrich.theory.single_neuron`)\n")
    print(f"Command: `{cmd.strip()}`  ")
    print(f"Setup: {args.n_inits} random whitened problems (n=5, d=3, delta in [-10, 10], eta_a != eta_w), "
          f"{args.n_times} time points on [0, {args.t_max:g}]; reference DOP853 rtol=2.3e-14 atol=1e-18; "
          f"best of {args.repeats} runs.  ")
    print(f"Machine: {platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}\n")
    print("| method | rtol | max rel. error vs reference | time (s) | time / closed form |")
    print("|---|---|---|---|---|")
    for name, rtol, err, tm in rows:
        print(f"| {name} | {rtol} | {err:.2e} | {tm:.4f} | {tm / t_cf:.1f}x |")
    print()
    note = "" if ok else " (no ODE tolerance reached the closed form's accuracy; this is the tightest one)"
    print(f"Speed-up at equal accuracy: closed form is **{eq[3] / t_cf:.1f}x** faster than solve_ivp "
          f"at rtol={eq[1]} (error {eq[2]:.1e} vs {err_cf:.1e}){note}.")


if __name__ == "__main__":
    main()
