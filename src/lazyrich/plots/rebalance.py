"""Figures of the rebalancing experiments (Kunin et al., *Get rich quick*, Fig. 5a)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import pandas as pd
from matplotlib.figure import Figure

from lazyrich.plots.figures import _new_figure

__all__ = ["fig_lenet_rebalance", "read_tables"]


def read_tables(source: Union[str, Path, pd.DataFrame]) -> pd.DataFrame:
    """A DataFrame as is; the ``results.csv`` of a run directory or the aggregated one of a sweep directory;
    else every ``results.csv`` under the directory, concatenated."""
    if isinstance(source, pd.DataFrame):
        return source
    if (Path(source) / "results.csv").is_file():
        return pd.read_csv(Path(source) / "results.csv")
    paths = sorted(Path(source).rglob("results.csv"))
    if not paths:
        raise FileNotFoundError(f"no results.csv under {source}; run `lazyrich run lenet-rebalance` into it first.")
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def fig_lenet_rebalance(source) -> Figure:
    """Fig. 5a: kernel distance S(0, t), Hamming distance and parameter distance vs step, one line per alpha
    (mean over seeds; log-scaled step axis, step 0 omitted)."""
    df = read_tables(source)
    need = {"alpha", "seed", "step", "kernel_distance", "hamming", "param_distance"}
    if not need <= set(df.columns):
        raise ValueError(f"the table lacks columns {sorted(need - set(df.columns))}; pass a lenet-rebalance results table.")
    mean = df[df.step > 0].groupby(["alpha", "step"], as_index=False)[sorted(need - {"alpha", "seed", "step"})].mean()
    fig, axes = _new_figure(3, width=4.2)
    for ax, col, title in zip(axes, ("kernel_distance", "hamming", "param_distance"),
                              ("kernel distance S(0, t)", "Hamming distance", "parameter distance")):
        for alpha, g in mean.groupby("alpha"):
            ax.plot(g.step, g[col], marker=".", label=f"alpha={alpha:g}")
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    return fig
