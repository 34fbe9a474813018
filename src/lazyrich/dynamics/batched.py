"""Batched full-batch gradient descent that follows gradient flow for many small two-layer nets at once.

Model of cell ``c`` (Luo et al. eq. (1)/(3)): ``f_c(x) = (1/alpha_c) sum_k mask_ck a_ck sigma(w_ck . x)``,
loss ``L_c = 1/(2n) sum_i (f_c(x_ci) - y_ci)^2`` (Luo et al. eq. (2)).

Axes convention: the **cell axis is first** everywhere.
``w``: (C, m, d), ``a``: (C, m), ``x``: (C, n, d) or shared (n, d), ``y``: (C, n) or shared (n,),
``alpha``: scalar or (C,), ``mask``: (C, m) of 0/1 (pad different widths to one ``m`` with masked neurons).
A cell is one (width, grid point, seed); the cells do not interact: the summed loss has a block-diagonal
Hessian, so one forward/backward over the stacked tensors gives every cell its own gradient.

Each cell takes Euler steps of the flow ``dtheta/dt = -grad L_c`` with its own step
``dt_c = safety * 2 / lambda_c`` where ``lambda_c`` is the top Hessian eigenvalue of ``L_c`` (batched power
iteration on Hessian-vector products), re-estimated every ``reestimate_every`` steps. Time is counted in
flow units (sum of ``dt_c``). A cell stops (is frozen) at ``L_c <= loss_tol`` or ``t_c >= time_budget``;
the run stops when all cells stopped or after ``max_steps``.

With ``lr`` given (a number or one per cell, shape (C,)) the step is that fixed learning rate instead (no
eigenvalue estimates; the paper protocols of Kunin et al. use ``lr = 5e-3 / tau^2``), and ``time`` is
``steps * lr``. ``callback(k, w, a)`` is called with the parameters after ``k`` steps for every ``k`` in
``record_steps`` (and before any cell is frozen at that step); it may record checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BatchedResult", "batched_top_eigenvalue", "train_two_layer_batched"]


@dataclass
class BatchedResult:
    """Final state of :func:`train_two_layer_batched` (cell axis first).

    ``w`` (C, m, d), ``a`` (C, m): trained parameters; ``loss`` (C,): final losses; ``time`` (C,): flow
    time reached; ``steps`` (C,): steps taken; ``converged`` (C,) bool: ``loss <= loss_tol``;
    ``lam`` (C,): last top-Hessian-eigenvalue estimate.
    """

    w: torch.Tensor
    a: torch.Tensor
    loss: torch.Tensor
    time: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    lam: torch.Tensor


def _cell_losses(w, a, x, y, alpha, mask):
    pre = torch.einsum("cnd,cmd->cnm", x, w)
    f = torch.einsum("cnm,cm->cn", torch.relu(pre), a * mask) / alpha[:, None]
    return 0.5 * ((f - y) ** 2).mean(dim=1)


def batched_top_eigenvalue(w, a, x, y, alpha, mask, iters: int = 30) -> torch.Tensor:
    """Top Hessian eigenvalue of each cell's loss, shape (C,), by power iteration on batched HVPs."""
    w = w.detach().requires_grad_(True)
    a = a.detach().requires_grad_(True)
    loss = _cell_losses(w, a, x, y, alpha, mask).sum()
    gw, ga = torch.autograd.grad(loss, (w, a), create_graph=True)
    # Deterministic start, the same for every cell, so a cell's estimate does not depend on the batch.
    C, m, d = w.shape
    vw = torch.sin(torch.arange(1, m * d + 1, dtype=w.dtype)).reshape(1, m, d).expand(C, m, d).clone()
    va = torch.cos(torch.arange(1, m + 1, dtype=a.dtype)).expand(C, m) * mask
    lam = torch.zeros(w.shape[0], dtype=w.dtype)
    for _ in range(iters):
        nrm = torch.sqrt((vw ** 2).sum(dim=(1, 2)) + (va ** 2).sum(dim=1)).clamp_min(1e-300)
        vw, va = vw / nrm[:, None, None], va / nrm[:, None]
        hw, ha = torch.autograd.grad((gw * vw).sum() + (ga * va).sum(), (w, a), retain_graph=True)
        lam = (hw * vw).sum(dim=(1, 2)) + (ha * va).sum(dim=1)
        vw, va = hw.detach(), ha.detach() * mask
    return lam.detach().abs()


def train_two_layer_batched(w, a, x, y, *, alpha=1.0, mask=None, loss_tol: float = 1e-6,
                            time_budget: float = float("inf"), max_steps: int = 100_000,
                            safety: float = 0.5, reestimate_every: int = 50,
                            power_iters: int = 30, lr=None, record_steps=(), callback=None) -> BatchedResult:
    """Train C two-layer ReLU nets together by GD following gradient flow (see module docstring for axes).

    ``safety`` in (0, 1): step as a fraction of the stability limit ``2/lambda_max``. Use float64 tensors
    for convergence studies. Returns a :class:`BatchedResult`; the inputs are not modified.
    """
    if w.dim() != 3 or a.dim() != 2 or a.shape != w.shape[:2]:
        raise ValueError(f"w must be (C, m, d) and a (C, m) with the same C, m; got {tuple(w.shape)} and "
                         f"{tuple(a.shape)}: stack the cells along a first axis.")
    if not (0 < safety < 1):
        raise ValueError(f"safety must lie in (0, 1) (a fraction of the stability limit 2/lambda), got {safety}.")
    if not (time_budget > 0):
        raise ValueError(f"time_budget must be positive, got {time_budget}.")
    C, m, d = w.shape
    dt = w.dtype
    x = x.to(dt)
    y = y.to(dt)
    if x.dim() == 2:
        x = x.expand(C, *x.shape)
    if y.dim() == 1:
        y = y.expand(C, *y.shape)
    if x.shape[0] != C or x.shape[2] != d or y.shape != x.shape[:2]:
        raise ValueError(f"x must be (n, d) or (C, n, d) and y (n,) or (C, n) matching w {tuple(w.shape)}; "
                         f"got x {tuple(x.shape)}, y {tuple(y.shape)}.")
    alpha = torch.as_tensor(alpha, dtype=dt).expand(C).clone()
    mask = torch.ones(C, m, dtype=dt) if mask is None else mask.to(dt)
    if mask.shape != (C, m):
        raise ValueError(f"mask must be (C, m) = {(C, m)}, got {tuple(mask.shape)}.")
    w = w.detach().clone()
    a = (a.detach() * mask).clone()
    t = torch.zeros(C, dtype=dt)
    steps = torch.zeros(C, dtype=torch.long)
    active = torch.ones(C, dtype=torch.bool)
    lam = torch.ones(C, dtype=dt)
    fixed = None
    if lr is not None:
        fixed = torch.as_tensor(lr, dtype=dt).expand(C).clone()
        if not bool(torch.all(fixed > 0)) or not bool(torch.all(torch.isfinite(fixed))):
            raise ValueError(f"lr must be positive and finite (one number or one per cell), got {lr}.")
    record = set(int(k) for k in record_steps)
    if record and callback is None:
        raise ValueError("record_steps needs a callback(k, w, a) that records the checkpoints.")
    for k in range(max_steps + 1):
        if k in record:
            callback(k, w, a)
        if k == max_steps:
            break
        if fixed is None and k % reestimate_every == 0:
            lam = batched_top_eigenvalue(w, a, x, y, alpha, mask, power_iters).clamp_min(1e-12)
        wg = w.requires_grad_(True)
        ag = a.requires_grad_(True)
        losses = _cell_losses(wg, ag, x, y, alpha, mask)
        gw, ga = torch.autograd.grad(losses.sum(), (wg, ag))
        w, a, losses = w.detach(), a.detach(), losses.detach()
        active &= (losses > loss_tol) & (t < time_budget)
        if not active.any():
            break
        h = torch.minimum(safety * 2.0 / lam if fixed is None else fixed, time_budget - t) * active
        w = w - h[:, None, None] * gw
        a = a - h[:, None] * ga * mask
        t = t + h
        steps += active.long()
    final = _cell_losses(w, a, x, y, alpha, mask)
    return BatchedResult(w=w, a=a, loss=final, time=t, steps=steps, converged=final <= loss_tol, lam=lam)
