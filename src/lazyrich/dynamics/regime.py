r"""A regime verdict for a recorded run: ``lazy``, ``rich``, ``delayed-rich`` or ``undetermined``.

Kunin et al., *Get rich quick*: "In the lazy regime ``S(0,t) ≈ 0``, while in the rich regime
``0 ≪ S(0,t) ≤ 1``" (Notation), and the *delayed rich* regime is "initially lazy ... but eventually the
direction ... must change in order to fit the problem, leading to a rich phase" (appendix, after Theorem 6;
single neuron: ``delta ≪ 0``).  The verdict reads the kernel distance to initialization ``S(0, t)`` and the
training loss ``L(t)`` at the recorded times, in this order:

1. **progress**: the loss must have fallen to at most ``max_loss_ratio`` (0.5) of its initial value, otherwise
   ``undetermined`` ("train longer": a run that has not fitted cannot be called lazy or rich);
2. **amount**: ``S_max = max_t S(0, t)``.  ``S_max <= s_lazy`` (0.02) → ``lazy``; ``S_max >= s_rich`` (0.1) →
   the kernel moved; in between → ``undetermined``;
3. **timing** (kernel moved): ``t_S`` = first time ``S`` reaches ``S_max / 2``, ``t_L`` = first time the loss
   has made half of its decrease ``L(0) - L(end)`` (both linearly interpolated between records).  With
   ``rho = t_S / t_L``: ``rho <= rich_max_delay`` (4) → ``rich`` (the kernel moves while the loss falls);
   ``rho >= delayed_min_delay`` (5) → ``delayed-rich`` (an initial lazy fit, the kernel moves much later);
   in between → ``undetermined``.

Calibration (exact solutions, :mod:`lazyrich.theory.single_neuron`, the Fig. 2 setup ``X^T X = I``,
``beta_* = (0, 1)``, ``beta_0 = (-1, 0)``, 81 times in ``[0, 20]``): ``S_max`` = 0.87, 0.71, 0.49, 0.20,
0.050, 0.012, 0.0015 and ``rho`` = 25, 6.6, 3.4, 2.5, 2.7, 2.4, 1.8 for ``delta`` = −4, −2, −1, 0, 1, 2, 4, so the
verdicts are delayed-rich, delayed-rich, rich, rich, undetermined, lazy, lazy -- the paper's
``delta ≪ 0`` delayed rich, ``delta = 0`` rich, ``delta ≫ 0`` lazy (``tests/test_regime.py``).

Also reported as evidence (not used by the thresholds): ``t_kernel_90`` (first time ``S`` reaches 90 % of
``S_max``: the end of the fast kernel phase), the final parameter distance and Hamming distance of the
activation patterns where recorded, and the **lazy-prediction gap**: the test loss of the run minus the test
loss of :func:`lazyrich.ntk.lazy_predict` (the linearized model with the initial eNTK) at the same time,
where a ``lazy_test_loss`` column is present -- the answer to "did the kernel's movement matter?".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd

__all__ = ["Regime", "THRESHOLDS", "classify_regime", "regime_table"]

#: Default thresholds (see the module docstring for their calibration).
THRESHOLDS: Dict[str, float] = {"s_lazy": 0.02, "s_rich": 0.1, "rich_max_delay": 4.0, "delayed_min_delay": 5.0,
                                "max_loss_ratio": 0.5}

_S_COLS = ("kernel_distance", "kernel_dist_init", "S", "S_exact")
_L_COLS = ("train_loss", "loss", "loss_exact")
_T_COLS = ("t", "time", "step")


@dataclass
class Regime:
    """Verdict and evidence of :func:`classify_regime`. ``str(regime)`` is the verdict."""

    verdict: str
    reason: str
    evidence: Dict[str, Any] = field(default_factory=dict)
    thresholds: Dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.verdict


def _first_crossing(t: np.ndarray, v: np.ndarray, level: float) -> float:
    """First time the piecewise-linear ``v(t)`` reaches ``level`` (``v[0] < level``); inf if never."""
    idx = np.nonzero(v >= level)[0]
    if len(idx) == 0:
        return math.inf
    i = int(idx[0])
    if i == 0:
        return float(t[0])
    t0, t1, v0, v1 = t[i - 1], t[i], v[i - 1], v[i]
    return float(t0 + (t1 - t0) * (level - v0) / (v1 - v0)) if v1 != v0 else float(t1)


def _pick(df: pd.DataFrame, names, what: str, fix: str) -> str:
    for n in names:
        if n in df.columns and df[n].notna().any():
            return n
    raise ValueError(f"the run has no {what} (a column {' or '.join(names)}); {fix}")


def _table_of(run) -> pd.DataFrame:
    if isinstance(run, pd.DataFrame):
        return run
    if isinstance(run, (str, Path)):
        path = Path(run)
        if not path.is_dir():
            raise FileNotFoundError(f"run directory '{path}' does not exist; pass a directory written by `lazyrich run`.")
        if (path / "results.csv").exists():
            return pd.read_csv(path / "results.csv")
        if (path / "metrics.csv").exists():
            return pd.read_csv(path / "metrics.csv")
        raise ValueError(f"{path} has neither results.csv nor metrics.csv; record the run with a Tracker "
                         "(kernel_dist_init and train_loss at several steps) or `lazyrich run`.")
    metrics = getattr(run, "metrics", None)
    if isinstance(metrics, pd.DataFrame):
        return metrics
    raise TypeError(f"classify_regime expects a run directory, a loaded Run or a DataFrame, got {type(run).__name__}.")


def classify_regime(run, **thresholds: float) -> Regime:
    """Verdict ``lazy`` / ``rich`` / ``delayed-rich`` / ``undetermined`` for one run, with its evidence.

    Parameters
    ----------
    run : run directory, loaded :class:`lazyrich.dynamics.Run`, or DataFrame
        One trajectory: a time column (``t``, ``time`` or ``step``), the kernel distance to initialization
        (``kernel_distance``, the tracker's ``kernel_dist_init``, ``S`` or ``S_exact``) and the training loss
        (``train_loss``, ``loss`` or ``loss_exact``) at **at least three** recorded times, the first at
        initialization. Optional: ``hamming``, ``param_distance`` / ``param_dist``, ``test_loss`` with
        ``lazy_test_loss``. A table of several runs (e.g. a whole sweep) goes through :func:`regime_table`.
    **thresholds
        Overrides of :data:`THRESHOLDS` (``s_lazy``, ``s_rich``, ``rich_max_delay``, ``delayed_min_delay``,
        ``max_loss_ratio``).
    """
    bad = set(thresholds) - set(THRESHOLDS)
    if bad:
        raise ValueError(f"unknown thresholds {sorted(bad)}; valid: {', '.join(THRESHOLDS)}.")
    th = {**THRESHOLDS, **{k: float(v) for k, v in thresholds.items()}}
    if not (0 <= th["s_lazy"] < th["s_rich"] <= 1 and 0 < th["rich_max_delay"] <= th["delayed_min_delay"]):
        raise ValueError("thresholds must satisfy 0 <= s_lazy < s_rich <= 1 and 0 < rich_max_delay <= delayed_min_delay.")
    df = _table_of(run)
    fix = "record the kernel at several checkpoints (a Tracker with a kernel schedule, or the experiment's table)."
    s_col = _pick(df, _S_COLS, "kernel distance to initialization", fix)
    l_col = _pick(df, _L_COLS, "training loss", "record the training loss at the same checkpoints.")
    t_col = _pick(df, _T_COLS, "time or step column", "pass the recorded times or steps.")
    d = df[[c for c in df.columns]].dropna(subset=[s_col, l_col]).sort_values(t_col)
    if d[t_col].duplicated().any():
        raise ValueError(f"the table holds several rows per {t_col} (several runs?); pass one run's rows, or use "
                         "regime_table(df, by=[...]) to classify each run.")
    if len(d) < 3:
        raise ValueError(f"the run has only {len(d)} checkpoints with kernel distance and loss; a verdict needs at "
                         f"least 3 (initialization, during and after the loss drop): {fix}")
    t = d[t_col].to_numpy(np.float64)
    S = np.maximum(d[s_col].to_numpy(np.float64), 0.0)
    L = d[l_col].to_numpy(np.float64)
    if abs(S[0]) > 1e-6:
        raise ValueError(f"the first checkpoint (t={t[0]:g}) has kernel distance {S[0]:.3g} != 0, so it is not the "
                         "initialization; include the step-0 record.")
    L0, Lend = float(L[0]), float(L[-1])
    S_max = float(S.max())
    ev: Dict[str, Any] = {"S_max": S_max, "S_end": float(S[-1]), "loss_0": L0, "loss_end": Lend,
                          "loss_ratio": Lend / L0 if L0 > 0 else math.nan, "t_end": float(t[-1])}
    dec = L0 - Lend
    t_L = _first_crossing(t, L0 - L, 0.5 * dec) if dec > 0 else math.inf
    t_S = _first_crossing(t, S, 0.5 * S_max) if S_max > 0 else math.inf
    ev.update(t_loss_half=t_L, t_kernel_half=t_S,
              t_kernel_90=_first_crossing(t, S, 0.9 * S_max) if S_max > 0 else math.inf)
    ev["delay_ratio"] = t_S / t_L if (t_L > 0 and math.isfinite(t_L) and math.isfinite(t_S)) else math.nan
    for col, key in (("hamming", "hamming_end"), ("param_distance", "param_distance_end"),
                     ("param_dist", "param_distance_end")):
        if col in d.columns and d[col].notna().any():
            ev[key] = float(d[col].dropna().iloc[-1])
    if {"test_loss", "lazy_test_loss"} <= set(d.columns) and d["lazy_test_loss"].notna().any():
        last = d.dropna(subset=["test_loss", "lazy_test_loss"]).iloc[-1]
        ev["test_loss_end"] = float(last["test_loss"])
        ev["lazy_test_loss_end"] = float(last["lazy_test_loss"])
        ev["lazy_gap"] = float(last["test_loss"] - last["lazy_test_loss"])
    if not (L0 > 0) or Lend > th["max_loss_ratio"] * L0:
        return Regime("undetermined", f"the training loss fell only to {ev['loss_ratio']:.3g} of its initial value "
                      f"(needs <= {th['max_loss_ratio']:g}); train longer.", ev, th)
    if S_max <= th["s_lazy"]:
        return Regime("lazy", f"S(0,t) stayed <= {S_max:.3g} (<= s_lazy={th['s_lazy']:g}) while the loss fell.", ev, th)
    if S_max < th["s_rich"]:
        return Regime("undetermined", f"S_max={S_max:.3g} lies between s_lazy={th['s_lazy']:g} and "
                      f"s_rich={th['s_rich']:g}.", ev, th)
    rho = ev["delay_ratio"]
    if not math.isfinite(rho):
        return Regime("undetermined", "the timing of the kernel movement could not be measured.", ev, th)
    if rho <= th["rich_max_delay"]:
        return Regime("rich", f"S_max={S_max:.3g} >= s_rich and the kernel moved with the loss "
                      f"(t_S/t_L={rho:.3g} <= {th['rich_max_delay']:g}).", ev, th)
    if rho >= th["delayed_min_delay"]:
        return Regime("delayed-rich", f"S_max={S_max:.3g} >= s_rich but only after an initial fit "
                      f"(t_S/t_L={rho:.3g} >= {th['delayed_min_delay']:g}).", ev, th)
    return Regime("undetermined", f"the kernel moved (S_max={S_max:.3g}) with a delay t_S/t_L={rho:.3g} between "
                  f"{th['rich_max_delay']:g} and {th['delayed_min_delay']:g}.", ev, th)


def regime_table(df: pd.DataFrame, by, **thresholds: float) -> pd.DataFrame:
    """One verdict per group of ``df`` (e.g. ``by=["tau", "delta", "seed"]``): columns ``by``, ``regime``,
    ``reason`` and the numeric evidence."""
    by = [by] if isinstance(by, str) else list(by)
    missing = [b for b in by if b not in df.columns]
    if missing:
        raise ValueError(f"the table has no columns {missing}; pass by= with columns of the table.")
    rows = []
    for key, g in df.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        r = classify_regime(g.drop(columns=by), **thresholds)
        rows.append({**dict(zip(by, key)), "regime": r.verdict, "reason": r.reason,
                     **{k: v for k, v in r.evidence.items() if isinstance(v, (int, float))}})
    return pd.DataFrame(rows)
