"""Model-mode checks shared by the eNTK engine and ``linearize``: BatchNorm/Dropout must be in eval mode."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["check_eval_mode"]


def check_eval_mode(model: nn.Module, what: str = "the eNTK") -> None:
    """Raise ``ValueError`` naming the fix (``model.eval()``) for batch-statistics BatchNorm or active Dropout."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            raise ValueError(
                f"BatchNorm layer '{name}' uses batch statistics, which couple the samples and make "
                f"{what} ill-defined; call model.eval() first (and keep track_running_stats=True)."
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise ValueError(f"Dropout layer '{name}' is active, which makes {what} random; call model.eval() first.")
