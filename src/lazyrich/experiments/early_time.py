r"""Early-time agreement of a two-layer net with its linear surrogate (Hu, Xiao, Adlam, Pennington, *The
surprising simplicity of the early-time learning dynamics of neural networks*, Figs. 1a-1c and 2).

Network (eq. (1)): ``f(x; W, v) = v^T phi(W x / sqrt(d)) / sqrt(m)``, symmetric initialization (eq. (3),
:func:`lazyrich.theory.early_time.symmetric_init`: ``f_0 = 0``), trained by full-batch GD (eq. (4)) on
``L = 1/(2n) sum_i (f(x_i) - y_i)^2`` (eq. (2)) with layer rates ``eta1`` (W) and ``eta2`` (v), in float64.
Beside it, on the same data and by the same GD, the linear surrogate ``f^lin(x) = gamma^T psi(x)``,
``gamma_0 = 0``, with the feature map :func:`lazyrich.theory.early_time.psi` for ``(eta1, eta2)`` and rate
``eta = max(eta1, eta2)`` (eq. (11); ``eta2 = 0`` gives ``f^lin1`` of eq. (5), ``eta1 = 0`` ``f^lin2`` of
eq. (9)), and the **naive** surrogate: the same with ``vartheta1 = vartheta2 = 0`` (Fig. 2).

Targets: ``sign`` -- ``x ~ N(0, I_d)``, ``y = sign(f*(x))`` with ``f*`` an erf network of width 5 (Fig. 1);
``norm`` -- ``y = ||x|| / sqrt(d) + relu(a^T x)``, ``||a|| = 1`` (Fig. 2).  Every (target, activation, d)
runs; the ``norm`` target only with the activations listed in ``norm_activations`` (the paper: ReLU).

``results.csv``: one row per (target, activation, d, step) with ``discrepancy`` (mean squared difference of
the net and ``f^lin`` on the test points), ``discrepancy_naive``, and train/test MSE of the net, ``f^lin`` and
the naive surrogate.  ``logits.csv``: outputs of the net and ``f^lin`` on ``n_logits`` test points (Fig. 1b).
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

__all__ = ["EarlyTimeConfig", "run", "EXPERIMENT", "COLUMNS", "train_pair", "residual_split", "train_fc",
           "SPLIT_COLUMNS"]

SPLIT_COLUMNS: Tuple[str, ...] = ("depth", "d", "step", "loss_lin_space", "loss_lin_perp", "test_loss")

COLUMNS: Tuple[str, ...] = ("target", "activation", "d", "step", "discrepancy", "discrepancy_naive",
                            "train_loss_net", "test_loss_net", "train_loss_lin", "test_loss_lin",
                            "train_loss_naive", "test_loss_naive")


@dataclass(frozen=True)
class EarlyTimeConfig:
    """Two-layer nets in NTK parameterization beside their linear surrogates (Hu et al.).

    Attributes
    ----------
    preset : str
        Name of the preset this config started from.
    activations : tuple of str
        Activations of the net (erf, relu, tanh, gelu, softplus, leaky_relu).
    ds : tuple of int
        Input dimensions (Fig. 1c compares them).
    targets : tuple of str
        sign (sign of an erf teacher, Fig. 1) and/or norm (||x||/sqrt(d) + relu(a.x), Fig. 2).
    norm_activations : tuple of str
        Activations run on the norm target (the paper: relu).
    width : int
        Hidden width m (even).
    n_train : int
        Training points.
    n_test : int
        Test points.
    eta1 : float
        First-layer learning rate (0: only the second layer trains, f^lin2).
    eta2 : float
        Second-layer learning rate (0: only the first layer trains, f^lin1).
    steps : int
        Gradient-descent steps.
    n_records : int
        Log-spaced recorded steps in [1, steps] (step 0 is always recorded).
    n_logits : int
        Test points whose outputs are written to logits.csv.
    seed : int
        Seed of data, teacher and initialization.
    fc_depth : int
        Hidden layers of the erf FC net whose test residual is split onto V_lin and V_lin^perp
        (Fig. 3a, written to residual_split.csv on the sign target with the largest d); 0 turns it off.
    """

    preset: str = "quick"
    activations: Tuple[str, ...] = ("erf", "relu")
    ds: Tuple[int, ...] = (10, 25, 50)
    targets: Tuple[str, ...] = ("sign", "norm")
    norm_activations: Tuple[str, ...] = ("relu",)
    width: int = 256
    n_train: int = 1000
    n_test: int = 500
    eta1: float = 1.0
    eta2: float = 1.0
    steps: int = 300
    n_records: int = 20
    n_logits: int = 5
    seed: int = 0
    fc_depth: int = 4

    def validated(self) -> "EarlyTimeConfig":
        from lazyrich.theory.early_time import ACTIVATIONS

        bad = [a for a in self.activations + self.norm_activations if a not in ACTIVATIONS]
        if bad or not self.activations:
            raise ValueError(f"unknown activations {bad}; choose from {', '.join(ACTIVATIONS)}.")
        if not self.targets or any(t not in ("sign", "norm") for t in self.targets):
            raise ValueError(f"targets must be sign and/or norm, got {self.targets}.")
        if not self.ds or any(d < 1 for d in self.ds):
            raise ValueError(f"ds must be positive ints, got {self.ds}.")
        if self.width < 2 or self.width % 2:
            raise ValueError(f"width must be an even int >= 2 (symmetric initialization), got {self.width}.")
        if not (math.isfinite(self.eta1) and math.isfinite(self.eta2) and self.eta1 >= 0 and self.eta2 >= 0
                and self.eta1 + self.eta2 > 0):
            raise ValueError(f"eta1, eta2 must be >= 0 and not both 0, got {self.eta1}, {self.eta2}.")
        for name in ("n_train", "n_test", "steps", "n_records", "n_logits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.fc_depth < 0:
            raise ValueError(f"fc_depth must be >= 0 (0 turns Fig. 3a off), got {self.fc_depth}.")
        if self.fc_depth and self.n_test <= max(self.ds):
            raise ValueError(f"n_test={self.n_test} must exceed the largest d={max(self.ds)} for V_lin^perp to "
                             "be non-trivial (Fig. 3a); raise n_test or set fc_depth=0.")
        if self.n_logits > self.n_test:
            raise ValueError(f"n_logits={self.n_logits} exceeds n_test={self.n_test}; lower n_logits.")
        return self


def _data(target: str, d: int, n: int, nt: int, rng: np.random.Generator):
    from lazyrich.theory.early_time import network

    X = rng.standard_normal((n + nt, d))
    if target == "sign":
        Ws, vs = rng.standard_normal((5, d)), rng.choice(np.array([-1.0, 1.0]), size=5)
        y = np.sign(network(X, Ws, vs, "erf"))
        y[y == 0] = 1.0
    else:
        a = rng.standard_normal(d)
        a /= np.linalg.norm(a)
        y = np.linalg.norm(X, axis=1) / np.sqrt(d) + np.maximum(X @ a, 0.0)
    return X[:n], y[:n], X[n:], y[n:]


def _torch_phi(name: str):
    return {"relu": torch.relu, "erf": torch.erf, "tanh": torch.tanh,
            "gelu": lambda z: torch.nn.functional.gelu(z), "softplus": torch.nn.functional.softplus,
            "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, 0.01)}[name]


def train_pair(X, y, Xt, yt, activation: str, W0, v0, *, eta1: float, eta2: float, record, naive: bool = True):
    """Train the net (eqs. (1)-(4)) and its surrogates by the same full-batch GD; outputs at the steps in
    ``record``: ``{step: (f_net(Xt), f_lin(Xt), f_naive(Xt), losses)}`` with ``losses`` the train/test MSE of
    the three models."""
    from lazyrich.theory.early_time import constants, psi

    c = constants(activation)
    eta = max(eta1, eta2)
    cn = {**c, "theta1": 0.0, "theta2": 0.0}
    P, Pt = psi(X, c, eta1=eta1, eta2=eta2, eta=eta), psi(Xt, c, eta1=eta1, eta2=eta2, eta=eta)
    Q, Qt = psi(X, cn, eta1=eta1, eta2=eta2, eta=eta), psi(Xt, cn, eta1=eta1, eta2=eta2, eta=eta)
    n, d = X.shape
    m = W0.shape[0]
    phi = _torch_phi(activation)
    Xs, Xts, ys = torch.tensor(X), torch.tensor(Xt), torch.tensor(y)
    W = torch.tensor(W0, requires_grad=True)
    v = torch.tensor(v0, requires_grad=True)
    g, gn = np.zeros(P.shape[1]), np.zeros(Q.shape[1])

    def net(Z):
        return phi(Z @ W.T / math.sqrt(d)) @ v / math.sqrt(m)

    def mse(f, t):
        return float(0.5 * np.mean((f - t) ** 2))

    out = {}
    record = set(int(k) for k in record)
    for k in range(max(record) + 1):
        if k in record:
            with torch.no_grad():
                ftr, fte = net(Xs).numpy(), net(Xts).numpy()
            out[k] = (fte, Pt @ g, Qt @ gn, {"train_loss_net": mse(ftr, y), "test_loss_net": mse(fte, yt),
                                             "train_loss_lin": mse(P @ g, y), "test_loss_lin": mse(Pt @ g, yt),
                                             "train_loss_naive": mse(Q @ gn, y), "test_loss_naive": mse(Qt @ gn, yt)})
        if k == max(record):
            break
        loss = 0.5 * ((net(Xs) - ys) ** 2).mean()
        gW, gv = torch.autograd.grad(loss, (W, v))
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"the network's loss diverged at step {k}; lower eta1/eta2.")
        with torch.no_grad():
            W -= eta1 * gW
            v -= eta2 * gv
        g = g - eta * P.T @ (P @ g - y) / n
        gn = gn - eta * Q.T @ (Q @ gn - y) / n
    return out


def residual_split(r, X):
    """Split a residual ``r`` (one entry per point) onto ``V_lin``, the span of the columns of the input matrix
    ``X`` (n x d), and its orthogonal complement (Hu et al. Sec. 4.2, Fig. 3a); return the two halves of the
    loss ``(||P r||^2 / (2n), ||(I - P) r||^2 / (2n))``, which add up to ``||r||^2 / (2n)``."""
    r, X = np.asarray(r, dtype=np.float64), np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or r.shape != (X.shape[0],):
        raise ValueError(f"residual_split needs r of shape (n,) and X of shape (n, d); got {r.shape}, {X.shape}.")
    Q, R = np.linalg.qr(X)
    keep = np.abs(np.diag(R)) > 1e-10 * max(1.0, np.abs(R).max())
    p = Q[:, keep] @ (Q[:, keep].T @ r)
    n = len(r)
    return float(p @ p / (2 * n)), float((r - p) @ (r - p) / (2 * n))


def train_fc(X, y, Xt, yt, *, depth: int, width: int, lr: float, record, rng):
    """Full-batch GD on ``L = 1/(2n) sum (f(x_i) - y_i)^2`` for an erf FC net with ``depth`` hidden layers in
    NTK parameterization (each layer ``W h / sqrt(fan_in)``, standard normal weights), float64; the test
    residual ``f(Xt) - yt`` split by :func:`residual_split` at the steps in ``record`` (Hu et al. Fig. 3a)."""
    dims = [X.shape[1]] + [width] * depth + [1]
    Ws = [torch.tensor(rng.standard_normal((b, a)), requires_grad=True) for a, b in zip(dims[:-1], dims[1:])]
    Xs, Xts, ys = torch.tensor(X), torch.tensor(Xt), torch.tensor(y)

    def net(h):
        for i, W in enumerate(Ws):
            h = h @ W.T / math.sqrt(W.shape[1])
            if i < len(Ws) - 1:
                h = torch.erf(h)
        return h[:, 0]

    rows, record = [], set(int(k) for k in record)
    for k in range(max(record) + 1):
        if k in record:
            with torch.no_grad():
                r = net(Xts).numpy() - yt
            a, b = residual_split(r, Xt)
            rows.append({"depth": depth, "d": X.shape[1], "step": k, "loss_lin_space": a, "loss_lin_perp": b,
                         "test_loss": float(r @ r / (2 * len(r)))})
        if k == max(record):
            break
        loss = 0.5 * ((net(Xs) - ys) ** 2).mean()
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"the FC net's loss diverged at step {k}; lower eta1.")
        grads = torch.autograd.grad(loss, Ws)
        with torch.no_grad():
            for W, g in zip(Ws, grads):
                W -= lr * g
    return rows


def _record(config):
    T = config.steps
    return log_spaced_steps(T, config.n_records)


def run(config: EarlyTimeConfig, out_dir, *, progress: bool = False, threads: Optional[int] = None,
        device: Optional[str] = None) -> Path:
    """Write ``results.csv`` (columns :data:`COLUMNS`) and ``logits.csv`` into ``out_dir``; return it."""
    if device not in (None, "cpu"):
        raise ValueError(f"early-time runs on the CPU; drop device={device!r} or pass device=cpu.")
    from lazyrich.dynamics import RunStore
    from lazyrich.dynamics.store import atomic_write_bytes
    from lazyrich.theory.early_time import symmetric_init

    if not isinstance(config, EarlyTimeConfig):
        raise TypeError(f"run expects an EarlyTimeConfig, got {type(config).__name__}.")
    config = config.validated()
    store = RunStore(out_dir, {**dataclasses.asdict(config), "experiment": "early-time"}, seed=config.seed)
    path = store.path / "results.csv"
    if path.exists():
        return store.path
    with torch_threads(threads or 1):
        record = _record(config)
        rows, logits = [], []
        jobs = [(t, a, d) for t in config.targets for a in (config.activations if t == "sign" else config.norm_activations)
                for d in config.ds]
        for target, act, d in jobs:
            rng = np.random.default_rng([config.seed, d, ("sign", "norm").index(target)])
            X, y, Xt, yt = _data(target, d, config.n_train, config.n_test, rng)
            W0, v0 = symmetric_init(config.width, d, rng)
            res = train_pair(X, y, Xt, yt, act, W0, v0, eta1=config.eta1, eta2=config.eta2, record=record)
            for k in record:
                fte, flin, fnaive, losses = res[k]
                rows.append({"target": target, "activation": act, "d": d, "step": k,
                             "discrepancy": float(np.mean((fte - flin) ** 2)),
                             "discrepancy_naive": float(np.mean((fte - fnaive) ** 2)), **losses})
                for i in range(config.n_logits):
                    logits.append({"target": target, "activation": act, "d": d, "step": k, "index": i,
                                   "f_net": float(fte[i]), "f_lin": float(flin[i]), "y": float(yt[i])})
        if config.fc_depth and "sign" in config.targets:
            d = max(config.ds)
            rng = np.random.default_rng([config.seed, d, 2])
            X, y, Xt, yt = _data("sign", d, config.n_train, config.n_test, rng)
            split = train_fc(X, y, Xt, yt, depth=config.fc_depth, width=config.width, lr=max(config.eta1, config.eta2),
                             record=record, rng=rng)
            atomic_write_bytes(store.path / "residual_split.csv",
                               pd.DataFrame(split, columns=list(SPLIT_COLUMNS)).to_csv(index=False).encode())
        atomic_write_bytes(store.path / "logits.csv", pd.DataFrame(logits).to_csv(index=False).encode())
        atomic_write_bytes(path, pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(index=False).encode())
    return store.path


def _quick() -> EarlyTimeConfig:
    return EarlyTimeConfig()


def _paper() -> EarlyTimeConfig:
    return EarlyTimeConfig(preset="paper", ds=(50, 100, 200), width=256, n_train=20000, n_test=2000, steps=10000,
                           n_records=40)


#: The experiment as the registry sees it.
EXPERIMENT = Experiment(
    name="early-time",
    description="Two-layer erf/ReLU nets (NTK parameterization, symmetric init) beside their linear surrogates "
                "f^lin and the naive one: discrepancy and losses over GD steps (Hu et al. Figs. 1a-1c, 2).",
    config_class=EarlyTimeConfig,
    presets={
        "quick": Preset("erf and relu, d in {10, 25, 50}, m=256, n=1000, 500 test points, eta1=eta2=1, 300 steps; "
                        "norm target with relu.", _quick),
        "paper": Preset("d in {50, 100, 200}, m=256, 20 000 training / 2 000 test points, 10 000 steps.", _paper),
    },
    run=run,
    figures=("fig_early_time_losses", "fig_early_time_logits", "fig_early_time_discrepancy", "fig_early_time_norm",
             "fig_early_time_residual_split"),
)
