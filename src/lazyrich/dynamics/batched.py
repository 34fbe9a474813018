"""Batched full-batch gradient descent that follows gradient flow for many small two-layer nets at once.

Model of cell ``c`` (Luo et al. eq. (1)/(3)): ``f_c(x) = (1/alpha_c) sum_k mask_ck a_ck sigma(w_ck . x)``,
loss ``L_c = 1/(2n) sum_i (f_c(x_ci) - y_ci)^2`` (Luo et al. eq. (2)).

Axes convention: the **cell axis is first** everywhere.
``w``: (C, m, d), ``a``: (C, m), ``x``: (C, n, d) or shared (n, d), ``y``: (C, n) or shared (n,),
``alpha``: scalar or (C,), ``mask``: (C, m) of 0/1 (pad different widths to one ``m`` with masked neurons).
A cell is one (width, grid point, seed); the cells do not interact: the summed loss has a block-diagonal
Hessian, so one forward/backward over the stacked tensors gives every cell its own gradient.

Each cell takes Euler steps of the flow ``dtheta/dt = -grad L_c`` with its own step
``dt_c = min(safety * 2 / lambda_c, max_rel_step * ||theta_c|| / ||grad L_c||)`` where ``lambda_c`` is the
largest-magnitude Hessian eigenvalue of ``L_c`` (batched power iteration on Hessian-vector products, warm
started from the cell's last eigenvector).  ``lambda_c`` is re-estimated for a cell every
``reestimate_every`` of its steps, whenever ``||theta_c||`` moved by more than ``reestimate_rel_change``
since its last estimate (the escape from a small initialization grows the curvature quickly), and after a
rejected step: a step that raises ``L_c`` is undone and retried with half the step (and a fresh ``lambda_c``
unless it was just estimated); the factor recovers by 1.1 per accepted step.  The relative-step cap keeps Euler close to the flow where the
parameters grow geometrically (saddle escape), where the stability limit alone would allow doubling per step.
Time is counted in flow units (sum of accepted ``dt_c``).  A cell stops (is frozen) at ``L_c <= loss_tol``,
at ``t_c >= time_budget`` or when its gradient is exactly zero (``stalled``: e.g. every ReLU dead); the run
stops when all cells stopped or after ``max_steps`` iterations.  Every per-cell decision uses only that
cell's numbers, so a cell's trajectory does not depend on the other cells of the batch.

With ``lr`` given (a number or one per cell, shape (C,)) the step is that fixed learning rate instead: plain
GD, no eigenvalue estimates and no rejected steps (the paper protocols of Kunin et al. use
``lr = 5e-3 / tau^2``), and ``time`` is ``steps * lr``. ``callback(k, w, a)`` is then called with the
parameters after ``k`` steps for every ``k`` in ``record_steps`` (before any cell is frozen at that step);
it may record checkpoints.
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
    ``lam`` (C,): last top-Hessian-eigenvalue estimate; ``stalled`` (C,) bool: stopped at a zero gradient
    with ``loss > loss_tol``; ``rejected`` (C,): number of undone steps.
    """

    w: torch.Tensor
    a: torch.Tensor
    loss: torch.Tensor
    time: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    lam: torch.Tensor
    stalled: torch.Tensor
    rejected: torch.Tensor


def _cell_losses(w, a, x, y, alpha, mask):
    pre = torch.einsum("cnd,cmd->cnm", x, w)
    f = torch.einsum("cnm,cm->cn", torch.relu(pre), a * mask) / alpha[:, None]
    return 0.5 * ((f - y) ** 2).mean(dim=1)


def _start_vectors(w, mask):
    C, m, d = w.shape
    vw = torch.sin(torch.arange(1, m * d + 1, dtype=w.dtype)).reshape(1, m, d).expand(C, m, d).clone()
    va = torch.cos(torch.arange(1, m + 1, dtype=w.dtype)).expand(C, m) * mask
    return vw, va


def batched_top_eigenvalue(w, a, x, y, alpha, mask, iters: int = 30, start=None, return_vectors: bool = False):
    """Largest-magnitude Hessian eigenvalue of each cell's loss, shape (C,), by power iteration on batched HVPs.

    The estimate is ``||H v||`` for the unit iterate ``v`` (it converges to ``max |eig|`` also when the top
    eigenvalues are ``+lambda`` and ``-lambda``, as at a saddle, where the Rayleigh quotient may vanish).
    ``start``: optional ``(vw, va)`` start vectors (warm start); default a deterministic vector, the same for
    every cell, so a cell's estimate does not depend on the batch.  ``return_vectors``: also return the last
    ``(vw, va)``.
    """
    w = w.detach().requires_grad_(True)
    a = a.detach().requires_grad_(True)
    loss = _cell_losses(w, a, x, y, alpha, mask).sum()
    gw, ga = torch.autograd.grad(loss, (w, a), create_graph=True)
    vw, va = _start_vectors(w, mask) if start is None else (start[0].clone(), start[1].clone() * mask)
    lam = torch.zeros(w.shape[0], dtype=w.dtype)
    for _ in range(iters):
        nrm = torch.sqrt((vw ** 2).sum(dim=(1, 2)) + (va ** 2).sum(dim=1))
        dead = nrm == 0  # H v = 0 exactly: restart that cell from the default vector
        if dead.any():
            dw, da = _start_vectors(w, mask)
            vw, va = torch.where(dead[:, None, None], dw, vw), torch.where(dead[:, None], da, va)
            nrm = torch.sqrt((vw ** 2).sum(dim=(1, 2)) + (va ** 2).sum(dim=1))
        vw, va = vw / nrm[:, None, None], va / nrm[:, None]
        hw, ha = torch.autograd.grad((gw * vw).sum() + (ga * va).sum(), (w, a), retain_graph=True)
        vw, va = hw.detach(), ha.detach() * mask
        lam = torch.sqrt((vw ** 2).sum(dim=(1, 2)) + (va ** 2).sum(dim=1))
    return (lam.detach(), (vw, va)) if return_vectors else lam.detach()


def _grads(w, a, x, y, alpha, mask):
    wg = w.detach().requires_grad_(True)
    ag = a.detach().requires_grad_(True)
    losses = _cell_losses(wg, ag, x, y, alpha, mask)
    gw, ga = torch.autograd.grad(losses.sum(), (wg, ag))
    return losses.detach(), gw, ga * mask


def train_two_layer_batched(w, a, x, y, *, alpha=1.0, mask=None, loss_tol: float = 1e-6,
                            time_budget: float = float("inf"), max_steps: int = 100_000,
                            safety: float = 0.5, reestimate_every: int = 50,
                            power_iters: int = 30, max_rel_step: float = 0.1,
                            reestimate_rel_change: float = 0.1, lr=None, record_steps=(),
                            callback=None) -> BatchedResult:
    """Train C two-layer ReLU nets together by GD following gradient flow (see module docstring for axes
    and the step rule).

    ``safety`` in (0, 1): step as a fraction of the stability limit ``2/lambda_max``; ``max_rel_step``
    (> 0, ``inf`` to disable): cap on ``||dtheta|| / ||theta||`` per step.  A warm-started re-estimate uses
    ``max(5, power_iters // 3)`` iterations.  Use float64 tensors for convergence studies.  Returns a
    :class:`BatchedResult`; the inputs are not modified.
    """
    if w.dim() != 3 or a.dim() != 2 or a.shape != w.shape[:2]:
        raise ValueError(f"w must be (C, m, d) and a (C, m) with the same C, m; got {tuple(w.shape)} and "
                         f"{tuple(a.shape)}: stack the cells along a first axis.")
    if not (0 < safety < 1):
        raise ValueError(f"safety must lie in (0, 1) (a fraction of the stability limit 2/lambda), got {safety}.")
    if not (time_budget > 0):
        raise ValueError(f"time_budget must be positive, got {time_budget}.")
    if not (max_rel_step > 0):
        raise ValueError(f"max_rel_step must be positive (inf disables the cap), got {max_rel_step}.")
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
    if lr is not None:
        return _train_fixed_lr(w, a, x, y, alpha, mask, lr, loss_tol, time_budget, max_steps, record_steps,
                               callback)
    if record_steps or callback is not None:
        raise ValueError("record_steps/callback need a fixed learning rate lr=; the adaptive flow path takes "
                         "no fixed steps to record at.")
    t = torch.zeros(C, dtype=dt)
    steps = torch.zeros(C, dtype=torch.long)
    rejected = torch.zeros(C, dtype=torch.long)
    active = torch.ones(C, dtype=torch.bool)
    stalled = torch.zeros(C, dtype=torch.bool)
    lam = torch.ones(C, dtype=dt)
    vec = None
    est_norm = torch.zeros(C, dtype=dt)
    since_est = torch.full((C,), reestimate_every, dtype=torch.long)
    force = torch.ones(C, dtype=torch.bool)
    shrink = torch.ones(C, dtype=dt)
    prev = None  # (w, a, t, losses) before the last step

    def norms(w_, a_):
        return torch.sqrt((w_ ** 2).sum(dim=(1, 2)) + (a_ ** 2).sum(dim=1))

    losses, gw, ga = _grads(w, a, x, y, alpha, mask)
    for _ in range(max_steps):
        if prev is not None:
            # undo steps that raised the loss (per cell), then retry them with a fresh lambda and half the step
            rej = active & (losses > prev[3] * (1 + 1e-12))
            shrink = torch.where(active & ~rej, torch.clamp(shrink * 1.1, max=1.0), shrink)
            if rej.any():
                w = torch.where(rej[:, None, None], prev[0], w)
                a = torch.where(rej[:, None], prev[1], a)
                t = torch.where(rej, prev[2], t)
                steps -= rej.long()
                rejected += rej.long()
                shrink = torch.where(rej, shrink * 0.5, shrink)
                force |= rej & (since_est > 1)  # a fresh lambda is kept; only the step is halved
                losses, gw, ga = _grads(w, a, x, y, alpha, mask)
        gnorm = norms(gw, ga)
        stalled |= active & (gnorm == 0) & (losses > loss_tol)
        active &= (losses > loss_tol) & (t < time_budget) & (gnorm > 0)
        if not active.any():
            break
        theta_norm = norms(w, a)
        need = active & (force | (since_est >= reestimate_every)
                         | ((theta_norm - est_norm).abs() > reestimate_rel_change * est_norm))
        if need.any():
            iters = power_iters if vec is None else max(5, power_iters // 3)
            new, new_vec = batched_top_eigenvalue(w, a, x, y, alpha, mask, iters, start=vec, return_vectors=True)
            if vec is None:
                vec = new_vec
            else:
                vec = (torch.where(need[:, None, None], new_vec[0], vec[0]), torch.where(need[:, None], new_vec[1], vec[1]))
            lam = torch.where(need, new.clamp_min(1e-300), lam)
            est_norm = torch.where(need, theta_norm, est_norm)
            since_est = torch.where(need, torch.zeros_like(since_est), since_est)
            force &= ~need
        h = torch.minimum(shrink * safety * 2.0 / lam, time_budget - t)
        h = torch.minimum(h, max_rel_step * theta_norm / gnorm.clamp_min(1e-300))
        h = torch.where(active, h, torch.zeros_like(h))
        prev = (w, a, t, torch.where(active, losses, torch.full_like(losses, float("inf"))))
        w = w - h[:, None, None] * gw
        a = a - h[:, None] * ga
        t = t + h
        steps += active.long()
        since_est += active.long()
        losses, gw, ga = _grads(w, a, x, y, alpha, mask)
    final = _cell_losses(w, a, x, y, alpha, mask)
    return BatchedResult(w=w, a=a, loss=final, time=t, steps=steps, converged=final <= loss_tol, lam=lam,
                         stalled=stalled, rejected=rejected)


def _train_fixed_lr(w, a, x, y, alpha, mask, lr, loss_tol, time_budget, max_steps, record_steps, callback):
    """Plain full-batch GD at a fixed learning rate per cell (the ``lr=`` path of
    :func:`train_two_layer_batched`)."""
    C = w.shape[0]
    dt = w.dtype
    fixed = torch.as_tensor(lr, dtype=dt).expand(C).clone()
    if not bool(torch.all(fixed > 0)) or not bool(torch.all(torch.isfinite(fixed))):
        raise ValueError(f"lr must be positive and finite (one number or one per cell), got {lr}.")
    record = set(int(k) for k in record_steps)
    if record and callback is None:
        raise ValueError("record_steps needs a callback(k, w, a) that records the checkpoints.")
    t = torch.zeros(C, dtype=dt)
    steps = torch.zeros(C, dtype=torch.long)
    active = torch.ones(C, dtype=torch.bool)
    for k in range(max_steps + 1):
        if k in record:
            callback(k, w, a)
        if k == max_steps:
            break
        losses, gw, ga = _grads(w, a, x, y, alpha, mask)
        active &= (losses > loss_tol) & (t < time_budget)
        if not active.any():
            break
        h = torch.minimum(fixed, time_budget - t) * active
        w = w - h[:, None, None] * gw
        a = a - h[:, None] * ga
        t = t + h
        steps += active.long()
    final = _cell_losses(w, a, x, y, alpha, mask)
    zeros = torch.zeros(C, dtype=torch.long)
    return BatchedResult(w=w, a=a, loss=final, time=t, steps=steps, converged=final <= loss_tol,
                         lam=torch.full((C,), float("nan"), dtype=dt), stalled=zeros.bool(), rejected=zeros)
