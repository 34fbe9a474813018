"""Figure of the single-neuron experiment (Kunin et al., *Get rich quick*, Fig. 2)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from lazyrich.plots.figures import _new_figure
from lazyrich.plots.tables import read_table

__all__ = ["fig_single_neuron"]


def fig_single_neuron(source) -> Figure:
    """Fig. 2: beta(t) paths in the plane, kernel distance S(0, t), and the parameter path (a, ||w||) on the
    hyperbola a^2 - ||w||^2 = delta; exact flow as lines, gradient descent as dots, one colour per delta."""
    df = read_table(source, experiment="single-neuron")
    need = {"delta", "t", "S_exact", "S_gd", "beta1_exact", "beta2_exact", "beta1_gd", "beta2_gd",
            "a_exact", "a_gd", "wnorm_exact", "wnorm_gd"}
    if not need <= set(df.columns):
        raise ValueError(f"the table lacks columns {sorted(need - set(df.columns))}; pass a single-neuron results table.")
    import matplotlib

    cmap = matplotlib.colormaps["coolwarm"]
    deltas = sorted(df.delta.unique())
    span = max(1e-12, max(abs(d) for d in deltas))
    fig, axes = _new_figure(3, width=4.2)
    for d in deltas:
        g = df[df.delta == d].sort_values("t")
        c = cmap(0.5 + 0.5 * d / span)
        every = max(1, len(g) // 20)
        axes[0].plot(g.beta1_exact, g.beta2_exact, color=c, lw=1.5, label=f"δ={d:g}")
        axes[0].plot(g.beta1_gd[::every], g.beta2_gd[::every], ".", color=c, ms=3)
        axes[1].plot(g.t, g.S_exact, color=c, lw=1.5)
        axes[1].plot(g.t[::every], g.S_gd[::every], ".", color=c, ms=3)
        axes[2].plot(g.wnorm_exact, g.a_exact, color=c, lw=1.5)
        axes[2].plot(g.wnorm_gd[::every], g.a_gd[::every], ".", color=c, ms=3)
    axes[0].set_xlabel("β₁")
    axes[0].set_ylabel("β₂")
    axes[0].set_title("function space: β(t) = a(t) w(t)")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("t")
    axes[1].set_title("kernel distance S(0, t)")
    axes[2].set_xlabel("‖w‖")
    axes[2].set_ylabel("a")
    axes[2].set_title("parameter path (a² − ‖w‖² = δ)")
    for ax in axes:
        ax.grid(alpha=0.3)
    lo = float(np.nanmin(df[["S_exact", "S_gd"]].to_numpy()))
    axes[1].set_ylim(min(0.0, lo), None)
    return fig
