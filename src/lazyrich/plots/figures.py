"""Figures of a recorded run: analogues of the cone-effect paper's Figs. 1a, 1b, 1c and 2, plus training curves.

Zhou, Yang, Ren, Sugiyama, Yan, *On the cone effect in the learning dynamics*:

* Fig. 1a -- :func:`fig_reference_distances`: kernel distance ``S(theta(t), theta(tau))`` (eq. 4) to
  reference checkpoints ``tau`` versus ``t``;
* Fig. 1b -- :func:`fig_adjacent_distances`: adjacent distance ``S(theta(t), theta(t + dt))`` for several
  ``dt`` and the kernel velocity ``v(t) = S(theta(t), theta(t + dt)) / dt`` (eq. 5) between consecutive
  recorded kernels, with the end of the fast phase (``Run.phase_split``) marked;
* Fig. 1c -- :func:`fig_cone`: a 2-D embedding of the kernel trajectory ``H(t)`` (classical MDS of the
  kernel-distance matrix, ``Run.embedding_2d``), initial kernel in black, later kernels darker;
* Fig. 2 -- :func:`fig_switching`: test accuracy and loss of ``theta_std->lin(T; t)`` versus the switch
  point ``t``, with the purely standard endpoint as a horizontal line.

Plus :func:`fig_curves` (loss/accuracy), :func:`fig_distances` (parameter distance, RD, Hamming distance of
ReLU patterns) and :func:`fig_kernel_stats` (kernel-target alignment, effective rank).

Every function takes a :class:`lazyrich.dynamics.Run` (from :func:`lazyrich.dynamics.load_run`) and returns a
:class:`matplotlib.figure.Figure` built with the object-oriented API and the Agg canvas -- no pyplot, no global
backend switch -- or ``None`` when the run lacks the data for that figure.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lazyrich.dynamics.store import atomic_write_bytes

__all__ = [
    "FIGURES",
    "fig_reference_distances",
    "fig_adjacent_distances",
    "fig_cone",
    "fig_switching",
    "fig_curves",
    "fig_distances",
    "fig_kernel_stats",
    "adjacent_by_step",
    "default_taus",
    "save_figure",
    "save_figures",
]

_CMAP = "viridis"


def _new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.8) -> tuple:
    fig = Figure(figsize=(width * ncols, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _config(run) -> dict:
    cfg = getattr(run, "config", None)
    return cfg if isinstance(cfg, dict) else {}


def _phase_step(run) -> Optional[int]:
    try:
        return int(run.phase_split()["step"])
    except Exception:  # too few kernels, or no phase split available
        return None


def _mark_phase(ax, step: Optional[int], label: bool = True) -> None:
    if step is None:
        return
    ax.axvline(step, color="crimson", ls="--", lw=1.2, label=f"phase split t={step}" if label else None)


def default_taus(steps: Sequence[int], k: int = 4) -> List[int]:
    """``k`` reference steps: the recorded steps nearest to ``j T / (k + 1)``, ``j = 1..k`` (the paper uses
    ``tau in {2000, 4000, 6000, 8000}`` with ``T = 10^4``)."""
    steps = np.asarray(sorted(int(s) for s in steps))
    if len(steps) == 0:
        return []
    T = steps[-1]
    out = []
    for j in range(1, k + 1):
        target = j * T / (k + 1)
        out.append(int(steps[np.argmin(np.abs(steps - target))]))
    return sorted(set(out))


def adjacent_by_step(run, dts: Sequence[int]) -> Dict[int, pd.DataFrame]:
    """``{dt: DataFrame(step, S)}`` with ``S = S(theta(t), theta(t + dt))`` for every recorded ``t`` whose
    ``t + dt`` is recorded too; ``dt`` in optimizer steps (as in the paper's Fig. 1b), read from the kernel
    distance matrix."""
    steps = [int(s) for s in np.asarray(run.kernel_steps)]
    D = np.asarray(run.kernel_distance_matrix())
    pos = {s: i for i, s in enumerate(steps)}
    out = {}
    for dt in dts:
        rows = [(s, float(D[pos[s], pos[s + int(dt)]])) for s in steps if s + int(dt) in pos]
        out[int(dt)] = pd.DataFrame(rows, columns=["step", "S"])
    return out


# --------------------------------------------------------------------------------------------
# Fig. 1a
# --------------------------------------------------------------------------------------------


def fig_reference_distances(run, taus: Optional[Sequence[int]] = None) -> Optional[Figure]:
    """Fig. 1a: ``S(theta(t), theta(tau))`` versus ``t`` for each reference step ``tau`` (and ``tau = 0``).

    ``taus`` defaults to the run config's ``taus`` (else :func:`default_taus`); taus that were not recorded
    are replaced by the nearest recorded step.
    """
    steps = np.asarray(run.kernel_steps)
    if len(steps) < 2:
        return None
    if taus is None:
        taus = _config(run).get("taus") or default_taus(steps)
    taus = sorted(set([0] + [int(steps[np.argmin(np.abs(steps - int(t)))]) for t in taus]))
    df = run.reference_distances(taus)
    fig, (ax,) = _new_figure()
    cols = [c for c in df.columns if c != "step"]
    import matplotlib

    cmap = matplotlib.colormaps[_CMAP]
    for j, (c, tau) in enumerate(zip(cols, taus)):
        color = "black" if tau == 0 else cmap(0.15 + 0.75 * j / max(1, len(cols) - 1))
        ax.plot(df["step"], df[c], color=color, lw=1.6, label=f"τ = {tau}")
        ax.axvline(tau, color=color, lw=0.6, ls=":")
    _mark_phase(ax, _phase_step(run))
    ax.set_xlabel("training step t")
    ax.set_ylabel("kernel distance S(θ(t), θ(τ))")
    ax.set_title("Fig. 1a analogue: distance to reference kernels")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Fig. 1b
# --------------------------------------------------------------------------------------------


def fig_adjacent_distances(run, dts: Optional[Sequence[int]] = None) -> Optional[Figure]:
    """Fig. 1b: left, ``S(theta(t), theta(t + dt))`` for several ``dt`` (optimizer steps, default the config's
    ``dts``); right, the kernel velocity (eq. 5) between consecutive recorded kernels on log-log axes.  The end
    of the fast kernel phase (``Run.phase_split``) is marked in both panels."""
    steps = np.asarray(run.kernel_steps)
    if len(steps) < 3:
        return None
    cfg = _config(run)
    if dts is None:
        dts = cfg.get("dts")
    if not dts:
        gaps = np.diff(steps)
        base = int(np.median(gaps[len(gaps) // 2:])) if len(gaps) else 1
        dts = [base, 2 * base, 4 * base]
    import matplotlib

    cmap = matplotlib.colormaps[_CMAP]
    fig, (ax1, ax2) = _new_figure(ncols=2)
    split = _phase_step(run)
    adj = adjacent_by_step(run, dts)
    for j, (dt, df) in enumerate(adj.items()):
        if len(df):
            ax1.plot(df["step"], df["S"], marker=".", ms=3, lw=1.3, color=cmap(0.1 + 0.8 * j / max(1, len(adj) - 1)),
                     label=f"dt = {dt}")
    _mark_phase(ax1, split)
    ax1.set_yscale("log")
    ax1.set_xlabel("training step t")
    ax1.set_ylabel("S(θ(t), θ(t + dt))")
    ax1.set_title("Fig. 1b analogue: adjacent kernel distance")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3, which="both")

    vel = run.kernel_velocity()
    v = vel[vel["velocity"] > 0]
    x = v["step"].to_numpy(dtype=float)
    ax2.plot(np.maximum(x, 0.5), v["velocity"], marker=".", ms=4, lw=1.2, color="k", label="v(t) = S(t, t')/(t' − t)")
    _mark_phase(ax2, split)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("training step t (step 0 drawn at 0.5)")
    ax2.set_ylabel("kernel velocity v(t)")
    ax2.set_title("kernel velocity (eq. 5)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    return fig


# --------------------------------------------------------------------------------------------
# Fig. 1c
# --------------------------------------------------------------------------------------------


def fig_cone(run) -> Optional[Figure]:
    """Fig. 1c: 2-D embedding of the kernel trajectory (row 0 = initial kernel, black); darker = later."""
    steps = np.asarray(run.kernel_steps)
    if len(steps) < 3:
        return None
    X = np.asarray(run.embedding_2d())
    fig, (ax,) = _new_figure(width=5.2, height=4.4)
    ax.plot(X[:, 0], X[:, 1], color="0.75", lw=0.8, zorder=1)
    import matplotlib
    from matplotlib.colors import ListedColormap

    blues = ListedColormap(matplotlib.colormaps["Blues"](np.linspace(0.25, 1.0, 256)))  # no invisible whites
    sc = ax.scatter(X[1:, 0], X[1:, 1], c=steps[1:], cmap=blues, vmin=0, vmax=steps[-1],
                    s=22, edgecolors="0.3", linewidths=0.3, zorder=2)
    ax.scatter([X[0, 0]], [X[0, 1]], color="black", s=70, marker="o", zorder=3, label="H(0) (initialization)")
    split = _phase_step(run)
    if split is not None and split in set(int(s) for s in steps):
        i = int(np.nonzero(steps == split)[0][0])
        ax.scatter([X[i, 0]], [X[i, 1]], facecolors="none", edgecolors="crimson", s=120, lw=1.5, zorder=4,
                   label=f"phase split t={split}")
    cb = fig.colorbar(sc, ax=ax)
    cb.set_label("training step t")
    ax.set_xlabel("MDS coordinate 1")
    ax.set_ylabel("MDS coordinate 2")
    ax.set_title("Fig. 1c analogue: kernel trajectory (the cone)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Fig. 2
# --------------------------------------------------------------------------------------------


def fig_switching(run) -> Optional[Figure]:
    """Fig. 2: test accuracy (left) and test loss (right) of ``theta_std->lin(T; t)`` versus the switch point
    ``t``; the dashed line is purely standard training ``theta_std(T)``."""
    sw = run.switching()
    if sw is None or len(sw) == 0:
        return None
    sw = sw.sort_values("switch_step")
    kind = sw["kind"] if "kind" in sw.columns else pd.Series(["switch"] * len(sw), index=sw.index)
    std = sw[kind == "standard"]
    lin = sw[kind != "standard"]
    T = int(sw["T"].max())
    fig, axes = _new_figure(ncols=2)
    split = _phase_step(run)
    for ax, col, name in ((axes[0], "test_acc", "test accuracy"), (axes[1], "test_loss", "test loss")):
        ax.plot(lin["switch_step"], lin[col], marker="o", color="tab:blue", label="std → lin, switched at t")
        if len(std):
            ax.axhline(float(std[col].iloc[0]), color="tab:orange", ls="--", label="standard training only")
            ax.plot([T], [float(std[col].iloc[0])], marker="*", ms=11, color="tab:orange", ls="none")
        _mark_phase(ax, split)
        ax.set_xlabel("switch step t")
        ax.set_ylabel(f"{name} at T = {T}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    positive = lin["switch_step"][lin["switch_step"] > 0]
    if len(positive):
        for ax in axes:  # symlog: t = 0 (fully linearized) and the log-spaced switch points on one axis
            ax.set_xscale("symlog", linthresh=max(1.0, float(positive.min())))
            ax.set_xlim(0, 1.3 * T)
    fig.suptitle("Fig. 2 analogue: standard training until t, then linearized training until T")
    return fig


# --------------------------------------------------------------------------------------------
# curves and distances
# --------------------------------------------------------------------------------------------


def fig_curves(run) -> Optional[Figure]:
    """Train/test loss (log scale) and accuracy versus step, from ``metrics.csv``."""
    m = run.metrics
    if m is None or len(m) == 0:
        return None
    fig, (ax1, ax2) = _new_figure(ncols=2)
    split = _phase_step(run)
    for col, color in (("train_loss", "tab:blue"), ("test_loss", "tab:orange")):
        if col in m.columns and m[col].notna().any():
            ax1.plot(m["step"], m[col], color=color, marker=".", ms=3, label=col.replace("_", " "))
    for col, color in (("train_acc", "tab:blue"), ("test_acc", "tab:orange")):
        if col in m.columns and m[col].notna().any():
            ax2.plot(m["step"], m[col], color=color, marker=".", ms=3, label=col.replace("_", " "))
    for ax, lab in ((ax1, "loss"), (ax2, "accuracy")):
        _mark_phase(ax, split)
        ax.set_xlabel("training step t")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_yscale("log")
    ax1.set_title("loss")
    ax2.set_title("accuracy")
    return fig


def fig_distances(run) -> Optional[Figure]:
    """Parameter distance to initialization (total and relative RD), RD per layer (Luo et al. eq. 16), and the
    Hamming distance of ReLU activation patterns to initialization (Kunin et al.)."""
    m = run.metrics
    if m is None or len(m) == 0:
        return None
    fig, (ax1, ax2, ax3) = _new_figure(ncols=3, width=4.4)
    split = _phase_step(run)
    if "param_dist" in m.columns:
        ax1.plot(m["step"], m["param_dist"], color="k", marker=".", ms=3, label="‖θ(t) − θ(0)‖")
    ax1.set_title("parameter distance")
    rd_cols = [c for c in m.columns if c.startswith("rd/") and c.endswith("weight")] or \
              [c for c in m.columns if c.startswith("rd/")]
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    for j, c in enumerate(rd_cols[:10]):
        ax2.plot(m["step"], m[c], lw=1.2, color=cmap(j), label=c[3:])
    if "rd" in m.columns:
        ax2.plot(m["step"], m["rd"], lw=2.0, color="k", ls="--", label="all")
    ax2.set_title("relative distance RD (Luo et al. eq. 16)")
    ham_cols = [c for c in m.columns if c.startswith("hamming/")]
    for j, c in enumerate(ham_cols[:10]):
        ax3.plot(m["step"], m[c], lw=1.0, color=cmap(j), label=f"ReLU at {c[8:]}")
    if "hamming" in m.columns:
        ax3.plot(m["step"], m["hamming"], lw=2.0, color="k", label="all units")
    ax3.set_title("Hamming distance of ReLU patterns")
    for ax, lab in ((ax1, "distance"), (ax2, "RD"), (ax3, "fraction flipped")):
        _mark_phase(ax, split, label=False)
        ax.set_xlabel("training step t")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def fig_kernel_stats(run) -> Optional[Figure]:
    """Kernel-target alignment and effective rank of ``H(t)`` versus step."""
    try:
        al = run.kernel_alignment()
        er = run.effective_rank()
    except Exception:  # no probe labels, or too few kernels
        return None
    if al is None or er is None or len(al) == 0:
        return None
    fig, (ax1, ax2) = _new_figure(ncols=2)
    split = _phase_step(run)
    ax1.plot(al["step"], al["alignment"], color="tab:green", marker=".", ms=3)
    ax1.set_ylabel("kernel-target alignment")
    ax2.plot(er["step"], er["effective_rank"], color="tab:purple", marker=".", ms=3)
    ax2.set_ylabel("effective rank")
    for ax in (ax1, ax2):
        _mark_phase(ax, split)
        ax.set_xlabel("training step t")
        ax.grid(alpha=0.3)
    ax1.set_title("alignment of H(t) with the labels")
    ax2.set_title("effective rank of H(t)")
    return fig


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------

#: File stem -> (figure function, caption), in report order.
FIGURES: Dict[str, tuple] = {
    "fig1a_reference_distance": (fig_reference_distances,
                                 "Fig. 1a analogue. Kernel distance S(θ(t), θ(τ)) (eq. 4) between the eNTK at step t "
                                 "and at reference steps τ: it rises, then stays nearly flat."),
    "fig1b_adjacent_distance": (fig_adjacent_distances,
                                "Fig. 1b analogue. Left: S(θ(t), θ(t+dt)) for several dt. Right: kernel velocity "
                                "v(t) (eq. 5); the dashed line marks the end of the fast kernel phase."),
    "fig1c_cone": (fig_cone,
                   "Fig. 1c analogue. Classical MDS of the kernel-distance matrix: the black dot is H(0), darker "
                   "points are later kernels."),
    "fig2_switching": (fig_switching,
                       "Fig. 2 analogue. Test accuracy / loss at T of standard training until t followed by "
                       "linearized training until T, versus t; dashed: standard training only."),
    "curves": (fig_curves, "Train and test loss and accuracy."),
    "distances": (fig_distances,
                  "Parameter distance to initialization, relative distance RD per layer, and Hamming distance of "
                  "ReLU activation patterns to initialization."),
    "kernel_stats": (fig_kernel_stats, "Kernel-target alignment and effective rank of the eNTK."),
}


def save_figure(fig: Figure, path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (rendered in memory, then the store's atomic write)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def save_figures(run, out_dir, *, names: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """Draw the figures of :data:`FIGURES` (or ``names``) for ``run`` and save them as ``out_dir/<name>.png``.

    Returns ``{name: path}`` for the figures that could be drawn (a figure whose data are missing -- e.g. no
    ``switching.csv`` -- is skipped).
    """
    out = {}
    for name in names or list(FIGURES):
        if name not in FIGURES:
            raise ValueError(f"unknown figure {name!r}; choose from {', '.join(FIGURES)}.")
        fig = FIGURES[name][0](run)
        if fig is None:
            continue
        out[name] = save_figure(fig, Path(out_dir) / f"{name}.png")
    return out
