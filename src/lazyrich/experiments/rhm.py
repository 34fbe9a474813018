"""Sample complexity of the Random Hierarchy Model under rebalancing (Kunin et al., *Get rich quick*, Fig. 5c
and "Experimental Details", "Random Hierarchy Model").

One call of :func:`run` trains one cell ``(alpha, train_fraction, seed)``: RHM data
(:func:`lazyrich.data.make_rhm`, ``L=3, n_c=8, m=4, s=2, v=8``; ``P_max = 131072``) with a training set of
``round(train_fraction * P_max)`` data and a disjoint held-out test set; a fully connected ReLU network of
width 64 with three hidden layers and **no biases**, the first layer divided by ``alpha`` and the readout
multiplied by ``alpha`` (:func:`lazyrich.models.rebalance`; no biases, so the function at initialization is
unchanged); SGD with momentum 0.9, batch 128, cosine learning-rate schedule, no weight decay, cross-entropy.
``results.csv``: one row (test/train accuracy and loss at the end).  ``alpha > 1`` is *upstream* (first
layer small relative to the readout, ``delta > 0`` at the first junction), ``alpha < 1`` downstream.

Parameterization (that of Cagnetta et al.'s code, which Kunin et al. use "with the default settings"):
weights ``N(0, 1)``, each hidden pre-activation divided by ``sqrt(fan_in)``, the readout by the width, and
learning rate ``0.1 * width = 6.4``.  It is implemented with plain ``nn.Linear`` layers holding the
*effective* weights ``c_k w_k`` (``c_k = fan_in**-0.5``, readout ``1/width``) and per-layer learning rates
``lr * c_k**2``: SGD with momentum on ``w`` is exactly SGD with momentum on ``c w`` with the rate scaled by
``c**2`` (tested against a direct implementation of that parameterization).  The schedule is torch's
``CosineAnnealingLR`` with ``T_max = cosine_end * T`` as in that code (``lr * (1 + cos(pi t / T_max)) / 2``,
evaluated per step; the paper: "decayed with a cosine schedule down to 80% of epochs").

Presets: ``paper`` -- 250 epochs, lr 6.4, 20,000 test data, alpha in {0.03, 0.1, 0.3, 1, 3, 10}, six seeds
(each seeds the RHM rules, the network and the data draw, as in the paper), training fractions
{0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5} (the paper does not list its fractions; these are ours).
``quick`` -- the same model and data, 100 epochs, fractions {0.01, 0.03, 0.1}, alpha in {0.1, 1, 10}, two
seeds.  A finished cell is not recomputed; an unfinished one resumes from its latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lazyrich.experiments.protocol import Experiment, Preset, torch_threads

__all__ = ["RHMConfig", "run", "build_model", "train_kwargs", "EXPERIMENT", "COLUMNS"]

COLUMNS: Tuple[str, ...] = ("alpha", "seed", "train_fraction", "n_train", "n_test", "n_c", "epochs", "steps",
                            "train_loss", "train_acc", "test_loss", "test_acc")


@dataclass(frozen=True)
class RHMConfig:
    """One ``(alpha, train_fraction, seed)`` cell of the RHM sample-complexity experiment.

    Attributes
    ----------
    preset : str
        Name of the preset this config started from.
    L : int
        Depth of the hierarchy.
    n_c : int
        Number of classes.
    m : int
        Multiplicity: productions per symbol.
    s : int
        Tuple size of a production.
    v : int
        Vocabulary size at every level.
    train_fraction : float
        Training-set size as a fraction of the P_max data the RHM generates.
    n_test : int
        Size of the held-out test set.
    width : int
        Width of every hidden layer.
    depth : int
        Number of hidden layers.
    alpha : float
        First layer divided by alpha, readout multiplied by alpha (alpha > 1 is upstream, delta > 0).
    seed : int
        Seeds the RHM rules, the data draw, the initialization and the mini-batch order.
    epochs : int
        Training epochs (steps = epochs * (n_train // batch_size)).
    lr : float
        Learning rate in Cagnetta et al.'s parameterization (0.1 * width in the paper).
    momentum : float
        Heavy-ball momentum of SGD.
    batch_size : int
        Mini-batch size.
    cosine_end : float
        Fraction of the steps at which the cosine schedule reaches 0 (T_max of CosineAnnealingLR).
    """

    preset: str = "quick"
    L: int = 3
    n_c: int = 8
    m: int = 4
    s: int = 2
    v: int = 8
    train_fraction: float = 0.03
    n_test: int = 20000
    width: int = 64
    depth: int = 3
    alpha: float = 1.0
    seed: int = 0
    epochs: int = 100
    lr: float = 6.4
    momentum: float = 0.9
    batch_size: int = 128
    cosine_end: float = 0.8

    @property
    def n_samples(self) -> int:
        """``P_max`` of the configured RHM."""
        return self.n_c * self.m ** sum(self.s**l for l in range(self.L))

    @property
    def n_train(self) -> int:
        return max(1, int(round(self.train_fraction * self.n_samples)))

    def validated(self) -> "RHMConfig":
        for name in ("L", "n_c", "m", "v", "n_test", "width", "depth", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.s < 2:
            raise ValueError(f"s must be >= 2, got {self.s}.")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a positive finite number, got {self.alpha}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
        if not 0 < self.cosine_end <= 1:
            raise ValueError(f"cosine_end must be in (0, 1], got {self.cosine_end}.")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}.")
        P = self.n_samples
        if self.n_train + self.n_test > P:
            raise ValueError(f"train_fraction={self.train_fraction} gives n_train={self.n_train}, which with "
                             f"n_test={self.n_test} exceeds the {P} data of this RHM; lower train_fraction or n_test.")
        if self.n_train < self.batch_size:
            raise ValueError(f"n_train={self.n_train} is smaller than batch_size={self.batch_size}; raise "
                             "train_fraction or lower batch_size.")
        return self


def _quick() -> RHMConfig:
    return RHMConfig()


def _paper() -> RHMConfig:
    return RHMConfig(preset="paper", epochs=250, train_fraction=0.05)


def build_model(config: RHMConfig) -> Tuple[nn.Sequential, Dict[str, float]]:
    """The rebalanced MLP and its per-parameter learning-rate multipliers (see the module docstring).

    Returns ``(model, layer_lrs)``: ``model`` is ``Flatten -> Linear -> ReLU -> ... -> Linear`` without
    biases, holding the effective weights ``c_k w_k`` with ``w_k ~ N(0, 1)`` (seeded by ``config.seed``) and
    then rebalanced by ``config.alpha``; ``layer_lrs[name] = c_k**2``.
    """
    from lazyrich.models import mlp, rebalance

    d_in = config.s**config.L * config.v
    model = mlp([d_in] + [config.width] * config.depth + [config.n_c], bias=False, seed=config.seed)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    g = torch.Generator().manual_seed(config.seed)
    mults: Dict[str, float] = {}
    with torch.no_grad():
        for k, (name, lin) in enumerate(linears):
            c = 1.0 / lin.in_features if k == len(linears) - 1 else lin.in_features ** -0.5
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * c)
            mults[f"{name}.weight"] = c * c
    return rebalance(model, config.alpha), mults


def train_kwargs(config: RHMConfig, n_train: int) -> Dict:
    """Keyword arguments of :func:`lazyrich.dynamics.train` for this config (``layer_lrs`` excluded)."""
    steps = config.epochs * (n_train // config.batch_size)
    t_max = config.cosine_end * steps
    return dict(steps=steps, lr=config.lr, optimizer="momentum", momentum=config.momentum, weight_decay=0.0,
                batch_size=config.batch_size, loss="cross_entropy", seed=config.seed,
                lr_schedule=lambda t: 0.5 * (1.0 + math.cos(math.pi * t / t_max)))


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[float, float]:
    with torch.no_grad():
        out = model(x)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def run(config: RHMConfig, out_dir, *, progress: bool = False, threads: Optional[int] = None,
        device: Optional[str] = None) -> Path:
    """Train one cell on the CPU and write ``results.csv`` (one row, columns :data:`COLUMNS`).

    ``threads`` sets the torch intra-op threads while it runs (default 1: the matrices are 64 wide);
    ``device`` other than the CPU is refused.  Checkpoints (every tenth of the run) make an interrupted
    cell resume; once the cell has finished only the final one (step ``T``) is kept, and a rerun returns
    at once.
    """
    if device not in (None, "cpu"):
        raise ValueError(f"rhm runs on the CPU; drop device={device!r} or pass device=cpu.")
    if not isinstance(config, RHMConfig):
        raise TypeError(f"run expects an RHMConfig, got {type(config).__name__}.")
    from lazyrich.data import make_rhm
    from lazyrich.dynamics import RunStore, train
    from lazyrich.dynamics.store import atomic_write_bytes

    config = config.validated()
    store = RunStore(out_dir, {**dataclasses.asdict(config), "experiment": "rhm"}, seed=config.seed)
    path = store.path / "results.csv"
    if path.exists():
        return store.path
    with torch_threads(threads or 1):
        data = make_rhm(config.n_train, config.n_test, L=config.L, n_c=config.n_c, m=config.m, s=config.s,
                        v=config.v, seed=config.seed)
        model, mults = build_model(config)
        kw = train_kwargs(config, config.n_train)
        train(model, data, layer_lrs=mults, store=store, progress=progress, **kw)
        tr = _evaluate(model, data.x_train, data.y_train)
        te = _evaluate(model, data.x_test, data.y_test)
        row = {"alpha": config.alpha, "seed": config.seed, "train_fraction": config.train_fraction,
               "n_train": config.n_train, "n_test": config.n_test, "n_c": config.n_c, "epochs": config.epochs, "steps": kw["steps"],
               "train_loss": tr[0], "train_acc": tr[1], "test_loss": te[0], "test_acc": te[1]}
        atomic_write_bytes(path, pd.DataFrame([row], columns=list(COLUMNS)).to_csv(index=False).encode())
        for step in store.checkpoint_steps()[:-1]:  # they only served to resume; the final state stays
            store.remove_checkpoint(step)
    return store.path


ALPHAS: Tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)

#: The experiment as the registry sees it.
EXPERIMENT = Experiment(
    name="rhm",
    description="Random Hierarchy Model: test accuracy vs training-set size for first layer /alpha, readout x alpha "
                "(Kunin et al. Fig. 5c).",
    config_class=RHMConfig,
    presets={
        "quick": Preset("RHM L=3 n_c=8 m=4 s=2 v=8, MLP 64x3, 100 epochs, fractions {0.01, 0.03, 0.1}, "
                        "alpha in {0.1, 1, 10}, 2 seeds; ~3 min on 2 busy CPU cores.", _quick,
                        grid={"alpha": (0.1, 1.0, 10.0), "train_fraction": (0.01, 0.03, 0.1)}, seeds=(0, 1)),
        "paper": Preset("As the paper: 250 epochs, lr 6.4, 20,000 test data, six alphas, 6 seeds.", _paper,
                        grid={"alpha": ALPHAS, "train_fraction": (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)},
                        seeds=tuple(range(6))),
    },
    run=run,
    figures=("fig_rhm_sample_complexity",),
)
