"""Per-sample Jacobians by autograd: the engine's fallback for parameters without a rule and
``method="jacobian"``, with a self-check of every ``torch.func`` batching.

``torch.func.vmap`` computes a transform of many samples at once through per-operator *batching
rules*. A faulty rule need not raise: through ``nn.PReLU`` (torch 2.x) ``vmap(jacrev)`` raises a
size mismatch when the batch size differs from the number of outputs and silently returns wrong
Jacobians when the two are equal. So no batched result is trusted because it did not raise:
:func:`per_sample_jacobian` compares the first and last sample of each batch shape it computes
with :func:`plain_jacobian` (one ``torch.autograd.grad`` per sample and output, no ``torch.func``)
and, on disagreement, warns and computes the whole batch by :func:`plain_jacobian`. The verdict
is cached per (model, parameters, outputs, per-sample shape, batch size, dtype, device), so the
check costs ``2 c`` backward passes of one sample, once.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from ._functional import no_fused_fastpaths

__all__ = ["per_sample_jacobian", "plain_jacobian", "agrees", "verdicts", "owners"]

# model -> {key: True (the batched result agreed) / False (it did not: use plain autograd)}
_VERDICTS: "weakref.WeakKeyDictionary[nn.Module, Dict[tuple, bool]]" = weakref.WeakKeyDictionary()


def verdicts(model: nn.Module) -> Dict[tuple, bool]:
    """The cached self-check verdicts of ``model`` (a fresh dict for a model not seen yet)."""
    try:
        return _VERDICTS.setdefault(model, {})
    except TypeError:  # pragma: no cover - a module that cannot be weakly referenced: no cache
        return {}


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of the self-checks: rounding differences only (``10 sqrt(eps)``)."""
    return 10 * torch.finfo(dtype).eps ** 0.5


def agrees(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``||a - b|| <= tol ||b||`` (``tol`` from :func:`tolerance`; exact zero agrees only with zero)."""
    ref = torch.linalg.vector_norm(b.double())
    diff = torch.linalg.vector_norm((a - b).double())
    return bool(diff <= tolerance(b.dtype) * ref) or bool(diff == 0)


def plain_jacobian(model: nn.Module, x: torch.Tensor, names: Sequence[str], ks: Sequence[int]):
    """``{name: (n, len(ks), numel)}`` by plain ``torch.autograd.grad``: one forward pass of each
    sample alone and one backward pass per output. The trusted (slow) path."""
    params = dict(model.named_parameters())
    plist = [params[n] for n in names]
    rows: Dict[str, List[torch.Tensor]] = {n: [] for n in names}
    with torch.enable_grad():
        for i in range(x.shape[0]):
            out = model(x[i : i + 1]).reshape(-1)
            per_k = {n: [] for n in names}
            for r, k in enumerate(ks):
                gs = torch.autograd.grad(out[k], plist, retain_graph=r < len(ks) - 1, allow_unused=True)
                for n, p, g in zip(names, plist, gs):
                    per_k[n].append(torch.zeros(p.numel(), dtype=p.dtype, device=p.device) if g is None else g.reshape(-1))
            for n in names:
                rows[n].append(torch.stack(per_k[n]))
    return {n: torch.stack(v).detach() for n, v in rows.items()}


def _batched(model, xs, names, ks):
    """``vmap(jacrev)`` over the samples of ``xs``: ``{name: (n, len(ks), numel)}``."""
    from torch.func import functional_call, jacrev, vmap

    all_params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    sub = {n: all_params[n] for n in names}
    ks_t = torch.as_tensor(list(ks), device=xs.device)

    def f(sub_params, xi):
        p = dict(all_params)
        p.update(sub_params)
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return out.reshape(-1)[ks_t]

    with no_fused_fastpaths():
        jac = vmap(jacrev(f), in_dims=(None, 0))(sub, xs)
    return {n: jac[n].reshape(xs.shape[0], len(ks), -1).detach() for n in names}


def owners(model: nn.Module, names: Sequence[str]) -> str:
    """``"'name' (Type)"`` of the modules owning the parameters ``names``, for messages."""
    mods = dict(model.named_modules())
    seen = []
    for n in names:
        owner = n.rpartition(".")[0]
        m = mods.get(owner, model)
        item = f"'{owner or '<root>'}' ({type(m).__name__})"
        if item not in seen:
            seen.append(item)
    return ", ".join(seen[:6]) + (" ..." if len(seen) > 6 else "")


def per_sample_jacobian(model: nn.Module, x: torch.Tensor, names: Sequence[str], ks: Sequence[int], chunk: int):
    """``{name: (n, len(ks), numel)}`` per-sample Jacobians, ``chunk`` samples per ``vmap``.

    Each batch shape is self-checked once against :func:`plain_jacobian` (module docstring); a
    batch that raises or disagrees is computed by :func:`plain_jacobian` (with a warning naming
    the layers, for a disagreement).
    """
    names, ks = list(names), list(ks)
    cache = verdicts(model)
    out: Dict[str, List[torch.Tensor]] = {n: [] for n in names}
    for s in range(0, x.shape[0], chunk):
        xs = x[s : s + chunk]
        b = xs.shape[0]
        key = ("jacobian", tuple(names), tuple(ks), tuple(xs.shape[1:]), b, xs.dtype, str(xs.device))
        jac = None
        if cache.get(key, True):
            try:
                jac = _batched(model, xs, names, ks)
            except Exception:  # no batching rule for some operator: the trusted path
                cache[key] = False
            if jac is not None and key not in cache:
                idx = [0] if b == 1 else [0, b - 1]
                ref = plain_jacobian(model, xs[idx], names, ks)
                ok = all(agrees(jac[n][idx], ref[n]) for n in names)
                cache[key] = ok
                if not ok:
                    warnings.warn(
                        f"torch.func's vmap returned wrong per-sample Jacobians for {type(model).__name__} "
                        f"(layers {owners(model, names)}; a faulty batching rule, e.g. of nn.PReLU) at batch size {b}; "
                        "computing them by per-sample autograd instead (correct, slower).",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    jac = None
        if jac is None:
            jac = plain_jacobian(model, xs, names, ks)
        for n in names:
            out[n].append(jac[n])
    return {n: torch.cat(v) for n, v in out.items()}
