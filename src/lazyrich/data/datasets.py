"""Built-in data sets: scikit-learn digits and the synthetic sphere / teacher / mixture generators.

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
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lazyrich.data.base import Dataset, _check_int

__all__ = [
    "load_digits",
    "sample_sphere",
    "normalize_to_sphere",
    "gaussian_teacher",
    "gaussian_mixture",
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


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
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating))):
        raise TypeError(f"radius must be a positive number or None, got {radius!r}.")
    r = math.sqrt(x.shape[1]) if radius is None else float(radius)
    if not (r > 0 and math.isfinite(r)):
        raise ValueError(f"radius must be positive and finite, got {radius}.")
    if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
        raise ValueError("x holds NaN or infinite values, which have no direction; remove or impute those rows first.")
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
