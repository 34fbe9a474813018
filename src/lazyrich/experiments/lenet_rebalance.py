"""LeNet-5 rebalancing (Kunin et al., *Get rich quick*, Fig. 5a and "Experimental Details").

One call of :func:`run` trains one cell ``(alpha, seed)``: LeNet-5 (ReLU, max-pooling), He initialization
(``kaiming_normal_``, fan-in, zero biases), then :func:`lazyrich.models.rebalance` with ``alpha`` (first
layer ``/alpha``, last ``x alpha``; the function at initialization is unchanged).  ``alpha > 1`` is the
paper's *upstream* initialization (first layer small relative to the last, ``delta > 0``), ``alpha < 1``
downstream.  At log-spaced steps it records, relative to initialization: the kernel distance
``S(0, t) = 1 - <K_0, K_t> / (||K_0|| ||K_t||)`` of the eNTK (trace over logits) on a fixed probe subset
(10 % of the training set), the Hamming distance of the binarized hidden activations on the same probe
normalized by their total count, the L2 parameter distance ``||theta_t - theta_0||``, train/test loss and
test accuracy.  ``results.csv``: one row per ``(alpha, seed, step)``.

Presets: ``quick`` -- scikit-learn digits resized to 16x16 (LeNet-5 without padding), Adam lr 1e-3,
batch 64, 300 steps, alpha in {0.3, 1, 3, 10}, 4 seeds; ``paper`` -- MNIST from ``data_dir``, 500 epochs, lr 1e-4, batch 512 (the paper does
not name the optimizer; Adam is assumed here, stated), 8 seeds.  Both declare a grid over ``alpha``.
A rerun of a finished cell on the same directory returns at once; an unfinished one is recomputed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lazyrich.dynamics.schedule import log_spaced_steps
from lazyrich.experiments.protocol import Experiment, Preset, torch_threads

__all__ = ["LenetRebalanceConfig", "run", "balance_table", "EXPERIMENT", "COLUMNS"]

COLUMNS: Tuple[str, ...] = ("alpha", "seed", "step", "kernel_distance", "hamming", "param_distance",
                            "train_loss", "test_loss", "test_acc", "regime")


@dataclass(frozen=True)
class LenetRebalanceConfig:
    """One ``(alpha, seed)`` cell of the LeNet-5 rebalancing experiment.

    Attributes
    ----------
    preset : str
        Name of the preset this config started from.
    dataset : str
        ``digits`` (built in, resized to ``input_size``) or ``mnist`` (read from ``data_dir``).
    data_dir : str or None
        Directory with the MNIST IDX files (``dataset=mnist``).
    input_size : int
        Side length of the digits images after resizing (``digits`` only; MNIST is 28).
    alpha : float
        First layer divided by alpha, last multiplied by alpha (alpha > 1 is upstream, delta > 0).
    seed : int
        Seed of the initialization and of the mini-batch order.
    steps : int or None
        Optimizer steps; None trains ``epochs`` epochs.
    epochs : int
        Epochs when ``steps`` is None.
    optimizer : str
        ``sgd`` or ``adam``.
    lr : float
        Learning rate.
    batch_size : int
        Mini-batch size.
    probe_fraction : float
        Fraction of the training set on which the eNTK and the activation patterns are evaluated.
    n_checkpoints : int
        Number of log-spaced recording steps in [1, T] (step 0 is always recorded).
    """

    preset: str = "quick"
    dataset: str = "digits"
    data_dir: Optional[str] = None
    input_size: int = 16
    alpha: float = 1.0
    seed: int = 0
    steps: Optional[int] = 300
    epochs: int = 1
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    probe_fraction: float = 0.1
    n_checkpoints: int = 12

    def validated(self) -> "LenetRebalanceConfig":
        if self.dataset not in ("digits", "mnist"):
            raise ValueError(f"dataset={self.dataset!r} is not supported; use digits or mnist.")
        if self.dataset == "mnist" and not self.data_dir:
            raise ValueError("dataset=mnist needs the MNIST files; set data_dir=/path/to/mnist.")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer={self.optimizer!r} is not supported; use sgd or adam.")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a positive finite number, got {self.alpha}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}.")
        if not 0 < self.probe_fraction <= 1:
            raise ValueError(f"probe_fraction must be in (0, 1], got {self.probe_fraction}.")
        for name in ("batch_size", "epochs", "n_checkpoints", "input_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 or none, got {self.steps}.")
        return self


def _quick() -> LenetRebalanceConfig:
    return LenetRebalanceConfig()


def _paper() -> LenetRebalanceConfig:
    return LenetRebalanceConfig(preset="paper", dataset="mnist", data_dir=None, input_size=28, steps=None,
                                epochs=500, optimizer="adam", lr=1e-4, batch_size=512, n_checkpoints=30)


def _data(config: LenetRebalanceConfig):
    if config.dataset == "digits":
        from lazyrich.data import load_digits

        d = load_digits(resize_to=config.input_size)
    else:
        from lazyrich.data.readers import read_mnist

        d = read_mnist(config.data_dir)
    x_tr, x_te = d.x_train.float(), d.x_test.float()
    side = int(round(math.sqrt(x_tr[0].numel())))
    x_tr, x_te = x_tr.reshape(-1, 1, side, side), x_te.reshape(-1, 1, side, side)
    mu, sd = x_tr.mean(), x_tr.std()
    return (x_tr - mu) / sd, d.y_train, (x_te - mu) / sd, d.y_test, side


def build_model(config: LenetRebalanceConfig, side: int) -> nn.Module:
    """LeNet-5 (ReLU, max-pool), He init (fan-in, zero biases), rebalanced by ``config.alpha``."""
    from lazyrich.models import lenet5, rebalance

    pad = 0 if side < 28 else None
    model = lenet5(input_size=side, padding=pad, seed=config.seed)
    g = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                m.bias.zero_()
    return rebalance(model, config.alpha)


def balance_table(before: nn.Module, after: nn.Module, config: LenetRebalanceConfig) -> pd.DataFrame:
    """Each layer's mean balance ``delta = a_k^2 - ||w_k||^2`` (Kunin et al.; per unit, see
    :func:`lazyrich.models.layer_balance`) before (He init, alpha = 1) and after ``rebalance(alpha)``:
    one row per layer with ``alpha, seed, layer, next_layer, delta_before, delta_after``."""
    from lazyrich.models import layer_balance

    def per_layer(m):
        return layer_balance(m).groupby(["junction", "layer", "next_layer"], as_index=False)["delta"].mean()

    b, a = per_layer(before), per_layer(after)
    out = b.rename(columns={"delta": "delta_before"})
    out["delta_after"] = a["delta"].to_numpy()
    out.insert(0, "seed", config.seed)
    out.insert(0, "alpha", config.alpha)
    return out.drop(columns="junction")


def _verdict(table: pd.DataFrame) -> str:
    """The cell's :func:`lazyrich.dynamics.classify_regime` verdict from its kernel distance, loss and
    Hamming/parameter distances; ``undetermined`` when it has too few checkpoints for one."""
    from lazyrich.dynamics import classify_regime

    try:
        return classify_regime(table.drop(columns=["alpha", "seed"])).verdict
    except ValueError:
        return "undetermined"


def run(config: LenetRebalanceConfig, out_dir, *, progress: bool = False, threads: Optional[int] = None,
        device: Optional[str] = None) -> Path:
    """Train one ``(alpha, seed)`` cell on the CPU and write ``results.csv`` (columns :data:`COLUMNS`).

    ``threads`` sets the torch intra-op threads while it runs (default 1); ``device`` other than the CPU
    is refused (this small experiment runs on the CPU).
    """
    if device not in (None, "cpu"):
        raise ValueError(f"lenet-rebalance runs on the CPU; drop device={device!r} or pass device=cpu.")
    from lazyrich.dynamics import RunStore
    from lazyrich.dynamics.store import atomic_write_bytes
    from lazyrich.dynamics.metrics import hamming_distance, param_distances
    from lazyrich.dynamics.tracker import ActivationRecorder
    from lazyrich.ntk import empirical_ntk, kernel_distance

    if not isinstance(config, LenetRebalanceConfig):
        raise TypeError(f"run expects a LenetRebalanceConfig, got {type(config).__name__}.")
    config = config.validated()
    store = RunStore(out_dir, {**dataclasses.asdict(config), "experiment": "lenet-rebalance"}, seed=config.seed)
    path = store.path / "results.csv"
    if path.exists():
        return store.path
    x_tr, y_tr, x_te, y_te, side = _data(config)
    with torch_threads(threads or 1):
        n = len(x_tr)
        T = config.steps if config.steps is not None else config.epochs * math.ceil(n / config.batch_size)
        record = log_spaced_steps(T, config.n_checkpoints)
        g = torch.Generator().manual_seed(config.seed)
        probe = x_tr[torch.randperm(n, generator=g)[: max(1, int(round(config.probe_fraction * n)))]]
        model = build_model(config, side)
        balance = balance_table(build_model(dataclasses.replace(config, alpha=1.0), side), model, config)
        atomic_write_bytes(store.path / "balance.csv", balance.to_csv(index=False).encode())
        opt = (torch.optim.SGD(model.parameters(), lr=config.lr) if config.optimizer == "sgd"
               else torch.optim.Adam(model.parameters(), lr=config.lr))
        theta0 = {k: v.detach().clone() for k, v in model.named_parameters()}

        def masks():
            with torch.no_grad():
                return ActivationRecorder(model).run(probe)[2]

        K0, M0 = empirical_ntk(model, probe), masks()
        rows = []
        order = torch.empty(0, dtype=torch.long)
        for t in range(T + 1):
            if t in record:
                K, M = (K0, M0) if t == 0 else (empirical_ntk(model, probe), masks())
                with torch.no_grad():
                    tr_loss = float(F.cross_entropy(model(x_tr), y_tr))
                    out = model(x_te)
                rows.append({"alpha": config.alpha, "seed": config.seed, "step": t,
                             "kernel_distance": float(kernel_distance(K0, K)),
                             "hamming": hamming_distance(M, M0)[0],
                             "param_distance": param_distances(dict(model.named_parameters()), theta0)[0],
                             "train_loss": tr_loss, "test_loss": float(F.cross_entropy(out, y_te)),
                             "test_acc": float((out.argmax(1) == y_te).float().mean())})
            if t == T:
                break
            if len(order) < config.batch_size:
                order = torch.cat([order, torch.randperm(n, generator=g)])
            idx, order = order[: config.batch_size], order[config.batch_size:]
            opt.zero_grad()
            F.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        table = pd.DataFrame(rows, columns=list(COLUMNS[:-1]))
        table["regime"] = _verdict(table)
        atomic_write_bytes(path, table.to_csv(index=False).encode())
    return store.path


ALPHAS: Tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)

#: The experiment as the registry sees it.
EXPERIMENT = Experiment(
    name="lenet-rebalance",
    description="LeNet-5 with first layer /alpha and last x alpha: kernel, activation and parameter movement (Kunin et al. Fig. 5a).",
    config_class=LenetRebalanceConfig,
    presets={
        "quick": Preset("digits 16x16, Adam lr 1e-3, batch 64, 300 steps, alpha in {0.3, 1, 3, 10}, 4 seeds; ~1 min on 2 CPU cores.", _quick,
                        grid={"alpha": ALPHAS}, seeds=(0, 1, 2, 3)),
        "paper": Preset("MNIST (data_dir=...), 500 epochs, lr 1e-4, batch 512, 8 seeds.", _paper,
                        grid={"alpha": (0.1, 0.3, 1.0, 3.0, 10.0)}, seeds=tuple(range(8))),
    },
    run=run,
    figures=("fig_lenet_rebalance", "fig_layer_balance"),
)
