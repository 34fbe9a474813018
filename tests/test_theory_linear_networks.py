"""Oracle tests for lazyrich.theory.linear_networks (Kunin et al., wide and deep linear networks).

Oracles: float64 torch autograd Jacobians / gradients, scipy solve_ivp integration of the
parameter gradient flow, finite differences, and an independent constrained minimisation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import minimize

from lazyrich.theory import linear_networks as ln


pytestmark = pytest.mark.usefixtures("float64_default")  # these oracles build float64 tensors

SHAPES = [(3, 5, 2), (4, 2, 6), (5, 5, 1), (2, 3, 3), (1, 4, 3), (6, 1, 2)]  # (d, h, c)
ETA_A, ETA_W = 0.7, 1.9


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _autograd_M(W: np.ndarray, A: np.ndarray, eta_a: float, eta_w: float) -> np.ndarray:
    """Brute force J diag(eta) J^T, J = d vec(beta) / d theta, beta = W^T A, column-major vec."""

    def beta_vec(Wt: torch.Tensor, At: torch.Tensor) -> torch.Tensor:
        return (Wt.T @ At).T.reshape(-1)  # column-major vec

    JW, JA = torch.func.jacrev(beta_vec, argnums=(0, 1))(torch.tensor(W), torch.tensor(A))
    JW = JW.reshape(JW.shape[0], -1).numpy()
    JA = JA.reshape(JA.shape[0], -1).numpy()
    return eta_w * JW @ JW.T + eta_a * JA @ JA.T


# ------------------------------------------------------------------ wide networks: M


@pytest.mark.parametrize("d,h,c", SHAPES)
def test_M_kronecker_sum_equals_autograd_JJt(d: int, h: int, c: int) -> None:
    rng = np.random.default_rng(d * 100 + h * 10 + c)
    W, A = rng.standard_normal((h, d)), rng.standard_normal((h, c))
    M = ln.wide_linear_M(W, A, ETA_A, ETA_W)
    assert M.shape == (d * c, d * c)
    assert _rel(M, _autograd_M(W, A, ETA_A, ETA_W)) < 1e-12


@pytest.mark.parametrize("d,h,c", SHAPES)
def test_theorem2_sum_over_neurons_equals_M(d: int, h: int, c: int) -> None:
    rng = np.random.default_rng(7 + d + 3 * h + 11 * c)
    W, A = 1.5 * rng.standard_normal((h, d)), 0.4 * rng.standard_normal((h, c))
    betas = ln.wide_linear_neuron_betas(W, A)
    assert np.allclose(betas.sum(0), ln.wide_linear_beta(W, A), atol=1e-14)
    deltas = np.diag(ln.wide_linear_conserved(W, A, ETA_A, ETA_W))
    M2 = ln.wide_linear_M_theorem2(betas, deltas, ETA_A, ETA_W)
    assert _rel(M2, ln.wide_linear_M(W, A, ETA_A, ETA_W)) < 1e-10


def test_theorem2_rejects_dead_neuron() -> None:
    rng = np.random.default_rng(0)
    W, A = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    A[1] = 0.0
    with pytest.raises(ValueError, match="beta_k"):
        ln.wide_linear_M_theorem2(ln.wide_linear_neuron_betas(W, A), np.zeros(3))


ISO_CASES = [  # (d, h, c, delta): Theorem 3's dimension conditions
    (4, 3, 3, 1.3),  # delta > 0, h = c
    (6, 2, 2, 0.2),
    (3, 3, 5, -0.8),  # delta < 0, h = d
    (2, 2, 4, -2.5),
    (3, 7, 4, 0.0),  # delta = 0, h > max(d, c)
    (5, 2, 3, 0.0),  # delta = 0, h < min(d, c)
]


@pytest.mark.parametrize("d,h,c,delta", ISO_CASES)
def test_theorem3_isotropic_form_equals_M(d: int, h: int, c: int, delta: float) -> None:
    W, A = ln.wide_linear_isotropic_init(d, h, c, delta, ETA_A, ETA_W, scale=1.2, rng=d + h + c)
    Delta = ln.wide_linear_conserved(W, A, ETA_A, ETA_W)
    assert np.max(np.abs(Delta - delta * np.eye(h))) < 1e-12
    assert ln.isotropic_delta(W, A, ETA_A, ETA_W) == pytest.approx(delta, abs=1e-12)
    M3 = ln.wide_linear_M_theorem3(ln.wide_linear_beta(W, A), delta, ETA_A, ETA_W)
    assert _rel(M3, ln.wide_linear_M(W, A, ETA_A, ETA_W)) < 1e-10


def test_theorem3_detects_non_isotropic_init() -> None:
    """Negative control: with a generic (non-isotropic) init the closed form must NOT match."""
    rng = np.random.default_rng(3)
    W, A = rng.standard_normal((3, 4)), rng.standard_normal((3, 3))
    M = ln.wide_linear_M(W, A, ETA_A, ETA_W)
    delta = float(np.mean(np.diag(ln.wide_linear_conserved(W, A, ETA_A, ETA_W))))
    assert _rel(ln.wide_linear_M_theorem3(W.T @ A, delta, ETA_A, ETA_W), M) > 1e-2
    with pytest.raises(ValueError, match="not isotropic"):
        ln.isotropic_delta(W, A, ETA_A, ETA_W)


def test_isotropic_init_rejects_impossible_dimensions() -> None:
    with pytest.raises(ValueError, match="h <= c"):
        ln.wide_linear_isotropic_init(3, 4, 2, 1.0)
    with pytest.raises(ValueError, match="h <= d"):
        ln.wide_linear_isotropic_init(2, 4, 5, -1.0)


# ------------------------------------------------------------------ wide networks: dynamics


def _problem(d: int, c: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    Y = X @ rng.standard_normal((d, c)) + 0.1 * rng.standard_normal((n, c))
    return X, Y


def test_param_velocity_matches_autograd_and_beta_dynamics() -> None:
    d, h, c, n = 4, 3, 2, 7
    rng = np.random.default_rng(11)
    W, A = rng.standard_normal((h, d)), rng.standard_normal((h, c))
    X, Y = _problem(d, c, n, 12)
    dW, dA = ln.wide_linear_param_velocity(W, A, X, Y, ETA_A, ETA_W)

    Wt = torch.tensor(W, requires_grad=True)
    At = torch.tensor(A, requires_grad=True)
    loss = 0.5 * ((torch.tensor(X) @ Wt.T @ At - torch.tensor(Y)) ** 2).sum()
    gW, gA = torch.autograd.grad(loss, (Wt, At))
    assert _rel(dW, -ETA_W * gW.numpy()) < 1e-13
    assert _rel(dA, -ETA_A * gA.numpy()) < 1e-13

    # d beta / dt by the product rule equals -M vec(X^T X beta - X^T Y) (Kunin et al., Sec. 4).
    beta_dot = dW.T @ A + W.T @ dA
    G = X.T @ (X @ W.T @ A - Y)
    pred = -ln.unvec(ln.wide_linear_M(W, A, ETA_A, ETA_W) @ ln.vec(G), (d, c))
    assert _rel(beta_dot, pred) < 1e-12


def test_wide_linear_ntk_matches_autograd_ntk() -> None:
    d, h, c, n = 3, 4, 2, 5
    rng = np.random.default_rng(21)
    W, A = rng.standard_normal((h, d)), rng.standard_normal((h, c))
    X = rng.standard_normal((n, d))
    Xt = torch.tensor(X)

    def outputs(Wt: torch.Tensor, At: torch.Tensor) -> torch.Tensor:
        return (Xt @ Wt.T @ At).T.reshape(-1)  # vec(F), F = X beta of shape (n, c)

    JW, JA = torch.func.jacrev(outputs, argnums=(0, 1))(torch.tensor(W), torch.tensor(A))
    JW, JA = JW.reshape(n * c, -1).numpy(), JA.reshape(n * c, -1).numpy()
    K_bf = ETA_W * JW @ JW.T + ETA_A * JA @ JA.T
    assert _rel(ln.wide_linear_ntk(W, A, X, ETA_A, ETA_W), K_bf) < 1e-12


def test_Delta_conserved_along_gradient_flow() -> None:
    d, h, c, n = 4, 5, 3, 8
    rng = np.random.default_rng(5)
    W0, A0 = 0.8 * rng.standard_normal((h, d)), 0.5 * rng.standard_normal((h, c))
    X, Y = _problem(d, c, n, 6)
    t = np.linspace(0.0, 6.0, 7)
    W_t, A_t = ln.integrate_wide_linear_flow(W0, A0, X, Y, t, ETA_A, ETA_W, rtol=1e-10, atol=1e-12)
    D0 = ln.wide_linear_conserved(W0, A0, ETA_A, ETA_W)
    errs = [np.max(np.abs(ln.wide_linear_conserved(W, A, ETA_A, ETA_W) - D0)) for W, A in zip(W_t, A_t)]
    assert max(errs) < 1e-9 * np.max(np.abs(D0))  # measured ~1e-12
    # the flow actually moved and learned (otherwise conservation would be vacuous)
    assert np.linalg.norm(W_t[-1] - W0) > 0.1 * np.linalg.norm(W0)
    loss = [0.5 * np.sum((X @ W.T @ A - Y) ** 2) for W, A in zip(W_t, A_t)]
    assert loss[-1] < 0.2 * loss[0]
    # a non-conserved control quantity (AA^T alone) does change
    assert np.max(np.abs(A_t[-1] @ A_t[-1].T - A0 @ A0.T)) > 1e-2


@pytest.mark.parametrize("d,h,c,delta", [(3, 2, 2, 0.7), (2, 2, 3, -1.1), (3, 4, 2, 0.0)])
def test_self_consistent_beta_ode_matches_param_flow(d: int, h: int, c: int, delta: float) -> None:
    n = 6
    W0, A0 = ln.wide_linear_isotropic_init(d, h, c, delta, ETA_A, ETA_W, scale=0.6, rng=40 + h)
    X, Y = _problem(d, c, n, 41)
    t = np.linspace(0.0, 4.0, 5)
    W_t, A_t = ln.integrate_wide_linear_flow(W0, A0, X, Y, t, ETA_A, ETA_W, rtol=1e-11, atol=1e-13)
    beta_param = np.einsum("thd,thc->tdc", W_t, A_t)
    beta_ode = ln.integrate_isotropic_beta(W0.T @ A0, X, Y, delta, t, ETA_A, ETA_W,
                                           rtol=1e-11, atol=1e-13)
    for b_p, b_o in zip(beta_param, beta_ode):
        assert _rel(b_o, b_p) < 1e-8  # measured <= 8e-11
    assert np.linalg.norm(beta_param[-1] - beta_param[0]) > 0.3 * np.linalg.norm(beta_param[0])


def test_singular_values_follow_hyperbolic_entropy_mirror_flow() -> None:
    """Lemma 10 / Theorem 11 (eta_a = eta_w = 1): d lambda/dt = -(q_delta'')^{-1} dL/dlambda."""
    d, h, c, delta = 4, 3, 3, 0.9
    W, A = ln.wide_linear_isotropic_init(d, h, c, delta, rng=2)
    X, Y = _problem(d, c, 6, 3)
    beta = W.T @ A
    beta_dot = ln.isotropic_beta_velocity(beta, X, Y, delta)
    U, lam, Vt = np.linalg.svd(beta, full_matrices=False)
    lam_dot = np.einsum("di,dc,ic->i", U, beta_dot, Vt)
    dL_dlam = np.einsum("di,dc,ic->i", U, X.T @ (X @ beta - Y), Vt)
    eps = 1e-4  # central second difference of q_delta (truncation error O(eps^2))
    q2 = (ln.hyperbolic_entropy(lam + eps, delta) - 2 * ln.hyperbolic_entropy(lam, delta)
          + ln.hyperbolic_entropy(lam - eps, delta)) / eps**2
    assert np.allclose(lam_dot, -dL_dlam / q2, rtol=1e-6)
    q1 = (ln.hyperbolic_entropy(lam + eps, delta) - ln.hyperbolic_entropy(lam - eps, delta)) / (2 * eps)
    assert np.allclose(ln.hyperbolic_entropy_grad(lam, delta), q1, rtol=1e-8)


# ------------------------------------------------------------------ deep networks


def _deep_jacobian(Ws: list[np.ndarray], a: np.ndarray) -> np.ndarray:
    """Brute-force d beta / d theta (theta = all W_l and a) with torch autograd."""
    L = len(Ws)

    def beta_fn(*params: torch.Tensor) -> torch.Tensor:
        v = params[-1]
        for W in reversed(params[:-1]):
            v = W.T @ v
        return v

    jacs = torch.func.jacrev(beta_fn, argnums=tuple(range(L + 1)))(
        *[torch.tensor(W) for W in Ws], torch.tensor(a))
    return np.concatenate([j.reshape(j.shape[0], -1).numpy() for j in jacs], axis=1)


@pytest.mark.parametrize("L,delta", [(1, -0.5), (2, -0.3), (3, -1.2), (3, 0.0), (2, 0.0)])
def test_deep_lemmas_13_14_against_autograd(L: int, delta: float) -> None:
    h = 4
    rng = np.random.default_rng(L * 10 + int(10 * abs(delta)))
    a = 0.8 * rng.standard_normal(h)
    Ws = ln.deep_linear_isotropic_init(a, L, delta, rng=rng)
    # Definition 12
    assert np.allclose(np.outer(a, a) - Ws[-1] @ Ws[-1].T, delta * np.eye(h), atol=1e-12)
    for l in range(L - 1):
        assert np.allclose(Ws[l + 1].T @ Ws[l + 1], Ws[l] @ Ws[l].T, atol=1e-12)
    beta = ln.deep_linear_beta(Ws, a)
    a2, G = a @ a, Ws[0].T @ Ws[0]
    # Lemma 13
    assert beta @ beta == pytest.approx(a2 * (a2 - delta) ** L, rel=1e-12)
    assert np.allclose(np.outer(beta, beta),
                       np.linalg.matrix_power(G, L + 1) + delta * np.linalg.matrix_power(G, L),
                       atol=1e-12)
    # Lemma 14 vs brute-force J J^T
    J = _deep_jacobian(Ws, a)
    assert _rel(ln.deep_linear_M(Ws[0], a, delta, L), J @ J.T) < 1e-11
    if delta == 0.0:  # Theorem 15's rich-limit form
        assert _rel(ln.deep_linear_M_rich(beta, L), J @ J.T) < 1e-10


@pytest.mark.parametrize("L", [1, 2, 4])
def test_rich_M_inverse_is_time_warped_hessian(L: int) -> None:
    """Theorem 15 proof: M^{-1} = g(beta) Hess Phi(beta) with g = ||beta||^{-L/(L+1)}."""
    rng = np.random.default_rng(L)
    beta, beta0 = rng.standard_normal(5), rng.standard_normal(5)
    eps = 1e-5
    H = np.stack([(ln.deep_linear_Q_grad(beta + eps * e, beta0, L)
                   - ln.deep_linear_Q_grad(beta - eps * e, beta0, L)) / (2 * eps) for e in np.eye(5)])
    g = np.linalg.norm(beta) ** (-L / (L + 1))
    assert np.allclose(np.linalg.inv(ln.deep_linear_M_rich(beta, L)), g * H, rtol=1e-7, atol=1e-9)
    # the gradient helper matches finite differences of Q itself
    fd = [(ln.deep_linear_Q(beta + eps * e, beta0, L) - ln.deep_linear_Q(beta - eps * e, beta0, L))
          / (2 * eps) for e in np.eye(5)]
    assert np.allclose(ln.deep_linear_Q_grad(beta, beta0, L), fd, rtol=1e-7, atol=1e-9)


def test_implicit_bias_solution_is_constrained_minimizer() -> None:
    rng = np.random.default_rng(8)
    n, d, L = 2, 5, 2
    X, y, beta0 = rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal(d)
    beta_star = ln.deep_linear_implicit_bias_solution(X, y, beta0, L)
    assert np.allclose(X @ beta_star, y, atol=1e-10)
    # KKT: grad Q is in the row space of X
    gq = ln.deep_linear_Q_grad(beta_star, beta0, L)
    resid = gq - X.T @ np.linalg.lstsq(X.T, gq, rcond=None)[0]
    assert np.linalg.norm(resid) < 1e-9 * np.linalg.norm(gq)
    # independent oracle: minimize Q over the affine set beta = beta_p + N z with BFGS
    beta_p = np.linalg.lstsq(X, y, rcond=None)[0]
    N = np.linalg.svd(X)[2][n:].T
    res = minimize(lambda z: ln.deep_linear_Q(beta_p + N @ z, beta0, L), np.zeros(d - n),
                   jac=lambda z: N.T @ ln.deep_linear_Q_grad(beta_p + N @ z, beta0, L),
                   method="BFGS", options={"gtol": 1e-12})
    assert np.allclose(beta_p + N @ res.x, beta_star, atol=1e-6)


def test_deep_gradient_flow_converges_to_Q_minimizer() -> None:
    """Theorem 15: from a delta = 0 isotropic init the interpolant minimises Q(beta)."""
    h = d = 4
    n, L = 2, 2
    rng = np.random.default_rng(123)
    X = rng.standard_normal((n, d))
    a = 0.7 * rng.standard_normal(h)
    Ws = ln.deep_linear_isotropic_init(a, L, 0.0, rng=rng)
    beta0 = ln.deep_linear_beta(Ws, a)
    y = X @ (1.5 * beta0 / np.linalg.norm(beta0) + 0.8 * rng.standard_normal(d))
    Xt, yt = torch.tensor(X), torch.tensor(y)
    sizes = [h * h] * L + [h]

    def rhs(_t: float, theta: np.ndarray) -> np.ndarray:
        p = torch.tensor(theta, requires_grad=True)
        chunks = torch.split(p, sizes)
        v = chunks[-1]
        for c in reversed(chunks[:-1]):
            v = c.reshape(h, h).T @ v
        loss = 0.5 * ((Xt @ v - yt) ** 2).sum()
        return -torch.autograd.grad(loss, p)[0].numpy()

    theta0 = np.concatenate([W.ravel() for W in Ws] + [a])
    # residual decays like exp(-t/2.6) here; t = 70 leaves it at ~1e-11
    sol = solve_ivp(rhs, (0.0, 70.0), theta0, method="DOP853", rtol=1e-11, atol=1e-13,
                    t_eval=np.linspace(0, 70, 71))
    assert sol.success

    def beta_of(theta: np.ndarray) -> np.ndarray:
        parts = np.split(theta, np.cumsum(sizes)[:-1])
        return ln.deep_linear_beta([p.reshape(h, h) for p in parts[:-1]], parts[-1])

    betas = np.array([beta_of(th) for th in sol.y.T])
    assert np.min(np.linalg.norm(betas, axis=1)) > 1e-2  # Theorem 15's ||beta(t)|| > 0
    beta_inf = betas[-1]
    assert np.linalg.norm(X @ beta_inf - y) < 1e-8
    beta_Q = ln.deep_linear_implicit_bias_solution(X, y, beta0, L)
    assert np.linalg.norm(beta_inf - beta_Q) < 1e-7 * np.linalg.norm(beta_Q)
    # discriminating controls: min-norm and the wrong-depth bias are clearly different
    beta_mn = np.linalg.lstsq(X, y, rcond=None)[0]
    assert np.linalg.norm(beta_inf - beta_mn) > 1e-2
    assert np.linalg.norm(beta_inf - ln.deep_linear_implicit_bias_solution(X, y, beta0, 1)) > 1e-3


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="hidden width"):
        ln.wide_linear_M(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="learning rate"):
        ln.wide_linear_M(np.ones((3, 2)), np.ones((3, 2)), eta_a=0.0)
    with pytest.raises(ValueError, match="shape"):
        ln.wide_linear_param_velocity(np.ones((3, 2)), np.ones((3, 2)), np.ones((5, 3)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="PSD"):
        ln.deep_linear_isotropic_init(np.ones(3), 2, 0.5)
    with pytest.raises(ValueError, match="full row rank"):
        ln.deep_linear_implicit_bias_solution(np.ones((2, 3)), np.ones(2), np.ones(3), 2)
    with pytest.raises(ValueError, match="delta != 0"):
        ln.hyperbolic_entropy(1.0, 0.0)
