"""Grokking with unbalanced embeddings (Kunin et al., *Get rich quick*, "Unbalanced initializations in
practice" (d), appendix "Experimental Details", "Grokking", and the supporting grokking figure).

One call of :func:`run` trains one seeded one-layer transformer (:func:`lazyrich.models.grok_transformer`,
the architecture of teddykoker/grokking which the paper's code is based on) on modular arithmetic
(:func:`lazyrich.data.modular_split`: ``x/y mod p``, 50 % of all equations for training) with

* token and positional embeddings divided by ``alpha`` (the balancedness parameter of the CNN experiment),
* logits multiplied by ``tau`` and the learning rate divided by ``tau**2`` (as in Kumar et al. 2023),

and the optimizer settings of teddykoker/grokking: Adam(W), ``lr = 1e-3 / tau**2``, betas ``(0.9, 0.98)``,
batch 512 (the last batch of an epoch ragged), linear warm-up over the first 10 updates.  Every
``eval_every`` steps the full train and validation accuracies/losses are written to ``curves.csv``;
``results.csv`` has one row with the first evaluated step at which train accuracy reached ``threshold``
(``steps_to_train``) and validation accuracy reached it (``steps_to_val``, the grokking time of the paper),
so both are resolved to ``eval_every`` steps.  A run that never reaches the threshold within ``max_steps``
is **censored**: the step is NaN and ``censored_train``/``censored_val`` is True (never the budget).
Training stops once both thresholds are reached (``stop_when_grokked``).

Presets
-------
``paper``
    p = 97, x/y, 50 % split, one layer, d = 128, 4 heads, ``max_steps = 30000``; grid
    ``alpha in {0.1, 0.3, 1, 3, 10}`` x ``tau in {0.5, 0.75, 1, 1.25, 1.5}`` and seeds 0-4 (the paper's
    n = 5 initializations).  Optimizer: the stored teddykoker/grokking ``train.py`` defaults, Adam with
    weight decay 0 (its comments quote Power et al.'s AdamW with weight decay 1: ``optimizer=adamw
    weight_decay=1``); the paper does not restate them.
``quick``
    Scaled down for 2 CPU cores: p = 31 (930 equations, 465 for training, so one full batch per step;
    p = 97 costs ~50-70 ms a step here), AdamW with weight decay 1 (at p = 31 Adam without weight decay
    grokked in none of the cells we tried within 3000 steps), ``max_steps = 1500``, grid
    ``alpha in {1, 10}`` x ``tau in {0.5, 1}``, one seed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lazyrich.experiments.protocol import Experiment, Preset, apply_overrides, config_from_dict, config_to_dict, torch_threads

__all__ = ["GrokkingConfig", "PRESETS", "run", "build_model", "make_optimizer", "first_crossing",
           "RESULT_COLUMNS", "CURVE_COLUMNS"]

RESULT_COLUMNS = ("alpha", "tau", "seed", "p", "operation", "lr_effective", "max_steps", "steps_run",
                  "steps_to_train", "steps_to_val", "censored_train", "censored_val",
                  "final_train_acc", "final_val_acc")
CURVE_COLUMNS = ("alpha", "tau", "seed", "step", "train_loss", "train_acc", "val_loss", "val_acc")


@dataclass(frozen=True)
class GrokkingConfig:
    """Configuration of one grokking run (one (alpha, tau, seed) cell).

    Attributes
    ----------
    preset : str
        Name of the preset this config started from (informational).
    p : int
        The prime modulus (the vocabulary has p + 2 tokens).
    operation : str
        One of x/y, x+y, x-y, x*y.
    train_fraction : float
        Fraction of all equations used for training.
    data_seed : int
        Seed of the train/validation split.
    alpha : float
        Token and positional embeddings are divided by alpha at initialization.
    tau : float
        Logits are multiplied by tau and the learning rate divided by tau**2.
    seed : int
        Seed of the initialization and of the mini-batch order.
    d_model : int
        Model width.
    heads : int
        Attention heads.
    num_layers : int
        Transformer blocks (the paper uses 1).
    optimizer : str
        ``adam`` (teddykoker/grokking's default) or ``adamw`` (decoupled weight decay, Power et al.).
    lr : float
        Base learning rate (before the division by tau**2).
    weight_decay : float
        Weight decay (L2 in the gradient for adam, decoupled for adamw).
    beta1 : float
        Adam beta1.
    beta2 : float
        Adam beta2.
    warmup_steps : int
        Linear learning-rate warm-up steps.
    batch_size : int
        Mini-batch size.
    max_steps : int
        Budget of optimizer steps; a threshold not reached by then is censored.
    eval_every : int
        Full train/validation evaluation every this many steps.
    threshold : float
        Accuracy threshold (0.99 in the paper).
    stop_when_grokked : bool
        Stop once both the train and the validation threshold are reached.
    checkpoint_every : int
        Save a resumable checkpoint every this many steps.
    """

    preset: str = "quick"
    p: int = 97
    operation: str = "x/y"
    train_fraction: float = 0.5
    data_seed: int = 0
    alpha: float = 1.0
    tau: float = 1.0
    seed: int = 0
    d_model: int = 128
    heads: int = 4
    num_layers: int = 1
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 10
    batch_size: int = 512
    max_steps: int = 3000
    eval_every: int = 20
    threshold: float = 0.99
    stop_when_grokked: bool = True
    checkpoint_every: int = 500

    def to_dict(self) -> Dict[str, Any]:
        return config_to_dict(self, "grokking")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "GrokkingConfig":
        return config_from_dict(cls, d)

    def replace(self, **changes: Any) -> "GrokkingConfig":
        return dataclasses.replace(self, **changes).validated()

    def with_overrides(self, overrides: Sequence[str]) -> "GrokkingConfig":
        return apply_overrides(self, overrides, experiment="grokking")

    def validated(self) -> "GrokkingConfig":
        """Cross-field checks (types are checked by the protocol); raises ValueError naming the fix."""
        from lazyrich.data.modular import MODULAR_OPERATIONS

        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer={self.optimizer!r} is not supported; use adam or adamw.")
        if self.operation not in MODULAR_OPERATIONS:
            raise ValueError(f"operation={self.operation!r} is not supported; use one of {', '.join(MODULAR_OPERATIONS)}.")
        for name in ("alpha", "tau", "lr"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v}.")
        for name in ("d_model", "heads", "num_layers", "batch_size", "max_steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.warmup_steps < 0 or not (self.weight_decay >= 0):
            raise ValueError("warmup_steps and weight_decay must be >= 0.")
        if not (0 < self.threshold <= 1):
            raise ValueError(f"threshold must lie in (0, 1], got {self.threshold}.")
        if not (0 < self.train_fraction < 1):
            raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {self.train_fraction}.")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("beta1 and beta2 must lie in [0, 1).")
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by heads={self.heads}.")
        return self


def _quick() -> GrokkingConfig:
    return GrokkingConfig(p=31, optimizer="adamw", weight_decay=1.0, max_steps=1500, eval_every=20)


def _paper() -> GrokkingConfig:
    return GrokkingConfig(preset="paper", max_steps=30_000, eval_every=50, checkpoint_every=2000)


PRESETS: Dict[str, Preset] = {
    "quick": Preset("p=31 x/y, one-layer transformer, AdamW wd 1, alpha in {1,10} x tau in {0.5,1}, 1500-step budget, 1 seed.",
                    _quick, grid={"alpha": (1.0, 10.0), "tau": (0.5, 1.0)}),
    "paper": Preset("p=97 x/y, alpha in {0.1,...,10} x tau in {0.5,...,1.5}, 30000-step budget, 5 seeds (paper figure).",
                    _paper, grid={"alpha": (0.1, 0.3, 1.0, 3.0, 10.0), "tau": (0.5, 0.75, 1.0, 1.25, 1.5)},
                    seeds=(0, 1, 2, 3, 4)),
}


def build_model(config: GrokkingConfig):
    """The seeded :class:`lazyrich.models.GrokTransformer` of ``config`` (embeddings / alpha, logits * tau)."""
    from lazyrich.models.grok_transformer import grok_transformer

    return grok_transformer(config.p + 2, 5, config.d_model, config.heads, config.num_layers,
                            alpha=config.alpha, tau=config.tau, seed=config.seed)


def make_optimizer(model, config: GrokkingConfig):
    """Adam or AdamW with ``lr = config.lr / tau**2`` (Kunin et al., after Kumar et al. 2023) and the linear
    warm-up ``min(update / warmup_steps, 1)`` of teddykoker/grokking (the first update has rate 0)."""
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    opt = cls(model.parameters(), lr=config.lr / config.tau ** 2, betas=(config.beta1, config.beta2),
              weight_decay=config.weight_decay)
    w = config.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(s / w, 1.0) if w > 0 else 1.0)
    return opt, sched


def first_crossing(steps, values, threshold: float) -> float:
    """First ``step`` with ``value >= threshold``; NaN (censored) when there is none."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    hit = np.nonzero(values >= threshold)[0]
    return float(steps[hit[0]]) if hit.size else float("nan")


@torch.no_grad()
def _evaluate(model, x, y, batch: int = 4096):
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, x.shape[0], batch):
        out = model(x[i:i + batch])
        loss += float(F.cross_entropy(out, y[i:i + batch], reduction="sum"))
        correct += int((out.argmax(-1) == y[i:i + batch]).sum())
    model.train()
    return loss / x.shape[0], correct / x.shape[0]


def _batches(n: int, batch_size: int, gen: torch.Generator):
    """One epoch of mini-batch indices: a seeded shuffle split into ``batch_size`` chunks, the last one
    ragged (``torch.split`` of a shuffled training set, as in teddykoker/grokking)."""
    return list(torch.randperm(n, generator=gen).split(batch_size))


def run(config: GrokkingConfig, out_dir, *, progress: bool = False, threads: Optional[int] = None,
        device: Optional[str] = None) -> Path:
    """Train one (alpha, tau, seed) cell in ``out_dir`` (resumable); write ``curves.csv`` and ``results.csv``.

    ``threads`` sets the torch intra-op threads while it runs (default 1, restored afterwards); ``device``
    defaults to the CPU.  Rerunning the same config on the same directory continues from the latest
    checkpoint (``checkpoints/``: model, optimizer, scheduler, RNG, epoch order and curve so far; the
    continuation is bit-identical to an uninterrupted run on the CPU) and returns at once when
    ``results.csv`` exists.
    """
    from lazyrich.data.modular import modular_split
    from lazyrich.dynamics.store import RunStore, atomic_write_bytes

    if not isinstance(config, GrokkingConfig):
        raise TypeError(f"run expects a GrokkingConfig (use EXPERIMENT.preset('quick')), got {type(config).__name__}.")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}.")
    config = config.validated()
    dev = torch.device(device or "cpu")
    store = RunStore(out_dir, config.to_dict(), seed=config.seed, device=str(dev))
    root = store.path
    if (root / "results.csv").exists():
        return root
    with torch_threads(threads or 1):
        _train_cell(config, store, dev, progress)
    return root


def _train_cell(config: GrokkingConfig, store, dev: torch.device, progress: bool) -> None:
    from lazyrich.data.modular import modular_split
    from lazyrich.dynamics.store import atomic_write_bytes

    root = store.path
    xtr, ytr, xva, yva = (t.to(dev) for t in modular_split(config.p, config.operation, config.train_fraction,
                                                             config.data_seed))
    model = build_model(config).to(dev)
    opt, sched = make_optimizer(model, config)
    gen = torch.Generator().manual_seed(int(config.seed))
    step, curve, epoch = 0, [], []
    latest = store.latest_checkpoint()
    if latest is not None:
        step, state = latest
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        curve = [tuple(float(v) for v in row) for row in state["curve"].tolist()]
        epoch = list(state["epoch"])
    bs = min(config.batch_size, xtr.shape[0])

    def record() -> None:
        trl, tra = _evaluate(model, xtr, ytr)
        val, vaa = _evaluate(model, xva, yva)
        curve.append((float(step), trl, tra, val, vaa))

    def grokked() -> bool:
        return any(c[2] >= config.threshold for c in curve) and any(c[4] >= config.threshold for c in curve)

    if not curve:
        record()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.max_steps, initial=step, desc=f"grokking a={config.alpha:g} t={config.tau:g}",
                   leave=False)
    model.train()
    while step < config.max_steps and not (config.stop_when_grokked and grokked()):
        if not epoch:
            epoch = _batches(xtr.shape[0], bs, gen)
        idx = epoch.pop(0).to(dev)
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if bar is not None:
            bar.update(1)
        if step % config.eval_every == 0 or step == config.max_steps:
            record()
        if step % config.checkpoint_every == 0 and step < config.max_steps:
            store.save_checkpoint(step, {"model": model.state_dict(), "opt": opt.state_dict(),
                                         "sched": sched.state_dict(), "gen": gen.get_state(),
                                         "curve": torch.tensor(curve, dtype=torch.float64), "epoch": epoch})
    if bar is not None:
        bar.close()
    cdf = pd.DataFrame(curve, columns=list(CURVE_COLUMNS[3:]))
    cdf["step"] = cdf["step"].astype(int)
    cdf = cdf.assign(alpha=config.alpha, tau=config.tau, seed=config.seed)[list(CURVE_COLUMNS)]
    atomic_write_bytes(root / "curves.csv", cdf.to_csv(index=False).encode())
    s_tr = first_crossing(cdf.step, cdf.train_acc, config.threshold)
    s_va = first_crossing(cdf.step, cdf.val_acc, config.threshold)
    row = dict(alpha=config.alpha, tau=config.tau, seed=config.seed, p=config.p, operation=config.operation,
               lr_effective=config.lr / config.tau ** 2, max_steps=config.max_steps, steps_run=step,
               steps_to_train=s_tr, steps_to_val=s_va, censored_train=bool(math.isnan(s_tr)),
               censored_val=bool(math.isnan(s_va)), final_train_acc=float(cdf.train_acc.iloc[-1]),
               final_val_acc=float(cdf.val_acc.iloc[-1]))
    atomic_write_bytes(root / "results.csv",
                       pd.DataFrame([row], columns=list(RESULT_COLUMNS)).to_csv(index=False).encode())


EXPERIMENT = Experiment(
    name="grokking",
    description="Grokking time of a one-layer transformer on modular arithmetic vs embedding scale alpha and logit scale tau (Kunin et al.).",
    config_class=GrokkingConfig,
    presets=PRESETS,
    run=run,
    figures=("fig_grokking_heatmaps", "fig_grokking_curves"),
)
