r"""Students of the teacher–student (tau, delta) maps (Kunin et al., *Get rich quick*, "Experimental Details",
"Figure 1: Teacher-Student with Two-layer ReLU Networks").

Student ``f(x) = sum_i a_i relu(w_i^T x)`` of even width ``h``.  Base initialization: for ``i <= h/2``,
``w_i ~ Unif(S^{d-1})`` and ``a_i ~ Unif({-1, +1})``; then ``w_{i+h/2} = w_i``, ``a_{i+h/2} = -a_i``, so
``f_0 = 0`` on every input.  Every neuron is balanced, ``delta_i = a_i^2 - ||w_i||^2 = 0``, which the paper
takes as ``tau = 1``.  A point ``(tau, delta)`` scales each ``w_i`` by ``tau / alpha`` and each ``a_i`` by
``tau * alpha``, with the relative layer scale ``alpha > 0`` solved from

    delta = tau^2 (alpha^2 - alpha^{-2})      =>      alpha^2 = (delta/tau^2 + sqrt(delta^2/tau^4 + 4)) / 2.

The paper's text prints ``delta^2 = tau^2 (alpha^2 - alpha^{-2})``; with its definition
``delta_i = eta_w a_i^2 - eta_a ||w_i||^2`` (``eta = 1``) the scaled neuron has
``delta_i = tau^2 alpha^2 |a_i|^2 - tau^2 alpha^{-2} ||w_i||^2 = tau^2 (alpha^2 - alpha^{-2})``, so the
relation implemented here is the one **without** the square, which also covers the negative (downstream)
half of the paper's ``delta in [-1, 1]`` grid.  Every neuron then has ``delta_i = delta`` exactly, and
``delta_i`` is conserved by gradient flow (ReLU is positively homogeneous: ``a_i dL/da_i = w_i . dL/dw_i``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

__all__ = ["relative_scale", "base_student", "scale_student", "student", "neuron_deltas", "check_tau_delta"]

#: |delta| / tau^2 beyond this would make alpha^4 overflow the useful float64 range of the two layers.
MAX_DELTA_OVER_TAU2 = 1e6


def check_tau_delta(tau: float, delta: float) -> Tuple[float, float]:
    """``(tau, delta)`` as floats, or ValueError naming the valid range."""
    try:
        tau, delta = float(tau), float(delta)
    except (TypeError, ValueError):
        raise TypeError(f"tau and delta must be numbers, got {tau!r} and {delta!r}.") from None
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite number (the overall scale; 1 is the base student), got {tau}.")
    if not math.isfinite(delta) or abs(delta) > MAX_DELTA_OVER_TAU2 * tau * tau:
        raise ValueError(f"delta must be finite with |delta| <= {MAX_DELTA_OVER_TAU2:g} tau^2 (got delta={delta}, "
                         f"tau={tau}); the paper's grid is delta in [-1, 1].")
    return tau, delta


def relative_scale(tau: float, delta: float) -> float:
    """``alpha > 0`` with ``tau^2 (alpha^2 - alpha^-2) = delta``."""
    tau, delta = check_tau_delta(tau, delta)
    r = delta / (tau * tau)
    # alpha^2 = (r + sqrt(r^2 + 4)) / 2, written without cancellation for r << 0
    u = (r + math.sqrt(r * r + 4)) / 2 if r >= 0 else 2 / (-r + math.sqrt(r * r + 4))
    return math.sqrt(u)


def base_student(d: int, width: int, *, seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 dtype=torch.float64) -> Tuple[torch.Tensor, torch.Tensor]:
    """Balanced symmetrized base ``(w (width, d), a (width,))``: ``w_i`` on the unit sphere, ``a_i = ±1``,
    the second half the first with ``a`` negated (``f_0 = 0``). Draw order: ``w`` then ``a``."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}.")
    if isinstance(width, bool) or not isinstance(width, int) or width < 2 or width % 2:
        raise ValueError(f"width must be an even int >= 2 (the student is symmetrized in pairs), got {width!r}.")
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both.")
    g = generator if generator is not None else (torch.Generator().manual_seed(seed) if seed is not None else None)
    half = width // 2
    w = torch.randn(half, d, generator=g, dtype=torch.float64)
    w = w / w.norm(dim=1, keepdim=True)
    a = torch.randint(0, 2, (half,), generator=g).to(torch.float64) * 2 - 1
    return torch.cat([w, w]).to(dtype), torch.cat([a, -a]).to(dtype)


def scale_student(w: torch.Tensor, a: torch.Tensor, tau: float, delta: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The base student moved to ``(tau, delta)``: ``w * tau / alpha``, ``a * tau * alpha``."""
    alpha = relative_scale(tau, delta)
    tau = float(tau)
    return w * (tau / alpha), a * (tau * alpha)


def student(tau: float, delta: float, d: int, width: int, *, seed: Optional[int] = None,
            generator: Optional[torch.Generator] = None, dtype=torch.float64) -> Tuple[torch.Tensor, torch.Tensor]:
    """``scale_student(base_student(d, width, seed=...), tau, delta)``."""
    check_tau_delta(tau, delta)
    w, a = base_student(d, width, seed=seed, generator=generator, dtype=dtype)
    return scale_student(w, a, tau, delta)


def neuron_deltas(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-neuron conserved quantity ``delta_i = a_i^2 - ||w_i||^2`` (any leading cell axes)."""
    return a * a - (w * w).sum(dim=-1)
