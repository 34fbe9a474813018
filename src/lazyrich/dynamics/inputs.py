"""The ``(x, y)`` data handed to ``train`` and the :class:`~lazyrich.dynamics.Tracker`: unpacked and checked."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["as_xy"]


def as_xy(data, split: str = "train") -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` from a tuple or from a ``lazyrich.data.Dataset`` (its ``split`` part)."""
    if data is None or data is False:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, f"x_{split}") and hasattr(data, f"y_{split}"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    else:
        raise TypeError(f"Evaluation data must be a (x, y) tuple or a lazyrich.data.Dataset, got {type(data).__name__}.")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("Evaluation data must hold torch tensors.")
    if x.dim() == 0 or y.dim() == 0:
        raise ValueError("x and y need a leading sample axis (n, ...); add one with x.unsqueeze(0).")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}.")
    for name, t in (("inputs x", x), ("targets y", y)):
        if t.is_floating_point() or t.is_complex():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise ValueError(
                    f"The {split} {name} hold {bad} NaN or infinite values (of {t.numel()}); "
                    "remove or impute them before training or evaluating."
                )
    return x, y
