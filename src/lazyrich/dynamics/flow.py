"""Gradient-descent driver that follows gradient flow (issue 14 section 3).

The step adapts to stay below the stability limit: ``eta = safety * 2 / lambda_max`` where ``lambda_max``
is the top eigenvalue of the loss Hessian, estimated by power iteration on Hessian-vector products and
re-estimated every ``reestimate_every`` steps. Time is counted in gradient-flow units (the sum of the step
sizes). Training stops at a loss tolerance, a flow-time budget or a wall-clock budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


def top_hessian_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                           iters: int = 20, seed: int = 0) -> float:
    """Largest-magnitude Hessian eigenvalue of ``loss_fn()`` w.r.t. ``params`` by power iteration on HVPs."""
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    lam = 0.0
    for _ in range(iters):
        norm = torch.sqrt(sum((x * x).sum() for x in v))
        v = [x / norm for x in v]
        grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
        hv = torch.autograd.grad(grads, params, grad_outputs=v)
        lam = float(sum((a * b).sum() for a, b in zip(hv, v)))
        v = [h.detach() for h in hv]
        if float(torch.sqrt(sum((x * x).sum() for x in v))) == 0.0:
            return 0.0
    return abs(lam)


@dataclass
class FlowResult:
    """Outcome of :func:`gradient_flow`: flow times and losses at each step, and why it stopped."""

    times: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    steps: int = 0
    stopped: str = ""


def gradient_flow(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *,
                  loss_tol: float = 0.0, max_time: float = float("inf"), max_seconds: float = float("inf"),
                  max_steps: int = 10**7, safety: float = 0.5, reestimate_every: int = 50,
                  max_dt: float | None = None, callback: Callable[[float, list], None] | None = None) -> FlowResult:
    """Integrate d theta/dt = -grad L with explicit Euler steps ``dt = safety * 2 / lambda_max`` (capped by
    ``max_dt`` and by the time left to ``max_time``), updating ``params`` in place."""
    if not 0 < safety < 1:
        raise ValueError(f"safety must lie in (0, 1) (got {safety}); pass e.g. safety=0.5.")
    params = list(params)
    res = FlowResult()
    t, start, dt = 0.0, time.perf_counter(), None
    for step in range(max_steps):
        if dt is None or step % reestimate_every == 0:
            lam = top_hessian_eigenvalue(loss_fn, params)
            dt = safety * 2.0 / lam if lam > 0 else (max_dt or 1.0)
            if max_dt is not None:
                dt = min(dt, max_dt)
        loss = loss_fn()
        res.times.append(t)
        res.losses.append(float(loss.detach()))
        if callback is not None:
            callback(t, params)
        if res.losses[-1] <= loss_tol:
            res.stopped = "loss_tol"
            break
        if t >= max_time * (1 - 1e-12):
            res.stopped = "max_time"
            break
        if time.perf_counter() - start > max_seconds:
            res.stopped = "max_seconds"
            break
        h = min(dt, max_time - t)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(h * g)
        t += h
        res.steps += 1
    else:
        res.stopped = "max_steps"
    return res
