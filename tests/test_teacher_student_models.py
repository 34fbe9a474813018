"""models.teacher_student: (tau, delta) students; every delta_i = delta at init and conserved by small-step GD."""

import math

import pytest
import torch

from lazyrich.models.teacher_student import (base_student, neuron_deltas, relative_scale, scale_student, student)


@pytest.mark.parametrize("tau, delta", [(0.1, -1.0), (0.1, 1.0), (0.3, 0.0), (1.0, 0.5), (2.0, -1.0), (0.1, -1e-3)])
def test_every_neuron_has_delta_and_f0_is_zero(tau, delta):
    w, a = student(tau, delta, d=7, width=10, seed=3)
    assert w.shape == (10, 7) and a.shape == (10,)
    assert torch.allclose(neuron_deltas(w, a), torch.full((10,), delta, dtype=torch.float64), rtol=0, atol=1e-13)
    alpha = relative_scale(tau, delta)
    assert math.isclose(tau ** 2 * (alpha ** 2 - alpha ** -2), delta, abs_tol=1e-13)
    # the geometric mean of the two layers' scales is tau: |a_i| ||w_i|| = tau^2
    assert torch.allclose(a.abs() * w.norm(dim=1), torch.full((10,), tau ** 2, dtype=torch.float64))
    x = torch.randn(50, 7, dtype=torch.float64)
    assert torch.relu(x @ w.T) @ a == pytest.approx(torch.zeros(50), abs=1e-14)


def test_base_is_balanced_tau_one_and_seeded():
    w, a = base_student(5, 8, seed=1)
    assert torch.allclose(neuron_deltas(w, a), torch.zeros(8, dtype=torch.float64), atol=1e-15)
    w2, a2 = scale_student(w, a, 1.0, 0.0)
    assert torch.equal(w, w2) and torch.equal(a, a2)
    assert torch.equal(base_student(5, 8, seed=1)[0], w) and not torch.equal(base_student(5, 8, seed=2)[0], w)


def test_delta_conserved_under_small_step_gd():
    """Gradient flow conserves delta_i exactly; GD changes it by lr^2 (|dL/da_i|^2 - ||dL/dw_i||^2) per step."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    def drift(tau, delta, lr, T=3.0):
        w, a = student(tau, delta, d=4, width=6, seed=5)
        w0 = w.clone()
        w.requires_grad_(True)
        a.requires_grad_(True)
        for _ in range(int(round(T / lr))):
            loss = 0.5 * ((torch.relu(x @ w.T) @ a - y) ** 2).mean()
            gw, ga = torch.autograd.grad(loss, (w, a))
            with torch.no_grad():
                w -= lr * gw
                a -= lr * ga
        assert (w.detach() - w0).norm() > 1e-2  # the parameters did move
        return float((neuron_deltas(w.detach(), a.detach()) - delta).abs().max())

    for tau, delta in [(0.5, -0.2), (0.5, 0.2), (1.0, 0.0)]:
        coarse = drift(tau, delta, 1e-3)
        assert coarse < 1e-4, (tau, delta, coarse)
    # the drift is the O(lr) discretisation error: a 4x smaller step at the same flow time gives ~4x less
    fine = drift(1.0, 0.0, 2.5e-4)
    assert 2.5 < coarse / fine < 6, (coarse, fine)


@pytest.mark.parametrize("tau, delta, pattern", [
    (0.0, 0.0, "tau must be a positive"), (-1.0, 0.0, "tau must be a positive"),
    (0.1, float("nan"), "delta must be finite"), (1e-3, 10.0, "delta must be finite"),
])
def test_bad_tau_delta(tau, delta, pattern):
    with pytest.raises(ValueError, match=pattern):
        student(tau, delta, d=3, width=4, seed=0)


def test_odd_width_refused():
    with pytest.raises(ValueError, match="even int"):
        base_student(3, 5, seed=0)
