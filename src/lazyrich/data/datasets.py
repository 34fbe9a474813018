"""Common dataset container, built-in data sets and the ``load_dataset`` dispatcher.

Everything here is local: nothing is downloaded at run time.  Conventions:
inputs are ``float32`` tensors (images ``(n, C, H, W)``, vectors ``(n, d)``);
classification labels are ``int64`` of shape ``(n,)``; regression targets are
``float32`` of shape ``(n, k)`` and the data set then has ``num_classes=None``.

Randomness is always explicit: every generator takes ``seed`` and draws from
a private ``torch.Generator`` / ``numpy.random.Generator``; no global RNG state
is read or changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Dataset",
    "DATASET_NAMES",
    "load_dataset",
    "load_digits",
    "sample_sphere",
    "normalize_to_sphere",
    "gaussian_teacher",
    "gaussian_mixture",
]


# --------------------------------------------------------------------------
# container
# --------------------------------------------------------------------------


@dataclass
class Dataset:
    """A train/test split of tensors.

    Attributes
    ----------
    x_train, x_test : torch.Tensor
        ``float32`` inputs, ``(n, *input_shape)``.
    y_train, y_test : torch.Tensor
        ``int64`` labels ``(n,)`` in ``[0, num_classes)``, or, for regression
        (``num_classes is None``), ``float32`` targets ``(n, k)``.
    num_classes : int or None
        Number of classes; ``None`` for regression.
    name : str
        Short description, e.g. ``"digits"``.
    info : dict
        Extra generator metadata (e.g. the teacher weights of
        :func:`gaussian_teacher`).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int | None
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("x_train", "y_train", "x_test", "y_test"):
            if not isinstance(getattr(self, attr), torch.Tensor):
                raise TypeError(f"Dataset.{attr} must be a torch.Tensor, got {type(getattr(self, attr)).__name__}.")
        for attr in ("x_train", "x_test"):
            if getattr(self, attr).dtype != torch.float32:
                raise TypeError(f"Dataset.{attr} must be float32, got {getattr(self, attr).dtype}; convert with .float().")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"train and test inputs have different shapes {tuple(self.x_train.shape[1:])} "
                f"and {tuple(self.x_test.shape[1:])}."
            )
        for xs, ys in (("x_train", "y_train"), ("x_test", "y_test")):
            if getattr(self, xs).shape[0] != getattr(self, ys).shape[0]:
                raise ValueError(
                    f"Dataset.{xs} has {getattr(self, xs).shape[0]} rows but Dataset.{ys} has {getattr(self, ys).shape[0]}."
                )
        if self.num_classes is None:
            for attr in ("y_train", "y_test"):
                y = getattr(self, attr)
                if y.dtype != torch.float32 or y.dim() != 2:
                    raise TypeError(f"regression targets Dataset.{attr} must be float32 of shape (n, k), got {y.dtype} {tuple(y.shape)}.")
        else:
            if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
                raise ValueError(f"num_classes must be a positive int or None, got {self.num_classes!r}.")
            for attr in ("y_train", "y_test"):
                y = getattr(self, attr)
                if y.dtype != torch.int64 or y.dim() != 1:
                    raise TypeError(f"labels Dataset.{attr} must be int64 of shape (n,), got {y.dtype} {tuple(y.shape)}.")
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                    raise ValueError(f"labels in Dataset.{attr} must lie in [0, {self.num_classes}).")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return "regression" if self.num_classes is None else "classification"

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Dataset:
        """Random subsets (without replacement) of the train and test splits.

        ``None`` keeps a split whole.  Rows keep their original relative order.
        """
        g = torch.Generator().manual_seed(int(seed))

        def pick(x: torch.Tensor, y: torch.Tensor, k: int | None, which: str) -> tuple[torch.Tensor, torch.Tensor]:
            if k is None:
                return x, y
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= x.shape[0]:
                raise ValueError(f"{which} must be an int in [0, {x.shape[0]}], got {k!r}.")
            idx = torch.randperm(x.shape[0], generator=g)[:k].sort().values
            return x[idx], y[idx]

        xtr, ytr = pick(self.x_train, self.y_train, n_train, "n_train")
        xte, yte = pick(self.x_test, self.y_test, n_test, "n_test")
        return Dataset(xtr, ytr, xte, yte, self.num_classes, self.name, dict(self.info))

    def select_classes(self, classes: Sequence[int]) -> Dataset:
        """Keep only ``classes`` and relabel them ``0, 1, ...`` in the given order.

        E.g. ``cifar.select_classes([3, 7])`` gives the cats (0) vs horses (1)
        task of Hu et al.
        """
        if self.num_classes is None:
            raise ValueError("select_classes needs a classification data set; this one is regression.")
        classes = [int(c) for c in classes]
        if len(set(classes)) != len(classes) or not classes:
            raise ValueError(f"classes must be a non-empty list of distinct labels, got {classes}.")
        bad = [c for c in classes if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"classes {bad} are outside [0, {self.num_classes}).")
        lut = torch.full((self.num_classes,), -1, dtype=torch.int64)
        lut[torch.tensor(classes)] = torch.arange(len(classes))

        def keep(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m = lut[y] >= 0
            return x[m], lut[y[m]]

        xtr, ytr = keep(self.x_train, self.y_train)
        xte, yte = keep(self.x_test, self.y_test)
        info = dict(self.info, classes=classes)
        return Dataset(xtr, ytr, xte, yte, len(classes), f"{self.name}{classes}", info)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _check_int(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def _torch_gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(_check_int(seed, "seed"))


# --------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------


def load_digits(
    test_fraction: float = 0.2,
    seed: int = 0,
    normalize: str = "unit",
    resize_to: int | None = None,
) -> Dataset:
    """The 1,797 8x8 handwritten digits bundled with scikit-learn (no download).

    Parameters
    ----------
    test_fraction : float
        Fraction in (0, 1) of each class put in the test split (stratified,
        ``round(test_fraction * n_class)`` per class, chosen by a seeded
        permutation).  Both splits keep the original sample order.
    seed : int
        Seed of the split.
    normalize : {"unit", "standardize"}
        ``"unit"``: pixel values 0..16 divided by 16, so inputs lie in [0, 1].
        ``"standardize"``: then minus the training-set mean and divided by the
        training-set standard deviation (scalars over all training pixels).
    resize_to : int or None
        If given, images are bilinearly resized (``F.interpolate``,
        ``align_corners=False``) to ``resize_to x resize_to`` before
        standardization -- e.g. 28 to feed :func:`lazyrich.models.lenet5`
        with its MNIST defaults.

    Returns
    -------
    Dataset
        ``x`` of shape ``(n, 1, 8, 8)`` (or ``(n, 1, r, r)``), 10 classes.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("load_digits needs scikit-learn; install it with `pip install scikit-learn`.") from exc
    if not isinstance(test_fraction, (float, int)) or isinstance(test_fraction, bool) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a float in (0, 1), got {test_fraction!r}.")
    if normalize not in ("unit", "standardize"):
        raise ValueError(f"normalize must be 'unit' or 'standardize', got {normalize!r}.")
    bunch = _sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0  # (1797, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(_check_int(seed, "seed"))
    test_mask = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        k = int(round(test_fraction * len(idx)))
        test_mask[rng.permutation(idx)[:k]] = True
    x = torch.from_numpy(images).float().unsqueeze(1)
    if resize_to is not None:
        r = _check_int(resize_to, "resize_to", 1)
        x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
    tr, te = torch.from_numpy(~test_mask), torch.from_numpy(test_mask)
    x_train, x_test = x[tr], x[te]
    info: dict[str, Any] = {"test_fraction": test_fraction, "seed": seed, "normalize": normalize}
    if normalize == "standardize":
        mean, std = x_train.mean(), x_train.std()
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        info.update(mean=float(mean), std=float(std))
    y = torch.from_numpy(labels)
    return Dataset(x_train.contiguous(), y[tr], x_test.contiguous(), y[te], 10, "digits", info)


# --------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------


def normalize_to_sphere(x: torch.Tensor, radius: float | None = None) -> torch.Tensor:
    """Rescale each row of ``x`` (shape ``(n, d)``) to norm ``radius`` (default ``sqrt(d)``, i.e. ``|x|^2 = d``)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError("normalize_to_sphere expects a 2-D tensor of shape (n, d).")
    r = math.sqrt(x.shape[1]) if radius is None else float(radius)
    if not r > 0:
        raise ValueError(f"radius must be positive, got {radius}.")
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("cannot project a zero row onto the sphere.")
    return x * (r / norms)


def sample_sphere(n: int, d: int, radius: float | None = None, seed: int = 0) -> torch.Tensor:
    """``n`` points uniform on the sphere of radius ``radius`` in ``R^d`` (default ``sqrt(d)``, so ``|x|^2 = d``).

    ``radius=1`` gives the unit sphere ``S^{d-1}`` used by Kunin et al.
    (teacher-student experiments).  Drawn as normalized Gaussians in float64,
    returned as float32 ``(n, d)``.
    """
    n, d = _check_int(n, "n"), _check_int(d, "d", 1)
    z = torch.randn(n, d, generator=_torch_gen(seed), dtype=torch.float64)
    return normalize_to_sphere(z, radius).float() if n else z.float()


def _sample_inputs(n: int, d: int, inputs: str, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    if inputs == "gaussian" or n == 0:
        return z
    if inputs == "sphere":
        return normalize_to_sphere(z)
    return normalize_to_sphere(z, 1.0)  # unit_sphere


def gaussian_teacher(
    n_train: int,
    d: int,
    n_test: int = 1000,
    k: int = 3,
    inputs: str = "gaussian",
    activation: str = "relu",
    noise: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Regression data from a random two-layer teacher ``y = sum_j a_j sigma(w_j^T x) + noise * eps``.

    Teacher as in Kunin et al. ("Figure 1: Teacher-Student with Two-layer ReLU
    Networks"): ``k`` neurons with ``w_j ~ Unif(S^{d-1})`` and ``a_j ~
    Unif({-1, +1})``.

    Parameters
    ----------
    n_train, n_test, d, k : int
        Sizes (``n_test`` may be 0).
    inputs : {"gaussian", "sphere", "unit_sphere"}
        ``x ~ N(0, I_d)``; uniform on the sphere with ``|x|^2 = d``; or
        uniform on ``S^{d-1}`` (Kunin et al.).
    activation : {"relu", "tanh", "identity"}
        Teacher nonlinearity ``sigma``.
    noise : float
        Standard deviation of additive Gaussian label noise ``eps ~ N(0, 1)``.
    seed : int
        Draw order: teacher ``w``, teacher ``a``, train ``x``, test ``x``,
        train noise, test noise (all float64, cast to float32 at the end).

    Returns
    -------
    Dataset
        ``y`` of shape ``(n, 1)``, ``num_classes=None``; ``info`` holds
        ``teacher_w`` ``(k, d)`` and ``teacher_a`` ``(k,)`` (float64).
    """
    n_train, n_test = _check_int(n_train, "n_train"), _check_int(n_test, "n_test")
    d, k = _check_int(d, "d", 1), _check_int(k, "k", 1)
    if inputs not in ("gaussian", "sphere", "unit_sphere"):
        raise ValueError(f"inputs must be 'gaussian', 'sphere' or 'unit_sphere', got {inputs!r}.")
    acts: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "relu": torch.relu,
        "tanh": torch.tanh,
        "identity": lambda t: t,
    }
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}.")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a non-negative float, got {noise!r}.")
    g = _torch_gen(seed)
    w = normalize_to_sphere(torch.randn(k, d, generator=g, dtype=torch.float64), 1.0)
    a = torch.randint(0, 2, (k,), generator=g).to(torch.float64) * 2 - 1
    x_tr = _sample_inputs(n_train, d, inputs, g)
    x_te = _sample_inputs(n_test, d, inputs, g)
    sigma = acts[activation]

    def label(x: torch.Tensor) -> torch.Tensor:
        return (sigma(x @ w.T) @ a).unsqueeze(1)

    y_tr = label(x_tr) + noise * torch.randn(n_train, 1, generator=g, dtype=torch.float64)
    y_te = label(x_te) + noise * torch.randn(n_test, 1, generator=g, dtype=torch.float64)
    info = {"teacher_w": w, "teacher_a": a, "inputs": inputs, "activation": activation, "noise": noise, "seed": seed}
    return Dataset(x_tr.float(), y_tr.float(), x_te.float(), y_te.float(), None, "gaussian_teacher", info)


def gaussian_mixture(
    n_train: int,
    d: int,
    n_test: int = 1000,
    mean_norm: float = 1.0,
    noise: float = 1.0,
    seed: int = 0,
) -> Dataset:
    """Two balanced Gaussian classes ``x = (2y - 1) mu + noise * z``, ``z ~ N(0, I_d)``.

    ``mu = mean_norm * u`` with ``u`` uniform on ``S^{d-1}`` (seeded), so the
    class means are ``-mu`` (label 0) and ``+mu`` (label 1), a distance
    ``2 * mean_norm`` apart.  Each split has ``floor(n/2)`` points of label 0
    and ``ceil(n/2)`` of label 1, in random order.

    Returns
    -------
    Dataset
        ``x`` ``(n, d)`` float32, ``y`` int64 in {0, 1}; ``info["mean"]`` is
        ``mu`` (float64).
    """
    n_train, n_test, d = _check_int(n_train, "n_train"), _check_int(n_test, "n_test"), _check_int(d, "d", 1)
    for v, nm in ((mean_norm, "mean_norm"), (noise, "noise")):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{nm} must be a non-negative float, got {v!r}.")
    g = _torch_gen(seed)
    mu = normalize_to_sphere(torch.randn(1, d, generator=g, dtype=torch.float64), 1.0)[0] * mean_norm

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.cat([torch.zeros(n // 2, dtype=torch.int64), torch.ones(n - n // 2, dtype=torch.int64)])
        y = y[torch.randperm(n, generator=g)]
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        x = (2 * y - 1).to(torch.float64).unsqueeze(1) * mu + noise * z
        return x.float(), y

    x_tr, y_tr = split(n_train)
    x_te, y_te = split(n_test)
    info = {"mean": mu, "mean_norm": mean_norm, "noise": noise, "seed": seed}
    return Dataset(x_tr, y_tr, x_te, y_te, 2, "gaussian_mixture", info)


# --------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------

#: Names accepted by :func:`load_dataset`.
DATASET_NAMES: tuple[str, ...] = ("cifar10", "digits", "gaussian_mixture", "gaussian_teacher", "mnist", "mnist1d")

_ALIASES = {"cifar_10": "cifar10", "mnist_1d": "mnist1d", "sklearn_digits": "digits"}


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a data set by name; keyword arguments go to the loader.

    ============================  ====================================================
    name                          loader
    ============================  ====================================================
    ``"digits"``                  :func:`load_digits`
    ``"mnist1d"``                 :func:`lazyrich.data.mnist1d.make_mnist1d`
    ``"mnist"``                   :func:`lazyrich.data.readers.read_mnist` (``root=``)
    ``"cifar10"``                 :func:`lazyrich.data.readers.read_cifar10` (``root=``)
    ``"gaussian_mixture"``        :func:`gaussian_mixture`
    ``"gaussian_teacher"``        :func:`gaussian_teacher`
    ============================  ====================================================

    Names are case-insensitive and ``-`` may replace ``_`` (``"CIFAR-10"`` works).
    """
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a string, got {type(name).__name__}.")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    from lazyrich.data.mnist1d import make_mnist1d
    from lazyrich.data.readers import read_cifar10, read_mnist

    loaders: dict[str, Callable[..., Dataset]] = {
        "digits": load_digits,
        "mnist1d": make_mnist1d,
        "mnist": read_mnist,
        "cifar10": read_cifar10,
        "gaussian_mixture": gaussian_mixture,
        "gaussian_teacher": gaussian_teacher,
    }
    if key not in loaders:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
    if key in ("mnist", "cifar10") and "root" not in kwargs:
        raise TypeError(f"load_dataset({key!r}) needs root='path/to/dir' pointing at the directory holding its files.")
    return loaders[key](**kwargs)
