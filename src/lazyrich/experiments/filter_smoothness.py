"""Smoothness of first-layer CNN filters against the first layer's scale (Kunin et al., *Get rich quick*,
"Unbalanced initializations in practice" (b) and "Experimental Details", "Gabor Filters").

One call of :func:`run` trains one ``(alpha, seed)`` cell: the small cifar10-fast ResNet with 15x15
first-layer filters (:func:`lazyrich.models.filter_resnet`), no weight decay, the first-layer weights
divided by ``alpha`` after the standard initialization (only the first layer: the paper does not rescale
the last one, so :func:`lazyrich.models.rebalance` is not used).  A BatchNorm follows that convolution, so
the function is unchanged up to BatchNorm's eps while the filters learn ``alpha**2`` times faster relative
to their size.  It writes ``results.csv`` (one row: train/test accuracy, mean/median smoothness of the
learned filters and of the initial ones) and ``filters.npy`` (the learned first-layer weights,
``(out, in, k, k)``) for the filter-grid figure.

Smoothness (Kunin et al., eq. "laplacian"): for each filter ``w_ij`` (input channel i, output channel j)
``smoothness(w_ij) = || (w_ij / ||w_ij||_2) * Delta ||_2^2`` with a 3x3 Laplacian.  Reading implemented:
the extracted paper text prints ``Delta = [[-.25, -.5, -.25], [-.5, 2, -.5], [-.25, -.5, -.25]]``, whose
entries sum to -1, so it is not a Laplacian (a constant filter would score ``(k-2)^2/k^2``); we use the
centre 3, the isotropic 9-point Laplacian whose entries sum to 0 (``center=2`` gives the printed one).
``*`` is a *valid* 2-D convolution (no padding; Delta is symmetric, so convolution = correlation), so a
constant filter gives exactly 0; **lower is smoother**.  The Fourier symbol of Delta is
``4 - (1 + cos u)(1 + cos v)``, so the value lies in ``[0, 16]``; a checkerboard gives
``16 (k-2)^2 / k^2`` (12.0 for k = 15).

Presets: ``quick`` -- the scikit-learn digits resized to 32x32 and tinted with a seeded random colour per
image (a built-in 3-channel image set, no download), width 8, 4 epochs, batch 128, peak rate 0.1; alpha in {0.3, 1, 3}.
``paper`` -- CIFAR-10 from ``data_dir``, width 64, 24 epochs (cifar10-fast's schedule length), batch 512,
SGD with Nesterov momentum 0.9 and cifar10-fast's one-cycle rate (linear up to 0.4 at epoch 5, down to 0),
no weight decay, alpha in {0.1, 0.3, 1, 3, 10}, 3 seeds.  Deviations, stated: no data augmentation and no
label smoothing.
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
import torch.nn.functional as F

from lazyrich.experiments.protocol import Experiment, Preset, torch_threads

__all__ = ["FilterSmoothnessConfig", "LAPLACIAN", "filter_smoothness", "builtin_color_digits", "run",
           "EXPERIMENT", "COLUMNS"]

COLUMNS: Tuple[str, ...] = ("alpha", "seed", "dataset", "epochs", "train_acc", "test_acc", "smoothness_mean",
                            "smoothness_median", "smoothness_init_mean")

#: The 3x3 Laplacian of Kunin et al.'s smoothness measure (centre 3: entries sum to 0; see the module doc).
LAPLACIAN = torch.tensor([[-0.25, -0.5, -0.25], [-0.5, 3.0, -0.5], [-0.25, -0.5, -0.25]], dtype=torch.float64)


def filter_smoothness(weight, center: float = 3.0) -> torch.Tensor:
    """``|| (w / ||w||) * Delta ||^2`` (valid convolution) of every 2-D filter of ``weight``
    (``(out, in, k, k)`` or ``(k, k)``); returns ``(out, in)`` (or a scalar), float64.  Lower is smoother.
    ``center`` is Delta's centre entry (3: the Laplacian used here; 2: the kernel as printed in the paper)."""
    w = torch.as_tensor(weight).detach().to(torch.float64)
    if w.dim() == 2:
        return filter_smoothness(w[None, None], center)[0, 0]
    if w.dim() != 4 or w.shape[-1] < 3 or w.shape[-2] < 3:
        raise ValueError(f"weight must be (out, in, k, k) or (k, k) with k >= 3, got shape {tuple(w.shape)}.")
    norms = w.flatten(2).norm(dim=2)
    if (norms == 0).any():
        raise ValueError("a filter is all zeros, so its normalized Laplacian is undefined; pass trained or initialized filters.")
    o, i, kh, kw = w.shape
    unit = (w / norms[..., None, None]).reshape(o * i, 1, kh, kw)
    lap = LAPLACIAN.clone()
    lap[1, 1] = float(center)
    out = F.conv2d(unit, lap[None, None])
    return out.pow(2).flatten(1).sum(1).reshape(o, i)


def builtin_color_digits(size: int = 32, seed: int = 0):
    """The scikit-learn digits, resized to ``size x size`` and multiplied by a seeded random RGB tint in
    [0.25, 1] per image: ``(x_train, y_train, x_test, y_test)`` with ``x`` ``(n, 3, size, size)`` float32."""
    from lazyrich.data import load_digits

    d = load_digits(resize_to=size, normalize="unit")
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for x in (d.x_train, d.x_test):
        x = x.float().reshape(-1, 1, size, size)
        tint = 0.25 + 0.75 * torch.rand(x.shape[0], 3, 1, 1, generator=g)
        out.append(x * tint)
    return out[0], d.y_train, out[1], d.y_test


@dataclass(frozen=True)
class FilterSmoothnessConfig:
    """One ``(alpha, seed)`` cell of the filter-smoothness experiment.

    Attributes
    ----------
    preset : str
        Name of the preset this config started from.
    dataset : str
        ``digits-color`` (built in) or ``cifar10`` (read from ``data_dir``).
    data_dir : str or None
        Directory with the CIFAR-10 python batches (``dataset=cifar10``).
    alpha : float
        First-layer weights divided by alpha after the standard initialization.
    seed : int
        Seed of the initialization and of the mini-batch order.
    width : int
        Channels of the first layer (64 in cifar10-fast; the later layers have 2, 4, 8 times as many).
    first_kernel : int
        Side of the first-layer filters (15 in the paper).
    epochs : int
        Training epochs.
    batch_size : int
        Mini-batch size.
    lr : float
        Peak learning rate of the one-cycle schedule (linear up to warmup_epochs, then linearly to 0).
    warmup_epochs : float
        Epochs of the linear rise of the learning rate.
    momentum : float
        Nesterov momentum of SGD.
    max_train : int or None
        Train on the first max_train training images only (None: all).
    """

    preset: str = "quick"
    dataset: str = "digits-color"
    data_dir: Optional[str] = None
    alpha: float = 1.0
    seed: int = 0
    width: int = 8
    first_kernel: int = 15
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.1
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    max_train: Optional[int] = None

    def to_dict(self):
        return {"experiment": "filter-smoothness", **dataclasses.asdict(self)}

    def validated(self) -> "FilterSmoothnessConfig":
        if self.dataset not in ("digits-color", "cifar10"):
            raise ValueError(f"dataset={self.dataset!r} is not supported; use digits-color or cifar10.")
        for name in ("alpha", "lr"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v}.")
        for name in ("width", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.first_kernel < 3 or self.first_kernel % 2 == 0:
            raise ValueError(f"first_kernel must be odd and >= 3, got {self.first_kernel}.")
        if self.max_train is not None and self.max_train < 1:
            raise ValueError(f"max_train must be >= 1 or none, got {self.max_train}.")
        if not (0 <= self.warmup_epochs <= self.epochs) or not (0 <= self.momentum < 1):
            raise ValueError("warmup_epochs must lie in [0, epochs] and momentum in [0, 1).")
        return self


def build_model(config: FilterSmoothnessConfig):
    """The seeded :class:`lazyrich.models.FilterResNet` with its first-layer weights divided by alpha."""
    from lazyrich.models.filter_resnet import filter_resnet

    model = filter_resnet(config.width, config.first_kernel, 10, 3, seed=config.seed)
    with torch.no_grad():
        model.first_layer.weight.div_(config.alpha)
    return model


@torch.no_grad()
def _accuracy(model, x, y, batch: int = 512) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    model.train()
    return correct / len(x)


def run(config: FilterSmoothnessConfig, out_dir, *, progress: bool = False, threads: Optional[int] = None,
        device: Optional[str] = None) -> Path:
    """Train one ``(alpha, seed)`` cell; write ``results.csv`` (columns :data:`COLUMNS`) and ``filters.npy``.
    A finished cell returns at once; an unfinished one is recomputed (a cell is short)."""
    from lazyrich.dynamics.store import RunStore, atomic_write_bytes

    if not isinstance(config, FilterSmoothnessConfig):
        raise TypeError(f"run expects a FilterSmoothnessConfig, got {type(config).__name__}.")
    config = config.validated()
    if config.dataset == "cifar10" and not config.data_dir:
        raise ValueError("dataset=cifar10 needs the CIFAR-10 files; set data_dir=/path/to/cifar-10-batches-py.")
    dev = torch.device(device or "cpu")
    store = RunStore(out_dir, config.to_dict(), seed=config.seed, device=str(dev))
    path = store.path / "results.csv"
    if path.exists():
        return store.path
    if config.dataset == "digits-color":
        x_tr, y_tr, x_te, y_te = builtin_color_digits(32, seed=0)
    else:
        from lazyrich.data.readers import read_cifar10

        d = read_cifar10(config.data_dir)
        x_tr, y_tr, x_te, y_te = d.x_train, d.y_train, d.x_test, d.y_test
    if config.max_train is not None:
        x_tr, y_tr = x_tr[:config.max_train], y_tr[:config.max_train]
    mu, sd = x_tr.mean(dim=(0, 2, 3), keepdim=True), x_tr.std(dim=(0, 2, 3), keepdim=True)
    x_tr, x_te = ((x_tr - mu) / sd).to(dev), ((x_te - mu) / sd).to(dev)
    y_tr, y_te = y_tr.to(dev), y_te.to(dev)
    with torch_threads(threads or 1):
        model = build_model(config).to(dev)
        s0 = filter_smoothness(model.first_layer.weight)
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                              weight_decay=0.0)
        n = len(x_tr)
        per_epoch = math.ceil(n / config.batch_size)
        total, up = config.epochs * per_epoch, config.warmup_epochs * per_epoch

        def rate(step: int) -> float:  # cifar10-fast's piecewise-linear one-cycle schedule
            return float(np.interp(step, [0, up, total], [0.0, 1.0, 0.0]))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
        g = torch.Generator().manual_seed(config.seed)
        model.train()
        for _ in range(config.epochs):
            for idx in torch.randperm(n, generator=g).split(config.batch_size):
                idx = idx.to(dev)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
                opt.step()
                sched.step()
        w = model.first_layer.weight.detach().cpu()
        s = filter_smoothness(w)
        row = {"alpha": config.alpha, "seed": config.seed, "dataset": config.dataset, "epochs": config.epochs,
               "train_acc": _accuracy(model, x_tr, y_tr), "test_acc": _accuracy(model, x_te, y_te),
               "smoothness_mean": float(s.mean()), "smoothness_median": float(s.median()),
               "smoothness_init_mean": float(s0.mean())}
        import io

        buf = io.BytesIO()
        np.save(buf, w.numpy())
        atomic_write_bytes(store.path / "filters.npy", buf.getvalue())
        atomic_write_bytes(path, pd.DataFrame([row], columns=list(COLUMNS)).to_csv(index=False).encode())
    return store.path


def _quick() -> FilterSmoothnessConfig:
    return FilterSmoothnessConfig()


def _paper() -> FilterSmoothnessConfig:
    return FilterSmoothnessConfig(preset="paper", dataset="cifar10", width=64, epochs=24, batch_size=512, lr=0.4,
                                  warmup_epochs=5.0)


EXPERIMENT = Experiment(
    name="filter-smoothness",
    description="Laplacian smoothness of 15x15 first-layer ResNet filters vs first-layer scale alpha (Kunin et al.).",
    config_class=FilterSmoothnessConfig,
    presets={
        "quick": Preset("built-in colour digits 32x32, width 8, 4 epochs, alpha in {0.3, 1, 3}, 1 seed.", _quick,
                        grid={"alpha": (0.3, 1.0, 3.0)}),
        "paper": Preset("CIFAR-10 (data_dir=...), width 64, 24 epochs, batch 512, alpha in {0.1,...,10}, 3 seeds.",
                        _paper, grid={"alpha": (0.1, 0.3, 1.0, 3.0, 10.0)}, seeds=(0, 1, 2)),
    },
    run=run,
    figures=("fig_filter_smoothness", "fig_filter_grid"),
)
