"""Tests for lazyrich.theory.single_neuron (Kunin et al., single-neuron linear network).

Oracles: scipy.integrate.solve_ivp (DOP853 / Radau, rtol 1e-12) on the raw (a, w)
gradient flow written independently below, the paper's own closed-form formulas
(eq. nu, the explicit upstream a(t), the delta = 0 tanh/Bernoulli solutions, the
upsilon Riccati equation), central finite differences, and direct matrix algebra.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from lazyrich.theory import single_neuron as sn

RTOL_ODE = 1e-12


# ---------------------------------------------------------------------------
# independent oracle: batched gradient flow of L = 1/2 ||X a w - y||^2
# ---------------------------------------------------------------------------
def _batched_flow(G, c, ea, ew, a0, w0, t, rtol=RTOL_ODE, atol=1e-14, method="DOP853"):
    """Integrate N independent (a, w) flows in one solve_ivp call. Returns a (N,T), w (N,T,d)."""
    N, d = w0.shape

    def rhs(_t, z):
        Z = z.reshape(N, d + 1)
        a, w = Z[:, 0], Z[:, 1:]
        g = a[:, None] * np.einsum("nij,nj->ni", G, w) - c  # X^T (X a w - y)
        out = np.empty_like(Z)
        out[:, 0] = -ea * np.einsum("ni,ni->n", w, g)
        out[:, 1:] = -(ew * a)[:, None] * g
        return out.ravel()

    z0 = np.concatenate([a0[:, None], w0], axis=1).ravel()
    sol = solve_ivp(rhs, (0.0, float(t[-1])), z0, method=method, t_eval=t, rtol=rtol, atol=atol)
    assert sol.success, sol.message
    Z = sol.y.reshape(N, d + 1, -1)
    return Z[:, 0, :], np.transpose(Z[:, 1:, :], (0, 2, 1))


def _single_flow(X, y, ea, ew, a0, w0, t, **kw):
    a, w = _batched_flow((X.T @ X)[None], (X.T @ y)[None], np.array([ea]), np.array([ew]),
                         np.array([a0]), np.asarray(w0)[None], t, **kw)
    return a[0], w[0]


def _S_plain(X, a, w, ea, ew):
    """Kernel distance by the plain definition 1 - <K0,Kt>/(|K0||Kt|)."""
    K = np.stack([X @ (ew * ai**2 * np.eye(X.shape[1]) + ea * np.outer(wi, wi)) @ X.T for ai, wi in zip(a, w)])
    K0 = K[0]
    return 1.0 - np.einsum("ij,tij->t", K0, K) / (np.linalg.norm(K0) * np.linalg.norm(K, axis=(1, 2)))


def _whitened_data(rng, n, d, s):
    Q, _ = np.linalg.qr(rng.normal(size=(n, d)))
    return Q * np.sqrt(s), rng.normal(size=n)


def _relerr(x, ref):
    return np.max(np.abs(x - ref)) / max(np.max(np.abs(ref)), 1e-300)


# ---------------------------------------------------------------------------
# 1. closed form vs ODE, >= 500 initialisations
# ---------------------------------------------------------------------------
def _make_cases(rng, N, n=5, d=3):
    Xs, ys, a0s, w0s, eas, ews, kinds = [], [], [], [], [], [], []
    for i in range(N):
        kind = i % 10
        s = rng.uniform(0.5, 2.0)
        X, y = _whitened_data(rng, n, d, s)
        bstar = X.T @ y / s
        if kind == 0:  # delta == 0 exactly (all arithmetic exact in float64)
            ea, ew, fa = [(1.0, 1.0, 1.0), (4.0, 1.0, 2.0), (0.5, 0.5, 1.0)][rng.integers(3)]
            base = rng.permutation([1.0, 2.0, 2.0]) * rng.choice([-1.0, 1.0], size=3)
            scale = 2.0 ** rng.integers(-2, 2)
            w0 = base * scale
            a0 = rng.choice([-1.0, 1.0]) * 3.0 * scale * fa
        else:
            if kind in (1, 2):
                ea = ew = 1.0
            else:
                ea, ew = np.exp(rng.uniform(np.log(0.25), np.log(4.0), size=2))
            delta = rng.uniform(-10.0, 10.0)
            u = rng.normal(size=d)
            u /= np.linalg.norm(u)
            if kind == 1:  # a0 = 0 (so delta < 0)
                a0 = 0.0
                r = np.sqrt(rng.uniform(0.1, 10.0) / ea)
            elif delta >= 0:
                r = rng.uniform(0.1, 2.0)
                a0 = rng.choice([-1.0, 1.0]) * np.sqrt((delta + ea * r * r) / ew)
            else:
                a0 = rng.choice([-1.0, 1.0]) * rng.uniform(0.0, 2.0)
                r = np.sqrt((ew * a0 * a0 - delta) / ea)
            if kind in (3, 4, 5) and a0 != 0:  # w0 anti-aligned with sign(a0) beta*: sign changes
                bh = bstar / np.linalg.norm(bstar)
                perp = u - (u @ bh) * bh
                perp /= np.linalg.norm(perp)
                th = rng.uniform(0.0, 1.2)
                u = -np.sign(a0) * (np.cos(th) * bh + np.sin(th) * perp)
            w0 = r * u
        Xs.append(X); ys.append(y); a0s.append(a0); w0s.append(w0); eas.append(ea); ews.append(ew)
        kinds.append(kind)
    return (np.array(Xs), np.array(ys), np.array(a0s), np.array(w0s), np.array(eas), np.array(ews),
            np.array(kinds))


def test_closed_form_matches_ode_500_inits():
    """a, w, beta, S from the closed form agree with solve_ivp (DOP853, rtol 1e-12, atol 1e-14).

    Tolerance: per trajectory max_t |x_cf - x_ode| / max_t |x_ode| <= 1e-8 for a, w, beta;
    |S_cf - S_ode| <= 1e-8 |S_ode| + 1e-13 (the oracle S uses the plain 1 - cos formula,
    whose own rounding is ~1e-15).
    """
    rng = np.random.default_rng(20240611)
    N = 520
    X, y, a0, w0, ea, ew, kinds = _make_cases(rng, N)
    t = np.linspace(0.0, 2.0, 11)
    G = np.einsum("nki,nkj->nij", X, X)
    c = np.einsum("nki,nk->ni", X, y)
    a_ode, w_ode = _batched_flow(G, c, ea, ew, a0, w0, t)

    deltas = ew * a0**2 - ea * np.sum(w0**2, axis=1)
    assert deltas.min() < -9 and deltas.max() > 9
    assert np.sum(deltas == 0.0) >= 50 and np.sum(kinds == 0) >= 50
    assert np.sum(a0 < 0) >= 150 and np.sum(a0 == 0.0) >= 50
    assert np.sum(ea != ew) >= 300
    n_sign_change = 0
    worst = dict(a=0.0, w=0.0, beta=0.0, S=0.0)
    for i in range(N):
        tr = sn.solve(X[i], y[i], a0[i], w0[i], ea[i], ew[i])
        assert tr.exact and tr.method == "closed_form"
        assert tr.delta == pytest.approx(deltas[i], abs=1e-12 * (1 + abs(deltas[i])))
        a, w = tr.a(t), tr.w(t)
        assert w.shape == (t.size, 3)
        worst["a"] = max(worst["a"], _relerr(a, a_ode[i]))
        worst["w"] = max(worst["w"], _relerr(w, w_ode[i]))
        b_ode = a_ode[i][:, None] * w_ode[i]
        worst["beta"] = max(worst["beta"], _relerr(tr.beta(t), b_ode))
        S = tr.kernel_distance(t)
        S_ode = _S_plain(X[i], a_ode[i], w_ode[i], ea[i], ew[i])
        worst["S"] = max(worst["S"], float(np.max(np.abs(S - S_ode) / (1e-8 * np.abs(S_ode) + 1e-13))))
        if a0[i] != 0 and np.any(np.sign(a_ode[i]) == -np.sign(a0[i])):
            n_sign_change += 1
            assert 0 < tr.t_sign_change <= t[-1]
    assert n_sign_change >= 50, n_sign_change
    assert worst["a"] <= 1e-8 and worst["w"] <= 1e-8 and worst["beta"] <= 1e-8, worst
    assert worst["S"] <= 1.0, worst


# ---------------------------------------------------------------------------
# 2. the paper's own formulas
# ---------------------------------------------------------------------------
def _identity_problem(rng, d=3):
    """X^T X = I exactly (X = I_d), beta_* = y."""
    return np.eye(d), rng.normal(size=d)


def test_paper_upstream_nu_and_explicit_a():
    """delta > 0, eta = 1, X^T X = I: paper eq. (nu) and the explicit upstream a(t) (rel 1e-11).

    The paper's explicit a(t) contains atanh((2 nu0 + delta)/sqrt(delta^2 + 4|b|^2)), real only
    when that argument lies in (-1, 1); it is checked on those initialisations (eq. nu on all).
    """
    rng = np.random.default_rng(1)
    t = np.linspace(0.0, 2.0, 21)
    n_explicit = 0
    for _ in range(40):
        X, y = _identity_problem(rng)
        B = np.linalg.norm(y)
        w0 = 0.5 * rng.normal(size=3)
        a0 = abs(rng.normal()) + 1.5
        tr = sn.solve(X, y, a0, w0)
        delta, b0 = tr.delta, w0 @ y
        assert delta > 0
        R = 0.5 * np.sqrt(delta**2 + 4 * B**2)
        nu0 = b0 / a0
        nu = ((2 * R * nu0 * np.cosh(R * t) + (2 * B**2 - delta * nu0) * np.sinh(R * t))
              / (2 * R * np.cosh(R * t) + (2 * nu0 + delta) * np.sinh(R * t)))
        np.testing.assert_allclose(tr.nu(t), nu, rtol=1e-11, atol=1e-12)
        assert tr.basin == 1
        if abs((2 * nu0 + delta) / (2 * R)) >= 1:
            continue
        n_explicit += 1
        Y = R * t + np.arctanh((2 * b0 / a0 + delta) / (2 * R))
        inner = (1 / np.cosh(Y) ** 2) * (
            4 * np.exp(t * delta) * B**2
            - (delta**2 + 4 * B**2) * (B**2 * (delta - a0**2) + b0**2) / (b0**2 - a0**2 * B**2 + a0 * b0 * delta)
            - delta * np.exp(delta * t) * (delta * np.cosh(2 * Y) - 2 * R * np.sinh(2 * Y)))
        a_paper = 2 * np.exp(t * delta / 2) * B * np.sqrt(delta) * inner ** -0.5
        np.testing.assert_allclose(tr.a(t), a_paper, rtol=1e-11)
    assert n_explicit >= 10


def test_paper_balanced_tanh_and_bernoulli():
    """delta = 0, a0 > 0: phi = tanh(c_phi + |beta*| t) and mu from the Bernoulli equation (rel 1e-11).

    Note: the paper prints mu(t) = 2 cosh^2(x) / (2x + sinh 2x + c_mu),
    c_mu = 2 cosh^2(c_phi)/mu0 - (2 c_phi + sinh 2 c_phi); solving its Bernoulli equation gives
    an extra factor |beta*| in the numerator and in the first term of c_mu (identical for
    |beta*| = 1, the setting of the paper's figures).  Both are checked.
    """
    rng = np.random.default_rng(2)
    t = np.linspace(0.0, 3.0, 31)
    for _ in range(20):
        X, y = _identity_problem(rng)
        B = np.linalg.norm(y)
        w0 = rng.permutation([1.0, 2.0, 2.0]) * rng.choice([-1.0, 1.0], size=3) * 0.25
        a0 = 0.75
        tr = sn.solve(X, y, a0, w0)
        assert tr.delta == 0.0
        phi0 = w0 @ y / (np.linalg.norm(w0) * B)
        cphi = np.arctanh(phi0)
        x = cphi + B * t
        np.testing.assert_allclose(tr.phi(t), np.tanh(x), rtol=1e-12, atol=1e-13)
        mu0 = a0 * np.linalg.norm(w0)
        # Bernoulli solution; the paper prints it without the |beta*| factors (exact for |beta*| = 1)
        cmu = 2 * B / mu0 * np.cosh(cphi) ** 2 - (2 * cphi + np.sinh(2 * cphi))
        mu = 2 * B * np.cosh(x) ** 2 / (2 * x + np.sinh(2 * x) + cmu)
        np.testing.assert_allclose(tr.mu(t), mu, rtol=1e-11)
    # the paper's printed formula verbatim, |beta*| = 1
    X, y = np.eye(3), np.array([0.0, 0.6, 0.8])
    w0, a0 = np.array([-1.0, 2.0, -2.0]) * 0.25, 0.75
    tr = sn.solve(X, y, a0, w0)
    cphi = np.arctanh(w0 @ y / np.linalg.norm(w0))
    x = cphi + t
    cmu = 2 / (a0 * np.linalg.norm(w0)) * np.cosh(cphi) ** 2 - (2 * cphi + np.sinh(2 * cphi))
    np.testing.assert_allclose(tr.mu(t), 2 * np.cosh(x) ** 2 / (2 * x + np.sinh(2 * x) + cmu), rtol=1e-11)


def test_paper_upsilon_riccati_through_sign_change():
    """delta < 0 with a crossing zero: upsilon = a/w^T beta* solves the paper's Riccati equation.

    Closed-form solution of upsilon' = 1 + delta upsilon - |b|^2 upsilon^2 (analogue of eq. nu):
    upsilon = [2R u0 cosh + (2 + delta u0) sinh] / [2R cosh + (2|b|^2 u0 - delta) sinh].
    """
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(20):
        X, y = _identity_problem(rng)
        B = np.linalg.norm(y)
        a0 = 0.5
        w0 = -1.5 * y / B + 0.3 * rng.normal(size=3)
        tr = sn.solve(X, y, a0, w0)
        if not (tr.delta < 0 and np.isfinite(tr.t_sign_change)):
            continue
        t = np.linspace(0.0, 3 * tr.t_sign_change, 31)
        delta = tr.delta
        R = 0.5 * np.sqrt(delta**2 + 4 * B**2)
        u0 = a0 / (w0 @ y)
        ups = ((2 * R * u0 * np.cosh(R * t) + (2 + delta * u0) * np.sinh(R * t))
               / (2 * R * np.cosh(R * t) + (2 * B**2 * u0 - delta) * np.sinh(R * t)))
        np.testing.assert_allclose(tr.upsilon(t), ups, rtol=1e-10, atol=1e-12)
        a = tr.a(t)
        assert np.sign(a[0]) == 1 and np.sign(a[-1]) == -1 and tr.basin == -1
        assert abs(tr.a([tr.t_sign_change])[0]) <= 1e-13
        checked += 1
    assert checked >= 10


def test_mu_phi_odes_with_learning_rates():
    """mu, phi obey the paper's coupled ODEs with eta_a != eta_w (central differences, rel 1e-7)."""
    rng = np.random.default_rng(4)
    h = 1e-5
    for _ in range(10):
        X, y = _identity_problem(rng)
        B = np.linalg.norm(y)
        ea, ew = np.exp(rng.uniform(-1, 1, size=2))
        tr = sn.solve(X, y, rng.normal(), 1.5 * rng.normal(size=3), ea, ew)
        t = np.linspace(0.1, 1.0, 7)
        mu, phi = tr.mu(t), tr.phi(t)
        dmu = (tr.mu(t + h) - tr.mu(t - h)) / (2 * h)
        dphi = (tr.phi(t + h) - tr.phi(t - h)) / (2 * h)
        k = np.sqrt(tr.delta**2 + 4 * ea * ew * mu**2)
        np.testing.assert_allclose(dmu, k * (phi * B - mu), rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(dphi, ea * ew * 2 * mu * B / (k - tr.delta) * (1 - phi**2), rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------------------
# 3. basins and saddles
# ---------------------------------------------------------------------------
def test_basin_hyperplane_and_long_time_sign():
    """basin == paper's footnote-4 formula and == sign(a) of a long ODE run (loss converged)."""
    rng = np.random.default_rng(5)
    N = 60
    a0 = rng.normal(size=N)
    w0 = 2.0 * rng.normal(size=(N, 3))
    X, y = _identity_problem(rng)
    B2 = y @ y
    T = np.array([0.0, 40.0])
    G = np.repeat(np.eye(3)[None], N, 0)
    c = np.repeat(y[None], N, 0)
    a_ode, w_ode = _batched_flow(G, c, np.ones(N), np.ones(N), a0, w0, T, rtol=1e-10)
    for i in range(N):
        tr = sn.solve(X, y, a0[i], w0[i])
        delta = tr.delta
        paper = np.sign(a0[i]) if delta >= 0 else np.sign(w0[i] @ y + a0[i] / 2 * (delta + np.sqrt(delta**2 + 4 * B2)))
        assert tr.basin == paper
        assert sn.basin_of_attraction(a0[i], w0[i], y) == tr.basin
        # once L < L(beta = 0) = |y|^2/2, a can never vanish again (L decreases, a = 0 => beta = 0)
        loss_T = 0.5 * np.sum((a_ode[i, -1] * w_ode[i, -1] - y) ** 2)
        assert loss_T < 0.5 * (y @ y) * (1 - 1e-6)
        assert np.sign(a_ode[i, -1]) == tr.basin


def test_saddles():
    """Initialisations on the separating surface converge to the saddle (basin 0)."""
    rng = np.random.default_rng(6)
    X, y = _identity_problem(rng)
    B = np.linalg.norm(y)
    perp = np.cross(y, rng.normal(size=3))
    # (i) a saddle itself: a0 = 0, w0 perp beta*: a fixed point
    tr = sn.solve(X, y, 0.0, perp)
    assert tr.basin == 0 and tr.at_saddle
    t = np.array([0.0, 1.0, 50.0])
    np.testing.assert_array_equal(tr.a(t), 0.0)
    np.testing.assert_allclose(tr.w(t), np.repeat(perp[None], 3, 0), rtol=1e-15)
    # (ii) delta < 0 hyperplane w0^T b + a0/2 (delta + sqrt(delta^2 + 4|b|^2)) = 0
    a0 = 0.7
    for _ in range(5):
        # solve for omega0 on the hyperplane with prescribed |w0|: fixed point iteration in delta
        r = 2.0
        delta = a0**2 - r**2
        om = -a0 / 2 * (delta + np.sqrt(delta**2 + 4 * B**2))
        pdir = np.cross(y, rng.normal(size=3))
        pdir /= np.linalg.norm(pdir)
        w0 = om / B**2 * y + np.sqrt(r**2 - om**2 / B**2) * pdir
        tr = sn.solve(X, y, a0, w0)
        assert tr.basin == 0 and not tr.at_saddle
        # the separatrix is unstable (escape rate lambda_+), so the ODE oracle is only trusted
        # on a short horizon, where its amplified error is still below 1e-9
        tt = np.linspace(0, 3, 7)
        a_ode, w_ode = _single_flow(X, y, 1.0, 1.0, a0, w0, tt, rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(tr.a(tt), a_ode, atol=1e-9)
        np.testing.assert_allclose(tr.w(tt), w_ode, atol=1e-9)
        assert abs(tr.a([40.0])[0]) < 1e-12 and abs(tr.w([40.0])[0] @ y) < 1e-12
    # (iii) delta = 0, phi0 = -sign(a0): beta -> 0
    for sgn in (1.0, -1.0):
        wdir = -sgn * y / B
        tr = sn.solve(X, y, sgn * 0.5, 0.5 * wdir)
        assert tr.basin == 0
        assert np.linalg.norm(tr.beta([1e6])[0]) < 1e-5
    # (iv) a0 = 0 but w0^T beta* != 0 leaves the saddle set
    tr = sn.solve(X, y, 0.0, 0.3 * y + perp)
    assert tr.basin == 1 and tr.t_sign_change == 0.0 and not tr.at_saddle
    # non-whitened data (ODE path): a saddle initialisation is a fixed point, basin 0
    # (w0 from a cross product: w0^T X^T y is rounding noise, not exactly 0)
    for _ in range(5):
        Xn = rng.normal(size=(5, 3))
        yn = rng.normal(size=5)
        ws = np.cross(Xn.T @ yn, rng.normal(size=3))
        trn = sn.solve(Xn, yn, 0.0, ws)
        assert not trn.exact and trn.at_saddle and trn.basin == 0
        np.testing.assert_allclose(trn.w([0.0, 5.0]), np.repeat(ws[None], 2, 0), rtol=1e-12)
        trw = sn.solve(np.eye(3), Xn.T @ yn, 0.0, ws)  # same on the closed-form path
        assert trw.exact and trw.at_saddle and trw.basin == 0


def test_numerical_basin_non_whitened():
    """ODE-path basin (gain criterion) equals sign(a) after convergence of an independent ODE."""
    rng = np.random.default_rng(7)
    for _ in range(6):
        X = rng.normal(size=(6, 3))
        y = rng.normal(size=6)
        a0 = 0.5 * rng.normal()
        w0 = 2.0 * rng.normal(size=3)
        tr = sn.solve(X, y, a0, w0)
        assert not tr.exact and np.isnan(tr.t_sign_change)
        assert tr.delta < 0
        T = np.array([0.0, 200.0])
        a_ode, w_ode = _single_flow(X, y, 1.0, 1.0, a0, w0, T, rtol=1e-10)
        grad = X.T @ (X @ (a_ode[-1] * w_ode[-1]) - y)
        assert np.linalg.norm(grad) < 1e-8
        assert tr.basin == np.sign(a_ode[-1])


# ---------------------------------------------------------------------------
# 4. non-whitened data
# ---------------------------------------------------------------------------
def _eig_data(rng, evals, n=6):
    d = len(evals)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    U, _ = np.linalg.qr(rng.normal(size=(n, d)))
    X = U @ np.diag(np.sqrt(evals)) @ Q.T  # X^T X = Q diag(evals) Q^T
    return X, Q


def test_exact_reduction_subspace_and_ode_fallback():
    """c in one eigenspace and w0 in it + ker: exact; otherwise ODE path (exact=False), both 1e-8."""
    rng = np.random.default_rng(8)
    t = np.linspace(0.0, 3.0, 13)
    X, Q = _eig_data(rng, [2.0, 2.0, 0.5, 0.0])
    # y such that X^T y lies in the eigenvalue-2 eigenspace span(Q[:, :2])
    coef = rng.normal(size=2)
    target = Q[:, :2] @ coef
    y = np.linalg.lstsq(X.T, target, rcond=None)[0]
    assert np.allclose(X.T @ y, target)
    for a0 in (0.8, -0.3, 0.0):
        w0 = Q[:, :2] @ rng.normal(size=2) + 1.5 * Q[:, 3]  # eigenspace + kernel component
        tr = sn.solve(X, y, a0, w0, eta_a=0.7, eta_w=1.6)
        assert tr.exact
        a_ode, w_ode = _single_flow(X, y, 0.7, 1.6, a0, w0, t)
        assert _relerr(tr.a(t), a_ode) <= 1e-8 and _relerr(tr.w(t), w_ode) <= 1e-8
        np.testing.assert_allclose(tr.kernel_distance(t), _S_plain(X, a_ode, w_ode, 0.7, 1.6), rtol=1e-8, atol=1e-13)
    # component along the eigenvalue-0.5 direction: not exact -> ODE path
    w0 = Q @ rng.normal(size=4)
    tr = sn.solve(X, y, 0.4, w0, eta_a=0.7, eta_w=1.6)
    assert not tr.exact and tr.method == "ode"
    a_ref, w_ref = _single_flow(X, y, 0.7, 1.6, 0.4, w0, t, method="Radau", atol=1e-15)
    assert _relerr(tr.a(t), a_ref) <= 1e-8 and _relerr(tr.w(t), w_ref) <= 1e-8
    with pytest.raises(ValueError, match="closed form"):
        sn.solve(X, y, 0.4, w0, method="closed_form")
    # unsorted / repeated times on the ODE path
    tt = np.array([2.0, 0.5, 2.0, 0.0])
    np.testing.assert_allclose(tr.a(tt), tr.a(np.sort(tt))[[3, 1, 2, 0]], rtol=1e-10)
    # method="ode" on whitened data reproduces the closed form
    Xw, yw = _whitened_data(rng, 5, 3, 1.3)
    cf = sn.solve(Xw, yw, -0.6, rng.normal(size=3))
    od = sn.solve(Xw, yw, -0.6, cf.w0, method="ode")
    assert cf.exact and not od.exact and cf.basin == od.basin
    assert _relerr(od.beta(t), cf.beta(t)) <= 1e-8


def test_ntk_definition_and_function_space_form():
    """ntk(t) == X (eta_w a^2 I + eta_a w w^T) X^T == X M(beta, delta) X^T."""
    rng = np.random.default_rng(9)
    X, y = _whitened_data(rng, 4, 3, 1.0)
    ea, ew = 0.6, 2.0
    tr = sn.solve(X, y, 0.9, rng.normal(size=3), ea, ew)
    t = np.array([0.0, 0.3, 1.0])
    K = tr.ntk(t)
    assert K.shape == (3, 4, 4)
    a, w, b = tr.a(t), tr.w(t), tr.beta(t)
    for k in range(3):
        ref = X @ (ew * a[k] ** 2 * np.eye(3) + ea * np.outer(w[k], w[k])) @ X.T
        np.testing.assert_allclose(K[k], ref, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(K[k], X @ sn.M(b[k], tr.delta, ea, ew) @ X.T, rtol=1e-10, atol=1e-12)
    assert tr.kernel_distance([0.0])[0] == pytest.approx(0.0, abs=1e-15)


# ---------------------------------------------------------------------------
# 5. function space: M, M^{-1}, potential
# ---------------------------------------------------------------------------
def _loss_grad_aw(X, y, a, w):
    """(dL/da, dL/dw) by central finite differences of L = 1/2 ||X a w - y||^2."""
    L = lambda aa, ww: 0.5 * np.sum((X @ (aa * ww) - y) ** 2)
    h = 1e-6
    ga = (L(a + h, w) - L(a - h, w)) / (2 * h)
    gw = np.array([(L(a, w + h * e) - L(a, w - h * e)) / (2 * h) for e in np.eye(w.size)])
    return ga, gw


def test_M_matches_parameter_gradient_flow():
    """dbeta/dt = a w' + a' w from FD gradients of L equals -M(beta, delta) grad_beta L (rel 1e-7)."""
    rng = np.random.default_rng(10)
    for _ in range(30):
        X = rng.normal(size=(5, 4))
        y = rng.normal(size=5)
        a = rng.normal()
        w = rng.normal(size=4) * rng.uniform(0.1, 3)
        ea, ew = np.exp(rng.uniform(-1, 1, size=2))
        delta = ew * a * a - ea * w @ w
        ga, gw = _loss_grad_aw(X, y, a, w)
        dbeta = a * (-ew * gw) + (-ea * ga) * w
        beta = a * w
        gradL = X.T @ (X @ beta - y)
        Mb = sn.M(beta, delta, ea, ew)
        np.testing.assert_allclose(dbeta, -Mb @ gradL, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(Mb, ew * a * a * np.eye(4) + ea * np.outer(w, w), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sn.M_inv(beta, delta, ea, ew) @ Mb, np.eye(4), atol=1e-12)
    # batched shapes
    bs = rng.normal(size=(2, 5, 3))
    assert sn.M(bs, -1.0).shape == (2, 5, 3, 3)
    np.testing.assert_allclose(np.einsum("...ij,...jk->...ik", sn.M_inv(bs, -1.0), sn.M(bs, -1.0)),
                               np.broadcast_to(np.eye(3), (2, 5, 3, 3)), atol=1e-12)
    # beta = 0: M = delta I for delta >= 0; undefined (ValueError) for delta < 0
    np.testing.assert_allclose(sn.M(np.zeros(3), 2.5), 2.5 * np.eye(3))
    with pytest.raises(ValueError):
        sn.M(np.zeros(3), -1.0)
    with pytest.raises(ValueError):
        sn.M_inv(np.zeros(3), 0.0)


def test_M_along_trajectory():
    """Central difference of trajectory.beta equals -M(beta(t), delta) X^T(X beta - y) (rel 1e-7)."""
    rng = np.random.default_rng(11)
    X, y = _whitened_data(rng, 5, 3, 0.8)
    tr = sn.solve(X, y, 1.1, rng.normal(size=3), 2.0, 0.5)
    t = np.linspace(0.2, 2.0, 5)
    h = 1e-5
    db = (tr.beta(t + h) - tr.beta(t - h)) / (2 * h)
    b = tr.beta(t)
    rhs = -np.einsum("tij,tj->ti", sn.M(b, tr.delta, 2.0, 0.5), (b @ X.T - y) @ X)
    np.testing.assert_allclose(db, rhs, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("delta", [-7.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 9.0])
@pytest.mark.parametrize("etas", [(1.0, 1.0), (0.3, 2.5)])
def test_potential_grad_hessian_finite_differences(delta, etas):
    """grad Phi = FD of Phi; Hess Phi = FD of grad Phi = eta_a eta_w sqrt(kappa+delta) M^{-1}."""
    ea, ew = etas
    rng = np.random.default_rng(12)
    for _ in range(5):
        beta = rng.normal(size=4) * rng.uniform(0.2, 3)
        h = 1e-5 * max(1.0, np.linalg.norm(beta))
        E = np.eye(4)
        fd_g = np.array([(sn.potential(beta + h * e, delta, ea, ew) - sn.potential(beta - h * e, delta, ea, ew)) / (2 * h) for e in E])
        g = sn.potential_grad(beta, delta, ea, ew)
        np.testing.assert_allclose(g, fd_g, rtol=1e-7, atol=1e-9)
        fd_H = np.array([(sn.potential_grad(beta + h * e, delta, ea, ew) - sn.potential_grad(beta - h * e, delta, ea, ew)) / (2 * h) for e in E])
        H = sn.potential_hessian(beta, delta, ea, ew)
        np.testing.assert_allclose(H, fd_H, rtol=1e-7, atol=1e-9)
        kappa = np.sqrt(delta**2 + 4 * ea * ew * beta @ beta)
        np.testing.assert_allclose(H, ea * ew * np.sqrt(kappa + delta) * sn.M_inv(beta, delta, ea, ew), rtol=1e-12)
        # Theorem 1 linear term: grad Phi(beta0) = psi_delta beta0/|beta0| (unit rates)
        if etas == (1.0, 1.0):
            psi = np.sqrt(np.sqrt(delta**2 + 4 * beta @ beta) - delta)
            np.testing.assert_allclose(sn.potential_grad(beta, delta), psi * beta / np.linalg.norm(beta), rtol=1e-12)


def test_potential_closed_forms():
    """Phi(0) = 0, Phi >= 0, matches the paper's unreduced formula, and Azulay's q (Theorem 5 remark)."""
    rng = np.random.default_rng(13)
    for delta in (-3.0, 0.0, 0.7, 4.0):
        assert sn.potential(np.zeros(3), delta) == 0.0
        for _ in range(10):
            b = rng.normal(size=3) * rng.uniform(0.3, 3)
            x = np.linalg.norm(b)
            k = np.sqrt(delta**2 + 4 * x * x)
            paper = (k - 2 * delta) * np.sqrt(k + delta) / 3 + max(0.0, np.sign(delta) * np.sqrt(2) * abs(delta) ** 1.5 / 3)
            assert sn.potential(b, delta) == pytest.approx(paper, rel=1e-12, abs=1e-12)
            assert sn.potential(b, delta) > 0
            if delta >= 0:  # Phi = 2 sqrt(2)/3 q_delta(|beta|) + c_delta (paper, "Connection to Theorem 2")
                r = np.sqrt(x * x + delta**2 / 4)
                q = (x * x - delta / 2 * (delta / 2 + r)) * np.sqrt(r - delta / 2) / x
                cd = np.sqrt(2) * delta**1.5 / 3
                assert sn.potential(b, delta) == pytest.approx(2 * np.sqrt(2) / 3 * q + cd, rel=1e-12)
    # tiny beta, large delta: no catastrophic cancellation (Phi ~ |b|^2 / sqrt(2 delta))
    b = np.array([1e-6, 0.0])
    assert sn.potential(b, 100.0) == pytest.approx(1e-12 / np.sqrt(200.0), rel=1e-8)


def test_mirror_flow_identity_along_trajectory():
    """d/dt grad Phi(beta(t)) = -g X^T (X beta - y), g = sqrt(kappa + delta) (time-warped mirror flow)."""
    X = np.array([[0.5, 1.0, 0.2]])
    y = np.array([1.1])
    tr = sn.solve(X, y, 0.8, np.array([0.5, 0.06, -0.3]), method="ode")
    t = np.array([0.3, 1.0, 2.5])
    h = 1e-4
    lhs = (sn.potential_grad(tr.beta(t + h), tr.delta) - sn.potential_grad(tr.beta(t - h), tr.delta)) / (2 * h)
    b = tr.beta(t)
    g = np.sqrt(np.sqrt(tr.delta**2 + 4 * np.sum(b * b, 1)) + tr.delta)
    rhs = -g[:, None] * ((b @ X.T - y) @ X)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------
# 6. implicit bias (Theorem 1)
# ---------------------------------------------------------------------------
def _init_from_beta0(beta0, delta, ea=1.0, ew=1.0):
    """(a0, w0) with a0 w0 = beta0, a0 > 0 and eta_w a0^2 - eta_a |w0|^2 = delta."""
    nb = np.linalg.norm(beta0)
    a2 = (np.sqrt(delta**2 + 4 * ea * ew * nb**2) + delta) / (2 * ew)
    a0 = np.sqrt(a2)
    return a0, beta0 / a0


@pytest.mark.parametrize("delta", [-1.0, -0.3, 0.0, 0.5, 2.0])
def test_implicit_bias_one_dim_null_space_paper_example(delta):
    """Paper's low-rank example (X^T X = [[.25,.5],[.5,1]], beta0 = (0.4, 0.05)): closed form ==
    Newton == long-time ODE limit (abs 1e-7)."""
    X = np.array([[0.5, 1.0]])
    y = np.array([0.5 * 0.44 + 0.88])
    beta0 = np.array([0.4, 0.05])
    a0, w0 = _init_from_beta0(beta0, delta)
    b_cf = sn.implicit_bias(X, y, beta0, delta)
    b_nt = sn.implicit_bias(X, y, beta0, delta, method="numerical")
    np.testing.assert_allclose(b_cf, b_nt, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(X @ b_cf, y, atol=1e-13)
    a_T, w_T = _single_flow(X, y, 1.0, 1.0, a0, w0, np.array([0.0, 400.0]))
    b_T = a_T[-1] * w_T[-1]
    np.testing.assert_allclose(b_T, b_cf, atol=1e-7)
    # the selected interpolant depends on delta (not the min-norm one in general)
    assert np.linalg.norm(b_cf - np.linalg.pinv(X) @ y) > 1e-3


@pytest.mark.parametrize("delta,etas", [(-0.5, (1.0, 1.0)), (0.0, (1.0, 1.0)), (1.5, (1.0, 1.0)),
                                        (0.4, (0.5, 3.0)), (-0.2, (2.0, 0.7))])
def test_implicit_bias_two_dim_null_space_newton(delta, etas):
    """d = 4, n = 2 (null space dim 2): Newton solution == long-time ODE limit (abs 1e-7)."""
    ea, ew = etas
    rng = np.random.default_rng(15)
    X = rng.normal(size=(2, 4))
    y = rng.normal(size=2)
    bls = np.linalg.pinv(X) @ y
    beta0 = 0.5 * bls + 0.2 * rng.normal(size=4)  # aligned enough that a keeps its sign
    a0, w0 = _init_from_beta0(beta0, delta, ea, ew)
    assert ew * a0**2 - ea * w0 @ w0 == pytest.approx(delta, abs=1e-12)
    b_ib = sn.implicit_bias(X, y, beta0, delta, eta_a=ea, eta_w=ew)
    np.testing.assert_allclose(X @ b_ib, y, atol=1e-12)
    t = np.array([0.0, 150.0, 300.0])
    a_T, w_T = _single_flow(X, y, ea, ew, a0, w0, t)
    assert np.all(a_T > 0)
    b_T = a_T[-1] * w_T[-1]
    np.testing.assert_allclose(b_T, b_ib, atol=1e-7)
    # KKT: grad Phi(b) - grad Phi(beta0) lies in the row space of X
    gphi = sn.potential_grad(b_ib, delta, ea, ew) - sn.potential_grad(beta0, delta, ea, ew)
    V = np.linalg.svd(X)[2][2:].T  # null space of X
    np.testing.assert_allclose(V.T @ gphi, 0.0, atol=1e-10)


def test_implicit_bias_full_rank_is_least_squares():
    rng = np.random.default_rng(16)
    X = rng.normal(size=(6, 3))
    y = rng.normal(size=6)
    np.testing.assert_allclose(sn.implicit_bias(X, y, rng.normal(size=3), 0.3), np.linalg.lstsq(X, y, rcond=None)[0])


# ---------------------------------------------------------------------------
# 7. bad input
# ---------------------------------------------------------------------------
def test_bad_input_raises_value_error():
    X = np.eye(3)
    y = np.ones(3)
    w0 = np.ones(3)
    bad_solve = [
        dict(X=np.ones(3)),                       # X not 2-D
        dict(y=np.ones(4)),                       # y length mismatch
        dict(y=np.ones((3, 1))),                  # y not 1-D
        dict(w0=np.ones(2)),                      # w0 length mismatch
        dict(X=np.array([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]])),
        dict(y=np.array([1.0, np.inf, 0.0])),
        dict(a0=np.nan),
        dict(a0=np.ones(2)),
        dict(w0=np.array([1.0, np.nan, 0.0])),
        dict(eta_a=0.0),
        dict(eta_w=-1.0),
        dict(eta_a=np.inf),
        dict(method="rk4"),
    ]
    base = dict(X=X, y=y, a0=0.5, w0=w0, eta_a=1.0, eta_w=1.0)
    for kw in bad_solve:
        with pytest.raises(ValueError):
            sn.solve(**{**base, **kw})
    tr = sn.solve(X, y, 0.5, w0)
    for t in ([-1.0, 0.0], [np.nan], np.ones((2, 2))):
        with pytest.raises(ValueError):
            tr.a(t)
    with pytest.raises(ValueError):
        sn.implicit_bias(X[:2], y[:2], np.zeros(3), 0.1)      # beta0 = 0
    with pytest.raises(ValueError):
        sn.implicit_bias(X[:2], y, np.ones(3), 0.1)          # shape mismatch
    with pytest.raises(ValueError):
        sn.implicit_bias(X[:2], y[:2], np.ones(2), 0.1)      # beta0 wrong length
    with pytest.raises(ValueError):
        sn.implicit_bias(X[:1], y[:1], np.ones(3), np.nan)   # non-finite delta
    with pytest.raises(ValueError):
        sn.implicit_bias(X[:1], y[:1], np.ones(3), 0.1, method="closed_form")  # null space dim 2
    with pytest.raises(ValueError):
        sn.M(np.ones(3), 0.1, eta_a=0.0)
    with pytest.raises(ValueError):
        sn.potential(np.array([np.nan, 1.0]), 0.1)
    with pytest.raises(ValueError):
        sn.potential_grad(np.zeros(2), -1.0)
