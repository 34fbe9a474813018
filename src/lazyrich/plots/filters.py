"""Figures of the filter-smoothness experiment (Kunin et al., *Get rich quick*, "Gabor Filters" figure):
accuracy and first-layer filter smoothness against alpha, and a grid image of the learned filters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lazyrich.plots.figures import _new_figure
from lazyrich.plots.tables import read_table

__all__ = ["fig_filter_smoothness", "fig_filter_grid"]


def fig_filter_smoothness(source) -> Figure:
    """Left: train/test accuracy vs alpha; right: mean normalized-Laplacian smoothness of the learned
    first-layer filters (lower is smoother) vs alpha, with the initial filters' value dashed; means over seeds."""
    df = read_table(source, experiment="filter-smoothness")
    need = {"alpha", "train_acc", "test_acc", "smoothness_mean", "smoothness_init_mean"}
    if not need <= set(df.columns):
        raise ValueError(f"the table lacks columns {sorted(need - set(df.columns))}; pass a filter-smoothness results table.")
    m = df.groupby("alpha", as_index=False)[sorted(need - {"alpha"})].mean()
    fig, (a1, a2) = _new_figure(2, width=4.2)
    a1.plot(m.alpha, m.train_acc, marker="o", label="train")
    a1.plot(m.alpha, m.test_acc, marker="o", label="test")
    a1.set_ylabel("accuracy")
    a1.legend(fontsize=8)
    a2.plot(m.alpha, m.smoothness_mean, marker="o", label="learned")
    a2.plot(m.alpha, m.smoothness_init_mean, ls="--", color="gray", label="initial")
    a2.set_ylabel("||w/||w|| * Laplacian||^2 (lower = smoother)")
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_xticks(list(m.alpha), [f"{a:g}" for a in m.alpha])
        ax.minorticks_off()
        ax.set_xlabel("alpha (first layer / alpha)")
    return fig


def fig_filter_grid(run_dir, max_filters: int = 64) -> Figure:
    """The learned first-layer filters of one cell (``filters.npy``) as RGB tiles, each scaled to [0, 1]."""
    p = Path(run_dir) / "filters.npy"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; run `lazyrich run filter-smoothness` into {run_dir} first.")
    w = np.load(p)[:max_filters]
    n = w.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, (ax,) = _new_figure(1, width=5.0, height=5.0 * rows / cols)
    k = w.shape[-1]
    canvas = np.ones((rows * (k + 1), cols * (k + 1), 3))
    for t in range(n):
        f = w[t].transpose(1, 2, 0) if w.shape[1] == 3 else np.repeat(w[t, :1].transpose(1, 2, 0), 3, 2)
        f = (f - f.min()) / (np.ptp(f) or 1.0)
        r, c = divmod(t, cols)
        canvas[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = f
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"first-layer filters ({n})", fontsize=9)
    return fig
