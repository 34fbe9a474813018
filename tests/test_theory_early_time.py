"""Tests for lazyrich.theory.early_time (Hu, Xiao, Adlam & Pennington 2020, eqs. (1)-(11)).

Oracles: closed-form Gaussian integrals (derived in the comments), Monte Carlo with
torch-autograd derivatives, scipy.integrate.quad, brute-force float64 torch Jacobians,
and the ReLU arc-cosine kernel (infinite-width first-layer NTK).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.sparse.linalg import eigsh
from scipy.special import erf
from scipy.stats import norm as gauss

from lazyrich.theory import early_time as et

SQ2PI = math.sqrt(2.0 * math.pi)
KEYS = ("zeta", "nu", "theta0", "theta1", "theta2")


def _sphere_data(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Rows uniform on the sphere of radius sqrt(d): the paper's ||x||^2 = d normalization."""
    X = rng.standard_normal((n, d))
    return X * (math.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True))


# ---------------------------------------------------------------------------------------
# Constants: closed forms (tolerance 1e-12)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, 2.5])
def test_relu_closed_form(ratio):
    # phi' = 1{g>0}: zeta = P(g>0) = 1/2; theta0 = E[g^+] = 1/sqrt(2pi);
    # theta1 = E[g 1{g>0}] = 1/sqrt(2pi); E[g^3 1{g>0}] = 2/sqrt(2pi), so
    # theta2 = E[(g^3/2 - g) 1{g>0}] = (1/2)(2/sqrt(2pi)) - 1/sqrt(2pi) = 0;  nu = theta1 sqrt(ratio).
    c = et.constants("relu", tr_sigma2_over_d=ratio)
    assert set(c) == set(KEYS)
    assert c["zeta"] == pytest.approx(0.5, abs=1e-12)
    assert c["theta0"] == pytest.approx(1 / SQ2PI, abs=1e-12)
    assert c["theta1"] == pytest.approx(1 / SQ2PI, abs=1e-12)
    assert abs(c["theta2"]) < 1e-12
    assert c["nu"] == pytest.approx(math.sqrt(ratio) / SQ2PI, abs=1e-12)


@pytest.mark.parametrize("a", [0.01, 0.2, -0.5])
def test_leaky_relu_closed_form(a):
    # phi' = 1{g>0} + a 1{g<0}: zeta = (1+a)/2, theta0 = theta1 = (1-a)/sqrt(2pi), theta2 = 0.
    c = et.constants("leaky_relu", negative_slope=a)
    assert c["zeta"] == pytest.approx((1 + a) / 2, abs=1e-12)
    assert c["theta0"] == pytest.approx((1 - a) / SQ2PI, abs=1e-12)
    assert c["theta1"] == pytest.approx((1 - a) / SQ2PI, abs=1e-12)
    assert c["nu"] == pytest.approx((1 - a) / SQ2PI, abs=1e-12)
    assert abs(c["theta2"]) < 1e-12


def _erf_affine_closed_form(a: float, b: float) -> dict[str, float]:
    """Constants of phi(z) = erf(a z + b).

    phi'(z) = (2a/sqrt(pi)) exp(-(a z + b)^2). Completing the square with c = 1 + 2a^2,
    mu = 2ab/c: E[h(g) exp(-(a g + b)^2)] = exp(-b^2/c)/sqrt(c) * E[h(-mu + g'/sqrt(c))].
    Hence E[g e] = -mu E[e], E[g^3 e] = (-mu^3 - 3 mu / c) E[e]; theta0 = E[erf(a g + b)]
    = erf(b / sqrt(c)).
    """
    c = 1 + 2 * a * a
    mu = 2 * a * b / c
    base = (2 * a / math.sqrt(math.pi)) * math.exp(-b * b / c) / math.sqrt(c)
    return {
        "zeta": base,
        "theta0": math.erf(b / math.sqrt(c)),
        "theta1": -mu * base,
        "nu": -mu * base,
        "theta2": base * (0.5 * (-(mu**3) - 3 * mu / c) + mu),
    }


def test_erf_closed_form():
    # erf is odd with even phi': theta0 = theta1 = theta2 = nu = 0, zeta = 2/sqrt(3 pi)
    # (footnote 9 of the paper: theta0 = theta1 = theta2 = 0 for erf).
    c = et.constants("erf")
    assert c["zeta"] == pytest.approx(2 / math.sqrt(3 * math.pi), abs=1e-12)
    for k in ("nu", "theta0", "theta1", "theta2"):
        assert abs(c[k]) < 1e-12


@pytest.mark.parametrize("a,b", [(0.7, 0.3), (1.5, -0.8), (0.3, 1.1)])
def test_erf_affine_callable_closed_form(a, b):
    got = et.constants(lambda z: erf(a * z + b))
    want = _erf_affine_closed_form(a, b)
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
    assert abs(want["theta2"]) > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("b", [0.0, 0.7, -1.3])
def test_shifted_relu_with_breakpoint(b):
    # phi = (z - b)^+: zeta = P(g > b) = Phi(-b); theta0 = pdf(b) - b Phi(-b);
    # theta1 = E[g; g > b] = pdf(b); theta2 = (1/2)(b^2 + 2) pdf(b) - pdf(b) = b^2 pdf(b)/2.
    pdf, sf = gauss.pdf(b), gauss.sf(b)
    got = et.constants(lambda z: np.maximum(z - b, 0.0), breakpoints=[b])
    assert got["zeta"] == pytest.approx(sf, abs=1e-12)
    assert got["theta0"] == pytest.approx(pdf - b * sf, abs=1e-12)
    assert got["theta1"] == pytest.approx(pdf, abs=1e-12)
    assert got["theta2"] == pytest.approx(0.5 * b * b * pdf, abs=1e-12)


def test_gelu_closed_form():
    # gelu = z Phi(z). zeta = E[Phi(g) + g pdf(g)] = 1/2. theta0 = E[g Phi(g)] = E[pdf(g)]
    # = 1/(2 sqrt(pi)). theta1 = E[(g^2 - 1) g Phi(g)] with E[g^3 Phi] = 5/(4 sqrt(pi))
    # (Stein + E[g^2 pdf(g)] = 1/(4 sqrt(pi))) gives 3/(4 sqrt(pi)).
    c = et.constants("gelu")
    assert c["zeta"] == pytest.approx(0.5, abs=1e-12)
    assert c["theta0"] == pytest.approx(1 / (2 * math.sqrt(math.pi)), abs=1e-12)
    assert c["theta1"] == pytest.approx(3 / (4 * math.sqrt(math.pi)), abs=1e-12)


def test_kinked_callable_without_breakpoints_is_refused():
    with pytest.raises(ValueError, match="breakpoints"):
        et.constants(lambda z: np.maximum(z, 0.0))


def test_hermite_and_panel_quadrature_agree_for_smooth_phi():
    # A spurious breakpoint forces the Gauss-Legendre panel path: two independent rules.
    for name in ("tanh", "softplus", "gelu"):
        act = et.get_activation(name)
        herm = et.constants(act)
        panel = et.constants(act.phi, breakpoints=[0.37])
        for k in KEYS:
            assert herm[k] == pytest.approx(panel[k], abs=1e-13), (name, k)


def test_quadrature_against_scipy_quad():
    f = lambda z: np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0)  # softplus, kink-free
    ref = integrate.quad(lambda z: f(z) * math.exp(-z * z / 2) / SQ2PI, -np.inf, np.inf, epsabs=1e-14)[0]
    assert et.gaussian_expectation(f) == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------------------------------
# Constants: Monte Carlo (torch autograd phi', no Stein identity)
# ---------------------------------------------------------------------------------------
_TORCH_ACTS = {
    "tanh": (torch.tanh, {}),
    "gelu": (lambda z: torch.nn.functional.gelu(z, approximate="none"), {}),
    "softplus": (torch.nn.functional.softplus, {}),
    "leaky_relu": (lambda z: torch.nn.functional.leaky_relu(z, negative_slope=0.1), {"negative_slope": 0.1}),
}


@pytest.mark.parametrize("name", list(_TORCH_ACTS))
def test_constants_monte_carlo(name):
    fn, kw = _TORCH_ACTS[name]
    N = 1_000_000
    g = torch.from_numpy(np.random.default_rng(1234).standard_normal(N)).requires_grad_(True)
    y = fn(g)
    (dphi,) = torch.autograd.grad(y.sum(), g)
    g, y, dphi = g.detach().numpy(), y.detach().numpy(), dphi.numpy()
    samples = {
        "zeta": dphi,
        "theta0": y,
        "theta1": g * dphi,
        "theta2": (0.5 * g**3 - g) * dphi,
    }
    ratio = 1.7
    c = et.constants(name, tr_sigma2_over_d=ratio, **kw)
    samples["nu"] = samples["theta1"] * math.sqrt(ratio)
    for k, s in samples.items():
        se = s.std() / math.sqrt(N)
        assert se < 3e-3  # the comparison below has resolving power
        # 5 standard errors: a false alarm has probability ~6e-7 per check (20 checks).
        assert abs(c[k] - s.mean()) < 5 * se, (name, k, c[k], s.mean(), se)


# ---------------------------------------------------------------------------------------
# Input covariance: nu = E[g phi'(g)] sqrt(Tr(Sigma^2)/d)
# ---------------------------------------------------------------------------------------
def test_cov_argument_equivalent_to_trace_ratio():
    lam = np.linspace(0.2, 1.8, 10)  # Tr = 10 = d
    cov = np.diag(lam)
    a = et.constants("relu", cov=cov)
    b = et.constants("relu", tr_sigma2_over_d=float(np.sum(lam**2) / 10))
    assert a == pytest.approx(b, abs=1e-15)
    with pytest.raises(ValueError, match="Tr"):
        et.constants("relu", cov=2 * cov)
    with pytest.raises(ValueError, match="not both"):
        et.constants("relu", cov=cov, tr_sigma2_over_d=1.0)
    with pytest.raises(ValueError):
        et.constants("relu", tr_sigma2_over_d=-1.0)


def test_nu_covariance_dependence_against_arccos_kernel():
    """The 11^T part of the infinite-width ReLU first-layer NTK is nu^2/d with the
    Sigma-dependent nu. Oracle: E_w[Theta1]_ij = (x_i.x_j/d) (pi - angle_ij)/(2 pi)
    (arc-cosine kernel of degree 0). Its remainder after zeta^2 X X^T/d is
    ~ rho_ij^2/(2 pi), whose off-diagonal mean is Tr(Sigma^2)/(2 pi d^2) = nu^2/d."""
    rng = np.random.default_rng(7)
    d, n = 400, 300
    lam = np.where(np.arange(d) % 2 == 0, 1.9, 0.1)  # Tr = d, Tr(Sigma^2)/d = 1.81
    X = rng.standard_normal((n, d)) * np.sqrt(lam)
    G = X @ X.T
    nrm = np.sqrt(np.diag(G))
    cosang = np.clip(G / np.outer(nrm, nrm), -1, 1)
    K_inf = (G / d) * (np.pi - np.arccos(cosang)) / (2 * np.pi)
    c = et.constants("relu", cov=np.diag(lam))
    R = K_inf - c["zeta"] ** 2 * G / d
    off = ~np.eye(n, dtype=bool)
    measured = R[off].mean() * d
    assert measured == pytest.approx(c["nu"] ** 2, rel=0.05)
    iso = et.constants("relu")["nu"] ** 2
    assert abs(measured - iso) > 0.5 * iso  # isotropic nu would be clearly wrong here


# ---------------------------------------------------------------------------------------
# Feature maps and linear kernels (eqs. (5), (9), (11))
# ---------------------------------------------------------------------------------------
@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((9, 6)) * rng.uniform(0.8, 1.2, size=(9, 1))
    return X, et.constants("softplus", tr_sigma2_over_d=1.3)


def test_psi_shapes_and_explicit_entries(data):
    X, c = data
    n, d = X.shape
    P1, P2, P = et.psi1(X, c), et.psi2(X, c), et.psi(X, c)
    assert P1.shape == (n, d + 1) and P2.shape == (n, d + 2) and P.shape == (n, d + 2)
    s = np.linalg.norm(X, axis=1) / math.sqrt(d) - 1
    normfeat = c["theta0"] + c["theta1"] * s + c["theta2"] * s**2
    np.testing.assert_allclose(P1[:, :d], c["zeta"] * X / math.sqrt(d), rtol=0, atol=1e-15)
    np.testing.assert_allclose(P1[:, d], c["nu"] / math.sqrt(d), rtol=0, atol=1e-15)
    np.testing.assert_allclose(P2[:, d], c["nu"] / math.sqrt(2 * d), rtol=0, atol=1e-15)
    np.testing.assert_allclose(P2[:, d + 1], normfeat, rtol=0, atol=1e-15)
    # eq. (11): sqrt(2/d) zeta x, sqrt(3/(2d)) nu, unit-weight norm feature
    np.testing.assert_allclose(P[:, :d], math.sqrt(2 / d) * c["zeta"] * X, rtol=0, atol=1e-15)
    np.testing.assert_allclose(P[:, d], math.sqrt(1.5 / d) * c["nu"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(P[:, d + 1], normfeat, rtol=0, atol=1e-15)


def test_linear_kernels(data):
    X, c = data
    n, d = X.shape
    K1 = (c["zeta"] ** 2 * X @ X.T + c["nu"] ** 2 * np.ones((n, n))) / d  # Section 3.1.1
    np.testing.assert_allclose(et.theta_lin1(X, c), K1, rtol=0, atol=1e-14)
    K2 = et.theta_lin2(X, c)
    # paper: <psi, psi'> = <psi1, psi1'> + <psi2, psi2'>
    np.testing.assert_allclose(et.theta_lin(X, c), K1 + K2, rtol=0, atol=1e-14)
    # weighted combination: GD with rates (eta1, eta2) vs linear model with rate eta
    for e1, e2, e in [(0.3, 1.7, None), (2.0, 0.5, 0.8), (1.0, 0.0, None), (0.0, 1.0, None)]:
        eta = max(e1, e2) if e is None else e
        np.testing.assert_allclose(
            et.theta_lin(X, c, eta1=e1, eta2=e2, eta=e), (e1 * K1 + e2 * K2) / eta, rtol=0, atol=1e-14
        )
    np.testing.assert_allclose(et.psi(X, c, eta1=0.0, eta2=0.4), et.psi2(X, c), rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        et.psi(X, c, eta1=0.0, eta2=0.0)


def test_norm_feature_is_second_order_taylor_of_E_phi():
    """eq. (9) last coordinate approximates E_w[phi(w.x/sqrt(d))] = E[phi(s g)],
    s = ||x||/sqrt(d), to O((s-1)^3). Oracle: scipy quad; errors must shrink ~8x per halving."""
    phi = lambda z: np.logaddexp(0.0, z)
    c = et.constants("softplus")
    errs = []
    for h in (0.08, 0.04, 0.02):
        s = 1 + h
        exact = integrate.quad(lambda z: phi(s * z) * math.exp(-z * z / 2) / SQ2PI, -40, 40, epsabs=1e-13, epsrel=1e-13, limit=200)[0]
        X = np.full((1, 4), s)  # ||x|| / sqrt(d) = s
        feat = et.psi2(X, c)[0, -1]
        errs.append(abs(exact - feat))
    assert errs[0] > 1e-6
    for e_big, e_small in zip(errs[:-1], errs[1:]):
        assert 6.0 < e_big / e_small < 10.0, errs


# ---------------------------------------------------------------------------------------
# Empirical NTKs against brute-force torch autograd (float64, 1e-10)
# ---------------------------------------------------------------------------------------
_TORCH_PHI = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "erf": torch.erf,
    "gelu": lambda z: torch.nn.functional.gelu(z, approximate="none"),
    "softplus": torch.nn.functional.softplus,
}


def _torch_jacobians(X, W, v, tphi):
    Xt, Wt, vt = (torch.from_numpy(a) for a in (X, W, v))
    d, m = X.shape[1], W.shape[0]

    def f(Wp, vp):
        return tphi(Xt @ Wp.T / math.sqrt(d)) @ vp / math.sqrt(m)

    JW, Jv = torch.autograd.functional.jacobian(f, (Wt, vt))
    return JW.reshape(X.shape[0], -1).numpy(), Jv.numpy(), f(Wt, vt).numpy()


@pytest.mark.parametrize("name", list(_TORCH_PHI))
def test_ntks_against_autograd(name):
    rng = np.random.default_rng(11)
    n, d, m = 7, 5, 6
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((m, d))
    v = rng.standard_normal(m)  # general second layer: Theta1 carries v_r^2
    JW, Jv, out = _torch_jacobians(X, W, v, _TORCH_PHI[name])
    np.testing.assert_allclose(et.theta1(X, W, name, v=v), JW @ JW.T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(et.theta2(X, W, name), Jv @ Jv.T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        et.theta(X, W, name, v=v, eta1=0.3, eta2=1.2, eta=0.5),
        (0.3 * JW @ JW.T + 1.2 * Jv @ Jv.T) / 0.5,
        rtol=0,
        atol=1e-10,
    )
    np.testing.assert_allclose(et.network(X, W, v, name), out, rtol=0, atol=1e-12)


def test_theta1_symmetric_init_and_callable():
    rng = np.random.default_rng(5)
    n, d, m = 6, 4, 8
    X = rng.standard_normal((n, d))
    W, v = et.symmetric_init(m, d, rng)
    assert W.shape == (m, d) and v.shape == (m,)
    np.testing.assert_array_equal(W[: m // 2], W[m // 2 :])
    np.testing.assert_array_equal(v[: m // 2], -v[m // 2 :])
    assert set(np.unique(v)) <= {-1.0, 1.0}
    np.testing.assert_allclose(et.network(X, W, v, "tanh"), 0.0, atol=1e-14)  # zero output
    JW, _, _ = _torch_jacobians(X, W, v, torch.tanh)
    K = et.theta1(X, W, np.tanh, dphi=lambda z: 1 - np.tanh(z) ** 2)
    np.testing.assert_allclose(K, JW @ JW.T, rtol=0, atol=1e-10)  # v^2 = 1 -> paper's formula
    with pytest.raises(TypeError, match="dphi"):
        et.theta1(X, W, np.tanh)


def test_bad_inputs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="unknown activation"):
        et.constants("swishy")
    with pytest.raises(TypeError):
        et.constants(3.0)
    with pytest.raises(ValueError, match="shape"):
        et.theta1(X, rng.standard_normal((5, 4)), "relu")
    with pytest.raises(ValueError, match="even"):
        et.symmetric_init(5, 3, rng)
    with pytest.raises(ValueError, match="data matrix"):
        et.psi1(np.ones(3), et.constants("relu"))
    with pytest.raises(ValueError, match="missing"):
        et.psi1(X, {"zeta": 1.0})
    with pytest.raises(ValueError, match="n_nodes"):
        et.constants("tanh", n_nodes=1000)


# ---------------------------------------------------------------------------------------
# Proposition 3.4: ||Theta1(W0) - Theta^lin1|| / ||Theta^lin1|| shrinks as d grows
# ---------------------------------------------------------------------------------------
def _spec(A: np.ndarray) -> float:
    return float(abs(eigsh(A, k=1, which="LM", return_eigenvectors=False, tol=1e-8)[0]))


@pytest.mark.parametrize("name", ["relu", "erf"])
def test_theta1_approaches_theta_lin1_as_d_grows(name):
    """Sizes follow Theorem 3.2's n, m >~ d^{1+alpha}: n = 2 d^{5/4}, m = 4 d, data on the
    sphere ||x||^2 = d (Sigma = I), symmetric init (3). Measured relative spectral
    errors (seed 0): relu ~0.36, 0.24, 0.14; erf ~0.15, 0.12, 0.06."""
    c = et.constants(name)
    rng = np.random.default_rng(0)
    rel = []
    for d in (16, 64, 256):
        n, m = int(round(2 * d**1.25)), 4 * d
        X = _sphere_data(rng, n, d)
        W, v = et.symmetric_init(m, d, rng)
        L = et.theta_lin1(X, c)
        rel.append(_spec(et.theta1(X, W, name, v=v) - L) / _spec(L))
    assert rel[0] > rel[1] > rel[2], rel
    assert rel[2] / rel[0] < 0.6, rel
