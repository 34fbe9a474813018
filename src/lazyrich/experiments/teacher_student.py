r"""Teacher–student (tau, delta) maps (Kunin et al., *Get rich quick*, Fig. 1b/1c and "Experimental Details").

Teacher: ``k`` ReLU neurons, ``w_j ~ Unif(S^{d-1})``, ``a_j ~ Unif({±1})``; inputs ``x ~ Unif(S^{d-1})``,
noiseless labels (:func:`lazyrich.data.gaussian_teacher` with ``inputs="unit_sphere"``; the labels are
recomputed in float64).  Student: ``f(x) = sum_i a_i relu(w_i^T x)`` of width ``h``, the balanced symmetrized
base moved to ``(tau, delta)`` by :func:`lazyrich.models.teacher_student.scale_student` (every neuron has
``delta_i = delta``, ``f_0 = 0``).  A seed draws the teacher, the data and the base student (its own
generator, ``seed + 1000003``), and every ``(tau, delta)`` of that seed scales the same base, as in the paper.

Training: full-batch gradient descent on ``1/(2n) sum_i (f(x_i) - y_i)^2`` with ``lr = lr_scale / tau^2``
(paper: ``5e-3 / tau^2``).  **All (tau, delta, seed) cells are trained together** as one batched tensor
program (:func:`lazyrich.dynamics.train_two_layer_batched`, cell axis first, fixed per-cell lr).  At
``n_checkpoints`` log-spaced steps (and step 0) every cell records, relative to initialization: the kernel
distance ``S(0, t) = 1 - <K_0, K_t> / (||K_0||_F ||K_t||_F)`` of the NTK on the first ``n_probe`` training
points (closed form of the two-layer NTK, :func:`two_layer_ntk`), the Hamming distance of the ReLU patterns on
the same points, the parameter distance ``||theta_t - theta_0||`` (and divided by ``||theta_0||``), the train
and test MSE, and -- with ``lazy_prediction`` -- the test MSE of the linearized model with the initial NTK
trained by the same GD (:func:`lazyrich.ntk.lazy_predict`), so ``test_loss - lazy_test_loss`` says whether
the kernel's movement mattered.  ``regime``: :func:`lazyrich.dynamics.classify_regime` of each cell.

``results.csv``: one row per ``(tau, delta, seed, step)``; ``trajectories.csv``: the Fig. 1a side run
(:func:`fig1a_trajectories`, d = 2).  A killed run resumes from its last checkpoint
(``checkpoints/``); a finished one returns at once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pandas as pd
import torch

from lazyrich.dynamics.schedule import log_spaced_steps
from lazyrich.experiments.protocol import Experiment, Preset, torch_threads

__all__ = ["TeacherStudentConfig", "run", "EXPERIMENT", "COLUMNS", "two_layer_ntk", "batched_kernel_distance",
           "memory_estimate"]

COLUMNS: Tuple[str, ...] = ("tau", "delta", "seed", "step", "t", "train_loss", "test_loss", "lazy_test_loss",
                            "kernel_distance", "hamming", "param_distance", "param_distance_rel", "regime")
_NUMERIC = COLUMNS[:-1]


def _geom(lo, hi, k):
    return tuple(float(v) for v in np.round(np.geomspace(lo, hi, k), 6))


def _lin(lo, hi, k):
    return tuple(float(v) for v in np.round(np.linspace(lo, hi, k), 6))


@dataclass(frozen=True)
class TeacherStudentConfig:
    """Teacher–student (tau, delta) sweep: all cells trained together.

    Attributes
    ----------
    preset : str
        Name of the preset this config started from.
    d : int
        Input dimension.
    width : int
        Student width h (even: the student is symmetrized in pairs).
    teacher_width : int
        Teacher width k.
    n_train : int
        Training points.
    n_test : int
        Held-out test points.
    taus : tuple of float
        Overall scales tau (> 0).
    deltas : tuple of float
        Conserved quantities delta (every neuron), |delta| <= 1e6 tau^2.
    seeds : tuple of int
        Seeds (each draws teacher, data and base student).
    lr_scale : float
        Learning rate lr = lr_scale / tau^2.
    steps : int
        Gradient-descent steps.
    n_checkpoints : int
        Log-spaced recording steps in [1, steps] (step 0 is always recorded).
    n_probe : int
        Training points on which the NTK and the activation patterns are evaluated.
    lazy_prediction : bool
        Also record the test loss of the linearized model (closed form) at each checkpoint.
    fig1a_steps : int
        Steps of the Fig. 1a side run (d=2, h=50, k=3, n=20; 0 skips it).
    fig1a_lr : float
        Learning rate of the Fig. 1a side run (the paper: 1e-4 for 1e6 steps).
    """

    preset: str = "quick"
    d: int = 20
    width: int = 50
    teacher_width: int = 3
    n_train: int = 200
    n_test: int = 2000
    taus: Tuple[float, ...] = _geom(0.1, 2.0, 5)
    deltas: Tuple[float, ...] = _lin(-1.0, 1.0, 5)
    seeds: Tuple[int, ...] = (0, 1)
    lr_scale: float = 5e-3
    steps: int = 5000
    n_checkpoints: int = 16
    n_probe: int = 200
    lazy_prediction: bool = True
    fig1a_steps: int = 20000
    fig1a_lr: float = 5e-3

    def validated(self) -> "TeacherStudentConfig":
        from lazyrich.models.teacher_student import check_tau_delta

        for name in ("d", "teacher_width", "n_train", "n_test", "steps", "n_checkpoints", "n_probe"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.width < 2 or self.width % 2:
            raise ValueError(f"width must be an even int >= 2 (the student is symmetrized in pairs), got {self.width}.")
        if self.n_probe > self.n_train:
            raise ValueError(f"n_probe={self.n_probe} exceeds n_train={self.n_train}; set n_probe <= n_train.")
        if not self.taus or not self.deltas or not self.seeds:
            raise ValueError("taus, deltas and seeds each need at least one value; pass e.g. taus=0.1,1 deltas=0.")
        for tau in self.taus:
            for delta in self.deltas:
                check_tau_delta(tau, delta)
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.taus)) != len(self.taus) \
                or len(set(self.deltas)) != len(self.deltas):
            raise ValueError("taus, deltas and seeds must not repeat a value; drop the duplicates.")
        if self.fig1a_steps < 0 or not (math.isfinite(self.fig1a_lr) and self.fig1a_lr > 0):
            raise ValueError(f"fig1a_steps must be >= 0 and fig1a_lr positive, got {self.fig1a_steps}, {self.fig1a_lr}.")
        if not (math.isfinite(self.lr_scale) and self.lr_scale > 0):
            raise ValueError(f"lr_scale must be a positive number, got {self.lr_scale}.")
        return self


def two_layer_ntk(w: torch.Tensor, a: torch.Tensor, x: torch.Tensor, x2: Optional[torch.Tensor] = None) -> torch.Tensor:
    """NTK of ``f(x) = sum_i a_i relu(w_i^T x)`` (unit learning rates), batched over cells.

    ``K(x, x') = sum_i relu(w_i.x) relu(w_i.x') + a_i^2 1[w_i.x > 0] 1[w_i.x' > 0] x.x'``.
    ``w`` (C, m, d), ``a`` (C, m), ``x`` (C, n, d), ``x2`` (C, n2, d) (default ``x``) -> (C, n, n2).
    """
    x2 = x if x2 is None else x2
    p1, p2 = torch.einsum("cnd,cmd->cnm", x, w), torch.einsum("cnd,cmd->cnm", x2, w)
    A1, A2 = torch.relu(p1), torch.relu(p2)
    D1, D2 = (p1 > 0).to(w.dtype) * a[:, None, :], (p2 > 0).to(w.dtype) * a[:, None, :]
    return A1 @ A2.transpose(1, 2) + (D1 @ D2.transpose(1, 2)) * (x @ x2.transpose(1, 2))


def batched_kernel_distance(K0: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Per-cell ``S = 1 - <K0, K>_F / (||K0|| ||K||)`` of (C, n, n) kernels, as ``||u - v||^2 / 2`` of the
    normalized kernels (the form of :func:`lazyrich.kernel_distance`, exact 0 for identical kernels)."""
    u = K0.reshape(K0.shape[0], -1)
    v = K.reshape(K.shape[0], -1)
    u = u / u.abs().amax(dim=1, keepdim=True)
    v = v / v.abs().amax(dim=1, keepdim=True)
    u = u / u.norm(dim=1, keepdim=True)
    v = v / v.norm(dim=1, keepdim=True)
    return 0.5 * ((u - v) ** 2).sum(dim=1)


def memory_estimate(config: TeacherStudentConfig) -> int:
    """Bytes the batched program holds at once (float64): data, parameters, activations of one
    forward/backward pass, the probe kernels and one test evaluation."""
    C = len(config.taus) * len(config.deltas) * len(config.seeds)
    n, m, d, p = config.n_train, config.width, config.d, config.n_probe
    per_cell = (4 * m * d + 6 * n * m + 2 * n + 3 * p * p + 2 * p * m + min(config.n_test, 4096) * m)
    shared = len(config.seeds) * (n + config.n_test) * (d + 1)
    return 8 * (C * per_cell + shared)


def _cells(config):
    return [(s, tau, delta) for s in config.seeds for tau in config.taus for delta in config.deltas]


def _problem(config, seed):
    from lazyrich.data import gaussian_teacher
    from lazyrich.models.teacher_student import base_student

    data = gaussian_teacher(config.n_train, config.d, n_test=config.n_test, k=config.teacher_width,
                            inputs="unit_sphere", seed=seed)
    tw, ta = data.info["teacher_w"], data.info["teacher_a"]
    x, xt = data.x_train.double(), data.x_test.double()
    y, yt = torch.relu(x @ tw.T) @ ta, torch.relu(xt @ tw.T) @ ta
    w, a = base_student(config.d, config.width, generator=torch.Generator().manual_seed(seed + 1000003))
    return x, y, xt, yt, w, a


def _record_steps(config):
    T = config.steps
    return log_spaced_steps(T, config.n_checkpoints)


#: (tau, delta) of the four students of Fig. 1a (left: small vs large scale; right: upstream vs downstream).
FIG1A_CELLS: Tuple[Tuple[float, float], ...] = ((0.1, 0.0), (2.0, 0.0), (0.1, 1.0), (0.1, -1.0))


def fig1a_trajectories(steps: int, lr: float, seed: int = 0, n_records: int = 40) -> pd.DataFrame:
    """Kunin et al. Fig. 1a: one teacher (d=2, k=3), n=20 points, four students of width 50 with the same base
    at the (tau, delta) of :data:`FIG1A_CELLS`, trained together by full-batch GD with step ``lr``. Rows: tau,
    delta, step, neuron, w1, w2, a (every neuron at log-spaced steps); teacher neurons have ``tau = nan``."""
    from lazyrich.dynamics import train_two_layer_batched
    from lazyrich.models.teacher_student import scale_student

    cfg = TeacherStudentConfig(d=2, width=50, teacher_width=3, n_train=20, n_test=1, n_probe=20)
    x, y, _, _, w, a = _problem(cfg, seed)
    W, A = map(torch.stack, zip(*[scale_student(w, a, t, dl) for t, dl in FIG1A_CELLS]))
    rec = log_spaced_steps(steps, n_records)
    rows = []

    def keep(k, ww, aa):
        for c, (tau, delta) in enumerate(FIG1A_CELLS):
            for i in range(ww.shape[1]):
                rows.append((tau, delta, k, i, float(ww[c, i, 0]), float(ww[c, i, 1]), float(aa[c, i])))

    train_two_layer_batched(W, A, x, y, lr=lr, loss_tol=0.0, max_steps=steps, record_steps=rec, callback=keep)
    from lazyrich.data import gaussian_teacher

    info = gaussian_teacher(20, 2, n_test=1, k=3, inputs="unit_sphere", seed=seed).info
    for i in range(3):
        rows.append((math.nan, math.nan, 0, i, float(info["teacher_w"][i, 0]), float(info["teacher_w"][i, 1]),
                     float(info["teacher_a"][i])))
    return pd.DataFrame(rows, columns=["tau", "delta", "step", "neuron", "w1", "w2", "a"])


def run(config: TeacherStudentConfig, out_dir, *, progress: bool = False, threads: Optional[int] = None,
        device: Optional[str] = None) -> Path:
    """Train every (tau, delta, seed) cell together; write ``results.csv`` (columns :data:`COLUMNS`)."""
    if device not in (None, "cpu"):
        raise ValueError(f"teacher-student runs on the CPU; drop device={device!r} or pass device=cpu.")
    from lazyrich.dynamics import RunStore, train_two_layer_batched
    from lazyrich.dynamics.regime import regime_table
    from lazyrich.dynamics.store import atomic_write_bytes
    from lazyrich.models.teacher_student import scale_student
    from lazyrich.ntk import available_memory, lazy_predict

    if not isinstance(config, TeacherStudentConfig):
        raise TypeError(f"run expects a TeacherStudentConfig, got {type(config).__name__}.")
    config = config.validated()
    need, budget = memory_estimate(config), available_memory()
    if need > budget:
        C = len(_cells(config))
        raise MemoryError(f"the batched program for {C} cells of width {config.width} needs about {need / 2**30:.1f} GiB, "
                          f"more than the budget {budget / 2**30:.1f} GiB (LAZYRICH_MEMORY_BUDGET_GB); split the grid "
                          "into runs of fewer seeds or taus (e.g. seeds=0 then seeds=1) or lower n_probe.")
    store = RunStore(out_dir, {**dataclasses.asdict(config), "experiment": "teacher-student"}, seed=int(config.seeds[0]))
    path = store.path / "results.csv"
    if path.exists():
        return store.path
    with torch_threads(threads or 1):
        cells = _cells(config)
        C = len(cells)
        probs = {s: _problem(config, s) for s in config.seeds}
        sidx = torch.tensor([config.seeds.index(s) for s, _, _ in cells])
        X = torch.stack([probs[s][0] for s in config.seeds])[sidx]          # (C, n, d)
        Y = torch.stack([probs[s][1] for s in config.seeds])[sidx]
        XT = torch.stack([probs[s][2] for s in config.seeds])[sidx]
        YT = torch.stack([probs[s][3] for s in config.seeds])[sidx]
        W0, A0 = map(torch.stack, zip(*[scale_student(probs[s][4], probs[s][5], tau, delta) for s, tau, delta in cells]))
        lr = torch.tensor([config.lr_scale / tau ** 2 for _, tau, _ in cells], dtype=torch.float64)
        P = X[:, : config.n_probe]
        K0 = two_layer_ntk(W0, A0, P)
        M0 = torch.einsum("cnd,cmd->cnm", P, W0) > 0
        norm0 = torch.sqrt((W0 ** 2).sum(dim=(1, 2)) + (A0 ** 2).sum(dim=1))
        record = _record_steps(config)

        lazy = None
        if config.lazy_prediction:
            lazy = np.empty((C, len(record)))
            for c in range(C):
                Ktr = two_layer_ntk(W0[c:c + 1], A0[c:c + 1], X[c:c + 1])[0]
                Kte = two_layer_ntk(W0[c:c + 1], A0[c:c + 1], XT[c:c + 1], X[c:c + 1])[0]
                lazy[c] = lazy_predict(Ktr, Y[c], K_test_train=Kte, y_test=YT[c], steps=record,
                                       lr=float(lr[c])).test_loss

        def test_loss(w, a):
            out = torch.empty(C, dtype=torch.float64)
            for c0 in range(0, C, max(1, 4096 * 64 // max(1, config.n_test))):
                sl = slice(c0, min(C, c0 + max(1, 4096 * 64 // max(1, config.n_test))))
                f = torch.einsum("cnm,cm->cn", torch.relu(torch.einsum("cnd,cmd->cnm", XT[sl], w[sl])), a[sl])
                out[sl] = 0.5 * ((f - YT[sl]) ** 2).mean(dim=1)
            return out

        rows = []
        start, w, a = 0, W0, A0
        latest = store.latest_checkpoint()
        if latest is not None:
            start, state = latest
            w, a = state["w"], state["a"]
            rows = [list(r) for r in state["rows"].tolist()]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(record), initial=sum(1 for k in record if k <= start and start > 0) or 0,
                       desc="teacher-student checkpoints")

        def callback(k, w, a):
            step = start + k
            if start > 0 and k == 0:
                return  # already recorded before the restart
            with torch.no_grad():
                f = torch.einsum("cnm,cm->cn", torch.relu(torch.einsum("cnd,cmd->cnm", X, w)), a)
                tr = 0.5 * ((f - Y) ** 2).mean(dim=1)
                te = test_loss(w, a)
                S = batched_kernel_distance(K0, two_layer_ntk(w, a, P)) if step > 0 else torch.zeros(C, dtype=torch.float64)
                ham = ((torch.einsum("cnd,cmd->cnm", P, w) > 0) != M0).double().mean(dim=(1, 2))
                pd_ = torch.sqrt(((w - W0) ** 2).sum(dim=(1, 2)) + ((a - A0) ** 2).sum(dim=1))
            if not bool(torch.all(torch.isfinite(tr))):
                bad = [cells[i] for i in torch.nonzero(~torch.isfinite(tr)).flatten().tolist()][:3]
                raise FloatingPointError(f"the training loss diverged at step {step} for (seed, tau, delta) in {bad}; "
                                         "lower lr_scale.")
            j = record.index(step)
            for c, (s, tau, delta) in enumerate(cells):
                rows.append([tau, delta, s, step, step * float(lr[c]), float(tr[c]), float(te[c]),
                             float(lazy[c, j]) if lazy is not None else math.nan, float(S[c]), float(ham[c]),
                             float(pd_[c]), float(pd_[c] / norm0[c])])
            if step > 0:
                store.save_checkpoint(step, {"w": w.clone(), "a": a.clone(),
                                             "rows": torch.tensor(rows, dtype=torch.float64)})
            if bar is not None:
                bar.update(1)

        if start < config.steps:
            train_two_layer_batched(w, a, X, Y, lr=lr, loss_tol=0.0, max_steps=config.steps - start,
                                    record_steps=[k - start for k in record if k >= start], callback=callback)
        if bar is not None:
            bar.close()
        df = pd.DataFrame(rows, columns=list(_NUMERIC))
        df["seed"] = df.seed.astype(int)
        df["step"] = df.step.astype(int)
        verdict = regime_table(df[["tau", "delta", "seed", "t", "kernel_distance", "train_loss"]],
                               by=["tau", "delta", "seed"])
        df = df.merge(verdict[["tau", "delta", "seed", "regime"]], on=["tau", "delta", "seed"], how="left")
        df = df.sort_values(["tau", "delta", "seed", "step"]).reset_index(drop=True)
        if config.fig1a_steps > 0:
            traj = fig1a_trajectories(config.fig1a_steps, config.fig1a_lr, seed=int(config.seeds[0]))
            atomic_write_bytes(store.path / "trajectories.csv", traj.to_csv(index=False).encode())
        atomic_write_bytes(path, df[list(COLUMNS)].to_csv(index=False).encode())
    return store.path


def _quick() -> TeacherStudentConfig:
    return TeacherStudentConfig()


def _paper() -> TeacherStudentConfig:
    return TeacherStudentConfig(preset="paper", d=100, width=50, teacher_width=3, n_train=1000, n_test=10000,
                                taus=_geom(0.1, 2.0, 10), deltas=_lin(-1.0, 1.0, 11), seeds=tuple(range(16)),
                                steps=10 ** 6, n_checkpoints=25, n_probe=200, fig1a_steps=10 ** 6, fig1a_lr=1e-4)


#: The experiment as the registry sees it.
EXPERIMENT = Experiment(
    name="teacher-student",
    description="Two-layer ReLU students at (tau, delta) fitting a 3-neuron teacher, all cells batched: kernel/Hamming/"
                "parameter distance, test loss, lazy prediction, regime (Kunin et al. Fig. 1b/1c).",
    config_class=TeacherStudentConfig,
    presets={
        "quick": Preset("d=20, h=50, k=3, n=200, 2000 test points, 5 taus in [0.1, 2] x 5 deltas in [-1, 1] x 2 seeds, "
                        "lr 5e-3/tau^2, 5000 steps; ~1-3 min on 2 CPU cores.", _quick),
        "paper": Preset("d=100, h=50, k=3, n=1000, 10 000 test points, 10 taus x 11 deltas x 16 seeds, lr 5e-3/tau^2, "
                        "1e6 steps (split the seeds over runs).", _paper),
    },
    run=run,
    figures=("fig_teacher_student_maps", "fig_teacher_student_neurons"),
)
