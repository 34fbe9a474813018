"""The single-neuron figure (Kunin et al., *Get rich quick*, Fig. 2 and "Experimental Details").

Setup of the paper's full-rank experiments: ``f(x) = a w^T x`` on whitened data ``X^T X = I_2`` (here
``X = I_2``, ``y = X beta_*``), ``beta_* = (0, 1)``, ``beta_0 = a_0 w_0 = (-1, 0)``, ``eta_a = eta_w = 1``,
loss ``L = 1/2 ||X a w - y||^2`` (no ``1/n``, the convention of :mod:`lazyrich.theory.single_neuron`),
time span ``(0, 20)``.  For each conserved ``delta = a_0^2 - ||w_0||^2`` the initialization with
``a_0 w_0 = beta_0``, ``a_0 > 0`` is ``a_0^2 = (delta + sqrt(delta^2 + 4 ||beta_0||^2)) / 2``,
``w_0 = beta_0 / a_0``.

Two solutions are written side by side at ``n_times`` equally spaced times ``t`` in ``[0, t_max]``:

* ``*_exact``: the closed-form gradient flow of :func:`lazyrich.theory.single_neuron.solve`;
* ``*_gd``: full-batch gradient descent in float64 on the torch model ``a * (X @ w)`` (autograd gradients of
  the same loss) with step ``lr``, read at step ``t / lr``; its NTK ``K = J J^T`` is formed from the torch
  Jacobian rows ``J_i = (w^T x_i, a x_i)``.

``results.csv``: one row per ``(delta, t)`` with ``S_exact, S_gd`` (kernel distance ``S(0, t)``),
``beta1_*, beta2_*`` (``beta = a w``), ``a_*``, ``wnorm_*`` (the parameter path lies on the hyperbola
``a^2 - ||w||^2 = delta``), ``loss_*``, and ``regime``: :func:`lazyrich.dynamics.classify_regime` of the
gradient-descent trajectory of that delta.  The paper's reading (main text, "Upstream/Balanced/Downstream"):
``delta >> 0`` lazy, ``delta = 0`` rich, ``delta << 0`` delayed rich.
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

from lazyrich.experiments.protocol import Experiment, Preset, torch_threads

__all__ = ["SingleNeuronConfig", "run", "EXPERIMENT", "COLUMNS", "initialization"]

COLUMNS: Tuple[str, ...] = ("delta", "t", "step", "S_exact", "S_gd", "beta1_exact", "beta2_exact", "beta1_gd",
                            "beta2_gd", "a_exact", "a_gd", "wnorm_exact", "wnorm_gd", "loss_exact", "loss_gd", "regime")


@dataclass(frozen=True)
class SingleNeuronConfig:
    """Kunin et al. Fig. 2: exact single-neuron gradient flow beside small-step gradient descent.

    Attributes
    ----------
    preset : str
        Name of the preset this config started from.
    deltas : tuple of float
        Conserved quantities delta = a0^2 - ||w0||^2 (one trajectory each).
    beta_star : tuple of float
        Target beta_* = (X^T X)^-1 X^T y, 2 entries (X = I_2).
    beta0 : tuple of float
        Initial beta_0 = a0 w0, 2 entries (non-zero).
    t_max : float
        End of the time span (gradient-flow time units).
    n_times : int
        Number of equally spaced recorded times in [0, t_max].
    lr : float
        Gradient-descent step (t_max / lr and each recorded t / lr must be whole numbers of steps).
    """

    preset: str = "quick"
    deltas: Tuple[float, ...] = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)
    beta_star: Tuple[float, ...] = (0.0, 1.0)
    beta0: Tuple[float, ...] = (-1.0, 0.0)
    t_max: float = 20.0
    n_times: int = 81
    lr: float = 1e-3

    def validated(self) -> "SingleNeuronConfig":
        if not self.deltas or not all(math.isfinite(d) and abs(d) <= 1e3 for d in self.deltas):
            raise ValueError(f"deltas must be finite numbers in [-1000, 1000], got {self.deltas}; pass e.g. deltas=-4,0,4.")
        if len(self.beta_star) != 2 or len(self.beta0) != 2:
            raise ValueError("beta_star and beta0 need 2 entries each (the Fig. 2 data is X = I_2); pass e.g. beta0=-1,0.")
        if not np.any(np.asarray(self.beta0, dtype=float) != 0):
            raise ValueError("beta0 must be non-zero (a0 w0 = 0 is a saddle); pass e.g. beta0=-1,0.")
        if not (math.isfinite(self.t_max) and self.t_max > 0):
            raise ValueError(f"t_max must be a positive number, got {self.t_max}.")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 0.1):
            raise ValueError(f"lr must be in (0, 0.1] (a small step that follows the flow), got {self.lr}.")
        if self.n_times < 2:
            raise ValueError(f"n_times must be >= 2, got {self.n_times}.")
        steps = self.t_max / self.lr / (self.n_times - 1)
        if abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            raise ValueError(f"t_max / lr / (n_times - 1) = {steps:g} is not a whole number of steps; choose lr so that "
                             "each recorded time is a step (e.g. lr=1e-3 with t_max=20, n_times=81).")
        return self


def initialization(delta: float, beta0) -> Tuple[float, np.ndarray]:
    """``(a0, w0)`` with ``a0 w0 = beta0``, ``a0 > 0`` and ``a0^2 - ||w0||^2 = delta``."""
    b = np.asarray(beta0, dtype=np.float64)
    nb = float(np.linalg.norm(b))
    a0 = math.sqrt((delta + math.sqrt(delta * delta + 4 * nb * nb)) / 2)
    return a0, b / a0


def _kernel_distance_batch(K0: np.ndarray, K: np.ndarray) -> np.ndarray:
    from lazyrich.ntk import kernel_distance

    return np.array([kernel_distance(K0[i], K[i]) for i in range(K.shape[0])])


def run(config: SingleNeuronConfig, out_dir, *, progress: bool = False, threads: Optional[int] = None,
        device: Optional[str] = None) -> Path:
    """Write ``results.csv`` (columns :data:`COLUMNS`) into the run directory ``out_dir``; return it.

    All deltas are trained together (stacked along a first axis; their losses do not interact). A finished
    run directory is returned at once.
    """
    if device not in (None, "cpu"):
        raise ValueError(f"single-neuron runs on the CPU; drop device={device!r} or pass device=cpu.")
    from lazyrich.dynamics import RunStore
    from lazyrich.dynamics.regime import regime_table
    from lazyrich.dynamics.store import atomic_write_bytes
    from lazyrich.theory import single_neuron as sn

    if not isinstance(config, SingleNeuronConfig):
        raise TypeError(f"run expects a SingleNeuronConfig, got {type(config).__name__}.")
    config = config.validated()
    store = RunStore(out_dir, {**dataclasses.asdict(config), "experiment": "single-neuron"}, seed=0)
    path = store.path / "results.csv"
    if path.exists():
        return store.path
    with torch_threads(threads or 1):
        X = np.eye(2)
        bstar = np.asarray(config.beta_star, dtype=np.float64)
        y = X @ bstar
        deltas = np.asarray(config.deltas, dtype=np.float64)
        inits = [initialization(d, config.beta0) for d in deltas]
        ts = np.linspace(0.0, config.t_max, config.n_times)
        steps = np.round(ts / config.lr).astype(np.int64)
        exact = {}
        for i, (a0, w0) in enumerate(inits):
            tr = sn.solve(X, y, a0, w0)
            a, w = tr.state(ts)
            exact[i] = (tr.kernel_distance(ts), a, w, tr.loss(ts))
        # gradient descent on the torch model, all deltas stacked (C, 2)
        Xt, yt = torch.tensor(X), torch.tensor(y)
        a = torch.tensor([p[0] for p in inits], dtype=torch.float64, requires_grad=True)
        w = torch.tensor(np.stack([p[1] for p in inits]), dtype=torch.float64, requires_grad=True)

        def ntk(a, w):
            J = torch.cat([(w @ Xt.T)[:, :, None], a[:, None, None] * Xt[None]], dim=2)  # (C, n, 1 + d)
            return (J @ J.transpose(1, 2)).detach().numpy()

        def losses(a, w):
            return 0.5 * ((a[:, None] * (w @ Xt.T) - yt) ** 2).sum(dim=1)

        K0 = ntk(a, w)
        gd = []
        record = {int(s): j for j, s in enumerate(steps)}
        for k in range(int(steps[-1]) + 1):
            if k in record:
                with torch.no_grad():
                    gd.append((_kernel_distance_batch(K0, ntk(a, w)), a.detach().numpy().copy(),
                               w.detach().numpy().copy(), losses(a, w).numpy().copy()))
            if k == steps[-1]:
                break
            ga, gw = torch.autograd.grad(losses(a, w).sum(), (a, w))
            with torch.no_grad():
                a -= config.lr * ga
                w -= config.lr * gw
        rows = []
        for i, d in enumerate(deltas):
            S_ex, a_ex, w_ex, L_ex = exact[i]
            for j, t in enumerate(ts):
                S_gd, a_gd, w_gd, L_gd = gd[j]
                be, bg = a_ex[j] * w_ex[j], a_gd[i] * w_gd[i]
                rows.append({"delta": d, "t": t, "step": int(steps[j]), "S_exact": S_ex[j], "S_gd": S_gd[i],
                             "beta1_exact": be[0], "beta2_exact": be[1], "beta1_gd": bg[0], "beta2_gd": bg[1],
                             "a_exact": a_ex[j], "a_gd": a_gd[i], "wnorm_exact": float(np.linalg.norm(w_ex[j])),
                             "wnorm_gd": float(np.linalg.norm(w_gd[i])), "loss_exact": L_ex[j],
                             "loss_gd": L_gd[i]})
        df = pd.DataFrame(rows, columns=list(COLUMNS[:-1]))
        verdicts = regime_table(df[["delta", "t", "S_gd", "loss_gd"]].rename(columns={"S_gd": "S", "loss_gd": "loss"}),
                                by="delta").set_index("delta").regime
        df["regime"] = df.delta.map(verdicts)
        atomic_write_bytes(path, df.to_csv(index=False).encode())
    return store.path


def _quick() -> SingleNeuronConfig:
    return SingleNeuronConfig()


def _paper() -> SingleNeuronConfig:
    return SingleNeuronConfig(preset="paper", n_times=201, lr=2.5e-4)


#: The experiment as the registry sees it.
EXPERIMENT = Experiment(
    name="single-neuron",
    description="Exact single-neuron gradient flow beside float64 GD: beta(t), S(0,t), parameter path per delta (Kunin et al. Fig. 2).",
    config_class=SingleNeuronConfig,
    presets={
        "quick": Preset("delta in {-4,-2,-1,0,1,2,4}, t in [0, 20], GD step 1e-3 (20 000 steps); a few seconds.", _quick),
        "paper": Preset("the same with GD step 2.5e-4 (80 000 steps) and 201 recorded times.", _paper),
    },
    run=run,
    figures=("fig_single_neuron",),
)
