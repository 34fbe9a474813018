"""Wide and deep linear networks: conserved quantities, function-space dynamics, implicit bias.

Implements Section "Wide and Deep Linear Networks" of Kunin et al., *Get rich quick: exact
solutions reveal how unbalanced initializations promote rapid feature learning* (NeurIPS 2024),
together with its appendix (Lemmas 8, 9, 10, 13, 14; Theorems 2, 3, 11, 15).

Conventions (the paper's, stated once here and used everywhere below)
-------------------------------------------------------------------
* Wide two-layer network: ``f(x) = A^T W x`` with ``W`` of shape ``(h, d)`` (rows ``w_k``) and
  ``A`` of shape ``(h, c)`` (rows ``a_k``).  The predictor is ``beta = W^T A`` of shape ``(d, c)``
  and the per-neuron contribution is ``beta_k = w_k a_k^T`` (rank one, ``beta = sum_k beta_k``).
* Data ``X`` of shape ``(n, d)``, targets ``Y`` of shape ``(n, c)``; loss
  ``L = 1/2 ||X beta - Y||_F^2`` (a *sum* over samples, no ``1/n``; a mean loss only rescales
  time by ``1/n``).  Residual ``P = X beta - Y``.
* Gradient flow with layer-specific learning rates: ``dA/dt = -eta_a dL/dA``,
  ``dW/dt = -eta_w dL/dW``.
* Conserved ``h x h`` matrix ``Delta = eta_w A A^T - eta_a W W^T`` (main text; the appendix
  writes it for ``eta_a = eta_w = 1``), per-neuron ``delta_k = Delta_kk
  = eta_w ||a_k||^2 - eta_a ||w_k||^2``.
* ``vec`` is the *column-major* (Fortran order) vectorisation, ``vec(B) = B.reshape(-1, order="F")``,
  so that ``vec(ABC) = (C^T kron A) vec(B)``.  The Kronecker sum of ``C (c x c)`` and ``D (d x d)``
  is ``C (+) D = C kron I_d + I_c kron D`` (paper footnote 5).  With these conventions
  ``vec(dbeta/dt) = -M vec(X^T X beta - X^T Y)`` with ``M = eta_w A^T A (+) eta_a W^T W``.
* Deep network (Appendix "Deep linear networks"): ``f(x) = a^T W_L ... W_1 x`` with
  ``W_1`` of shape ``(h, d)``, ``W_l`` of shape ``(h, h)``, ``a`` of shape ``(h,)``, so that
  ``beta = W_1^T ... W_L^T a``; all learning rates equal to one, as in the paper.

All routines are pure NumPy/SciPy in float64.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._checks import as_finite_array as _mat, positive_rate as _positive
from scipy.integrate import solve_ivp
from scipy.optimize import minimize

__all__ = [
    "vec",
    "unvec",
    "kronecker_sum",
    "wide_linear_beta",
    "wide_linear_neuron_betas",
    "wide_linear_conserved",
    "wide_linear_M",
    "wide_linear_M_theorem2",
    "wide_linear_M_theorem3",
    "wide_linear_ntk",
    "wide_linear_param_velocity",
    "integrate_wide_linear_flow",
    "isotropic_delta",
    "wide_linear_isotropic_init",
    "isotropic_beta_velocity",
    "integrate_isotropic_beta",
    "hyperbolic_entropy",
    "hyperbolic_entropy_grad",
    "deep_linear_beta",
    "deep_linear_isotropic_init",
    "deep_linear_M",
    "deep_linear_M_rich",
    "deep_linear_Q",
    "deep_linear_Q_grad",
    "deep_linear_implicit_bias_solution",
]


# ----------------------------------------------------------------------------- helpers


def _check_WA(W: object, A: object) -> tuple[np.ndarray, np.ndarray]:
    W = _mat("W", W)
    A = _mat("A", A)
    if W.shape[0] != A.shape[0]:
        raise ValueError(
            f"W (h, d) and A (h, c) must share the hidden width h, got {W.shape} and {A.shape}."
        )
    return W, A


def _check_XY(X: object, Y: object, d: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    X = _mat("X", X)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    Y = _mat("Y", Y)
    if X.shape[1] != d:
        raise ValueError(f"X must have shape (n, {d}) to match the input dimension, got {X.shape}.")
    if Y.shape != (X.shape[0], c):
        raise ValueError(f"Y must have shape ({X.shape[0]}, {c}) (n, c), got {Y.shape}.")
    return X, Y


def _sym_sqrt(S: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric positive semi-definite matrix (eigh, clipped at 0)."""
    S = 0.5 * (S + S.T)
    evals, evecs = np.linalg.eigh(S)
    evals = np.sqrt(np.clip(evals, 0.0, None))
    return (evecs * evals) @ evecs.T


def _gram_sqrts(beta: np.ndarray, scale: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """``sqrt(scale beta^T beta + q I_c)`` and ``sqrt(scale beta beta^T + q I_d)`` from one full SVD.

    Using the singular values of ``beta`` (accurate to ``eps ||beta||`` absolutely) avoids the
    ``sqrt(eps)`` loss of taking square roots of rounded, nearly singular Gram eigenvalues.
    """
    d, c = beta.shape
    U, s, Vt = np.linalg.svd(beta, full_matrices=True)
    sc = np.zeros(c)
    sd = np.zeros(d)
    sc[: s.size] = s**2
    sd[: s.size] = s**2
    Sc = (Vt.T * np.sqrt(scale * sc + q)) @ Vt
    Sd = (U * np.sqrt(scale * sd + q)) @ U.T
    return 0.5 * (Sc + Sc.T), 0.5 * (Sd + Sd.T)


def _orthonormal_rows(rng: np.random.Generator, r: int, m: int) -> np.ndarray:
    """Random ``(r, m)`` matrix with orthonormal rows (``r <= m``), Haar-distributed."""
    q, rr = np.linalg.qr(rng.standard_normal((m, r)))
    q = q * np.sign(np.diag(rr))
    return q.T


def vec(B: np.ndarray) -> np.ndarray:
    """Column-major vectorisation ``vec(B)`` (stacks the columns of ``B``)."""
    return np.asarray(B, dtype=np.float64).reshape(-1, order="F")


def unvec(v: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`vec`: reshape a length ``d*c`` vector to ``shape`` in column-major order."""
    return np.asarray(v, dtype=np.float64).reshape(shape, order="F")


def kronecker_sum(C: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Kronecker sum ``C (+) D = C kron I_d + I_c kron D`` (Kunin et al., footnote 5).

    Parameters
    ----------
    C : ndarray, shape (c, c)
    D : ndarray, shape (d, d)

    Returns
    -------
    ndarray, shape (c*d, c*d)
    """
    C = _mat("C", C)
    D = _mat("D", D)
    if C.shape[0] != C.shape[1] or D.shape[0] != D.shape[1]:
        raise ValueError("kronecker_sum needs square matrices C and D.")
    return np.kron(C, np.eye(D.shape[0])) + np.kron(np.eye(C.shape[0]), D)


# ----------------------------------------------------------------------------- wide networks


def wide_linear_beta(W: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Predictor ``beta = W^T A`` of the wide network ``f(x) = A^T W x`` (shape ``(d, c)``)."""
    W, A = _check_WA(W, A)
    return W.T @ A


def wide_linear_neuron_betas(W: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Per-neuron contributions ``beta_k = w_k a_k^T`` (Kunin et al., Theorem 2); shape ``(h, d, c)``."""
    W, A = _check_WA(W, A)
    return W[:, :, None] * A[:, None, :]


def wide_linear_conserved(
    W: np.ndarray, A: np.ndarray, eta_a: float = 1.0, eta_w: float = 1.0
) -> np.ndarray:
    """Conserved matrix ``Delta = eta_w A A^T - eta_a W W^T`` (``h x h``), Kunin et al. Sec. 4.

    Its diagonal is the per-neuron conserved quantity ``delta_k = eta_w ||a_k||^2 - eta_a ||w_k||^2``.
    Conservation under the flow of :func:`wide_linear_param_velocity` follows from
    ``d(AA^T)/dt = -eta_a S`` and ``d(WW^T)/dt = -eta_w S`` with the same symmetric ``S``.
    """
    W, A = _check_WA(W, A)
    eta_a = _positive("eta_a", eta_a)
    eta_w = _positive("eta_w", eta_w)
    return eta_w * A @ A.T - eta_a * W @ W.T


def wide_linear_M(
    W: np.ndarray, A: np.ndarray, eta_a: float = 1.0, eta_w: float = 1.0
) -> np.ndarray:
    """Function-space preconditioner ``M = eta_w A^T A (+) eta_a W^T W`` (Kunin et al., Sec. 4 eq. for vec(beta_dot)).

    Derived from the parameter gradient flow (appendix "Function space dynamics"):
    ``dbeta/dt = W^T dA/dt + dW^T/dt A = -(eta_w G A^T A + eta_a W^T W G)`` with
    ``G = X^T (X beta - Y)``, hence ``vec(dbeta/dt) = -M vec(G)`` for column-major ``vec``.
    ``M`` equals ``J diag(eta) J^T`` with ``J = d vec(beta) / d theta``.

    Returns
    -------
    ndarray, shape (d*c, d*c)
    """
    W, A = _check_WA(W, A)
    eta_a = _positive("eta_a", eta_a)
    eta_w = _positive("eta_w", eta_w)
    return kronecker_sum(eta_w * A.T @ A, eta_a * W.T @ W)


def wide_linear_M_theorem2(
    betas: np.ndarray, deltas: np.ndarray, eta_a: float = 1.0, eta_w: float = 1.0
) -> np.ndarray:
    """``M = sum_k M_k`` from per-neuron ``beta_k`` and ``delta_k`` (Kunin et al., Theorem 2, eq. (Mi)).

    ``M_k = ((s_k + delta_k)/2) beta_k^T beta_k / ||beta_k||_F^2 (+)
    ((s_k - delta_k)/2) beta_k beta_k^T / ||beta_k||_F^2`` with
    ``s_k = sqrt(delta_k^2 + 4 eta_a eta_w ||beta_k||_F^2)``.

    Parameters
    ----------
    betas : ndarray, shape (h, d, c)
        Rank-one neuron contributions ``beta_k = w_k a_k^T`` (see :func:`wide_linear_neuron_betas`).
    deltas : ndarray, shape (h,)
        ``delta_k = Delta_kk`` (see :func:`wide_linear_conserved`).

    Raises
    ------
    ValueError
        If some ``||beta_k||_F = 0`` (Theorem 2 assumes all are non-zero).
    """
    betas = _mat("betas", betas, ndim=3)
    deltas = _mat("deltas", deltas, ndim=1)
    if deltas.shape[0] != betas.shape[0]:
        raise ValueError(f"deltas must have length h={betas.shape[0]}, got {deltas.shape[0]}.")
    eta_a = _positive("eta_a", eta_a)
    eta_w = _positive("eta_w", eta_w)
    _, d, c = betas.shape
    nrm2 = np.einsum("kdc,kdc->k", betas, betas)
    if np.any(nrm2 <= 0):
        raise ValueError("Theorem 2 needs every ||beta_k||_F > 0; drop or perturb dead neurons.")
    s = np.sqrt(deltas**2 + 4.0 * eta_a * eta_w * nrm2)
    right = np.einsum("kdc,kde->kce", betas, betas) / nrm2[:, None, None]  # beta_k^T beta_k
    left = np.einsum("kdc,kec->kde", betas, betas) / nrm2[:, None, None]  # beta_k beta_k^T
    C = np.einsum("k,kce->ce", 0.5 * (s + deltas), right)
    D = np.einsum("k,kde->de", 0.5 * (s - deltas), left)
    # The Kronecker sum is linear in (C, D), so sum_k (C_k (+) D_k) = (sum C_k) (+) (sum D_k).
    return kronecker_sum(C, D)


def wide_linear_M_theorem3(
    beta: np.ndarray, delta: float, eta_a: float = 1.0, eta_w: float = 1.0
) -> np.ndarray:
    """Isotropic closed form of ``M`` in terms of ``beta`` (Kunin et al., Theorem 3).

    ``M = sqrt(eta_a eta_w beta^T beta + delta^2/4 I_c) kron I_d
    + I_c kron sqrt(eta_a eta_w beta beta^T + delta^2/4 I_d)``.

    Valid when ``Delta = delta I_h`` and ``h = c`` if ``delta > 0``, ``h = d`` if ``delta < 0``
    (any ``h`` for ``delta = 0``), via Lemmas 8 and 9.  The caller is responsible for these
    assumptions (use :func:`isotropic_delta` to check a parameter set).
    """
    beta = _mat("beta", beta)
    eta_a = _positive("eta_a", eta_a)
    eta_w = _positive("eta_w", eta_w)
    Sc, Sd = _gram_sqrts(beta, eta_a * eta_w, 0.25 * float(delta) ** 2)
    return kronecker_sum(Sc, Sd)


def wide_linear_ntk(
    W: np.ndarray, A: np.ndarray, X: np.ndarray, eta_a: float = 1.0, eta_w: float = 1.0
) -> np.ndarray:
    """NTK ``K = (I_c kron X) M (I_c kron X^T)`` of the wide linear network (Kunin et al., Sec. 4).

    Rows/columns are ordered like ``vec(F)`` of the ``(n, c)`` output matrix ``F = X beta``:
    index ``j*n + i`` is output ``j`` on sample ``i``.  Each parameter's contribution is weighted
    by its learning rate, ``K = sum_p eta_p (dF/dtheta_p)(dF/dtheta_p)^T``.
    """
    W, A = _check_WA(W, A)
    X = _mat("X", X)
    if X.shape[1] != W.shape[1]:
        raise ValueError(f"X must have {W.shape[1]} columns (input dimension d), got {X.shape}.")
    Ic_X = np.kron(np.eye(A.shape[1]), X)
    return Ic_X @ wide_linear_M(W, A, eta_a, eta_w) @ Ic_X.T


def wide_linear_param_velocity(
    W: np.ndarray,
    A: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient-flow velocities ``(dW/dt, dA/dt)`` (Kunin et al., eqs. ODE-A-wide / ODE-W-wide).

    ``dA/dt = -eta_a W X^T (X beta - Y)`` and ``dW/dt = -eta_w A (X beta - Y)^T X`` for the loss
    ``1/2 ||X W^T A - Y||_F^2``.
    """
    W, A = _check_WA(W, A)
    X, Y = _check_XY(X, Y, W.shape[1], A.shape[1])
    eta_a = _positive("eta_a", eta_a)
    eta_w = _positive("eta_w", eta_w)
    G = X.T @ (X @ (W.T @ A) - Y)  # (d, c) = dL/dbeta
    return -eta_w * A @ G.T, -eta_a * W @ G


def integrate_wide_linear_flow(
    W0: np.ndarray,
    A0: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    t_eval: Sequence[float],
    eta_a: float = 1.0,
    eta_w: float = 1.0,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    method: str = "DOP853",
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate the parameter gradient flow of the wide linear network with ``solve_ivp``.

    Returns
    -------
    W_t : ndarray, shape (len(t_eval), h, d)
    A_t : ndarray, shape (len(t_eval), h, c)
    """
    W0, A0 = _check_WA(W0, A0)
    X, Y = _check_XY(X, Y, W0.shape[1], A0.shape[1])
    t_eval = np.asarray(t_eval, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval.size == 0 or np.any(np.diff(t_eval) < 0) or t_eval[0] < 0:
        raise ValueError("t_eval must be a non-empty, non-decreasing 1-D array of times >= 0.")
    h, d = W0.shape
    c = A0.shape[1]
    nw = h * d

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        dW, dA = wide_linear_param_velocity(
            y[:nw].reshape(h, d), y[nw:].reshape(h, c), X, Y, eta_a, eta_w
        )
        return np.concatenate([dW.ravel(), dA.ravel()])

    y0 = np.concatenate([W0.ravel(), A0.ravel()])
    sol = solve_ivp(rhs, (0.0, float(t_eval[-1])), y0, t_eval=t_eval, rtol=rtol, atol=atol,
                    method=method)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    Y_t = sol.y.T
    return Y_t[:, :nw].reshape(-1, h, d), Y_t[:, nw:].reshape(-1, h, c)


def isotropic_delta(
    W: np.ndarray, A: np.ndarray, eta_a: float = 1.0, eta_w: float = 1.0, atol: float = 1e-8
) -> float:
    """Return ``delta`` if ``Delta = delta I_h`` (Kunin et al., Assumption 7), else raise ValueError.

    Also checks the dimension condition of Theorem 3 (``h = c`` if ``delta > 0``, ``h = d`` if
    ``delta < 0``).  ``atol`` is an absolute tolerance on the entries of ``Delta - delta I``,
    scaled by ``max(1, |delta|)``.
    """
    W, A = _check_WA(W, A)
    Delta = wide_linear_conserved(W, A, eta_a, eta_w)
    h, d = W.shape
    c = A.shape[1]
    delta = float(np.mean(np.diag(Delta)))
    if np.max(np.abs(Delta - delta * np.eye(h))) > atol * max(1.0, abs(delta)):
        raise ValueError(
            "Delta = eta_w A A^T - eta_a W W^T is not isotropic; build the initialization with "
            "wide_linear_isotropic_init."
        )
    if delta > atol and h != c:
        raise ValueError(f"Theorem 3 with delta > 0 needs h = c, got h={h}, c={c}.")
    if delta < -atol and h != d:
        raise ValueError(f"Theorem 3 with delta < 0 needs h = d, got h={h}, d={d}.")
    return delta


def wide_linear_isotropic_init(
    d: int,
    h: int,
    c: int,
    delta: float,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
    scale: float = 1.0,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(W, A)`` with ``eta_w A A^T - eta_a W W^T = delta I_h`` (Kunin et al., Assumption 7).

    Construction: for ``delta > 0`` (requires ``h <= c``) draw ``W`` then set
    ``A = chol((delta I + eta_a W W^T)/eta_w) Q`` with ``Q`` having orthonormal rows; for
    ``delta < 0`` (requires ``h <= d``) the mirror construction; for ``delta = 0`` set
    ``A = F Q_a / sqrt(eta_w)``, ``W = F Q_w / sqrt(eta_a)`` with a random ``F`` of rank
    ``min(h, d, c)`` (any ``h``).

    Returns
    -------
    W : ndarray, shape (h, d)
    A : ndarray, shape (h, c)
    """
    rng = np.random.default_rng(rng)
    eta_a = _positive("eta_a", eta_a)
    eta_w = _positive("eta_w", eta_w)
    delta = float(delta)
    if min(d, h, c) < 1:
        raise ValueError("d, h and c must be positive integers.")
    if delta > 0:
        if h > c:
            raise ValueError(f"An isotropic init with delta > 0 needs h <= c, got h={h}, c={c}.")
        W = scale * rng.standard_normal((h, d)) / np.sqrt(d)
        L = np.linalg.cholesky((delta * np.eye(h) + eta_a * W @ W.T) / eta_w)
        A = L @ _orthonormal_rows(rng, h, c)
    elif delta < 0:
        if h > d:
            raise ValueError(f"An isotropic init with delta < 0 needs h <= d, got h={h}, d={d}.")
        A = scale * rng.standard_normal((h, c)) / np.sqrt(c)
        L = np.linalg.cholesky((eta_w * A @ A.T - delta * np.eye(h)) / eta_a)
        W = L @ _orthonormal_rows(rng, h, d)
    else:
        r = min(h, d, c)
        F = scale * rng.standard_normal((h, r)) / np.sqrt(r)
        A = F @ _orthonormal_rows(rng, r, c) / np.sqrt(eta_w)
        W = F @ _orthonormal_rows(rng, r, d) / np.sqrt(eta_a)
    return W, A


def isotropic_beta_velocity(
    beta: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    delta: float,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
) -> np.ndarray:
    """Self-consistent ``dbeta/dt`` under ``Delta = delta I`` (Kunin et al., eq. after Theorem 3).

    ``dbeta/dt = -X^T P sqrt(eta_a eta_w beta^T beta + delta^2/4 I_c)
    - sqrt(eta_a eta_w beta beta^T + delta^2/4 I_d) X^T P`` with residual ``P = X beta - Y``;
    equivalently ``vec(dbeta/dt) = -M_Thm3(beta) vec(X^T P)``.
    """
    beta = _mat("beta", beta)
    d, c = beta.shape
    X, Y = _check_XY(X, Y, d, c)
    eta_a = _positive("eta_a", eta_a)
    eta_w = _positive("eta_w", eta_w)
    G = X.T @ (X @ beta - Y)
    Sc, Sd = _gram_sqrts(beta, eta_a * eta_w, 0.25 * float(delta) ** 2)
    return -(G @ Sc + Sd @ G)


def integrate_isotropic_beta(
    beta0: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    delta: float,
    t_eval: Sequence[float],
    eta_a: float = 1.0,
    eta_w: float = 1.0,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    method: str = "DOP853",
) -> np.ndarray:
    """Integrate the self-consistent beta ODE of :func:`isotropic_beta_velocity` with ``solve_ivp``.

    Exact for the wide network under Theorem 3's assumptions (Kunin et al., Sec. 4).

    Returns
    -------
    ndarray, shape (len(t_eval), d, c)
    """
    beta0 = _mat("beta0", beta0)
    d, c = beta0.shape
    X, Y = _check_XY(X, Y, d, c)
    t_eval = np.asarray(t_eval, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval.size == 0 or np.any(np.diff(t_eval) < 0) or t_eval[0] < 0:
        raise ValueError("t_eval must be a non-empty, non-decreasing 1-D array of times >= 0.")

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        return isotropic_beta_velocity(y.reshape(d, c), X, Y, delta, eta_a, eta_w).ravel()

    sol = solve_ivp(rhs, (0.0, float(t_eval[-1])), beta0.ravel(), t_eval=t_eval, rtol=rtol,
                    atol=atol, method=method)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return sol.y.T.reshape(-1, d, c)


def hyperbolic_entropy(x: np.ndarray, delta: float) -> np.ndarray:
    """Hyperbolic entropy ``q_delta`` (Kunin et al., Theorem 11; ``eta_a = eta_w = 1``).

    ``q_delta(x) = (2x asinh(2x/|delta|) - sqrt(4x^2 + delta^2) + |delta|) / 4``; its second
    derivative is ``1 / sqrt(delta^2 + 4 x^2)``, the inverse of the singular-value preconditioner
    of Lemma 10.  Requires ``delta != 0``.
    """
    delta = float(delta)
    if delta == 0:
        raise ValueError("hyperbolic_entropy needs delta != 0 (Theorem 11); use the l1 limit instead.")
    x = np.asarray(x, dtype=np.float64)
    ad = abs(delta)
    return 0.25 * (2 * x * np.arcsinh(2 * x / ad) - np.sqrt(4 * x**2 + delta**2) + ad)


def hyperbolic_entropy_grad(x: np.ndarray, delta: float) -> np.ndarray:
    """Derivative ``q_delta'(x) = asinh(2x/|delta|) / 2`` of :func:`hyperbolic_entropy`."""
    delta = float(delta)
    if delta == 0:
        raise ValueError("hyperbolic_entropy_grad needs delta != 0 (Theorem 11).")
    return 0.5 * np.arcsinh(2 * np.asarray(x, dtype=np.float64) / abs(delta))


# ----------------------------------------------------------------------------- deep networks


def _check_deep(Ws: Sequence[np.ndarray], a: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    if len(Ws) < 1:
        raise ValueError("Ws must contain at least one weight matrix W_1 (depth L >= 1).")
    Ws = [_mat(f"Ws[{i}]", W) for i, W in enumerate(Ws)]
    a = _mat("a", a, ndim=1)
    for i in range(1, len(Ws)):
        if Ws[i].shape[1] != Ws[i - 1].shape[0]:
            raise ValueError(f"Ws[{i}] has shape {Ws[i].shape}, incompatible with Ws[{i-1}].")
    if Ws[-1].shape[0] != a.shape[0]:
        raise ValueError(f"a must have length {Ws[-1].shape[0]} (width of W_L), got {a.shape[0]}.")
    return Ws, a


def deep_linear_beta(Ws: Sequence[np.ndarray], a: np.ndarray) -> np.ndarray:
    """Predictor ``beta = W_1^T ... W_L^T a`` of ``f(x) = a^T W_L ... W_1 x`` (Kunin et al., Sec. 4)."""
    Ws, a = _check_deep(Ws, a)
    v = a
    for W in reversed(Ws):
        v = W.T @ v
    return v


def deep_linear_isotropic_init(
    a: np.ndarray, L: int, delta: float, rng: np.random.Generator | int | None = None
) -> list[np.ndarray]:
    """Weights ``[W_1, ..., W_L]`` (all ``h x h``) meeting Kunin et al., Definition 12.

    ``a a^T - W_L W_L^T = delta I_h`` and ``W_{l+1}^T W_{l+1} = W_l W_l^T``.  Built as
    ``W_l = sqrt(P_l) O_l`` with random orthogonal ``O_l``, ``P_L = a a^T - delta I`` and
    ``P_{l-1} = O_l^T P_l O_l``.  Needs ``delta <= 0`` when ``h >= 2`` (``delta <= a^2`` when
    ``h = 1``).  ``delta = 0`` gives the exactly balanced rank-one (rich) initialization.
    """
    a = _mat("a", a, ndim=1)
    L = int(L)
    if L < 1:
        raise ValueError(f"L must be >= 1, got {L}.")
    h = a.shape[0]
    P = np.outer(a, a) - float(delta) * np.eye(h)
    if np.linalg.eigvalsh(P).min() < -1e-12 * max(1.0, abs(delta)):
        raise ValueError("Definition 12 needs a a^T - delta I to be PSD: use delta <= 0 (h >= 2).")
    rng = np.random.default_rng(rng)
    Ws: list[np.ndarray] = [np.empty(0)] * L
    for idx in range(L - 1, -1, -1):
        O = _orthonormal_rows(rng, h, h)
        Ws[idx] = _sym_sqrt(P) @ O
        P = O.T @ P @ O
    return Ws


def deep_linear_M(W1: np.ndarray, a: np.ndarray, delta: float, L: int) -> np.ndarray:
    """Preconditioner ``M`` with ``dbeta/dt = -M X^T rho`` for the deep network (Kunin et al., Lemma 14).

    ``M = (W_1^T W_1)^L + ||a||^2 sum_{l=0}^{L-1} (||a||^2 - delta)^l (W_1^T W_1)^{L-1-l}``,
    valid under Definition 12 (isotropic init, all learning rates 1).  Equals ``J J^T`` with
    ``J = d beta / d theta``.
    """
    W1 = _mat("W1", W1)
    a = _mat("a", a, ndim=1)
    L = int(L)
    if L < 1:
        raise ValueError(f"L must be >= 1, got {L}.")
    G = W1.T @ W1
    a2 = float(a @ a)
    d = G.shape[0]
    powers = [np.eye(d)]
    for _ in range(L):
        powers.append(powers[-1] @ G)
    M = powers[L].copy()
    for l in range(L):
        M += a2 * (a2 - float(delta)) ** l * powers[L - 1 - l]
    return M


def deep_linear_M_rich(beta: np.ndarray, L: int) -> np.ndarray:
    """Rich-limit preconditioner ``M = ||b||^(2L/(L+1)) I + L ||b||^(-2/(L+1)) b b^T`` (Kunin et al., Thm 15 proof).

    Obtained from Lemma 14 with ``delta = 0``, ``||a||^2 = ||beta||^(2/(L+1))`` and
    ``W_1^T W_1 = ||beta||^(-2L/(L+1)) beta beta^T``.  Its inverse is
    ``g(beta) grad^2 Phi(beta)`` with ``g = ||beta||^(-L/(L+1))`` and ``Phi`` from
    :func:`deep_linear_Q`.  (The extracted proof prints ``+ L/(L+1)`` in the Sherman-Morrison
    inverse; the correct sign, implemented in the tests, is ``-``.)
    """
    beta = _mat("beta", beta, ndim=1)
    L = int(L)
    if L < 1:
        raise ValueError(f"L must be >= 1, got {L}.")
    nb = float(np.linalg.norm(beta))
    if nb == 0:
        raise ValueError("deep_linear_M_rich needs beta != 0 (Theorem 15 assumes ||beta(t)|| > 0).")
    return nb ** (2 * L / (L + 1)) * np.eye(beta.size) + L * nb ** (-2 / (L + 1)) * np.outer(beta, beta)


def deep_linear_Q(beta: np.ndarray, beta0: np.ndarray, L: int) -> float:
    """Rich-regime inductive bias of a depth-(L+1) linear network (Kunin et al., Sec. 4 / Theorem 15).

    ``Q(beta) = (L+1)/(L+2) ||beta||^((L+2)/(L+1)) - ||beta0||^(-L/(L+1)) beta0^T beta``,
    i.e. ``Phi(beta) - grad Phi(beta0)^T beta`` with ``Phi(beta) = (L+1)/(L+2) ||beta||^((L+2)/(L+1))``.
    The paper derives it in the limit ``delta -> 0`` of the isotropic init (Definition 12); for
    ``delta != 0`` only the preconditioner (:func:`deep_linear_M`) is given.
    """
    beta = _mat("beta", beta, ndim=1)
    beta0 = _mat("beta0", beta0, ndim=1)
    if beta.shape != beta0.shape:
        raise ValueError(f"beta and beta0 must have the same shape, got {beta.shape} and {beta0.shape}.")
    L = int(L)
    if L < 0:
        raise ValueError(f"L must be >= 0, got {L}.")
    n0 = float(np.linalg.norm(beta0))
    if n0 == 0:
        raise ValueError("deep_linear_Q needs beta0 != 0 (Theorem 15 assumes ||beta(0)|| > 0).")
    q = (L + 2) / (L + 1)
    return float(np.linalg.norm(beta) ** q / q - n0 ** (q - 2) * beta0 @ beta)


def deep_linear_Q_grad(beta: np.ndarray, beta0: np.ndarray, L: int) -> np.ndarray:
    """Gradient ``||beta||^(-L/(L+1)) beta - ||beta0||^(-L/(L+1)) beta0`` of :func:`deep_linear_Q`."""
    beta = _mat("beta", beta, ndim=1)
    beta0 = _mat("beta0", beta0, ndim=1)
    if beta.shape != beta0.shape:
        raise ValueError(f"beta and beta0 must have the same shape, got {beta.shape} and {beta0.shape}.")
    L = int(L)
    n0 = float(np.linalg.norm(beta0))
    if n0 == 0:
        raise ValueError("deep_linear_Q_grad needs beta0 != 0.")
    p = -L / (L + 1)
    nb = float(np.linalg.norm(beta))
    gb = nb**p * beta if nb > 0 else np.zeros_like(beta)
    return gb - n0**p * beta0


def deep_linear_implicit_bias_solution(
    X: np.ndarray, y: np.ndarray, beta0: np.ndarray, L: int, tol: float = 1e-13
) -> np.ndarray:
    """``argmin_beta Q(beta) s.t. X beta = y`` for :func:`deep_linear_Q` (Kunin et al., Theorem 15).

    Solved through the smooth convex dual.  With ``Phi(beta) = ||beta||^q / q``,
    ``q = (L+2)/(L+1)``, the conjugate is ``Phi*(g) = ||g||^(L+2)/(L+2)`` and
    ``grad Phi*(g) = ||g||^L g``.  The KKT condition ``grad Q(beta) = X^T nu`` gives
    ``beta(nu) = grad Phi*(grad Phi(beta0) + X^T nu)``, and ``nu`` minimizes
    ``Phi*(grad Phi(beta0) + X^T nu) - y^T nu`` (Newton trust region, exact Hessian).

    Parameters
    ----------
    X : ndarray, shape (n, d)
        Full row rank (``n <= d``) so that ``X beta = y`` is feasible.
    y : ndarray, shape (n,)
    beta0 : ndarray, shape (d,)
        Initial predictor (non-zero).
    L : int
        Number of hidden weight matrices (network depth L + 1).
    """
    X = _mat("X", X)
    y = _mat("y", np.ravel(y), ndim=1)
    beta0 = _mat("beta0", beta0, ndim=1)
    n, d = X.shape
    if y.shape[0] != n or beta0.shape[0] != d:
        raise ValueError(f"Need X (n, d), y (n,), beta0 (d,); got {X.shape}, {y.shape}, {beta0.shape}.")
    if np.linalg.matrix_rank(X) < n:
        raise ValueError("X must have full row rank (n <= d, independent rows) for X beta = y to be feasible.")
    L = int(L)
    if L < 0:
        raise ValueError(f"L must be >= 0, got {L}.")
    n0 = float(np.linalg.norm(beta0))
    if n0 == 0:
        raise ValueError("beta0 must be non-zero (Theorem 15 assumes ||beta(0)|| > 0).")
    g0 = n0 ** (-L / (L + 1)) * beta0

    def beta_of(nu: np.ndarray) -> np.ndarray:
        g = g0 + X.T @ nu
        return np.linalg.norm(g) ** L * g

    def fun(nu: np.ndarray) -> float:
        g = g0 + X.T @ nu
        return float(np.linalg.norm(g) ** (L + 2) / (L + 2) - y @ nu)

    def jac(nu: np.ndarray) -> np.ndarray:
        return X @ beta_of(nu) - y

    def hess(nu: np.ndarray) -> np.ndarray:
        g = g0 + X.T @ nu
        ng = np.linalg.norm(g)
        H = ng**L * np.eye(d)
        if L > 0 and ng > 0:
            H = H + L * ng ** (L - 2) * np.outer(g, g)
        return X @ H @ X.T

    res = minimize(fun, np.zeros(n), jac=jac, hess=hess, method="trust-exact",
                   options={"gtol": tol * max(1.0, float(np.linalg.norm(y)))})
    beta = beta_of(res.x)
    if np.linalg.norm(X @ beta - y) > 1e-8 * max(1.0, float(np.linalg.norm(y))):
        raise RuntimeError(f"dual Newton solve did not converge: {res.message}")
    return beta
