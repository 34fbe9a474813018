"""Figures of the grokking experiment (Kunin et al., *Get rich quick*, supporting grokking figure):
heatmaps of the steps until 99 % train and 99 % validation accuracy over the (alpha, tau) grid, and the
accuracy curves of every cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lazyrich.plots.figures import _new_figure
from lazyrich.plots.tables import read_table

__all__ = ["fig_grokking_heatmaps", "fig_grokking_curves", "grokking_grid"]


def grokking_grid(results: pd.DataFrame, column: str = "steps_to_val") -> pd.DataFrame:
    """Mean of ``column`` over seeds per (alpha, tau) (rows alpha, columns tau), censored runs left out;
    a cell whose every seed is censored is NaN.  Also returns nothing else: the censored counts are
    ``results.groupby(["alpha", "tau"])["censored_val"].sum()``."""
    need = {"alpha", "tau", column}
    if not need <= set(results.columns):
        raise ValueError(f"the table lacks columns {sorted(need - set(results.columns))}; pass a grokking results table.")
    return results.pivot_table(index="alpha", columns="tau", values=column, aggfunc="mean", dropna=False)


def fig_grokking_heatmaps(source) -> Figure:
    """Steps until train accuracy >= threshold (left) and validation accuracy >= threshold (right) over
    (alpha, tau), mean over the seeds that reached it; cells annotated with the mean and, when some seeds
    were censored (never reached it within the budget), ``censored k/n``."""
    df = read_table(source, experiment="grokking")
    fig, axes = _new_figure(2, width=4.6)
    for ax, col, flag, title in zip(axes, ("steps_to_train", "steps_to_val"), ("censored_train", "censored_val"),
                                    ("steps until train acc. >= 99 %", "steps until val. acc. >= 99 % (grokked)")):
        grid = grokking_grid(df, col)
        cens = df.pivot_table(index="alpha", columns="tau", values=flag, aggfunc="sum").reindex_like(grid)
        count = df.pivot_table(index="alpha", columns="tau", values=flag, aggfunc="count").reindex_like(grid)
        vals = grid.to_numpy(dtype=float)
        im = ax.imshow(np.ma.masked_invalid(vals), origin="lower", cmap="viridis_r", aspect="auto")
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                text = "-" if np.isnan(vals[i, j]) else f"{vals[i, j]:.0f}"
                if cens.iat[i, j]:
                    text += f"\ncensored {int(cens.iat[i, j])}/{int(count.iat[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="k")
        ax.set_xticks(range(len(grid.columns)), [f"{t:g}" for t in grid.columns])
        ax.set_yticks(range(len(grid.index)), [f"{a:g}" for a in grid.index])
        ax.set_xlabel("tau (logit scale; lr / tau^2)")
        ax.set_ylabel("alpha (embeddings / alpha)")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, label="steps")
    return fig


def fig_grokking_curves(source) -> Figure:
    """Train (dashed) and validation (solid) accuracy against step for every (alpha, tau), seed 0 or the
    smallest seed present."""
    df = read_table(source, "curves.csv", "grokking")
    df = df[df.seed == df.seed.min()]
    fig, axes = _new_figure(1, width=6.0)
    ax = axes[0]
    cells = sorted(df.groupby(["alpha", "tau"]).groups)
    colors = [f"C{i % 10}" for i in range(len(cells))]
    for (a, t), c in zip(cells, colors):
        g = df[(df.alpha == a) & (df.tau == t)]
        ax.plot(g.step, g.train_acc, ls="--", color=c, lw=1)
        ax.plot(g.step, g.val_acc, ls="-", color=c, lw=1.5, label=f"alpha={a:g}, tau={t:g}")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy (dashed: train, solid: validation)")
    ax.legend(fontsize=7)
    return fig
