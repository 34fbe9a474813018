"""MNIST-1D-style data (Greydanus, 2020), generated locally in numpy.

Greydanus, "Scaling down deep learning" (2020) builds a 1-D analogue of
MNIST: ten hand-made 12-point templates, one per digit, each turned into a
length-40 signal by random padding, dilation, scaling, translation,
correlated and i.i.d. noise, shear and subsampling.  This module implements
that procedure with the published default parameters; it never downloads
anything and imports no ``mnist1d`` package.

Per sample, with a private ``numpy.random.RandomState(seed)`` (draws in this
order):

1. ``p = pad_lo + floor(u1 * (pad_hi - pad_lo + 1))`` zeros are appended to
   ``template + 1e-8`` (the ``1e-8`` keeps the signal distinguishable from
   padding);
2. the signal is linearly resampled to ``template_len + pad_hi`` (= 72)
   evenly spaced points on [0, 1] ("dilation");
3. it is multiplied by ``1 + scale_coeff * (u2 - 0.5)``;
4. it is rolled right by ``k ~ Unif{0, ..., max_translation - 1}``;
5. the exactly-zero (padding) entries are replaced by a Gaussian-smoothed
   (sigma = 2 samples, reflect mode) white noise of scale
   ``corr_noise_scale`` drawn for all 72 entries, then i.i.d. noise of scale
   ``iid_noise_scale`` is added everywhere;
6. a linear ramp is subtracted: ``x -= c * linspace(-0.5, 0.5, 72)`` with
   ``c = shear_scale * (u3 - 0.5)``;
7. the signal is linearly resampled to ``final_seq_length`` (= 40) points.

Samples are generated class by class (``ceil(N / 10)`` per class,
``N = n_train + n_test``), shuffled by one random permutation, cut to ``N``,
standardized by the global mean and standard deviation, and the first
``n_train`` become the training split.  With the defaults (4000 / 1000,
seed 42) this follows the draw order of the reference generator, but it has
not been checked bit-for-bit against the published ``mnist1d_data.pkl``
(linear interpolation here is ``numpy.interp``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from lazyrich.data.base import Dataset, _check_int

__all__ = ["MNIST1D_RAW_TEMPLATES", "mnist1d_templates", "make_mnist1d"]

#: The ten 12-point digit templates of Greydanus (2020), before normalization.
MNIST1D_RAW_TEMPLATES: np.ndarray = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ],
    dtype=np.float64,
)


def mnist1d_templates() -> np.ndarray:
    """Normalized templates ``(10, 12)``: each row centered, scaled to unit (population) std,
    shifted so that it starts at 0, then divided by 6."""
    t = MNIST1D_RAW_TEMPLATES.copy()
    t -= t.mean(axis=1, keepdims=True)
    t /= t.std(axis=1, keepdims=True)
    t -= t[:, :1]
    return t / 6.0


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of ``x`` (sampled evenly on [0, 1]) at ``n`` evenly spaced points."""
    return np.interp(np.linspace(0.0, 1.0, n), np.linspace(0.0, 1.0, len(x)), x)


def _one_sample(template: np.ndarray, rs: np.random.RandomState, prm: dict[str, Any]) -> np.ndarray:
    lo, hi = prm["padding"]
    p = lo + int(rs.rand() * (hi - lo + 1))
    x = np.concatenate([template + 1e-8, np.zeros(p)])
    x = _resample(x, len(template) + hi)
    x = x * (1.0 + prm["scale_coeff"] * (rs.rand() - 0.5))
    x = np.roll(x, int(rs.choice(prm["max_translation"])))
    corr = gaussian_filter1d(prm["corr_noise_scale"] * rs.randn(len(x)), 2.0, mode="reflect")
    x = np.where(x != 0, x, corr)
    x = x + prm["iid_noise_scale"] * rs.randn(len(x))
    x = x - prm["shear_scale"] * (rs.rand() - 0.5) * np.linspace(-0.5, 0.5, len(x))
    return _resample(x, prm["final_seq_length"])


def make_mnist1d(
    n_train: int = 4000,
    n_test: int = 1000,
    seed: int = 42,
    *,
    padding: tuple[int, int] = (36, 60),
    scale_coeff: float = 0.4,
    max_translation: int = 48,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 2e-2,
    shear_scale: float = 0.75,
    final_seq_length: int = 40,
    standardize: bool = True,
) -> Dataset:
    """MNIST-1D-style data set (Greydanus 2020) generated locally, deterministic given ``seed``.

    See the module docstring for the exact procedure.  Keyword parameters
    are the published defaults.

    Parameters
    ----------
    n_train, n_test : int
        Split sizes; ``n_train + n_test`` must be positive.  When it is a
        multiple of 10 the union of both splits is exactly class balanced.
    seed : int
        Seed of the private ``RandomState``.
    padding : (int, int)
        Range ``[lo, hi]`` of the number of appended zeros.
    scale_coeff, corr_noise_scale, iid_noise_scale, shear_scale : float
    max_translation : int
        Shifts are drawn from ``{0, ..., max_translation - 1}``.
    final_seq_length : int
        Length of the output signals.
    standardize : bool
        Subtract the global mean and divide by the global std (over all
        ``n_train + n_test`` signals), as the reference does.

    Returns
    -------
    Dataset
        ``x`` of shape ``(n, final_seq_length)`` float32 (vector convention;
        use ``x.unsqueeze(1)`` for a 1-D conv net), ``y`` int64 in 0..9.
    """
    n_train, n_test = _check_int(n_train, "n_train"), _check_int(n_test, "n_test")
    n_total = n_train + n_test
    if n_total < 1:
        raise ValueError("n_train + n_test must be at least 1.")
    if isinstance(padding, (str, bytes)) or not hasattr(padding, "__len__") or len(padding) != 2:
        raise TypeError(f"padding must be a pair (lo, hi) of ints, e.g. (36, 60), got {padding!r}.")
    lo, hi = (_check_int(v, "padding", 0) for v in padding)
    if lo > hi:
        raise ValueError(f"padding must be (lo, hi) with lo <= hi, got {padding}.")
    prm = {
        "padding": (lo, hi),
        "scale_coeff": float(scale_coeff),
        "max_translation": _check_int(max_translation, "max_translation", 1),
        "corr_noise_scale": float(corr_noise_scale),
        "iid_noise_scale": float(iid_noise_scale),
        "shear_scale": float(shear_scale),
        "final_seq_length": _check_int(final_seq_length, "final_seq_length", 2),
    }
    for key in ("scale_coeff", "corr_noise_scale", "iid_noise_scale", "shear_scale"):
        if not (math.isfinite(prm[key]) and prm[key] >= 0):
            raise ValueError(f"{key} must be a non-negative float, got {prm[key]}.")
    templates = mnist1d_templates()
    rs = np.random.RandomState(_check_int(seed, "seed"))
    per_class = -(-n_total // 10)
    xs, ys = [], []
    for label in range(10):
        for _ in range(per_class):
            xs.append(_one_sample(templates[label], rs, prm))
            ys.append(label)
    perm = rs.permutation(len(ys))
    x = np.stack(xs)[perm][:n_total]
    y = np.asarray(ys, dtype=np.int64)[perm][:n_total]
    info: dict[str, Any] = dict(prm, seed=seed, standardize=standardize)
    if standardize:
        mean, std = x.mean(), x.std()
        x = (x - mean) / std
        info.update(mean=float(mean), std=float(std))
    xt = torch.from_numpy(x).float()
    yt = torch.from_numpy(y)
    return Dataset(
        xt[:n_train].contiguous(), yt[:n_train].contiguous(),
        xt[n_train:].contiguous(), yt[n_train:].contiguous(),
        10, "mnist1d", info,
    )
