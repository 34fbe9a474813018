"""Kernel distance (Fort et al. 2020; Zhou et al., cone effect, eq. (4))."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["kernel_distance"]


def _as_f64(K, name):
    if isinstance(K, torch.Tensor):
        K = K.detach().to("cpu", torch.float64).numpy()
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a numeric array or tensor (got {type(K).__name__}); pass the kernel as a numpy array or torch tensor."
        ) from None
    if K.size == 0:
        raise ValueError(f"{name} is empty; pass a kernel computed on at least one probe sample.")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} contains NaN or inf; recompute it from a model and inputs with finite values.")
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
    # Normalise each kernel by its max-abs entry before squaring, so kernels scaled by 1e+-200
    # neither overflow nor underflow (S is scale-invariant in exact arithmetic).
    ma, mb = np.max(np.abs(a)), np.max(np.abs(b))
    if ma == 0 or mb == 0:
        raise ValueError("A kernel is identically zero, so the kernel distance is undefined; pass a non-zero kernel.")
    a, b = a / ma, b / mb
    u, v = a / np.linalg.norm(a), b / np.linalg.norm(b)
    # For unit u, v: 1 - <u, v> = ||u - v||^2 / 2. This form has no cancellation near S = 0 and
    # gives exactly 0 for identical kernels.
    d = (u - v).ravel()
    return float(0.5 * np.dot(d, d))
