"""Figures of the phase-diagram experiment (Luo et al., *Phase diagram for two-layer ReLU nets*, Figs. 3-5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lazyrich.plots.figures import _new_figure
from lazyrich.plots.tables import read_table

__all__ = ["fig_phase_diagram", "fig_phase_rd", "fig_condensation", "read_condensation"]


def fig_phase_diagram(source) -> Figure:
    """S_w over (gamma, gamma') as a colour map (Luo et al. Fig. 4), with the theoretical boundary (gamma = 1
    for gamma' <= 0, gamma' = gamma - 1 for gamma' > 0; Luo et al. eq. (16)) and the interpolated zero
    crossings of S_w (stars)."""
    from lazyrich.experiments.phase_diagram import zero_crossings

    df = read_table(source, experiment="phase-diagram")
    need = {"gamma", "gamma_prime", "S_w"}
    if not need <= set(df.columns):
        raise ValueError(f"the table lacks columns {sorted(need - set(df.columns))}; pass a phase-diagram results table.")
    mean = df.groupby(["gamma", "gamma_prime"], as_index=False)["S_w"].mean()
    fig, (ax,) = _new_figure(1)
    lim = max(float(np.nanmax(np.abs(mean.S_w))), 1e-12)
    sc = ax.scatter(mean.gamma, mean.gamma_prime, c=mean.S_w, cmap="coolwarm", vmin=-lim, vmax=lim, s=160,
                    marker="s", label="S_w")
    fig.colorbar(sc, ax=ax, label="S_w")
    g0, g1 = float(mean.gamma.min()), float(mean.gamma.max())
    p0, p1 = float(mean.gamma_prime.min()), float(mean.gamma_prime.max())
    gp = np.linspace(min(p0, 0.0), max(p1, 0.0), 101)
    ax.plot(1.0 + np.maximum(gp, 0.0), gp, "k-", label="boundary gamma = 1 + max(gamma', 0)")
    z = zero_crossings(mean)
    ax.plot(z.gamma_zero, z.gamma_prime, "k*", markersize=12, linestyle="none", label="zero crossing of S_w")
    ax.set_xlim(min(g0, 1.0) - 0.15, max(g1, 1.0 + max(p1, 0.0)) + 0.15)
    ax.set_xlabel("gamma")
    ax.set_ylabel("gamma'")
    ax.set_title("phase diagram: S_w (slope of log RD_w vs log m)")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def fig_phase_rd(source: Union[str, Path, pd.DataFrame]) -> Figure:
    """Log-log RD_w vs width m, one line per (gamma, gamma') cell, mean over seeds (Luo et al. Fig. 3), from
    the cells' ``rd.csv`` (or a DataFrame with columns gamma, gamma_prime, m, rd_w)."""
    rd = read_table(source, "rd.csv", "phase-diagram")
    need = {"gamma", "gamma_prime", "m", "rd_w"}
    if not need <= set(rd.columns):
        raise ValueError(f"the table lacks columns {sorted(need - set(rd.columns))}; pass phase-diagram rd.csv rows.")
    mean = rd.groupby(["gamma", "gamma_prime", "m"], as_index=False)["rd_w"].mean()
    fig, (ax,) = _new_figure(1)
    for (g, gp), c in mean.groupby(["gamma", "gamma_prime"]):
        c = c.sort_values("m")
        ax.plot(c.m, c.rd_w, marker="o", label=f"gamma={g:g}, gamma'={gp:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width m")
    ax.set_ylabel("RD_w = |w* - w0| / |w0|")
    ax.set_title("relative distance of the input weights vs width")
    ax.legend(fontsize=7)
    return fig


def read_condensation(source: Union[str, Path]) -> List[Dict]:
    """The condensation features saved by a phase-diagram run (``widths/m<m>.npz``, seed 0) of a run directory
    or of every cell of a sweep directory: one dict per (cell, width) with ``gamma``, ``gamma_prime``,
    ``beta_shift``, ``problem`` (from the cell's ``config.json``), ``m`` and the arrays ``A_init``, ``orient_init``,
    ``A_final``, ``orient_final``; sorted by (gamma', gamma, beta_shift, m)."""
    root = Path(source)
    files = sorted(root.glob("widths/m*.npz")) or sorted(root.glob("cells/*/widths/m*.npz"))
    if not files:
        raise FileNotFoundError(f"no widths/m*.npz under {source}; run `lazyrich run phase-diagram` into it first.")
    out, configs = [], {}
    for f in files:
        cell = f.parent.parent
        if cell not in configs:  # one config.json per cell, read once for all its widths
            if not (cell / "config.json").is_file():
                raise FileNotFoundError(f"{cell / 'config.json'} is missing, so the cell of {f} is unknown; "
                                        "rerun that cell.")
            configs[cell] = json.loads((cell / "config.json").read_text())
        cfg = configs[cell]
        with np.load(f) as z:
            arrays = {k: np.asarray(z[k], dtype=np.float64) for k in ("A_init", "orient_init", "A_final", "orient_final")}
        out.append({"gamma": float(cfg["gamma"]), "gamma_prime": float(cfg["gamma_prime"]),
                    "beta_shift": float(cfg.get("beta_shift", 0.0)),
                    "problem": cfg.get("problem", "fourpoint-1d"), "m": int(f.stem[1:]), **arrays})
    return sorted(out, key=lambda r: (r["gamma_prime"], r["gamma"], r["beta_shift"], r["m"]))


def fig_condensation(source: Union[str, Path], max_cells: int = 6) -> Figure:
    """Condensation maps (Luo et al. Figs. 2, 6, 7): every neuron k of seed 0 as a point (orientation, A_k),
    ``A_k = |a_k| ||w_k||`` divided by its largest value at that width, at initialization (grey) and at the end
    of training (colour, one per width m), one panel per cell (gamma, gamma' and, where not 0, the exponent
    shift s; the first ``max_cells``).
    Orientation: the angle of ``w_hat_k`` (input weight with bias, 1-d problem, Fig. 2/6), or ``w_hat_k . p``
    with ``p = 1/sqrt(D)`` in high dimension (Fig. 7).  In the linear regime the final points stay on the
    initial cloud; in the condensed regime they gather at a few orientations."""
    rows = read_condensation(source)
    key = lambda r: (r["gamma"], r["gamma_prime"], r["beta_shift"])  # noqa: E731
    cells = list(dict.fromkeys(key(r) for r in rows))[:max_cells]
    fig, axes = _new_figure(len(cells), width=4.0)
    for ax, cell in zip(axes, cells):
        mine = [r for r in rows if key(r) == cell]
        for i, r in enumerate(mine):
            scale0 = np.nanmax(r["A_init"]) or 1.0
            scale1 = np.nanmax(r["A_final"]) or 1.0
            if i == len(mine) - 1:  # the initial cloud of the largest width only, behind
                ax.scatter(r["orient_init"], r["A_init"] / scale0, s=3, color="0.75", label=f"init, m={r['m']}",
                           zorder=1)
            ax.scatter(r["orient_final"], r["A_final"] / scale1, s=6, label=f"final, m={r['m']}", zorder=2)
        one_d = mine[0]["problem"] == "fourpoint-1d"
        ax.set_xlabel("angle of w_hat_k (rad)" if one_d else "w_hat_k . p,  p = 1/sqrt(D)")
        ax.set_ylabel("A_k / max_k A_k")
        ax.set_title(f"gamma={cell[0]:g}, gamma'={cell[1]:g}" + (f", s={cell[2]:g}" if cell[2] else ""))
        ax.legend(fontsize=6, markerscale=2, loc="upper left")
    return fig
