"""The cone-effect experiment (Zhou, Yang, Ren, Sugiyama, Yan, *On the cone effect in the learning dynamics*).

One call of :func:`run` does, in a resumable run directory (:class:`lazyrich.dynamics.RunStore`):

1. **Standard training** of a model with :func:`lazyrich.dynamics.train` while a
   :class:`lazyrich.dynamics.Tracker` stores the eNTK ``H(theta(t))`` (trace over logits, the ``n x n``
   kernel of the paper's eq. (3)) on a fixed, seeded probe set at the scheduled steps, together with
   losses, accuracies, parameter distances, Hamming distances of ReLU patterns, etc.  The analyses of
   the paper's Fig. 1 -- kernel distance ``S`` (eq. 4) to reference checkpoints (Fig. 1a), adjacent
   distances and kernel velocity (eq. 5, Fig. 1b), the 2-D picture of the kernel trajectory (Fig. 1c) --
   are computed afterwards from the stored kernels by :func:`lazyrich.dynamics.load_run` and drawn by
   :mod:`lazyrich.plots`.
2. **The switching experiment** (Sec. 4, "Non-linear advantages of the cone effect", Fig. 2): for each
   switch point ``t`` the checkpoint ``theta(t)`` is linearized (:func:`lazyrich.ntk.linearize`,
   ``f(x; theta_t) + J(theta_t)(theta - theta_t)``) and trained from step ``t`` to ``T`` with the same
   optimizer settings, learning-rate schedule and mini-batch sequence (``train(..., start_step=t)``);
   the test loss/accuracy of ``theta_std->lin(T; t)`` go to ``switching.csv``, one row per ``t``.
   ``t = 0`` is fully linearized (lazy) training; a last row with ``switch_step = T`` and
   ``kind = "standard"`` is the purely standard endpoint ``theta_std(T)``.

Resuming: rerunning the same config on the same directory continues standard training from its latest
checkpoint and skips every switch point that already has a row in ``switching.csv``.

Presets (:func:`preset`)
------------------------
``quick``
    MNIST-1D (Greydanus 2020, generated locally; 4,000 train / 1,000 test signals of length 40), an MLP
    40-256-256-10 (ReLU), plain SGD, learning rate 0.3, batch 64, ``T = 3000`` steps, eNTK on 256 probe
    points at 30 log-spaced steps plus every 100 steps.  Chosen so that the kernel velocity falls by
    about three orders of magnitude (a fast kernel phase in the first few hundred steps, then a slow one)
    and standard training beats fully linearized training by ~20 accuracy points, in one to two minutes
    on two CPU cores.
``paper`` (= ``paper-resnet20``), ``paper-vgg16``, ``paper-lenet5``
    The paper's setup: it follows "the same training procedures and hyperparameters as in Frankle et al.
    (2020)", i.e. the OpenLTH defaults -- ResNet-20 / VGG-16 (with BatchNorm) on CIFAR-10 with SGD,
    momentum 0.9, learning rate 0.1, weight decay 1e-4, batch 128 (the 10x drops at epochs 80 and 120
    lie beyond ``T``, so the rate is constant); LeNet on MNIST with plain SGD, rate 0.1, batch 128.
    ``T = 10^4`` iterations and reference points ``tau in {2000, 4000, 6000, 8000}`` as in Figs. 1-2.
    Deviations, stated: no data augmentation (random crops/flips) and LeNet-5 (conv) rather than
    OpenLTH's fully connected "LeNet" 300-100 (available as ``model=lenet_300_100``).  The data are read
    from ``data_dir`` (MNIST IDX files or the CIFAR-10 python batches); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lazyrich.experiments.protocol import Experiment, Preset, apply_overrides, config_from_dict, config_to_dict, torch_threads
from lazyrich.experiments.protocol import check_type as _check_type

__all__ = [
    "ConeConfig",
    "PRESETS",
    "preset",
    "run",
    "build_data",
    "build_model",
    "probe_indices",
    "record_schedule",
    "evaluate",
    "calibrate_batchnorm",
    "switch_run",
    "SWITCHING_COLUMNS",
    "REGIME_COLUMN",
    "run_regime",
]

#: Data sets the cone experiment accepts.
DATASETS: Tuple[str, ...] = ("mnist1d", "digits", "mnist", "cifar10")
#: Models the cone experiment accepts.
MODELS: Tuple[str, ...] = ("mlp", "lenet_300_100", "lenet5", "resnet20", "vgg16")
OPTIMIZERS: Tuple[str, ...] = ("sgd", "momentum", "adam")
LOSSES: Tuple[str, ...] = ("cross_entropy", "mse")
LR_SCHEDULES: Tuple[str, ...] = ("cosine", "step")
#: Columns of ``switching.csv`` (in this order).
SWITCHING_COLUMNS: Tuple[str, ...] = ("switch_step", "T", "kind", "test_loss", "test_acc", "train_loss", "train_acc")
#: Column appended to ``switching.csv`` after :data:`SWITCHING_COLUMNS`: the run's
#: :func:`lazyrich.dynamics.classify_regime` verdict (Kunin et al.) from the tracker's ``metrics.csv``
#: (``kernel_dist_init`` and ``train_loss`` over ``step``), the same value in every row.
REGIME_COLUMN = "regime"


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConeConfig:
    """Fully resolved configuration of one cone-effect run (see the module docstring for the presets).

    Every field can be overridden from the command line as ``key=value`` (:meth:`with_overrides`).

    Attributes
    ----------
    preset : str
        Name of the preset this config started from (informational).
    dataset : {"mnist1d", "digits", "mnist", "cifar10"}
        ``mnist1d`` and ``digits`` are built in; ``mnist``/``cifar10`` are read from ``data_dir``.
    data_dir : str or None
        Directory with the MNIST IDX files or the CIFAR-10 python batches.
    n_train, n_test : int or None
        For ``mnist1d``: the generated split sizes.  Otherwise a seeded random subset of that size
        (``None`` keeps the whole split).
    data_seed : int
        Seed of the generated data / the subset draw.
    normalize : {"unit", "standardize"}
        Input normalization for ``digits``/``mnist``/``cifar10`` (``mnist1d`` is always standardized).
    model : {"mlp", "lenet_300_100", "lenet5", "resnet20", "vgg16"}
    hidden : tuple of int
        Hidden widths of ``mlp`` (``()`` gives a linear model, which is linear in its parameters).
    activation : str
        Hidden activation of ``mlp``/``lenet5``.
    seed : int
        Seed of the model initialization and of the mini-batch sequence.
    steps : int
        ``T``, the number of optimizer steps.
    lr, optimizer, momentum, weight_decay, batch_size, loss, lr_schedule
        Passed to :func:`lazyrich.dynamics.train` for standard *and* linearized training
        (``batch_size=None`` is full-batch gradient descent).
    n_probe, probe_seed
        Size and seed of the fixed probe set (drawn from the training inputs) for the eNTK.
    record_every, record_log
        The eNTK and metrics are recorded every ``record_every`` steps, at ``record_log`` log-spaced steps
        in ``[1, T]``, at step 0, at ``T``, at every switch point and every ``tau``.
    per_layer : bool
        Also store per-parameter kernels.
    ntk_method : str
        Engine method for :func:`lazyrich.ntk.empirical_ntk`.
    switch_points : tuple of int
        Switch steps ``t`` of the switching experiment (0 is always included); each ``0 <= t < T``.
    taus : tuple of int
        Reference steps ``tau`` of Fig. 1a (used by the report; each ``0 <= tau <= T``).
    dts : tuple of int
        Gaps ``dt`` (in steps, multiples of ``record_every``) of the adjacent distances of Fig. 1b.
    eval_batch_size : int
        Batch size for evaluating losses/accuracies in the switching experiment.
    bn_calibration : int
        For models with BatchNorm: before training, the running statistics are set to the exact mean and
        variance over the first ``bn_calibration`` training inputs (:func:`calibrate_batchnorm`; 0 keeps
        torch's defaults 0/1).  The eNTK, the evaluation and the linearization all use the eval-mode network,
        whose function at ``theta(0)`` is otherwise that of un-normalized activations; training itself (batch
        statistics) is unaffected.
    """

    preset: str = "quick"
    dataset: str = "mnist1d"
    data_dir: Optional[str] = None
    n_train: Optional[int] = 4000
    n_test: Optional[int] = 1000
    data_seed: int = 42
    normalize: str = "standardize"
    model: str = "mlp"
    hidden: Tuple[int, ...] = (256, 256)
    activation: str = "relu"
    seed: int = 0
    steps: int = 3000
    lr: float = 0.3
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: Optional[int] = 64
    loss: str = "cross_entropy"
    lr_schedule: Optional[str] = None
    n_probe: int = 256
    probe_seed: int = 0
    record_every: int = 100
    record_log: int = 30
    per_layer: bool = False
    ntk_method: str = "auto"
    switch_points: Tuple[int, ...] = (0, 30, 100, 300, 1000, 2000)
    taus: Tuple[int, ...] = (600, 1200, 1800, 2400)
    dts: Tuple[int, ...] = (100, 200, 400)
    eval_batch_size: int = 1000
    bn_calibration: int = 2048

    # ---------------------------------------------------------------- conversion
    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (tuples become lists) with ``"experiment": "cone"``."""
        return config_to_dict(self, "cone")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ConeConfig":
        """Inverse of :meth:`to_dict` (extra keys such as ``format``/``experiment`` are ignored)."""
        return config_from_dict(cls, d)

    def replace(self, **changes: Any) -> "ConeConfig":
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes).validated()

    def with_overrides(self, overrides: Sequence[str]) -> "ConeConfig":
        """Apply command-line overrides ``["key=value", ...]`` with type checking.

        Values are parsed by the field's type: ``int``/``float``; ``bool`` from ``true/false/1/0/yes/no``;
        ``None`` from ``none``/``null`` where the field allows it; tuples of ints from ``1,2,3`` (or
        ``[1, 2, 3]``; an empty value or ``()`` gives the empty tuple).

        Raises
        ------
        ValueError
            For a malformed item, an unknown key (the message lists the valid keys) or a value of the
            wrong type.
        """
        return apply_overrides(self, overrides, experiment="cone")

    # ---------------------------------------------------------------- validation
    def validated(self) -> "ConeConfig":
        """Check every field; return ``self`` (raises ValueError/TypeError with the fix)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])

        def choice(name: str, allowed: Sequence[str], optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if v not in allowed:
                raise ValueError(f"{name}={v!r} is not supported; use one of {', '.join(allowed)}.")

        choice("dataset", DATASETS)
        choice("model", MODELS)
        choice("optimizer", OPTIMIZERS)
        choice("loss", LOSSES)
        choice("lr_schedule", LR_SCHEDULES, optional=True)
        choice("normalize", ("unit", "standardize"))
        pos = ["steps", "n_probe", "record_every", "eval_batch_size"]
        for name in pos:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.bn_calibration < 0:
            raise ValueError(f"bn_calibration must be >= 0, got {self.bn_calibration}.")
        for name in ("n_train", "n_test", "batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or none, got {v}.")
        if self.record_log < 0:
            raise ValueError(f"record_log must be >= 0, got {self.record_log}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
        for h in self.hidden:
            if h < 1:
                raise ValueError(f"hidden widths must be >= 1, got {list(self.hidden)}.")
        bad = [t for t in self.switch_points if not 0 <= t < self.steps]
        if bad:
            raise ValueError(f"switch_points {bad} lie outside [0, steps={self.steps}); choose switch steps 0 <= t < T.")
        bad = [t for t in self.taus if not 0 <= t <= self.steps]
        if bad:
            raise ValueError(f"taus {bad} lie outside [0, steps={self.steps}]; choose reference steps 0 <= tau <= T.")
        bad = [d for d in self.dts if d < 1 or d % self.record_every]
        if bad:
            raise ValueError(
                f"dts {bad} must be positive multiples of record_every={self.record_every} so that both ends are recorded."
            )
        if self.dataset in ("mnist", "cifar10") and self.data_dir is not None and not self.data_dir.strip():
            raise ValueError(f"data_dir is empty; set data_dir=/path/to/{self.dataset}.")
        return self

    @property
    def switch_steps(self) -> List[int]:
        """Sorted switch points with 0 always included."""
        return sorted(set(self.switch_points) | {0})


# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------


def _quick() -> ConeConfig:
    return ConeConfig()


def _paper_resnet20() -> ConeConfig:
    return ConeConfig(
        preset="paper-resnet20",
        dataset="cifar10",
        data_dir=None,
        n_train=None,
        n_test=None,
        data_seed=0,
        normalize="standardize",
        model="resnet20",
        hidden=(),
        seed=0,
        steps=10_000,
        lr=0.1,
        optimizer="momentum",
        momentum=0.9,
        weight_decay=1e-4,
        batch_size=128,
        lr_schedule=None,
        n_probe=512,
        record_every=100,
        record_log=30,
        switch_points=(0, 250, 500, 1000, 2000, 4000, 6000, 8000),
        taus=(2000, 4000, 6000, 8000),
        dts=(100, 200, 400),
        eval_batch_size=500,
    )


def _paper_vgg16() -> ConeConfig:
    return dataclasses.replace(_paper_resnet20(), preset="paper-vgg16", model="vgg16")


def _paper_lenet5() -> ConeConfig:
    return dataclasses.replace(
        _paper_resnet20(),
        preset="paper-lenet5",
        dataset="mnist",
        model="lenet5",
        optimizer="sgd",
        weight_decay=0.0,
        normalize="unit",
    )


#: Preset name -> factory.  ``paper`` is the ResNet-20 / CIFAR-10 setup.
PRESETS: Dict[str, Callable[[], ConeConfig]] = {
    "quick": _quick,
    "paper": lambda: dataclasses.replace(_paper_resnet20(), preset="paper"),
    "paper-resnet20": _paper_resnet20,
    "paper-vgg16": _paper_vgg16,
    "paper-lenet5": _paper_lenet5,
}


def preset(name: str) -> ConeConfig:
    """The :class:`ConeConfig` of a preset: ``quick``, ``paper`` (ResNet-20/CIFAR-10), ``paper-resnet20``,
    ``paper-vgg16``, ``paper-lenet5`` (see the module docstring)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]().validated()


# --------------------------------------------------------------------------------------------
# data, model, probe set, schedule
# --------------------------------------------------------------------------------------------


def build_data(config: ConeConfig):
    """Build the :class:`lazyrich.data.Dataset` of ``config``.

    Raises
    ------
    FileNotFoundError
        ``mnist``/``cifar10`` without ``data_dir`` or with a directory that does not exist or lacks files;
        the one-sentence message names what is missing and the override to set.
    """
    from lazyrich.data import load_digits, make_mnist1d, read_cifar10, read_mnist

    name = config.dataset
    if name == "mnist1d":
        return make_mnist1d(n_train=config.n_train or 4000, n_test=config.n_test or 1000, seed=config.data_seed)
    if name == "digits":
        data = load_digits(seed=config.data_seed, normalize=config.normalize)
    else:
        what = {"mnist": "the four MNIST IDX files (train-images-idx3-ubyte, ...)",
                "cifar10": "the CIFAR-10 python batches (cifar-10-batches-py/)"}[name]
        if config.data_dir is None:
            raise FileNotFoundError(
                f"The {name} data set is read from a local directory but none was given; "
                f"set data_dir=/path/to/dir (holding {what})."
            )
        root = Path(config.data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"The {name} data directory '{root}' does not exist; put {what} there or set data_dir=/path/to/dir."
            )
        reader = read_mnist if name == "mnist" else read_cifar10
        try:
            data = reader(root, normalize=config.normalize)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{str(exc).rstrip('.')} (or set data_dir=/path/to/dir).") from None
    if config.n_train is not None or config.n_test is not None:
        n_tr = None if config.n_train is None else min(config.n_train, data.n_train)
        n_te = None if config.n_test is None else min(config.n_test, data.n_test)
        data = data.subset(n_tr, n_te, seed=config.data_seed)
    return data


def build_model(config: ConeConfig, data) -> nn.Module:
    """The seeded model of ``config`` for ``data`` (input shape and number of classes taken from it)."""
    from lazyrich.models import lenet5, mlp, resnet20, vgg16

    shape = tuple(data.input_shape)
    c = int(data.num_classes)
    d = int(np.prod(shape))
    if config.model == "mlp":
        return mlp([d, *config.hidden, c], activation=config.activation, seed=config.seed)
    if config.model == "lenet_300_100":
        return mlp([d, 300, 100, c], activation="relu", seed=config.seed)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(
            f"model={config.model} needs square images (C, S, S) but {config.dataset} has inputs of shape {shape}; "
            "use model=mlp."
        )
    if config.model == "lenet5":
        return lenet5(in_channels=shape[0], num_classes=c, input_size=shape[1], activation=config.activation,
                      seed=config.seed)
    if config.model == "resnet20":
        return resnet20(num_classes=c, in_channels=shape[0], seed=config.seed)
    return vgg16(num_classes=c, in_channels=shape[0], input_size=shape[1], seed=config.seed)


def probe_indices(n_train: int, n_probe: int, seed: int) -> np.ndarray:
    """Sorted indices of the fixed probe set: ``min(n_probe, n_train)`` training points drawn without
    replacement by a ``torch.Generator`` seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    k = min(int(n_probe), int(n_train))
    return np.sort(torch.randperm(int(n_train), generator=g)[:k].numpy())


def record_schedule(config: ConeConfig) -> List[int]:
    """Steps at which the tracker records (and train checkpoints): ``0``, ``T``, every ``record_every``,
    ``record_log`` log-spaced steps in ``[1, T]``, the switch points and the taus."""
    T = config.steps
    steps = {0, T}
    steps.update(range(0, T + 1, config.record_every))
    if config.record_log > 0:
        steps.update(int(s) for s in np.unique(np.round(np.geomspace(1, T, config.record_log)).astype(int)))
    steps.update(config.switch_steps)
    steps.update(config.taus)
    return sorted(s for s in steps if 0 <= s <= T)


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> int:
    """Set the running statistics of every BatchNorm layer to the exact statistics over ``x``; return the
    number of BatchNorm layers.

    Each layer's running mean/variance are reset and accumulated as a cumulative average (``momentum=None``)
    over forward passes in training mode, chunk by chunk, without gradients; momentum and the train/eval
    flags are restored afterwards.  With one chunk the result is the per-channel mean and unbiased variance of
    the layer's input over ``x``; with several chunks, the average of the per-chunk statistics.  Parameters
    do not change.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or x.shape[0] == 0:
        return 0
    flags = [(m, m.training) for m in model.modules()]
    moms = [m.momentum for m in bns]
    dev = next(iter(model.parameters()), torch.empty(0)).device
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                model(x[i:i + batch_size].to(dev))
    finally:
        for m, mom in zip(bns, moms):
            m.momentum = mom
        for m, flag in flags:
            m.training = flag
    return len(bns)


# --------------------------------------------------------------------------------------------
# evaluation and linearized training
# --------------------------------------------------------------------------------------------


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "cross_entropy",
             batch_size: int = 1000) -> Tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in eval mode, in chunks of ``batch_size``.

    ``loss="cross_entropy"``: mean negative log-likelihood of the softmax; ``"mse"``: mean over samples of
    ``0.5 * ||f(x) - onehot(y)||^2`` (the convention of :func:`lazyrich.dynamics.train` is assumed to be
    the same; it only matters for the reported number).  Accuracy is the fraction of ``argmax f(x) == y``.
    """
    was_training = model.training
    dev = next(iter(model.parameters()), torch.empty(0)).device
    model.eval()
    total_loss, correct, n = 0.0, 0, int(x.shape[0])
    if n == 0:
        raise ValueError("evaluate needs at least one sample.")
    with torch.no_grad():
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            out = model(xb).double()
            if loss == "cross_entropy":
                total_loss += float(F.cross_entropy(out, yb, reduction="sum"))
            elif loss == "mse":
                tgt = F.one_hot(yb, out.shape[1]).double()
                total_loss += float(0.5 * ((out - tgt) ** 2).sum())
            else:
                raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {loss!r}.")
            correct += int((out.argmax(dim=1) == yb).sum())
    model.train(was_training)
    return total_loss / n, correct / n


class _FrozenModeLinearized(nn.Module):
    """Wrap a linearized model so that ``.train()`` never puts its frozen base network in training mode.

    The linearization ``f(x; theta_t) + J(theta_t)(theta - theta_t)`` is taken of the eval-mode network
    (BatchNorm with its running statistics at ``t``, no dropout), as :func:`lazyrich.ntk.linearize`
    requires; a training loop calling ``model.train()`` must not switch BatchNorm back to batch statistics.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inner.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def train(self, mode: bool = True) -> "_FrozenModeLinearized":
        self.training = bool(mode)
        self.inner.eval()
        return self


def _train_kwargs(config: ConeConfig) -> Dict[str, Any]:
    return dict(
        lr=config.lr,
        optimizer=config.optimizer,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        loss=config.loss,
        lr_schedule=config.lr_schedule,
        seed=config.seed,
    )


def switch_run(config: ConeConfig, data, state_dict: Dict[str, torch.Tensor], t: int, *,
               progress: bool = False, device: Optional[str] = None) -> nn.Module:
    """Train ``linearize(model at t)`` from step ``t`` to ``T = config.steps`` (Zhou et al., Sec. 4 / Fig. 2).

    The model is rebuilt from ``config``, loaded with ``state_dict`` (the standard-training checkpoint
    at ``t``), put in eval mode and linearized; it is then trained by :func:`lazyrich.dynamics.train`
    with ``start_step=t`` and exactly the optimizer settings, learning-rate schedule and batch seed of
    the standard run (a fresh optimizer state: the linearized parameters start at ``theta(t)`` with zero
    momentum).  Returns the trained linearized model ``theta_std->lin(T; t)``.
    """
    from lazyrich.dynamics import train
    from lazyrich.ntk import linearize

    model = build_model(config, data).to(device or "cpu")
    model.load_state_dict(state_dict)
    model.eval()
    lin = _FrozenModeLinearized(linearize(model))
    if t < config.steps:
        train(lin, data, steps=config.steps, start_step=int(t), tracker=None, store=None, progress=progress,
              **_train_kwargs(config))
    return lin


def _read_switching(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in SWITCHING_COLUMNS})
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        from lazyrich.dynamics import RunStoreError

        raise RunStoreError(
            f"switching.csv in {path.parent} is corrupt ({type(exc).__name__}); delete it to recompute the switching runs."
        ) from None
    missing = [c for c in SWITCHING_COLUMNS if c not in df.columns]
    if missing:
        from lazyrich.dynamics import RunStoreError

        raise RunStoreError(f"switching.csv in {path.parent} lacks columns {missing}; delete it to recompute it.")
    return df


def _write_switching(path: Path, df: pd.DataFrame) -> None:
    from lazyrich.dynamics.store import atomic_write_bytes

    df = df.sort_values(["switch_step", "kind"], kind="stable").reset_index(drop=True)
    cols = list(SWITCHING_COLUMNS) + ([REGIME_COLUMN] if REGIME_COLUMN in df.columns else [])
    atomic_write_bytes(path, df[cols].to_csv(index=False).encode())


def run_regime(run_dir) -> str:
    """The :func:`lazyrich.dynamics.classify_regime` verdict of a cone run from its ``metrics.csv`` (kernel
    distance to initialization ``kernel_dist_init`` and ``train_loss`` at the recorded steps; Kunin et al.,
    *Get rich quick*); ``undetermined`` when the metrics do not allow one (e.g. fewer than 3 checkpoints)."""
    from lazyrich.dynamics import classify_regime

    try:
        return classify_regime(pd.read_csv(Path(run_dir) / "metrics.csv")).verdict
    except (ValueError, FileNotFoundError):
        return "undetermined"


def _row(t: int, T: int, kind: str, model: nn.Module, data, config: ConeConfig) -> Dict[str, Any]:
    te = evaluate(model, data.x_test, data.y_test, loss=config.loss, batch_size=config.eval_batch_size)
    tr = evaluate(model, data.x_train, data.y_train, loss=config.loss, batch_size=config.eval_batch_size)
    return {"switch_step": int(t), "T": int(T), "kind": kind, "test_loss": te[0], "test_acc": te[1],
            "train_loss": tr[0], "train_acc": tr[1]}


# --------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------


def run(config: ConeConfig, out_dir, *, progress: bool = True, threads: Optional[int] = None,
        device: Optional[str] = None) -> Path:
    """Run (or resume) the cone-effect experiment of ``config`` in ``out_dir``; return the run directory.

    Writes the run directory of :class:`lazyrich.dynamics.RunStore` (config, env, metrics, kernels,
    checkpoints) and ``switching.csv`` with columns :data:`SWITCHING_COLUMNS`: one row per switch point
    ``t`` (``kind="linearized"`` for ``t = 0``, ``"switch"`` otherwise) holding the losses/accuracies of
    ``theta_std->lin(T; t)``, and one row ``switch_step = T, kind = "standard"`` for standard training.
    No plotting happens here (see :func:`lazyrich.plots.report`).

    Parameters
    ----------
    config : ConeConfig
    out_dir : str or Path
        The run directory (created, or resumed when it holds a run with the same config).
    progress : bool
        tqdm progress bars (standard training on a terminal; switch points).
    threads : int, optional
        torch intra-op threads while the experiment runs (restored afterwards).  ``None`` picks 1 for the
        fully connected models (``mlp``, ``lenet_300_100``), whose tiny matrix products only lose time to
        thread synchronization -- badly so on a busy machine -- and leaves torch's setting for the conv nets.
        Results do not depend on it beyond floating-point summation order.
    device : str, optional
        Torch device for training, kernels and evaluation (``None``: ``"cuda"`` when available, else
        ``"cpu"``).  Models are initialized on the CPU (same weights everywhere) and then moved; the device is
        recorded in ``env.json`` and is not part of the config, so a run may be resumed on another device.

    Raises
    ------
    lazyrich.dynamics.RunStoreError
        ``out_dir`` holds a foreign/corrupt run or one with a different config.
    FileNotFoundError
        A data set read from disk is missing (the message names the ``data_dir=`` override).
    """
    if not isinstance(config, ConeConfig):
        raise TypeError(f"run expects a ConeConfig (use preset('quick')), got {type(config).__name__}.")
    config = config.validated()
    if threads is None:
        threads = 1 if config.model in ("mlp", "lenet_300_100") else None
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}.")
    with torch_threads(threads):
        return _run(config, out_dir, progress, device)


def _run(config: ConeConfig, out_dir, progress: bool, device: Optional[str]) -> Path:
    from lazyrich.dynamics import RunStore, Tracker, train

    data = build_data(config)  # before touching out_dir: a missing data set leaves no half-made run
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = str(torch.device(device))
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use e.g. device='cpu' or 'cuda'.") from None
    store = RunStore(out_dir, config.to_dict(), seed=config.seed, device=device)
    T = config.steps

    # -- standard training with the tracker (resumes from the latest checkpoint) -------------
    model = build_model(config, data).to(device)
    idx = torch.from_numpy(probe_indices(data.n_train, config.n_probe, config.probe_seed))
    probe_x, probe_y = data.x_train[idx], data.y_train[idx]
    schedule = record_schedule(config)
    done = store.completed_steps()
    if config.bn_calibration > 0 and not store.checkpoint_steps():  # a resumed run loads its buffers
        calibrate_batchnorm(model, data.x_train[: config.bn_calibration], batch_size=config.eval_batch_size)
    # a switch point still to run whose checkpoint training already passed but is gone (a damaged one set aside
    # on resume): training reruns from the last checkpoint before it, so that it is written again
    ckpts = store.checkpoint_steps()
    have = set((int(r.switch_step), str(r.kind)) for r in _read_switching(store.path / "switching.csv").itertuples(index=False))
    lost = [t for t in config.switch_steps if (t, "linearized" if t == 0 else "switch") not in have
            and t not in ckpts and ckpts and t < ckpts[-1]]
    if lost:
        store.recompute_from(min(lost))
    if lost or not set(schedule) <= done or T not in store.checkpoint_steps():
        tracker = Tracker(
            model, probe_x, probe_y, schedule=schedule, store=store, outputs="trace", per_layer=config.per_layer,
            train_data=(data.x_train, data.y_train), test_data=(data.x_test, data.y_test), loss=config.loss,
            ntk_method=config.ntk_method, seed=config.seed,
        )
        train(model, data, steps=T, tracker=tracker, store=store, checkpoint_steps=schedule, progress=progress,
              **_train_kwargs(config))

    # -- switching experiment -------------------------------------------------------------------
    path = store.path / "switching.csv"
    table = _read_switching(path)
    have = set((int(r.switch_step), str(r.kind)) for r in table.itertuples(index=False))
    todo = [t for t in config.switch_steps if (t, "linearized" if t == 0 else "switch") not in have]
    bar = _progress(todo, progress, "switching std->lin")
    for t in bar:
        state = store.load_checkpoint(t)
        lin = switch_run(config, data, state["model"], t, progress=False, device=device)
        row = _row(t, T, "linearized" if t == 0 else "switch", lin, data, config)
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True) if len(table) else pd.DataFrame([row])
        _write_switching(path, table)
    if (T, "standard") not in have:
        final = build_model(config, data).to(device)
        final.load_state_dict(store.load_checkpoint(T)["model"])
        row = _row(T, T, "standard", final, data, config)
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True) if len(table) else pd.DataFrame([row])
        _write_switching(path, table)
    verdict = run_regime(store.path)
    if REGIME_COLUMN not in table.columns or (table[REGIME_COLUMN] != verdict).any():
        table[REGIME_COLUMN] = verdict
        _write_switching(path, table)
    return store.path


def _progress(items: Sequence[int], enabled: bool, desc: str):
    if not enabled or not items:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is an optional dependency
        return items
    return tqdm(items, desc=desc, unit="run")


#: The cone experiment as the registry sees it (:mod:`lazyrich.experiments.registry`).
EXPERIMENT = Experiment(
    name="cone",
    description="Cone effect of the eNTK during training and the switch-to-linearized experiment (Zhou et al.).",
    config_class=ConeConfig,
    presets={
        "quick": Preset("MNIST-1D, MLP 40-256-256-10, SGD, T=3000; one to two minutes on 2 CPU cores.", _quick),
        "paper": Preset("ResNet-20 on CIFAR-10 as in the paper (needs data_dir=...).", PRESETS["paper"]),
        "paper-resnet20": Preset("Same as paper: ResNet-20 on CIFAR-10 (needs data_dir=...).", _paper_resnet20),
        "paper-vgg16": Preset("VGG-16 (BatchNorm) on CIFAR-10, paper hyperparameters (needs data_dir=...).", _paper_vgg16),
        "paper-lenet5": Preset("LeNet-5 on MNIST, plain SGD, paper hyperparameters (needs data_dir=...).", _paper_lenet5),
    },
    run=run,
    figures=("fig_reference_distances", "fig_adjacent_distances", "fig_cone", "fig_switching", "fig_curves",
             "fig_distances", "fig_kernel_stats"),
    results_file="switching.csv",
)
