"""Independent oracle for eNTK tests: brute-force per-sample, per-output autograd Jacobians.

Deliberately uses plain ``torch.autograd.grad`` in Python loops (no ``torch.func``, no hooks),
so it shares no code path with any method of :func:`lazyrich.empirical_ntk`.
"""

from __future__ import annotations

import torch


def per_sample_jacobians(model, x):
    """``{name: (n, c, P)}`` for every trainable parameter, one backward per (sample, output)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    rows = {n: [] for n in params}
    for i in range(x.shape[0]):
        out = model(x[i : i + 1]).reshape(-1)
        per_k = {n: [] for n in params}
        for k in range(out.shape[0]):
            gs = torch.autograd.grad(out[k], list(params.values()), retain_graph=True, allow_unused=True)
            for (n, p), g in zip(params.items(), gs):
                per_k[n].append(torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1))
        for n in params:
            rows[n].append(torch.stack(per_k[n]))
    return {n: torch.stack(v).detach() for n, v in rows.items()}


def brute_ntk(model, x1, x2=None, lr_scales=None):
    """Full kernels ``(n1, n2, c, c)``: ``{"total": K, name: K_name}``."""
    J1 = per_sample_jacobians(model, x1)
    J2 = J1 if x2 is None else per_sample_jacobians(model, x2)
    out = {}
    total = None
    for n in J1:
        s = 1.0 if lr_scales is None else lr_scales.get(n, 1.0)
        K = s * torch.einsum("ikp,jlp->ijkl", J1[n], J2[n])
        out[n] = K
        total = K if total is None else total + K
    out["total"] = total
    return out


def reduce_mode(K, outputs):
    """Reduce a full ``(n1, n2, c, c)`` kernel to what ``outputs`` asks for."""
    c = K.shape[-1]
    if outputs == "full":
        R = K
    elif outputs == "trace":
        R = torch.diagonal(K, dim1=2, dim2=3).sum(-1)
    elif outputs == "diagonal":
        R = torch.diagonal(K, dim1=2, dim2=3)
    else:
        R = K[:, :, outputs, outputs]
    if c == 1:
        R = R.reshape(K.shape[0], K.shape[1])
    return R


def rel_err(a, b):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
