"""Figures of the rebalancing experiments (Kunin et al., *Get rich quick*, Fig. 5a LeNet-5, Fig. 5c RHM)."""

from __future__ import annotations

from matplotlib.figure import Figure

from lazyrich.plots.figures import _new_figure
from lazyrich.plots.tables import read_table

__all__ = ["fig_lenet_rebalance", "fig_layer_balance", "fig_rhm_sample_complexity"]


def fig_lenet_rebalance(source) -> Figure:
    """Fig. 5a: kernel distance S(0, t), Hamming distance and parameter distance vs step, one line per alpha
    (mean over seeds; log-scaled step axis, step 0 omitted)."""
    df = read_table(source, experiment="lenet-rebalance")
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


def fig_rhm_sample_complexity(source) -> Figure:
    """Fig. 5c: test accuracy against the training-set size (fraction of the RHM's P_max data, log axis), one
    line per alpha, mean over seeds with the standard deviation as error bars; dotted: chance 1/n_c."""
    df = read_table(source, experiment="rhm")
    need = {"alpha", "seed", "train_fraction", "test_acc"}
    if not need <= set(df.columns):
        raise ValueError(f"the table lacks columns {sorted(need - set(df.columns))}; pass an rhm results table.")
    stats = df.groupby(["alpha", "train_fraction"], as_index=False)["test_acc"].agg(["mean", "std"]).fillna(0.0)
    fig, (ax,) = _new_figure(1, width=5.0)
    for alpha, g in stats.groupby("alpha"):
        ax.errorbar(g.train_fraction, g["mean"], yerr=g["std"], marker="o", capsize=2, label=f"alpha={alpha:g}")
    if "n_c" in df.columns and df.n_c.nunique() == 1:
        ax.axhline(1.0 / df.n_c.iloc[0], color="gray", ls=":", lw=1, label=f"chance 1/{df.n_c.iloc[0]}")
    ax.set_xscale("log")
    ax.set_xlabel("training-set size / P_max")
    ax.set_ylabel("test accuracy")
    ax.set_title("RHM sample complexity")
    ax.legend(fontsize=8)
    return fig


def fig_layer_balance(source) -> Figure:
    """Each layer's mean balance ``a_k^2 - ||w_k||^2`` before (He init) and after ``rebalance(alpha)``, one
    marker set per alpha (symlog axis), from the ``balance.csv`` files of a run or sweep directory (or a
    DataFrame with columns ``alpha, layer, delta_before, delta_after``)."""
    df = read_table(source, "balance.csv", "lenet-rebalance")
    need = {"alpha", "layer", "delta_before", "delta_after"}
    if not need <= set(df.columns):
        raise ValueError(f"the table lacks columns {sorted(need - set(df.columns))}; pass a lenet-rebalance balance table.")
    layers = list(dict.fromkeys(df.layer))
    mean = df.groupby(["alpha", "layer"], as_index=False)[["delta_before", "delta_after"]].mean()
    fig, (ax,) = _new_figure(1, width=5.5)
    xs = range(len(layers))
    before = mean.groupby("layer")["delta_before"].mean().reindex(layers)
    ax.plot(xs, before.to_numpy(), "k_", ms=14, mew=2, label="before (He init)")
    for alpha, g in mean.groupby("alpha"):
        ax.plot(xs, g.set_index("layer")["delta_after"].reindex(layers).to_numpy(), "o", label=f"after, alpha={alpha:g}")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(layers, rotation=30, fontsize=8)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_ylabel("mean balance a_k^2 - ||w_k||^2")
    ax.set_title("layer balance before / after rebalancing")
    ax.legend(fontsize=8)
    return fig
