"""Input checks of :func:`lazyrich.empirical_ntk`: bad input gets one sentence naming the fix,
never a wrong kernel or a raw torch error.

Model: an ``nn.Module`` with trainable parameters, BatchNorm/Dropout in eval mode
(:func:`~lazyrich.ntk.model_checks.check_eval_mode`), real (not ``meta``) finite values, one
floating dtype. Inputs: tensors ``(n, *feature_shape)``, finite; a forward pass that fails on one
sample is explained (integer input to a float model, wrong feature size, no batch axis).
Per-sample independence, checked with one extra two-sample forward pass
(:func:`check_samples_independent`): the eNTK ``Theta(x_i, x_j)`` is defined only when the output
of a sample depends on that sample alone and not on chance.
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Dict, Mapping, Optional

import torch
import torch.nn as nn

from .model_checks import check_eval_mode

__all__ = [
    "trainable_parameters",
    "check_model",
    "check_inputs",
    "check_lr_scales",
    "check_batch_size",
    "forward_flat",
    "explained_forward",
    "check_samples_independent",
]


def trainable_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    """``{name: parameter}`` of the parameters with ``requires_grad=True`` (tied ones once)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def check_model(model: nn.Module) -> Dict[str, nn.Parameter]:
    """The trainable parameters of ``model`` after checking it (module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    params = trainable_parameters(model)
    if not params:
        raise ValueError(
            "The model has no trainable parameters (requires_grad=True), so its eNTK is zero; "
            "unfreeze at least one parameter."
        )
    check_eval_mode(model)
    tensors = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    meta = [n for n, t in tensors if t.is_meta]
    if meta:
        raise ValueError(
            f"The model's tensors {meta[:3]} are on the meta device (shapes only, no values); materialise the "
            "model first (model.to_empty(device='cpu') and load its weights)."
        )
    dtypes: Dict[torch.dtype, list] = {}
    for n, p in model.named_parameters():
        if p.is_floating_point():
            dtypes.setdefault(p.dtype, []).append(n)
    if len(dtypes) > 1:
        parts = "; ".join(f"{str(d).replace('torch.', '')}: {ns[:2]}" for d, ns in dtypes.items())
        raise ValueError(
            f"The model mixes parameter dtypes ({parts}); cast it to one with model.double() or model.float()."
        )
    with torch.no_grad():  # one sum per tensor in its dtype, one sync; a non-finite sum is checked exactly
        sums = [t.detach().sum() for _, t in tensors if t.numel()]
        total = float(torch.stack([v.double() for v in sums]).sum()) if sums else 0.0
    if not math.isfinite(total):
        bad = [n for n, t in tensors if not bool(torch.isfinite(t).all())]
        if bad:
            raise ValueError(
                f"The model's tensors {bad[:3]} contain NaN or inf, which would make the kernel NaN; "
                "reinitialise or reload the weights (training diverged: lower the learning rate)."
            )
    return params


def check_inputs(x1, x2, dtype, device):
    """``(x1, x2)`` as tensors on ``device`` (floating ones cast to ``dtype``), after checking them."""

    def conv(x, name):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError(f"{name} is empty; pass at least one sample along the first (batch) axis.")
        if x.is_floating_point():
            if x.numel() and not torch.isfinite(torch.stack(torch.aminmax(x))).all():  # NaN propagates: one pass
                raise ValueError(f"{name} contains NaN or inf; clean the inputs first.")
            x = x.to(device=device, dtype=dtype)
        else:
            x = x.to(device=device)
        return x

    x1 = conv(x1, "x1")
    if x2 is not None:
        x2 = conv(x2, "x2")
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"x1 and x2 have different per-sample shapes {tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}; "
                "both must be (n, *feature_shape) for the same model input."
            )
        if x2.is_floating_point() != x1.is_floating_point():
            raise ValueError("x1 and x2 must both be floating point or both be integer tensors.")
    return x1, x2


def check_lr_scales(lr_scales, params) -> Dict[str, float]:
    """``{parameter name: eta_p}`` for every trainable parameter (default 1)."""
    if lr_scales is None:
        return {n: 1.0 for n in params}
    if not isinstance(lr_scales, Mapping):
        raise TypeError("lr_scales must be a dict {parameter name: learning-rate scale}.")
    unknown = [k for k in lr_scales if k not in params]
    if unknown:
        raise ValueError(
            f"lr_scales names {unknown} that are not trainable parameters of the model; "
            f"valid names are {list(params)}."
        )
    out = {}
    for n in params:
        v = float(lr_scales.get(n, 1.0))
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"lr_scales['{n}'] = {v} must be a finite number >= 0.")
        out[n] = v
    return out


def check_batch_size(batch_size) -> Optional[int]:
    """``batch_size`` as an int >= 1, or ``None`` (automatic)."""
    if batch_size is None:
        return None
    try:
        if isinstance(batch_size, bool):
            raise TypeError
        value = operator.index(batch_size)
    except TypeError:
        raise TypeError(
            f"batch_size must be a positive int (samples per chunk) or None for automatic, not {batch_size!r}."
        ) from None
    if value < 1:
        raise ValueError(f"batch_size={value} must be a positive int (samples per chunk), or None for automatic.")
    return value


def forward_flat(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` as ``(n, c)``, checking that it returns one batch-first tensor."""
    out = model(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"The model returned {type(out).__name__}; empirical_ntk needs a model whose forward returns one tensor "
            "of shape (n, ...) (wrap it to select the output)."
        )
    if out.dim() == 0 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"The model output has shape {tuple(out.shape)} but the input batch has {x.shape[0]} samples; "
            "the output's first axis must be the batch axis."
        )
    return out.reshape(out.shape[0], -1)


@contextlib.contextmanager
def explained_forward(x: torch.Tensor, dtype: torch.dtype, name: str = "x1"):
    """Translate a ``RuntimeError`` of the model's first forward pass on ``name`` into one
    sentence naming the likely fix (integer input, missing batch axis, wrong feature shape)."""
    try:
        yield
    except RuntimeError as err:
        raw = str(err).splitlines()[0] if str(err) else type(err).__name__
        shape = tuple(x.shape)
        if not x.is_floating_point() and any(w in raw for w in ("dtype", "type (", "scalar type")):
            msg = (
                f"{name} is an integer tensor ({str(x.dtype).replace('torch.', '')}) but the model computes in "
                f"floating point; pass {name}.to({dtype}) (integer inputs are for token ids into nn.Embedding)"
            )
        elif x.dim() == 1:
            msg = (
                f"{name} has shape {shape}, with no batch axis, and the model rejects it; pass {name}.unsqueeze(0) "
                f"for one sample (or {name}.unsqueeze(1) for {shape[0]} scalar samples)"
            )
        else:
            msg = (
                f"The model's forward pass fails on {name} with per-sample shape {shape[1:]}; pass inputs of the "
                "shape (n, *feature_shape) the model was built for"
            )
        raise ValueError(f"{msg} (torch: {raw}).") from err


def _close(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> bool:
    tol = 10 * torch.finfo(a.dtype).eps ** 0.5 if a.is_floating_point() else 0.0
    return bool(torch.linalg.vector_norm((a - b).double()) <= tol * scale)


def check_samples_independent(model: nn.Module, x1: torch.Tensor, out0: torch.Tensor, x2=None) -> None:
    """Raise if the model's output for one sample is random or depends on another sample.

    ``out0`` is ``forward_flat(model, x1[:1])``. One extra forward pass of the pair ``(x1[0], z)``
    with ``z`` another input (perturbed from ``x1[0]`` for floating inputs; another sample for
    token ids) must reproduce ``out0`` for its first sample; only if it does not, a third pass of
    ``x1[:1]`` tells chance (functional dropout) from coupling (a batch mean, BatchNorm in train
    mode). Eval-mode BatchNorm is per sample and passes.
    """
    x0 = x1[:1]
    if not bool(torch.isfinite(out0).all()):
        raise ValueError(
            "The model's output on x1[0] is NaN or inf although its weights and inputs are finite, so the kernel "
            "would be too; check the forward pass (an overflow, a log or division of a non-positive value)."
        )
    cands = [x1[1:2]] + ([] if x2 is None else [x2[:1]])
    z = next((t for t in cands if t.shape[0] and not torch.equal(t, x0)), None)
    if z is None:  # one distinct sample: another input, no random numbers drawn
        z = 1.0 - 0.5 * x0 if x0.is_floating_point() else x0
    with torch.no_grad():
        pair = forward_flat(model, torch.cat([x0, z]))
        scale = torch.linalg.vector_norm(out0.double()).maximum(torch.linalg.vector_norm(pair[:1].double()))
        if _close(pair[:1], out0, scale):
            return
        again = forward_flat(model, x0)
    if not _close(again, out0, scale):
        raise ValueError(
            "The model gives different outputs for the same input in two forward passes (random, e.g. "
            "F.dropout(x, training=True) or noise in forward), so its eNTK is random; make the randomness "
            "follow self.training and call model.eval() first."
        )
    raise ValueError(
        "The model's output for one sample changes when another sample of the batch changes (its forward mixes "
        "samples, e.g. subtracts a batch mean or uses BatchNorm in train mode), so the eNTK of a sample pair is "
        "ill-defined; make the forward act on each sample alone."
    )
