"""Figures of the teacher–student (tau, delta) maps (Kunin et al., *Get rich quick*, Fig. 1b/1c and the
supporting figure)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from lazyrich.plots.tables import read_table

__all__ = ["fig_teacher_student_maps", "fig_teacher_student_neurons", "final_maps"]

_PANELS = (("test_loss", "test loss (Fig. 1b)", True), ("kernel_distance", "kernel distance S(0, T) (Fig. 1c)", False),
           ("hamming", "Hamming distance", False), ("param_distance_rel", "‖θ_T − θ_0‖ / ‖θ_0‖", True),
           ("train_loss", "train loss", True), ("lazy_gap", "test loss − lazy prediction", False))


def final_maps(source) -> pd.DataFrame:
    """Mean over seeds at the last recorded step of each (tau, delta): one row per (tau, delta)."""
    df = read_table(source, experiment="teacher-student")
    need = {"tau", "delta", "seed", "step", "test_loss", "kernel_distance", "hamming", "param_distance_rel",
            "train_loss"}
    if not need <= set(df.columns):
        raise ValueError(f"the table lacks columns {sorted(need - set(df.columns))}; pass a teacher-student results table.")
    last = df[df.step == df.groupby(["tau", "delta", "seed"]).step.transform("max")].copy()
    last["lazy_gap"] = last.test_loss - last.lazy_test_loss if "lazy_test_loss" in last else np.nan
    return last.groupby(["tau", "delta"], as_index=False)[[p[0] for p in _PANELS]].mean()


def fig_teacher_student_maps(source) -> Figure:
    """Heatmaps over (tau, delta) at the final checkpoint, mean over seeds: test loss, kernel distance,
    Hamming distance, relative parameter distance, train loss and the lazy-prediction gap."""
    m = final_maps(source)
    taus, deltas = np.sort(m.tau.unique()), np.sort(m.delta.unique())
    fig = Figure(figsize=(13.5, 7.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    for k, (col, title, log) in enumerate(_PANELS):
        ax = fig.add_subplot(2, 3, k + 1)
        grid = m.pivot(index="tau", columns="delta", values=col).reindex(index=taus, columns=deltas).to_numpy()
        finite = grid[np.isfinite(grid)]
        if log and finite.size and (finite > 0).all():
            norm = LogNorm(vmin=finite.min(), vmax=finite.max())
        else:
            norm = None
        cmap = "RdBu_r" if col == "lazy_gap" else "viridis"
        if col == "lazy_gap" and finite.size:
            lim = float(np.abs(finite).max()) or 1.0
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap, vmin=-lim, vmax=lim)
        else:
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap, norm=norm)
        ax.set_xticks(range(len(deltas)), [f"{d:g}" for d in deltas], fontsize=7)
        ax.set_yticks(range(len(taus)), [f"{t:.3g}" for t in taus], fontsize=7)
        ax.set_xlabel("δ")
        ax.set_ylabel("τ")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.85)
    return fig


def fig_teacher_student_neurons(source) -> Figure:
    """Fig. 1a: direction (angle in degrees) of every student neuron w_i in the plane (d = 2) against step,
    from one shared base: left tau=0.1 vs tau=2 at delta=0, right delta=1 vs delta=-1 at tau=0.1; line width
    ~ the neuron's final |a_i| ||w_i||; teacher directions as dashed lines."""
    from pathlib import Path

    files = sorted(Path(source).rglob("trajectories.csv"))
    if not files:
        raise FileNotFoundError(f"no trajectories.csv under {source}; run teacher-student with fig1a_steps > 0.")
    df = pd.read_csv(files[0])
    teacher = df[df.tau.isna()]
    fig = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    panels = (((0.1, 0.0), (2.0, 0.0)), ((0.1, 1.0), (0.1, -1.0)))
    colors = ("tab:red", "tab:blue")
    for k, pair in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        for (tau, delta), color in zip(pair, colors):
            g = df[(df.tau == tau) & (df.delta == delta) & (df.step > 0)]
            if g.empty:
                continue
            size = g[g.step == g.step.max()].set_index("neuron").eval("a.abs() * (w1 ** 2 + w2 ** 2) ** 0.5")
            size = size / size.max()
            for j, (i, h) in enumerate(g.groupby("neuron")):
                h = h.sort_values("step")
                ax.plot(h.step, np.degrees(np.arctan2(h.w2, h.w1)), color=color, lw=0.3 + 2.0 * size[i],
                        alpha=0.8, label=f"τ={tau:g}, δ={delta:g}" if j == 0 else None)
        for _, r in teacher.iterrows():
            ax.axhline(np.degrees(np.arctan2(r.w2, r.w1)), color="k", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("angle of w_i (degrees)")
        ax.set_title("Fig. 1a: neuron directions (teacher dashed)", fontsize=9)
        ax.legend(fontsize=7)
    return fig
