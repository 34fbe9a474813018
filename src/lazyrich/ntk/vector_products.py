"""``method="ntk_vp"``: the eNTK by NTK-vector products (Novak et al. 2022, "Fast finite width
neural tangent kernel", sec. 3.2), self-checked against plain autograd.

For every column ``(j, l)`` a vector-Jacobian product gives ``J2[j, l]`` (one sample at a time,
by :func:`~lazyrich.ntk.jacobians.per_sample_jacobian`), and a Jacobian-vector product over ``x1``
gives the column ``J1 (eta * J2[j, l])^T``; the ``c`` columns of one sample ``j`` are batched by
``torch.func.vmap``. No Jacobian of more than one sample is stored.

Self-check (see :mod:`lazyrich.ntk.jacobians`): the first column block computed for a given
(model, parameters, outputs, input shape, dtype, device) is compared, at the first and last row,
with the same entries from plain ``torch.autograd.grad`` Jacobians; on disagreement a warning
names the layers and the kernel is computed from plain per-sample Jacobians instead.
"""

from __future__ import annotations

import warnings
from typing import Dict, List

import torch
import torch.nn as nn

from ._functional import no_fused_fastpaths
from .jacobians import agrees, owners, per_sample_jacobian, plain_jacobian, verdicts

__all__ = ["ntk_vp", "forward_ad_unsupported"]


def forward_ad_unsupported(err: BaseException) -> bool:
    """Whether ``err`` is torch's "forward AD ... not implemented" error (e.g. ``weight_norm``)."""
    return isinstance(err, NotImplementedError) and "forward AD" in str(err)


def _reduce(K: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "trace":
        return torch.diagonal(K, dim1=2, dim2=3).sum(-1)
    if mode == "diagonal":
        return torch.diagonal(K, dim1=2, dim2=3)
    return K


def ntk_vp(model: nn.Module, x1, x2, params: Dict[str, nn.Parameter], scales, ks: List[int], mode: str, per_layer: bool):
    """The kernel ``(n1, n2[, c[, c]])`` (or ``{name: kernel}`` with ``per_layer``) by NTK-vector
    products. Raises torch's ``NotImplementedError`` where forward-mode AD is not implemented
    (the engine then falls back to ``method="jacobian"``, see :func:`forward_ad_unsupported`)."""
    from torch.func import functional_call, jvp, vmap

    all_params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    names = list(params)
    x2 = x1 if x2 is None else x2
    n1, n2, c = x1.shape[0], x2.shape[0], len(ks)
    ks_t = torch.as_tensor(ks, device=x1.device)
    sub = {n: all_params[n] for n in names}
    cache = verdicts(model)

    def f1(sub_params):
        p = dict(all_params)
        p.update(sub_params)
        return functional_call(model, (p, buffers), (x1,)).reshape(n1, -1)[:, ks_t]

    groups = [[n] for n in names] if per_layer else [names]
    results = {}
    for grp in groups:
        key = ("ntk_vp", tuple(grp), tuple(ks), tuple(x1.shape), x1.dtype, str(x1.device))
        trusted = cache.get(key, True)
        J1 = None  # plain per-sample Jacobians of x1, once the batched columns were found wrong
        K = torch.zeros(n1, n2, c, c, dtype=next(iter(params.values())).dtype, device=x1.device)
        for j in range(n2):
            jac = per_sample_jacobian(model, x2[j : j + 1], grp, ks, 1)  # name -> (1, c, P)
            tans = [(jac[n][0] * scales[n]).reshape((c,) + tuple(params[n].shape)) for n in grp]
            if trusted:

                def col(*tan_list):
                    tangent = {n: torch.zeros_like(sub[n]) for n in names}
                    tangent.update(dict(zip(grp, tan_list)))
                    return jvp(f1, (sub,), (tangent,))[1]

                with no_fused_fastpaths():
                    K[:, j] = vmap(col)(*tans).permute(1, 2, 0)  # (c_l, n1, c_k) -> (n1, c_k, c_l)
                if key not in cache:
                    idx = [0] if n1 == 1 else [0, n1 - 1]
                    ref = plain_jacobian(model, x1[idx], grp, ks)
                    want = sum(torch.einsum("ikp,lp->ikl", ref[n], t.reshape(c, -1)) for n, t in zip(grp, tans))
                    trusted = cache[key] = agrees(K[idx, j], want)
                    if not trusted:
                        warnings.warn(
                            f"torch.func's vmap(jvp) returned wrong kernel columns for {type(model).__name__} "
                            f"(layers {owners(model, grp)}; a faulty batching rule); computing method='ntk_vp' "
                            "from per-sample autograd Jacobians instead (correct, more memory).",
                            RuntimeWarning,
                            stacklevel=3,
                        )
            if not trusted:
                if J1 is None:
                    J1 = plain_jacobian(model, x1, grp, ks)
                K[:, j] = sum(torch.einsum("ikp,lp->ikl", J1[n], t.reshape(c, -1)) for n, t in zip(grp, tans))
        results[grp[0] if per_layer else None] = _reduce(K, mode)
    return results if per_layer else results[None]
