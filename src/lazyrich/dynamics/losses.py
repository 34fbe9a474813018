"""Training losses and accuracy shared by ``train`` and the :class:`~lazyrich.dynamics.Tracker`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "compute_loss", "accuracy"]

LOSSES = ("cross_entropy", "mse")


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    return loss


def _targets_like(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if not y.is_floating_point():  # class labels -> one-hot
        if out.dim() != 2:
            raise ValueError(f"MSE with integer labels needs outputs (n, classes), got {tuple(out.shape)}.")
        _check_labels(y, out.shape[1])
        return F.one_hot(y.long(), out.shape[1]).to(out.dtype)
    y = y.to(out.dtype)
    if y.numel() != out.numel():
        raise ValueError(f"Targets with shape {tuple(y.shape)} do not match outputs {tuple(out.shape)}.")
    return y.reshape(out.shape)


def _check_labels(y: torch.Tensor, classes: int) -> None:
    """Integer labels must be ``(n,)`` and lie in ``[0, classes)`` (one class per model output)."""
    if y.dim() != 1:
        raise ValueError(
            f"Integer class labels must have shape (n,), got {tuple(y.shape)}; flatten them (e.g. y.reshape(-1))."
        )
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= classes:
        raise ValueError(
            f"Labels must lie in [0, {classes}) for a model with {classes} outputs, but the data hold labels "
            f"{lo}..{hi}; relabel the classes as 0..{classes - 1} or give the model {max(hi + 1, classes)} outputs."
        )


def compute_loss(out: torch.Tensor, y: torch.Tensor, loss: str, reduction: str = "mean") -> torch.Tensor:
    """``"cross_entropy"``: softmax cross-entropy on integer labels. ``"mse"``: ``0.5 ||f(x) - y||^2`` per sample
    (sum over outputs; integer labels become one-hot targets). ``reduction`` "mean" or "sum" over samples.

    Integer labels outside ``[0, number of outputs)`` raise ``ValueError`` (not torch's ``IndexError``)."""
    if loss == "cross_entropy":
        if y.is_floating_point():
            raise ValueError("cross_entropy needs integer class labels; use loss='mse' for float targets.")
        out2 = out.reshape(out.shape[0], -1)
        _check_labels(y, out2.shape[1])
        return F.cross_entropy(out2, y.long(), reduction=reduction)
    t = _targets_like(out, y)
    per = 0.5 * (out - t).pow(2).reshape(out.shape[0], -1).sum(1)
    return per.mean() if reduction == "mean" else per.sum()


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correct argmax predictions for integer labels; ``nan`` for float (regression) targets."""
    if y.is_floating_point():
        return float("nan")
    out2 = out.reshape(out.shape[0], -1)
    if out2.shape[1] == 1:
        return float("nan")
    return float((out2.argmax(1) == y.to(out2.device)).double().mean())
