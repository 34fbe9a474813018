"""Argument checks shared by the theory modules: bad input raises a one-sentence ValueError."""

from __future__ import annotations

import numpy as np


def as_finite_array(name: str, x: object, ndim: int = 2) -> np.ndarray:
    """Convert ``x`` to a finite float64 array with ``ndim`` dimensions or raise ValueError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}; reshape it.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; pass finite values.")
    return arr


def positive_rate(name: str, value: float) -> float:
    """A finite, strictly positive learning rate, or ValueError."""
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive learning rate, got {value}.")
    return value
