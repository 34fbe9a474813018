"""Kernel distance (Fort et al. 2020; Zhou et al., cone effect, eq. (4))."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["kernel_distance"]


def _as_f64(K, name):
    if isinstance(K, torch.Tensor):
        K = K.detach().to("cpu", torch.float64).numpy()
    K = np.asarray(K, dtype=np.float64)
    if K.size == 0:
        raise ValueError(f"{name} is empty.")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} contains NaN or inf.")
    return K


def kernel_distance(K1, K2) -> float:
    """Scale-invariant kernel distance ``S = 1 - <K1, K2>_F / (||K1||_F ||K2||_F)``.

    Zhou et al., "On the cone effect in the learning dynamics", eq. (4):
    ``S(theta, theta') = 1 - Tr(H H'^T) / sqrt(Tr(H H^T) Tr(H' H'^T))``. Any array shape is
    accepted (``(n, n)``, ``(n, n, c, c)``, ...); both kernels must have the same shape. Computed
    in float64. ``S = 0`` for proportional kernels, ``S = 1`` for Frobenius-orthogonal ones.
    """
    a = _as_f64(K1, "K1")
    b = _as_f64(K2, "K2")
    if a.shape != b.shape:
        raise ValueError(f"Kernels have different shapes {a.shape} and {b.shape}; compare kernels on the same probe set.")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("A kernel is identically zero, so the kernel distance is undefined.")
    return float(1.0 - np.vdot(a, b) / (na * nb))
