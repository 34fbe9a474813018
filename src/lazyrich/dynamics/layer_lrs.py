"""Per-layer learning-rate multipliers: ``{parameter or module name: multiplier}`` resolved to parameters."""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional

import torch.nn as nn

__all__ = ["resolve_layer_lrs"]


def resolve_layer_lrs(model: nn.Module, layer_lrs: Optional[Mapping[str, float]]) -> Optional[Dict[str, float]]:
    """Map ``{parameter or module name: multiplier}`` to ``{trainable parameter name: multiplier}``.

    A key matches a parameter name exactly or as a module prefix (``"0"`` covers ``"0.weight"`` and ``"0.bias"``).
    For a ``lazyrich.ntk.linearize`` model, the original model's names are accepted too.
    """
    if layer_lrs is None:
        return None
    if not isinstance(layer_lrs, Mapping):
        raise TypeError("layer_lrs must be a dict {parameter or module name: learning-rate multiplier}.")
    params = [n for n, p in model.named_parameters() if p.requires_grad]
    alias = {n: n for n in params}
    if hasattr(model, "_names") and hasattr(model, "theta"):  # LinearizedModel
        for orig in getattr(model, "_names"):
            alias[orig] = "theta." + orig.replace(".", "__")
    out: Dict[str, float] = {}
    for key, mult in layer_lrs.items():
        v = float(mult)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"layer_lrs[{key!r}] = {mult} must be a finite number >= 0.")
        hits = [alias[a] for a in alias if a == key or a.startswith(str(key) + ".")]
        if not hits:
            raise ValueError(f"layer_lrs names {key!r}, which matches no trainable parameter; valid names: {params}.")
        for h in hits:
            out[h] = v
    return out
