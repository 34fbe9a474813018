"""Figures of the phase-diagram experiment (Luo et al., *Phase diagram for two-layer ReLU nets*, Figs. 3-5)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lazyrich.plots.figures import _new_figure
from lazyrich.plots.rebalance import read_tables

__all__ = ["fig_phase_diagram", "fig_phase_rd"]


def fig_phase_diagram(source) -> Figure:
    """S_w over (gamma, gamma') as a colour map (Luo et al. Fig. 4), with the theoretical boundary (gamma = 1
    for gamma' <= 0, gamma' = gamma - 1 for gamma' > 0; Luo et al. eq. (16)) and the interpolated zero
    crossings of S_w (stars)."""
    from lazyrich.experiments.phase_diagram import zero_crossings

    df = read_tables(source)
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
    if isinstance(source, pd.DataFrame):
        rd = source
    else:
        paths = sorted(Path(source).rglob("rd.csv"))
        if not paths:
            raise FileNotFoundError(f"no rd.csv under {source}; run `lazyrich run phase-diagram` into it first.")
        rd = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
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
