"""Figures of the early-time experiment (Hu et al., Figs. 1a, 1b, 1c and 2)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from lazyrich.plots.figures import _new_figure
from lazyrich.plots.tables import read_table

__all__ = ["fig_early_time_losses", "fig_early_time_logits", "fig_early_time_discrepancy", "fig_early_time_norm",
           "fig_early_time_residual_split"]


def _table(source, target):
    df = read_table(source, experiment="early-time")
    if "discrepancy" not in df.columns:
        raise ValueError("the table has no discrepancy column; pass an early-time results table.")
    df = df[df.target == target]
    if df.empty:
        raise ValueError(f"the run has no {target!r} target; run early-time with targets including {target}.")
    return df


def fig_early_time_losses(source) -> Figure:
    """Fig. 1a: train (solid) and test (dashed) loss of the net and of f^lin, largest d, one panel per activation."""
    df = _table(source, "sign")
    acts = list(dict.fromkeys(df.activation))
    fig, axes = _new_figure(len(acts), width=4.5)
    for ax, act in zip(axes, acts):
        g = df[(df.activation == act) & (df.d == df.d.max())].sort_values("step")
        g = g[g.step > 0]
        for who, c in (("net", "tab:blue"), ("lin", "tab:red")):
            ax.plot(g.step, g[f"train_loss_{who}"], color=c, label=f"{who} train")
            ax.plot(g.step, g[f"test_loss_{who}"], color=c, ls="--", label=f"{who} test")
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{act}, d={df.d.max()}: losses (Fig. 1a)")
    axes[0].legend(fontsize=7)
    return fig


def fig_early_time_logits(source) -> Figure:
    """Fig. 1b: outputs of the net (solid) and f^lin (dashed) on a few test points, largest d."""
    path = Path(source)
    files = sorted(path.rglob("logits.csv")) if path.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no logits.csv under {source}; run `lazyrich run early-time` into it first.")
    lg = pd.concat([pd.read_csv(f) for f in files])
    lg = lg[(lg.target == "sign")]
    acts = list(dict.fromkeys(lg.activation))
    fig, axes = _new_figure(len(acts), width=4.5)
    for ax, act in zip(axes, acts):
        g = lg[(lg.activation == act) & (lg.d == lg.d.max())]
        for i, h in g.groupby("index"):
            h = h[h.step > 0].sort_values("step")
            line, = ax.plot(h.step, h.f_net, lw=1.4)
            ax.plot(h.step, h.f_lin, ls="--", color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{act}: test logits, net (—) vs f^lin (--) (Fig. 1b)")
    return fig


def fig_early_time_discrepancy(source) -> Figure:
    """Fig. 1c: discrepancy (MSE between the net and f^lin on test points) against step, one line per d."""
    df = _table(source, "sign")
    acts = list(dict.fromkeys(df.activation))
    fig, axes = _new_figure(len(acts), width=4.5)
    for ax, act in zip(axes, acts):
        for d, g in df[df.activation == act].groupby("d"):
            g = g[g.step > 0].sort_values("step")
            ax.plot(g.step, g.discrepancy, label=f"d={d}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{act}: discrepancy net vs f^lin (Fig. 1c)")
        ax.legend(fontsize=7)
    return fig


def fig_early_time_norm(source) -> Figure:
    """Fig. 2: test loss of the net, of f^lin and of the naive surrogate (vartheta1 = vartheta2 = 0) on the
    norm-dependent target, smallest d (where the norm fluctuations ||x||/sqrt(d) - 1 are largest)."""
    df = _table(source, "norm")
    acts = list(dict.fromkeys(df.activation))
    fig, axes = _new_figure(len(acts), width=4.5)
    for ax, act in zip(axes, acts):
        g = df[(df.activation == act) & (df.d == df.d.min())].sort_values("step")
        g = g[g.step > 0]
        for col, lab in (("test_loss_net", "network"), ("test_loss_lin", "f^lin (eq. 11)"),
                         ("test_loss_naive", "naive linear")):
            ax.plot(g.step, g[col], label=lab)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{act}, d={df.d.min()}: norm-dependent target (Fig. 2)")
        ax.legend(fontsize=7)
    return fig


def fig_early_time_residual_split(source) -> Figure:
    """Fig. 3a: the test loss of the multi-layer erf FC net split onto V_lin (span of the inputs, solid) and
    V_lin^perp (dashed) against step."""
    path = Path(source)
    files = sorted(path.rglob("residual_split.csv")) if path.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no residual_split.csv under {source}; run early-time with fc_depth > 0 first.")
    df = pd.concat([pd.read_csv(f) for f in files]).sort_values("step")
    fig, axes = _new_figure(1, width=4.5)
    ax = axes[0]
    g = df[df.step > 0]
    ax.plot(g.step, g.loss_lin_space, label="V_lin")
    ax.plot(g.step, g.loss_lin_perp, ls="--", label="V_lin^perp")
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_title(f"{int(df.depth.iloc[0])}-hidden-layer erf FC, d={int(df.d.iloc[0])} (Fig. 3a)")
    ax.legend(fontsize=7)
    return fig
