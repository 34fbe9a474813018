"""Phase diagram of two-layer ReLU nets (Luo, Xu, Ma & Zhang, JMLR 2021, Section 4.1.2, Figs. 2-7).

One call of :func:`run` is one point ``(gamma, gamma')`` of the phase diagram: for every width ``m`` and
``n_seeds`` seeds it trains the net ``f(x) = (1/alpha) sum_k a_k relu(w_k . x)`` (eq. (1)/(3), bias as the
last input coordinate, eq. (4) init, antisymmetric ``f_0 = 0`` by default) by gradient descent that follows
the gradient flow (eq. (6)) to a loss tolerance, with all seeds of a width trained together
(:func:`lazyrich.dynamics.train_two_layer_batched`, float64 by default).  It records
``RD(theta_w)``, ``RD(theta_a)``, ``RD(theta)`` (eq. (16), at the end of training, the paper's estimate of the
supremum over time) and fits per seed the slopes ``S_w``, ``S_a``, ``S_theta`` of ``log RD`` against
``log m`` (eq. (19), Appendix D), reported as the mean over seeds with a 95 % Student-t interval.

Scalings: ``alpha = m^(gamma + 2 s)``, ``beta1 = m^(s - gamma'/2)``, ``beta2 = m^(s + gamma'/2)`` with
``s = beta_shift``, so that exactly ``kappa = beta1 beta2 / alpha = m^-gamma`` and
``kappa' = beta1 / beta2 = m^-gamma'`` (eqs. (8), (14)).  ``(gamma, gamma', s)`` is a one-to-one
reparametrization of the power-law exponents of ``(alpha, beta1, beta2)`` (all constants 1):
``s = 0`` at ``gamma' = 0`` is Fig. 2's ``beta1 = beta2 = 1``; ``s = -1/2`` and ``s = -1`` are the other two
lines of Fig. 3d.

Problems.  ``fourpoint-1d``: the 1-d four-point problem of Fig. 2.  The figure's points are not in the text
we have; we use ``x = (-1, -1/3, 1/3, 1)``, ``y = (0.3, 0.8, 0.2, 0.6)`` (targets in [0, 1] as the paper's
Assumption on ``S``).  ``digits``: scikit-learn's 8x8 digits (pixels / 16, 64-d, the first ``n_train``
training images), target the label 0..9 as a number (the paper's MNIST setup, Section 4.1.2);
``mnist``: the same with MNIST (784-d, pixels / 255) read from ``data_dir``.

Run directory: ``results.csv`` (one row: gamma, gamma_prime, S_w, S_a, S_theta, their CIs, ...),
``rd.csv`` (one row per width and seed), ``widths/m<m>.npz`` (per width: the RDs and losses per seed and,
for seed 0, the condensation features ``A_k = |a_k| ||w_k||`` and orientation -- the angle of ``w_hat_k`` in
1-d, ``w_hat_k . p`` with ``p = 1/sqrt(D)`` in high dimension -- at initialization and at the end; in 1-d
also the final ``w``, ``a`` to draw the learned function).  A width whose file exists is not retrained when
the run is resumed; a finished run returns at once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch

from lazyrich.experiments.protocol import Experiment, Preset, torch_threads

__all__ = ["PhaseDiagramConfig", "run", "scalings", "problem_data", "seed_interval", "zero_crossings",
           "EXPERIMENT", "COLUMNS", "RD_COLUMNS", "FOURPOINT_X", "FOURPOINT_Y"]

#: The 1-d four-point problem (inputs, targets); see the module docstring.
FOURPOINT_X: Tuple[float, ...] = (-1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0)
FOURPOINT_Y: Tuple[float, ...] = (0.3, 0.8, 0.2, 0.6)

COLUMNS: Tuple[str, ...] = (
    "gamma", "gamma_prime", "beta_shift", "alpha_exp", "beta1_exp", "beta2_exp", "problem", "regime",
    "S_w", "S_w_lo", "S_w_hi", "S_a", "S_a_lo", "S_a_hi", "S_theta", "S_theta_lo", "S_theta_hi",
    "n_seeds", "n_widths", "all_converged", "max_loss")
RD_COLUMNS: Tuple[str, ...] = ("gamma", "gamma_prime", "beta_shift", "m", "seed", "rd_w", "rd_a", "rd_theta",
                               "loss", "steps", "flow_time", "converged", "rejected")


@dataclass(frozen=True)
class PhaseDiagramConfig:
    """One point (gamma, gamma') of the phase diagram: all widths and seeds trained to convergence.

    Attributes
    ----------
    preset : str
        Name of the preset this config started from.
    problem : str
        ``fourpoint-1d`` (Fig. 2's 1-d problem), ``digits`` (built in, 64-d) or ``mnist`` (from ``data_dir``).
    data_dir : str or None
        Directory with the MNIST IDX files (``problem=mnist``).
    n_train : int
        Number of training samples for ``digits`` / ``mnist`` (the first ones of the training split).
    gamma : float
        gamma = -log(kappa)/log(m), Luo et al. eq. (14); kappa = beta1 beta2 / alpha = m^-gamma.
    gamma_prime : float
        gamma' = -log(kappa')/log(m), eq. (14); kappa' = beta1 / beta2 = m^-gamma'.
    beta_shift : float
        Common exponent s: beta1 = m^(s - gamma'/2), beta2 = m^(s + gamma'/2), alpha = m^(gamma + 2s).
    widths : tuple of int
        Widths m (even when symmetric); the slopes are fitted over them.
    n_seeds : int
        Seeds seed, seed+1, ... per width; the CI of the slopes is over them.
    seed : int
        First seed.
    symmetric : bool
        Antisymmetric initialization (f_0 = 0 exactly), as Luo et al. Remark 5.
    loss_tol : float
        Training stops at this loss R_S (eq. (5)).
    time_budget : float
        Flow-time budget per net (inf: train until loss_tol or max_steps).
    max_steps : int
        Most gradient steps per width.
    safety : float
        Step = safety * 2 / lambda_max (stability limit of the top Hessian eigenvalue).
    max_rel_step : float
        Cap on ||dtheta|| / ||theta|| per step (keeps Euler close to the flow during saddle escape).
    dtype : str
        float64 or float32.
    """

    preset: str = "quick"
    problem: str = "fourpoint-1d"
    data_dir: Optional[str] = None
    n_train: int = 200
    gamma: float = 0.5
    gamma_prime: float = 0.0
    beta_shift: float = 0.0
    widths: Tuple[int, ...] = (100, 200, 400, 800)
    n_seeds: int = 3
    seed: int = 0
    symmetric: bool = True
    loss_tol: float = 1e-7
    time_budget: float = math.inf
    max_steps: int = 20_000
    safety: float = 0.5
    max_rel_step: float = 0.1
    dtype: str = "float64"

    def validated(self) -> "PhaseDiagramConfig":
        if self.problem not in ("fourpoint-1d", "digits", "mnist"):
            raise ValueError(f"problem={self.problem!r} is not supported; use fourpoint-1d, digits or mnist.")
        if self.problem == "mnist" and not self.data_dir:
            raise ValueError("problem=mnist needs the MNIST files; set data_dir=/path/to/mnist.")
        for name in ("gamma", "gamma_prime", "beta_shift"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}.")
        if len(self.widths) < 2 or len(set(self.widths)) < 2:
            raise ValueError(f"widths={self.widths} must hold at least two distinct widths to fit a slope; "
                             "write e.g. widths=100,200,400.")
        if any(m < 2 for m in self.widths):
            raise ValueError(f"widths must be >= 2, got {self.widths}.")
        if self.symmetric and any(m % 2 for m in self.widths):
            raise ValueError(f"symmetric=true duplicates neurons, so every width must be even; got {self.widths}.")
        if self.n_seeds < 1 or self.n_train < 1 or self.max_steps < 1:
            raise ValueError("n_seeds, n_train and max_steps must be >= 1.")
        if not (self.loss_tol >= 0 and math.isfinite(self.loss_tol)):
            raise ValueError(f"loss_tol must be a finite number >= 0, got {self.loss_tol}.")
        if not self.time_budget > 0:
            raise ValueError(f"time_budget must be positive (inf for none), got {self.time_budget}.")
        if not 0 < self.safety < 1:
            raise ValueError(f"safety must lie in (0, 1), got {self.safety}.")
        if not self.max_rel_step > 0:
            raise ValueError(f"max_rel_step must be positive (inf disables the cap), got {self.max_rel_step}.")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype={self.dtype!r} is not supported; use float64 or float32.")
        return self


def scalings(gamma: float, gamma_prime: float, beta_shift: float, m: int) -> Tuple[float, float, float]:
    """``(alpha, beta1, beta2)`` at width ``m``: ``m^(gamma+2s)``, ``m^(s-gamma'/2)``, ``m^(s+gamma'/2)``
    (so ``kappa = m^-gamma``, ``kappa' = m^-gamma'`` exactly, Luo et al. eqs. (8), (14))."""
    s = beta_shift
    return float(m) ** (gamma + 2 * s), float(m) ** (s - gamma_prime / 2), float(m) ** (s + gamma_prime / 2)


def problem_data(config: PhaseDiagramConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """Training inputs ``(n, d)`` **with the bias coordinate 1 appended** and targets ``(n,)``, float64."""
    if config.problem == "fourpoint-1d":
        x = torch.tensor(FOURPOINT_X, dtype=torch.float64)[:, None]
        y = torch.tensor(FOURPOINT_Y, dtype=torch.float64)
    else:
        if config.problem == "digits":
            from lazyrich.data import load_digits

            d = load_digits(normalize="unit")
        else:
            from lazyrich.data.readers import read_mnist

            d = read_mnist(config.data_dir, normalize="unit")
        n = min(config.n_train, len(d.x_train))
        x = d.x_train[:n].reshape(n, -1).to(torch.float64)
        y = d.y_train[:n].to(torch.float64)
    return torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1), y


def seed_interval(values, level: float = 0.95) -> Tuple[float, float, float]:
    """Mean and Student-t ``level`` interval of per-seed values (NaN bounds for a single seed)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def zero_crossings(table: pd.DataFrame, column: str = "S_w") -> pd.DataFrame:
    """Where ``column`` changes sign along ``gamma`` at each ``gamma_prime``, by linear interpolation between
    neighbouring grid points (the stars of Luo et al. Figs. 4/5), next to the theoretical boundary
    ``gamma_c = 1 + max(gamma', 0)``.  Columns ``gamma_prime, gamma_zero, gamma_boundary`` (one row per
    crossing)."""
    from lazyrich.theory.phase_diagram import boundary_gamma

    rows = []
    for gp, g in table.groupby("gamma_prime"):
        g = g.groupby("gamma", as_index=False)[column].mean().sort_values("gamma")
        gam, s = g["gamma"].to_numpy(), g[column].to_numpy()
        for i in range(len(gam) - 1):
            if np.sign(s[i]) != np.sign(s[i + 1]) and np.isfinite(s[i]) and np.isfinite(s[i + 1]):
                z = gam[i] + (gam[i + 1] - gam[i]) * (0 - s[i]) / (s[i + 1] - s[i])
                rows.append({"gamma_prime": float(gp), "gamma_zero": float(z),
                             "gamma_boundary": float(boundary_gamma(gp))})
    return pd.DataFrame(rows, columns=["gamma_prime", "gamma_zero", "gamma_boundary"])


def _init(config: PhaseDiagramConfig, m: int, d: int, dtype) -> Tuple[torch.Tensor, torch.Tensor, float]:
    from lazyrich.models import TwoLayerNet

    alpha, beta1, beta2 = scalings(config.gamma, config.gamma_prime, config.beta_shift, m)
    ws, as_ = [], []
    for s in range(config.seed, config.seed + config.n_seeds):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([s, m]).generate_state(1)[0]))
        # the normalized draw of eq. (11) (beta1 = beta2 = 1), scaled in the run's dtype below
        net = TwoLayerNet(d, m, bias=False, generator=g, symmetric=config.symmetric)
        ws.append(net.w.detach())
        as_.append(net.a.detach()[:, 0])
    w = torch.stack(ws).to(dtype) * beta2
    a = torch.stack(as_).to(dtype) * beta1
    return w, a, alpha


def _features(a: np.ndarray, w: np.ndarray, one_d: bool) -> Tuple[np.ndarray, np.ndarray]:
    from lazyrich.theory.phase_diagram import condensation_features, orientation_angle, projection_feature

    A, w_hat = condensation_features(a, w)
    ok = np.isfinite(w_hat).all(axis=1)
    orient = np.full(len(A), np.nan)
    if ok.any():
        orient[ok] = orientation_angle(w_hat[ok]) if one_d else projection_feature(w_hat[ok])
    return A, orient


def _train_width(config: PhaseDiagramConfig, m: int, x: torch.Tensor, y: torch.Tensor) -> Dict[str, np.ndarray]:
    from lazyrich.dynamics import train_two_layer_batched

    dtype = getattr(torch, config.dtype)
    w0, a0, alpha = _init(config, m, x.shape[1], dtype)
    res = train_two_layer_batched(w0, a0, x.to(dtype), y.to(dtype), alpha=alpha, loss_tol=config.loss_tol,
                                  time_budget=config.time_budget, max_steps=config.max_steps,
                                  safety=config.safety, max_rel_step=config.max_rel_step)
    W0, A0 = w0.to(torch.float64).flatten(1), a0.to(torch.float64)
    W1, A1 = res.w.to(torch.float64).flatten(1), res.a.to(torch.float64)
    rd_w = ((W1 - W0).norm(dim=1) / W0.norm(dim=1)).numpy()
    rd_a = ((A1 - A0).norm(dim=1) / A0.norm(dim=1)).numpy()
    T0, T1 = torch.cat([A0, W0], 1), torch.cat([A1, W1], 1)
    rd_t = ((T1 - T0).norm(dim=1) / T0.norm(dim=1)).numpy()
    one_d = x.shape[1] == 2
    A_init, o_init = _features(a0[0].double().numpy(), w0[0].double().numpy(), one_d)
    A_fin, o_fin = _features(res.a[0].double().numpy(), res.w[0].double().numpy(), one_d)
    out = {"rd_w": rd_w, "rd_a": rd_a, "rd_theta": rd_t, "loss": res.loss.double().numpy(),
           "steps": res.steps.numpy(), "flow_time": res.time.double().numpy(),
           "converged": res.converged.numpy(), "rejected": res.rejected.numpy(),
           "A_init": A_init.astype(np.float32), "orient_init": o_init.astype(np.float32),
           "A_final": A_fin.astype(np.float32), "orient_final": o_fin.astype(np.float32),
           "alpha": np.float64(alpha)}
    if one_d:
        out["w_final"] = res.w[0].double().numpy()
        out["a_final"] = res.a[0].double().numpy()
    return out


def run(config: PhaseDiagramConfig, out_dir, *, progress: bool = False, threads: Optional[int] = None,
        device: Optional[str] = None) -> Path:
    """Train every width and seed of one ``(gamma, gamma')`` point and write ``results.csv`` (one row,
    :data:`COLUMNS`) and ``rd.csv`` (:data:`RD_COLUMNS`); see the module docstring.

    ``threads`` sets the torch intra-op threads while it runs (default 1); ``device`` other than the CPU is
    refused (these small nets train fastest on the CPU).
    """
    if device not in (None, "cpu"):
        raise ValueError(f"phase-diagram runs on the CPU; drop device={device!r} or pass device=cpu.")
    from lazyrich.dynamics import RunStore
    from lazyrich.dynamics.store import atomic_write_bytes
    from lazyrich.theory.phase_diagram import regime, slope_over_widths

    if not isinstance(config, PhaseDiagramConfig):
        raise TypeError(f"run expects a PhaseDiagramConfig, got {type(config).__name__}.")
    config = config.validated()
    store = RunStore(out_dir, {**dataclasses.asdict(config), "experiment": "phase-diagram"}, seed=config.seed)
    path = store.path / "results.csv"
    if path.exists():
        return store.path
    x, y = problem_data(config)
    with torch_threads(threads or 1):
        widths = sorted(set(config.widths))
        per: Dict[int, Dict[str, np.ndarray]] = {}
        for m in widths:
            f = store.path / "widths" / f"m{m}.npz"
            if f.exists():
                with np.load(f) as z:
                    per[m] = {k: z[k] for k in z.files}
                continue
            if progress:
                print(f"phase-diagram gamma={config.gamma:g} gamma'={config.gamma_prime:g}: width {m}", flush=True)
            per[m] = _train_width(config, m, x, y)
            import io

            buf = io.BytesIO()
            np.savez(buf, **per[m])
            atomic_write_bytes(f, buf.getvalue())
        seeds = list(range(config.seed, config.seed + config.n_seeds))
        rd_rows: List[Dict[str, Any]] = []
        for m in widths:
            for i, s in enumerate(seeds):
                rd_rows.append({"gamma": config.gamma, "gamma_prime": config.gamma_prime,
                                "beta_shift": config.beta_shift, "m": m, "seed": s,
                                **{k: per[m][k][i].item() for k in ("rd_w", "rd_a", "rd_theta", "loss", "steps",
                                                                    "flow_time", "converged", "rejected")}})
        rd = pd.DataFrame(rd_rows, columns=list(RD_COLUMNS))
        row: Dict[str, Any] = {"gamma": config.gamma, "gamma_prime": config.gamma_prime,
                               "beta_shift": config.beta_shift,
                               "alpha_exp": config.gamma + 2 * config.beta_shift,
                               "beta1_exp": config.beta_shift - config.gamma_prime / 2,
                               "beta2_exp": config.beta_shift + config.gamma_prime / 2,
                               "problem": config.problem, "regime": regime(config.gamma, config.gamma_prime)}
        for col, name in (("rd_w", "S_w"), ("rd_a", "S_a"), ("rd_theta", "S_theta")):
            slopes = [slope_over_widths(widths, [per[m][col][i] for m in widths]) for i in range(len(seeds))]
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = seed_interval(slopes)
        row.update(n_seeds=len(seeds), n_widths=len(widths), all_converged=bool(rd["converged"].all()),
                   max_loss=float(rd["loss"].max()))
        atomic_write_bytes(store.path / "rd.csv", rd.to_csv(index=False).encode())
        atomic_write_bytes(path, pd.DataFrame([row], columns=list(COLUMNS)).to_csv(index=False).encode())
    return store.path


PAPER_WIDTHS: Tuple[int, ...] = (1000, 5000, 10000, 20000, 40000)
QUICK_WIDTHS: Tuple[int, ...] = (1000, 2000, 4000, 8000)
#: gamma' = -0.5 is left out of quick: at widths 100-800 its cells with gamma >= 0.75 did not reach loss_tol in
#: 20 000 steps (132-1067 s each); at the quick widths 1000-8000 its cells take 5-60 s and more, which would
#: push the grid past 5 minutes.  The grid crosses the boundary at gamma' = 0 (gamma_c = 1) and gamma' = 0.5
#: (gamma_c = 1.5): measured 0.99 and 1.49, all 12 cells converged, 72.5 s on 2 workers.
QUICK_GRID = {"gamma": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), "gamma_prime": (0.0, 0.5)}
PAPER_GRID = {"gamma": (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), "gamma_prime": (-1.0, -0.5, 0.0, 0.5, 1.0)}


def _quick() -> PhaseDiagramConfig:
    # widths 1000-8000: at 100-800 the gamma >= 1.5 cells stall above the loss tolerance (max loss 1e-3..2e-2
    # after 20 000 steps); from m = 1000 on every quick cell converges to 1e-8 in ~400-1100 steps
    return PhaseDiagramConfig(widths=QUICK_WIDTHS, loss_tol=1e-8, max_steps=50_000)


def _paper() -> PhaseDiagramConfig:
    return PhaseDiagramConfig(preset="paper", widths=PAPER_WIDTHS, loss_tol=1e-8, max_steps=50_000)


def _linear() -> PhaseDiagramConfig:
    return dataclasses.replace(_paper(), preset="linear", gamma=0.5, gamma_prime=0.0)


def _condensed() -> PhaseDiagramConfig:
    return dataclasses.replace(_paper(), preset="condensed", gamma=1.75, gamma_prime=0.0)


def _fig3d() -> PhaseDiagramConfig:
    # paper widths: at the quick widths (100-800) the gamma >= 1.5 cells stall above loss_tol (max loss 1e-2
    # after 20 000 steps), at 1000-40 000 every cell converges in ~1000 steps (benchmarks/RESULTS.md)
    return dataclasses.replace(_paper(), preset="fig3d")


def _digits() -> PhaseDiagramConfig:
    return PhaseDiagramConfig(preset="digits", problem="digits", n_train=100, widths=(200, 400, 800),
                              loss_tol=1e-5, max_steps=20_000)


#: The experiment as the registry sees it.
EXPERIMENT = Experiment(
    name="phase-diagram",
    description="Two-layer ReLU nets over (gamma, gamma'): RD of the weights vs width, slopes S_w, S_a, S_theta (Luo et al. Figs. 2-7).",
    config_class=PhaseDiagramConfig,
    presets={
        "quick": Preset("1-d four points, m in {1000..8000}, 3 seeds, 6x2 grid gamma in 0.5..1.75, gamma' in {0, 0.5} "
                        "(crosses the boundary at both; gamma'<0 left to `paper`, it converges slowly), ~1.5 min.",
                        _quick, grid=QUICK_GRID),
        "paper": Preset("1-d four points, m in {1000, 5000, 10000, 20000, 40000}, 3 seeds, 8x5 grid (Fig. 4).",
                        _paper, grid=PAPER_GRID),
        "linear": Preset("one point gamma=0.5, gamma'=0 (NTK scaling), paper widths (Fig. 3a).", _linear),
        "condensed": Preset("one point gamma=1.75, gamma'=0, paper widths (Fig. 3c).", _condensed),
        "fig3d": Preset("S_w vs gamma at gamma'=0 for beta1=beta2 in {1, m^-1/2, m^-1} (Fig. 3d), paper widths, ~3 min.",
                        _fig3d, grid={"gamma": (0.5, 1.0, 1.5, 1.75), "beta_shift": (0.0, -0.5, -1.0)}),
        "digits": Preset("high-dim: 100 digits (64-d + bias), m in {200, 400, 800}, 3x3 grid (Fig. 5 setup, small).",
                         _digits, grid={"gamma": (0.5, 1.0, 1.5), "gamma_prime": (-0.5, 0.0, 0.5)}),
    },
    run=run,
    figures=("fig_phase_diagram", "fig_phase_rd", "fig_condensation"),
)
