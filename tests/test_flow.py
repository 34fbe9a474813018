"""Gradient-flow driver against an exact flow: a linear least-squares model, theta(t) = theta* +
expm(-t H)(theta0 - theta*), H = X^T X / n (float64)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from lazyrich.dynamics.flow import gradient_flow, top_hessian_eigenvalue


def _problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(20, generator=gen, dtype=torch.float64)
    theta = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    return x, y, theta


def test_hessian_eigenvalue_matches_eigh():
    x, y, theta = _problem()
    lam = top_hessian_eigenvalue(lambda: ((x @ theta - y) ** 2).mean() / 2, [theta], iters=200)
    assert lam == pytest.approx(np.linalg.eigvalsh((x.T @ x / 20).numpy()).max(), rel=1e-8)


def test_linear_model_trajectory_matches_closed_form():
    x, y, theta = _problem()
    h = (x.T @ x / 20).numpy()
    star = np.linalg.lstsq(x.numpy(), y.numpy(), rcond=None)[0]
    traj = []
    res = gradient_flow(lambda: ((x @ theta - y) ** 2).mean() / 2, [theta], max_time=5.0, max_dt=1e-3,
                        callback=lambda t, p: traj.append((t, p[0].detach().numpy().copy())))
    assert res.stopped == "max_time"
    assert res.times[-1] == pytest.approx(5.0)
    for t, th in traj[:: len(traj) // 10]:
        exact = star + scipy.linalg.expm(-t * h) @ (0 - star)
        assert np.linalg.norm(th - exact) <= 1e-3 * np.linalg.norm(exact) + 1e-12


def test_stops_at_loss_tolerance_and_rejects_bad_safety():
    x, y, theta = _problem()
    y = x @ torch.ones(5, dtype=torch.float64)
    res = gradient_flow(lambda: ((x @ theta - y) ** 2).mean() / 2, [theta], loss_tol=1e-10)
    assert res.stopped == "loss_tol" and res.losses[-1] <= 1e-10
    with pytest.raises(ValueError, match="safety"):
        gradient_flow(lambda: (theta ** 2).sum(), [theta], safety=1.5)
