"""Tests for lazyrich.theory.phase_diagram (Luo, Xu, Ma & Zhang, phase diagram of
two-layer ReLU nets: eqs. (7)-(14), Table 1, Theorems 6/8, eqs. (16), (19)).

Oracles: Table 1 of the paper (entry by entry), the paper's statements about where known
schemes lie, power-law formulas, hand computations, and torch autograd for the
normalized gradient flow (eqs. (7)-(13)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lazyrich.theory import phase_diagram as pd

# Table 1 of Luo et al.: (gamma, gamma') columns, transcribed from the paper.
TABLE1 = {
    "lecun": (0.5, 0.5),
    "he": (0.5, 0.5),
    "xavier": (1.0, 0.0),
    "ntk": (0.5, 0.0),
    "mean-field": (1.0, 0.0),
}


def _table1_kappas(name: str, m: float, d: int, beta: float | None = None) -> tuple[float, float]:
    """kappa and kappa' columns of Table 1, transcribed from the paper."""
    return {
        "lecun": (math.sqrt(1 / (m * d)), math.sqrt(d / m)),
        "he": (math.sqrt(4 / (m * d)), math.sqrt(d / m)),
        "xavier": (math.sqrt(4 / ((m + 1) * (m + d))), math.sqrt((m + d) / (m + 1))),
        "ntk": (math.sqrt(1 / m), 1.0),
        "mean-field": (1 / m, 1.0),
        "e-et-al": (beta, beta),
    }[name]


# ---------------------------------------------------------------------------------------
# Table 1
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TABLE1))
def test_table1_coordinates(name):
    assert pd.scheme_coordinates(name) == TABLE1[name]


@pytest.mark.parametrize("s", [0.0, 1 / 6, 0.5, 1.0, 2.0, -0.25])
def test_table1_e_et_al_family(s):
    # alpha = 1, beta1 = beta = m^-s, beta2 = 1: gamma = gamma' = lim log(1/beta)/log m = s
    assert pd.scheme_coordinates("e-et-al", beta_exponent=s) == pytest.approx((s, s), abs=0)
    assert pd.e_et_al_coordinates(s) == pytest.approx((s, s), abs=0)
    with pytest.raises(ValueError, match="beta_exponent"):
        pd.scheme_coordinates("e-et-al")


@pytest.mark.parametrize("name", list(TABLE1) + ["e-et-al"])
@pytest.mark.parametrize("m", [1000.0, 40000.0])
def test_table1_kappa_columns(name, m):
    d = 784
    kw = {"beta_exponent": 0.3} if name == "e-et-al" else {}
    alpha, beta1, beta2 = pd.scheme_scalings(name, d=d, **kw)
    k, kp = _table1_kappas(name, m, d, beta=m**-0.3)
    assert pd.kappa(alpha(m), beta1(m), beta2(m)) == pytest.approx(k, rel=1e-14)
    assert pd.kappa_prime(beta1(m), beta2(m)) == pytest.approx(kp, rel=1e-14)


@pytest.mark.parametrize("name", list(TABLE1) + ["e-et-al"])
def test_callables_reproduce_table1(name):
    """Regression of -log kappa on log m for the Table 1 scalings (d = 784 for the
    d-dependent ones) equals the exact power-law coordinates (tolerance 1e-6: Xavier's
    kappa has an O(d/m) correction that is ~1e-5 at m = 1e8 and ~1e-13 at 1e16)."""
    kw = {"beta_exponent": 0.4} if name == "e-et-al" else {}
    exact = pd.scheme_coordinates(name, **kw)
    got = pd.coordinates_from_callables(*pd.scheme_scalings(name, d=784, **kw))
    assert got == pytest.approx(exact, abs=1e-6)


def test_callables_equal_power_law_formula():
    # alpha = 3 m^0.7, beta1 = 0.2 m^-0.3, beta2 = 5 m^0.1:
    # gamma = 0.7 + 0.3 - 0.1 = 0.9, gamma' = 0.1 + 0.3 = 0.4
    got = pd.coordinates_from_callables(lambda m: 3 * m**0.7, lambda m: 0.2 * m**-0.3, lambda m: 5 * m**0.1)
    assert pd.coordinates_from_exponents(0.7, -0.3, 0.1) == pytest.approx((0.9, 0.4), abs=1e-15)
    assert got == pytest.approx((0.9, 0.4), abs=1e-10)
    # non-power-law factors that vanish relative to the power: m^0.5 (1 + 7/sqrt(m))
    got = pd.coordinates_from_callables(lambda m: m**0.5 * (1 + 7 / math.sqrt(m)), lambda m: 1.0, lambda m: 1.0)
    assert got == pytest.approx((0.5, 0.0), abs=1e-6)


def test_callables_refuse_slow_limits():
    # beta = 1/log m: gamma = gamma' = 0 in the limit, but the local slope is 1/log m.
    with pytest.raises(ValueError, match="converged"):
        pd.coordinates_from_callables(lambda m: 1.0, lambda m: 1 / math.log(m), lambda m: 1.0)
    with pytest.raises(ValueError, match="positive"):
        pd.coordinates_from_callables(lambda m: 1.0, lambda m: -1.0, lambda m: 1.0)
    with pytest.raises(TypeError):
        pd.coordinates_from_callables(1.0, lambda m: 1.0, lambda m: 1.0)


def test_kappa_inputs():
    np.testing.assert_allclose(pd.kappa([1.0, 2.0], 3.0, [4.0, 5.0]), [12.0, 7.5], rtol=1e-15)
    assert pd.kappa_prime(3.0, 4.0) == 0.75
    with pytest.raises(ValueError, match="alpha"):
        pd.kappa(0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="unknown scheme"):
        pd.scheme_coordinates("orthogonal")


# ---------------------------------------------------------------------------------------
# Regimes
# ---------------------------------------------------------------------------------------
def test_regime_of_known_schemes_matches_paper():
    # NTK (Jacot et al.) and LeCun/He (gamma = 1/2 < 1): linear regime (Theorem 6).
    for name in ("ntk", "lecun", "he"):
        assert pd.regime(*pd.scheme_coordinates(name)) == "linear"
    # "the well-studied mean-field model is one point in the critical regime" (Sec. 4.2);
    # Xavier shares its coordinates (1, 0).
    for name in ("mean-field", "xavier"):
        assert pd.regime(*pd.scheme_coordinates(name)) == "critical"
    # E et al.'s line gamma = gamma' always satisfies gamma' > gamma - 1: linear.
    for s in (0.0, 1 / 6, 1.0, 3.0):
        assert pd.regime(*pd.e_et_al_coordinates(s)) == "linear"
    # Fig. 2 (gamma' = 0): gamma = 0.5 stays near init, gamma = 1.75 condenses.
    assert pd.regime(0.5, 0.0) == "linear"
    assert pd.regime(1.75, 0.0) == "condensed"


def test_regime_boundary_points():
    assert pd.regime(1.0, -3.0) == "critical"  # gamma = 1, gamma' <= 0
    assert pd.regime(1.0, 0.0) == "critical"
    assert pd.regime(2.0, 1.0) == "critical"  # gamma' = gamma - 1, gamma' > 0
    assert pd.regime(1.1, 0.1) == "critical"  # although 1.1 - 1 != 0.1 in floating point
    assert pd.regime(1.0 + 1e-12, -1.0) == "critical"  # within the default atol = 1e-9
    assert pd.regime(1.0 + 1e-12, -1.0, atol=0.0) == "condensed"
    assert pd.regime(1.0 + 1e-6, -1.0) == "condensed"
    assert pd.regime(1.0 - 1e-6, -1.0) == "linear"
    assert pd.boundary_gamma(-2.0) == 1.0 and pd.boundary_gamma(0.5) == 1.5
    with pytest.raises(ValueError):
        pd.regime(np.nan, 0.0)


def test_regime_vectorized_matches_theorems():
    """Array version against the paper's two-inequality statements (Theorems 6 and 8)."""
    rng = np.random.default_rng(0)
    g = rng.uniform(-1, 4, size=(40, 50))
    gp = rng.uniform(-3, 3, size=(40, 50))
    out = pd.regime(g, gp)
    assert isinstance(out, np.ndarray) and out.shape == (40, 50)
    linear = (g < 1) | (gp > g - 1)
    condensed = (g > 1) & (gp < g - 1)
    assert np.array_equal(out == "linear", linear)
    assert np.array_equal(out == "condensed", condensed)
    assert linear.any() and condensed.any()
    # exact boundary grid: gamma' <= 0 at gamma = 1, gamma = gamma' + 1 for gamma' >= 0
    gp_b = np.linspace(-2, 2, 41)
    assert np.all(pd.regime(pd.boundary_gamma(gp_b), gp_b) == "critical")
    # broadcasting
    assert pd.regime(np.array([0.5, 1.0, 2.0]), 0.0).tolist() == ["linear", "critical", "condensed"]


# ---------------------------------------------------------------------------------------
# Normalized model, eqs. (7)-(13), against torch autograd
# ---------------------------------------------------------------------------------------
def test_normalized_model_and_mobility_against_autograd():
    """Original model (3) with gradient flow (6) vs normalized model (9) with weighted
    flow (12)-(13): outputs agree, and d a_bar/d t_bar = beta2 da/dt,
    d w_bar/d t_bar = beta1 dw/dt (from eq. (7)) equal -M_kappa' grad R_{S,kappa}."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    n, d, m = 6, 3, 9
    alpha, beta1, beta2 = 7.0, 0.3, 2.5
    X = torch.from_numpy(rng.standard_normal((n, d)))
    y = torch.from_numpy(rng.standard_normal(n))
    a = torch.from_numpy(beta1 * rng.standard_normal(m)).requires_grad_(True)
    W = torch.from_numpy(beta2 * rng.standard_normal((m, d))).requires_grad_(True)

    def risk(out):
        return ((out - y) ** 2).sum() / (2 * n)

    f_orig = torch.relu(X @ W.T) @ a / alpha
    ga, gW = torch.autograd.grad(risk(f_orig), (a, W))

    abar, Wbar, tbar = pd.normalize_parameters(a.detach().numpy(), W.detach().numpy(), beta1, beta2, t=2.0)
    assert tbar == pytest.approx(2.0 / (beta1 * beta2), rel=1e-15)
    k, kp = pd.kappa(alpha, beta1, beta2), pd.kappa_prime(beta1, beta2)
    ab = torch.from_numpy(abar).requires_grad_(True)
    Wb = torch.from_numpy(Wbar).requires_grad_(True)
    f_norm = k * (torch.relu(X @ Wb.T) @ ab)
    np.testing.assert_allclose(f_norm.detach().numpy(), f_orig.detach().numpy(), rtol=1e-13, atol=1e-15)
    gab, gWb = torch.autograd.grad(risk(f_norm), (ab, Wb))
    np.testing.assert_allclose(-(1 / kp) * gab.numpy(), beta2 * (-ga.numpy()), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(-kp * gWb.numpy(), beta1 * (-gW.numpy()), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------
# RD (eq. (16)) and S_w (eq. (19))
# ---------------------------------------------------------------------------------------
def test_relative_distance_hand_values():
    t0 = np.array([3.0, 4.0])  # ||t0|| = 5
    assert pd.relative_distance(t0, t0 + [0.6, 0.8]) == pytest.approx(0.2, abs=1e-15)
    traj = np.array([t0, t0 + [0.6, 0.8], t0 + [-3.0, 0.0], 2 * t0])
    np.testing.assert_allclose(pd.relative_distance(t0, traj), [0.0, 0.2, 0.6, 1.0], rtol=0, atol=1e-15)
    W0 = np.array([[1.0, 2.0], [2.0, 4.0]])  # ||W0||_F = 5
    assert pd.relative_distance(W0, W0 + [[0.0, 0.0], [0.0, 1.5]]) == pytest.approx(0.3, abs=1e-15)
    with pytest.raises(ValueError, match="theta_0 = 0"):
        pd.relative_distance(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        pd.relative_distance(t0, np.ones(3))


def test_slope_over_widths_hand_values():
    # x = log m = (0, 1, 2), y = log RD = (0, 1, 3):
    # slope = sum (x - 1)(y - 4/3) / sum (x - 1)^2 = (4/3 + 5/3) / 2 = 3/2, intercept 4/3 - 3/2.
    m = np.exp([0.0, 1.0, 2.0])
    rd = np.exp([0.0, 1.0, 3.0])
    assert pd.slope_over_widths(m, rd) == pytest.approx(1.5, abs=1e-14)
    s, b = pd.slope_over_widths(m, rd, return_intercept=True)
    assert b == pytest.approx(-1 / 6, abs=1e-14)
    # exact power law on the widths of Fig. 3: RD = 2.5 m^-0.4 -> S_w = -0.4
    widths = np.array([1000, 5000, 10000, 20000, 40000])
    assert pd.slope_over_widths(widths, 2.5 * widths**-0.4) == pytest.approx(-0.4, abs=1e-12)
    with pytest.raises(ValueError, match="positive"):
        pd.slope_over_widths(widths, -widths * 1.0)
    with pytest.raises(ValueError, match="two distinct"):
        pd.slope_over_widths([10.0, 10.0], [1.0, 2.0])


# ---------------------------------------------------------------------------------------
# Condensation maps
# ---------------------------------------------------------------------------------------
def test_condensation_features_hand_values():
    a = np.array([-2.0, 0.5, 1.0, 3.0])
    W = np.array([[3.0, 4.0], [0.0, -1.0], [-1.0, 0.0], [0.0, 0.0]])
    A, w_hat = pd.condensation_features(a, W)
    np.testing.assert_allclose(A, [10.0, 0.5, 1.0, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(w_hat[:3], [[0.6, 0.8], [0.0, -1.0], [-1.0, 0.0]], rtol=0, atol=1e-15)
    assert np.all(np.isnan(w_hat[3]))  # w = 0 has no orientation
    ang = pd.orientation_angle(W[:3])
    np.testing.assert_allclose(ang, [math.atan2(4, 3), -math.pi / 2, -math.pi], rtol=0, atol=1e-15)
    assert np.all((ang >= -math.pi) & (ang < math.pi))
    np.testing.assert_allclose(pd.projection_feature(np.eye(4)[:1]), [0.5], atol=1e-15)
    np.testing.assert_allclose(pd.projection_feature(w_hat[:1], p=[0.0, 2.0]), [0.8], atol=1e-15)


def test_condensation_features_reconstruct_neurons():
    # ReLU homogeneity: a relu(w.x) = sign(a) A relu(w_hat.x)
    rng = np.random.default_rng(2)
    a, W, X = rng.standard_normal(20), rng.standard_normal((20, 5)), rng.standard_normal((30, 5))
    A, w_hat = pd.condensation_features(a, W)
    lhs = np.maximum(X @ W.T, 0) * a
    rhs = np.maximum(X @ w_hat.T, 0) * (np.sign(a) * A)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(w_hat, axis=1), 1.0, rtol=0, atol=1e-15)
