"""Two-layer piecewise-linear (ReLU / leaky ReLU) networks without biases.

Implements Section "Piecewise Linear Networks" of Kunin et al., *Get rich quick* (NeurIPS 2024)
and its appendix "Dynamics of a two-layer piecewise linear network".

Conventions (the paper's)
-------------------------
* ``f(x) = a^T sigma(W x) = sum_k a_k sigma(w_k^T x)`` with ``W`` of shape ``(h, d)`` (rows
  ``w_k``), ``a`` of shape ``(h,)`` and ``sigma(z) = max(z, gamma z)``, ``gamma in [0, 1)``
  (``gamma = 0`` is ReLU, ``gamma in (0, 1)`` leaky ReLU).
* Data ``X`` of shape ``(n, d)``; loss ``1/2 sum_i (f(x_i) - y_i)^2``; residual
  ``rho_i = f(x_i) - y_i``; gradient flow ``da/dt = -eta_a dL/da``, ``dW/dt = -eta_w dL/dW``.
* Activation matrix ``C`` of shape ``(h, n)``, ``c_ki = sigma'(w_k^T x_i)``: 1 on the active
  side, ``gamma`` on the inactive side.  At an exact kink ``w_k^T x_i = 0`` the paper allows any
  subgradient in ``[gamma, 1]``; this module uses ``gamma`` there (PyTorch's convention for
  ``relu`` and ``leaky_relu``).
* Per-neuron quantities: ``delta_k = eta_w a_k^2 - eta_a ||w_k||^2`` (conserved),
  ``beta_k = a_k w_k``, ``mu_k = sgn(a_k) ||beta_k|| = a_k ||w_k||`` and
  ``beta_hat_k = sgn(a_k) beta_k / ||beta_k|| = w_k / ||w_k||`` (signed spherical coordinates),
  ``M_k = eta_w a_k^2 I_d + eta_a w_k w_k^T``, ``xi_k = sum_i c_ki x_i rho_i``.

All routines are pure NumPy in float64 and vectorised over neurons and samples.
"""

from __future__ import annotations

import numpy as np

from ._checks import as_finite_array as _mat, positive_rate as _eta

__all__ = [
    "activation",
    "activation_matrix",
    "forward",
    "neuron_deltas",
    "neuron_betas",
    "signed_spherical",
    "neuron_preconditioners",
    "neuron_preconditioners_from_beta",
    "piecewise_linear_ntk",
    "param_velocity",
    "xi",
    "beta_velocity",
    "spherical_velocity",
]


def _gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not (0.0 <= gamma < 1.0):
        raise ValueError(f"gamma (leaky slope) must lie in [0, 1), got {gamma}; use 0 for ReLU.")
    return gamma


def _check_Wa(W: object, a: object) -> tuple[np.ndarray, np.ndarray]:
    W = _mat("W", W, 2)
    a = _mat("a", np.ravel(a) if np.ndim(a) == 2 and 1 in np.shape(a) else a, 1)
    if a.shape[0] != W.shape[0]:
        raise ValueError(f"a must have length h={W.shape[0]} (rows of W), got {a.shape[0]}.")
    return W, a


def _check_X(X: object, d: int, name: str = "X") -> np.ndarray:
    X = _mat(name, X, 2)
    if X.shape[1] != d:
        raise ValueError(f"{name} must have shape (n, {d}) to match W's input dimension, got {X.shape}.")
    return X


def activation(z: np.ndarray, gamma: float = 0.0) -> np.ndarray:
    """``sigma(z) = max(z, gamma z)`` (Kunin et al., Sec. 5)."""
    gamma = _gamma(gamma)
    z = np.asarray(z, dtype=np.float64)
    return np.where(z > 0, z, gamma * z)


def activation_matrix(W: np.ndarray, X: np.ndarray, gamma: float = 0.0) -> np.ndarray:
    """Activation matrix ``C`` with ``c_ki = sigma'(w_k^T x_i)`` (Kunin et al., Sec. 5); shape ``(h, n)``.

    Entries are 1 where ``w_k^T x_i > 0`` and ``gamma`` elsewhere (``gamma`` at exact kinks).
    """
    W = _mat("W", W, 2)
    X = _check_X(X, W.shape[1])
    gamma = _gamma(gamma)
    return np.where(W @ X.T > 0, 1.0, gamma)


def forward(W: np.ndarray, a: np.ndarray, X: np.ndarray, gamma: float = 0.0) -> np.ndarray:
    """Network output ``f(x_i) = sum_k a_k sigma(w_k^T x_i) = sum_k a_k c_ki w_k^T x_i``; shape ``(n,)``."""
    W, a = _check_Wa(W, a)
    X = _check_X(X, W.shape[1])
    return activation(X @ W.T, gamma) @ a


def neuron_deltas(W: np.ndarray, a: np.ndarray, eta_a: float = 1.0, eta_w: float = 1.0) -> np.ndarray:
    """Conserved per-neuron quantities ``delta_k = eta_w a_k^2 - eta_a ||w_k||^2`` (Kunin et al., Sec. 5)."""
    W, a = _check_Wa(W, a)
    return _eta("eta_w", eta_w) * a**2 - _eta("eta_a", eta_a) * np.einsum("kd,kd->k", W, W)


def neuron_betas(W: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Per-neuron linear coefficients ``beta_k = a_k w_k`` (Kunin et al., Sec. 5); shape ``(h, d)``."""
    W, a = _check_Wa(W, a)
    return a[:, None] * W


def signed_spherical(W: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed spherical coordinates ``(mu_k, beta_hat_k)`` of ``beta_k = mu_k beta_hat_k`` (Kunin et al., Sec. 5).

    ``mu_k = sgn(a_k) ||beta_k|| = a_k ||w_k||`` and ``beta_hat_k = sgn(a_k) beta_k/||beta_k||
    = w_k/||w_k||`` (the unit normal of the neuron's active halfspace).

    Returns
    -------
    mu : ndarray, shape (h,)
    beta_hat : ndarray, shape (h, d)

    Raises
    ------
    ValueError
        If some ``w_k = 0`` (direction undefined).
    """
    W, a = _check_Wa(W, a)
    nw = np.linalg.norm(W, axis=1)
    if np.any(nw == 0):
        raise ValueError("signed_spherical needs every w_k != 0; the direction of a dead neuron is undefined.")
    return a * nw, W / nw[:, None]


def neuron_preconditioners(
    W: np.ndarray, a: np.ndarray, eta_a: float = 1.0, eta_w: float = 1.0
) -> np.ndarray:
    """``M_k = eta_w a_k^2 I_d + eta_a w_k w_k^T`` (Kunin et al., eq. nonlinear-gradient-flow-beta); shape ``(h, d, d)``."""
    W, a = _check_Wa(W, a)
    eta_a, eta_w = _eta("eta_a", eta_a), _eta("eta_w", eta_w)
    d = W.shape[1]
    return eta_w * a[:, None, None] ** 2 * np.eye(d) + eta_a * W[:, :, None] * W[:, None, :]


def neuron_preconditioners_from_beta(
    betas: np.ndarray, deltas: np.ndarray, eta_a: float = 1.0, eta_w: float = 1.0
) -> np.ndarray:
    """``M_k`` in terms of ``beta_k`` and ``delta_k`` (Kunin et al., appendix, two-layer piecewise linear).

    ``M_k = (s_k + delta_k)/2 I_d + (s_k - delta_k)/2 beta_k beta_k^T / ||beta_k||^2`` with
    ``s_k = sqrt(delta_k^2 + 4 eta_a eta_w ||beta_k||^2)``; requires every ``beta_k != 0``.
    """
    betas = _mat("betas", betas, 2)
    deltas = _mat("deltas", deltas, 1)
    if deltas.shape[0] != betas.shape[0]:
        raise ValueError(f"deltas must have length h={betas.shape[0]}, got {deltas.shape[0]}.")
    eta_a, eta_w = _eta("eta_a", eta_a), _eta("eta_w", eta_w)
    nb2 = np.einsum("kd,kd->k", betas, betas)
    if np.any(nb2 == 0):
        raise ValueError("neuron_preconditioners_from_beta needs every beta_k != 0; use neuron_preconditioners(W, a).")
    s = np.sqrt(deltas**2 + 4 * eta_a * eta_w * nb2)
    d = betas.shape[1]
    proj = betas[:, :, None] * betas[:, None, :] / nb2[:, None, None]
    return 0.5 * (s + deltas)[:, None, None] * np.eye(d) + 0.5 * (s - deltas)[:, None, None] * proj


def piecewise_linear_ntk(
    W: np.ndarray,
    a: np.ndarray,
    X1: np.ndarray,
    X2: np.ndarray | None = None,
    gamma: float = 0.0,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
) -> np.ndarray:
    """NTK ``K_ij = sum_k c_ki x_i^T M_k x_j c_kj`` (Kunin et al., Sec. 5 / appendix).

    This is the learning-rate-weighted empirical NTK
    ``sum_p eta_p (df(x_i)/dtheta_p)(df(x_j)/dtheta_p)`` of the network.  Evaluated in
    ``O(h n1 n2)`` as ``eta_w (X1 X2^T) * (C1^T diag(a^2) C2) + eta_a (C1 * Z1)^T (C2 * Z2)``
    with ``Z = W X^T`` (``*`` elementwise).

    Parameters
    ----------
    W : ndarray, shape (h, d)
    a : ndarray, shape (h,)
    X1 : ndarray, shape (n1, d)
    X2 : ndarray, shape (n2, d), optional
        Defaults to ``X1``.
    gamma : float
        Leaky slope, ``0`` for ReLU.

    Returns
    -------
    ndarray, shape (n1, n2)
    """
    W, a = _check_Wa(W, a)
    d = W.shape[1]
    X1 = _check_X(X1, d, "X1")
    X2 = X1 if X2 is None else _check_X(X2, d, "X2")
    gamma = _gamma(gamma)
    eta_a, eta_w = _eta("eta_a", eta_a), _eta("eta_w", eta_w)
    Z1, Z2 = W @ X1.T, W @ X2.T
    C1, C2 = np.where(Z1 > 0, 1.0, gamma), np.where(Z2 > 0, 1.0, gamma)
    K_w = (X1 @ X2.T) * ((C1 * a[:, None] ** 2).T @ C2)
    K_a = (C1 * Z1).T @ (C2 * Z2)
    return eta_w * K_w + eta_a * K_a


def xi(W: np.ndarray, a: np.ndarray, X: np.ndarray, y: np.ndarray, gamma: float = 0.0) -> np.ndarray:
    """Driving vectors ``xi_k = sum_i c_ki x_i rho_i`` with ``rho = f(X) - y`` (Kunin et al., Sec. 5); shape ``(h, d)``."""
    W, a = _check_Wa(W, a)
    X = _check_X(X, W.shape[1])
    y = _mat("y", np.ravel(y), 1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have length n={X.shape[0]}, got {y.shape[0]}.")
    rho = forward(W, a, X, gamma) - y
    return (activation_matrix(W, X, gamma) * rho) @ X


def param_velocity(
    W: np.ndarray,
    a: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    gamma: float = 0.0,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient flow ``(dW/dt, da/dt)`` (Kunin et al., eq. nonlinear-gradient-flow-a-w).

    ``da_k/dt = -eta_a w_k^T xi_k`` and ``dw_k/dt = -eta_w a_k xi_k``.
    """
    eta_a, eta_w = _eta("eta_a", eta_a), _eta("eta_w", eta_w)
    Xi = xi(W, a, X, y, gamma)
    W, a = _check_Wa(W, a)
    return -eta_w * a[:, None] * Xi, -eta_a * np.einsum("kd,kd->k", W, Xi)


def beta_velocity(
    W: np.ndarray,
    a: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    gamma: float = 0.0,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
) -> np.ndarray:
    """``dbeta_k/dt = -M_k xi_k`` (Kunin et al., eq. nonlinear-gradient-flow-beta); shape ``(h, d)``."""
    Xi = xi(W, a, X, y, gamma)
    return -np.einsum("kde,ke->kd", neuron_preconditioners(W, a, eta_a, eta_w), Xi)


def spherical_velocity(
    W: np.ndarray,
    a: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    gamma: float = 0.0,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed spherical dynamics ``(dmu_k/dt, dbeta_hat_k/dt)`` (Kunin et al., Sec. 5).

    ``dmu_k/dt = -sqrt(delta_k^2 + 4 eta_a eta_w mu_k^2) beta_hat_k^T xi_k`` and
    ``dbeta_hat_k/dt = -(sqrt(delta_k^2 + 4 eta_a eta_w mu_k^2) + delta_k)/(2 mu_k)
    (I - beta_hat_k beta_hat_k^T) xi_k``; requires every ``a_k != 0`` and ``w_k != 0``.
    """
    W, a = _check_Wa(W, a)
    if np.any(a == 0):
        raise ValueError("spherical_velocity needs every a_k != 0 (mu_k appears in a denominator).")
    eta_a, eta_w = _eta("eta_a", eta_a), _eta("eta_w", eta_w)
    mu, bh = signed_spherical(W, a)
    delta = neuron_deltas(W, a, eta_a, eta_w)
    Xi = xi(W, a, X, y, gamma)
    s = np.sqrt(delta**2 + 4 * eta_a * eta_w * mu**2)
    proj_xi = np.einsum("kd,kd->k", bh, Xi)
    mu_dot = -s * proj_xi
    bh_dot = -((s + delta) / (2 * mu))[:, None] * (Xi - proj_xi[:, None] * bh)
    return mu_dot, bh_dot
