"""Phase-diagram coordinates of two-layer ReLU networks at infinite width.

Implements the pure-math parts of Luo, Xu, Ma & Zhang, *Phase diagram for two-layer ReLU
neural networks at infinite-width limit* (JMLR 2021):

* the model ``f(x) = (1/alpha) sum_k a_k relu(w_k . x)`` with ``a_k ~ N(0, beta1^2)``,
  ``w_k ~ N(0, beta2^2 I)`` (eqs. (1), (3), (4)) and its normalization (eq. (7)) into
  the normalized model (eq. (9)) with scaling parameters ``kappa = beta1 beta2 / alpha``
  and ``kappa' = beta1 / beta2`` (eq. (8)) and mobility matrix (eq. (13));
* the coordinates ``gamma = lim -log kappa / log m``, ``gamma' = lim -log kappa' / log m``
  (eq. (14)), exactly for power laws and by log-log regression for general callables;
* Table 1 (LeCun, He, Xavier, NTK, mean-field, E et al.);
* the regime map (Section 4.1, Theorems 6 and 8): linear iff ``gamma < 1`` or
  ``gamma' > gamma - 1``; condensed iff ``gamma > 1`` and ``gamma' < gamma - 1``;
  critical on the boundary ``gamma = 1`` (``gamma' <= 0``), ``gamma' = gamma - 1``
  (``gamma' >= 0``);
* the relative distance RD (eq. (16)), its slope over widths S_w (eq. (19)) and the
  condensation-map quantities ``A_k = |a_k| ||w_k||``, ``w_hat_k = w_k / ||w_k||``
  (Section 3.1, Figs. 2, 6, 7).

Pure NumPy, float64, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

import numpy as np

__all__ = [
    "SCHEMES",
    "kappa",
    "kappa_prime",
    "coordinates_from_exponents",
    "coordinates_from_callables",
    "scheme_scalings",
    "scheme_coordinates",
    "e_et_al_coordinates",
    "boundary_gamma",
    "regime",
    "normalize_parameters",
    "relative_distance",
    "slope_over_widths",
    "condensation_features",
    "orientation_angle",
    "projection_feature",
]

Scaling = Callable[[float], float]

#: Scheme names of Luo et al. Table 1 understood by :func:`scheme_coordinates`.
SCHEMES: tuple[str, ...] = ("lecun", "he", "xavier", "ntk", "mean-field", "e-et-al")

_ALIASES = {
    "lecun": "lecun",
    "he": "he",
    "kaiming": "he",
    "xavier": "xavier",
    "glorot": "xavier",
    "ntk": "ntk",
    "mean-field": "mean-field",
    "meanfield": "mean-field",
    "mf": "mean-field",
    "e-et-al": "e-et-al",
    "e": "e-et-al",
}


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"scheme name must be a string from {SCHEMES}.")
    key = name.strip().lower().replace("_", "-").replace(" ", "-").rstrip(".")
    if key not in _ALIASES:
        raise ValueError(f"unknown scheme {name!r}; use one of {SCHEMES}.")
    return _ALIASES[key]


def _positive(x, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{what} must be positive and finite.")
    return a


def _scalar_or_array(a: np.ndarray):
    return float(a) if a.ndim == 0 else a


# ----------------------------------------------------------------------------------------
# kappa, kappa' (eq. (8)) and gamma, gamma' (eq. (14))
# ----------------------------------------------------------------------------------------
def kappa(alpha, beta1, beta2):
    """Energetic scaling parameter ``kappa = beta1 beta2 / alpha``, Luo et al. eq. (8).

    Parameters
    ----------
    alpha, beta1, beta2 : float or array_like
        Output scale ``alpha`` (eq. (1)) and initialization stds ``beta1`` of ``a_k`` and
        ``beta2`` of ``w_k`` (eq. (4)); positive, broadcastable.

    Returns
    -------
    float or ndarray
    """
    a, b1, b2 = _positive(alpha, "alpha"), _positive(beta1, "beta1"), _positive(beta2, "beta2")
    return _scalar_or_array(b1 * b2 / a)


def kappa_prime(beta1, beta2):
    """Dynamical scaling parameter ``kappa' = beta1 / beta2``, Luo et al. eq. (8).

    Parameters
    ----------
    beta1, beta2 : float or array_like
        Positive initialization stds (eq. (4)).

    Returns
    -------
    float or ndarray
    """
    b1, b2 = _positive(beta1, "beta1"), _positive(beta2, "beta2")
    return _scalar_or_array(b1 / b2)


def coordinates_from_exponents(alpha_exp: float, beta1_exp: float, beta2_exp: float) -> tuple[float, float]:
    """Exact ``(gamma, gamma')`` (Luo et al. eq. (14)) for power laws.

    With ``alpha ~ C_a m^alpha_exp``, ``beta1 ~ C_1 m^beta1_exp``, ``beta2 ~ C_2 m^beta2_exp``
    (any positive constants ``C``), ``kappa ~ m^(beta1_exp + beta2_exp - alpha_exp)`` and
    ``kappa' ~ m^(beta1_exp - beta2_exp)``, hence exactly::

        gamma  = alpha_exp - beta1_exp - beta2_exp,
        gamma' = beta2_exp - beta1_exp.

    Example: NTK scaling ``alpha = sqrt(m)``, ``beta1 = beta2 = 1`` gives
    ``coordinates_from_exponents(0.5, 0, 0) == (0.5, 0.0)``.

    Returns
    -------
    (gamma, gamma_prime) : tuple of float
    """
    p = [alpha_exp, beta1_exp, beta2_exp]
    if not all(isinstance(x, Real) and np.isfinite(float(x)) for x in p):
        raise TypeError("exponents must be finite real numbers (the powers of m in alpha, beta1, beta2).")
    pa, p1, p2 = (float(x) for x in p)
    return pa - p1 - p2, p2 - p1


def _eval(f: Scaling, ms: np.ndarray, what: str) -> np.ndarray:
    if not callable(f):
        raise TypeError(f"{what} must be a callable of the width m (use coordinates_from_exponents for powers).")
    vals = np.array([float(f(float(m))) for m in ms])
    if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise ValueError(f"{what}(m) must be positive and finite on the regression window.")
    return vals


def _ls_slope(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    return float(np.dot(xc, y - y.mean()) / np.dot(xc, xc))


def coordinates_from_callables(
    alpha: Scaling,
    beta1: Scaling,
    beta2: Scaling,
    *,
    m_min: float = 1e8,
    m_max: float = 1e16,
    num: int = 33,
    tol: float = 1e-4,
) -> tuple[float, float]:
    """``(gamma, gamma')`` of Luo et al. eq. (14) for general scalings ``alpha(m)``,
    ``beta1(m)``, ``beta2(m)``, by log-log regression over large widths.

    Method: on ``num`` widths log-spaced in ``[m_min, m_max]``, ``gamma`` is the
    least-squares slope of ``-log kappa(m)`` against ``log m`` (``gamma'`` likewise with
    ``kappa'``) over the upper half of the window (the largest widths). For
    ``kappa = C m^-gamma (1 + o(1))`` this slope tends to the limit in eq. (14) while
    cancelling the constant ``C``, which the ratio ``-log kappa / log m`` would only
    remove at rate ``1/log m``. Convergence is checked: the slope over the lower half of
    the window must agree within ``tol``, otherwise ``ValueError`` (e.g. for
    ``beta = 1/log m``, whose ``gamma = 0`` is approached too slowly to estimate).

    Parameters
    ----------
    alpha, beta1, beta2 : callable
        Positive functions of the width ``m`` (called with Python floats).
    m_min, m_max : float
        Regression window, ``1 <= m_min < m_max``.
    num : int
        Number of widths (>= 8).
    tol : float
        Maximum allowed difference between the lower- and upper-half slopes.

    Returns
    -------
    (gamma, gamma_prime) : tuple of float
    """
    if not (np.isfinite(m_min) and np.isfinite(m_max) and 1 <= m_min < m_max):
        raise ValueError("need 1 <= m_min < m_max < inf for the regression window.")
    if int(num) < 8:
        raise ValueError("num must be >= 8 widths.")
    ms = np.geomspace(m_min, m_max, int(num))
    a, b1, b2 = _eval(alpha, ms, "alpha"), _eval(beta1, ms, "beta1"), _eval(beta2, ms, "beta2")
    x = np.log(ms)
    out = []
    for label, y in (("gamma", -np.log(b1 * b2 / a)), ("gamma'", -np.log(b1 / b2))):
        h = len(ms) // 2
        lo, hi = _ls_slope(x[: h + 1], y[: h + 1]), _ls_slope(x[h:], y[h:])
        if abs(hi - lo) > tol:
            raise ValueError(
                f"{label} has not converged on m in [{m_min:.0e}, {m_max:.0e}] (slopes {lo:.6g} vs {hi:.6g});"
                " the limit in eq. (14) may not exist or converge too slowly: use larger m or"
                " coordinates_from_exponents."
            )
        out.append(hi)
    return out[0], out[1]


# ----------------------------------------------------------------------------------------
# Table 1
# ----------------------------------------------------------------------------------------
def scheme_scalings(
    name: str,
    *,
    d: int = 1,
    beta_exponent: float | None = None,
    beta: Scaling | None = None,
) -> tuple[Scaling, Scaling, Scaling]:
    """``(alpha(m), beta1(m), beta2(m))`` of an initialization scheme, Luo et al. Table 1.

    ============  ==========  =================  =================
    scheme        alpha       beta1              beta2
    ============  ==========  =================  =================
    lecun         1           sqrt(1/m)          sqrt(1/d)
    he            1           sqrt(2/m)          sqrt(2/d)
    xavier        1           sqrt(2/(m+1))      sqrt(2/(m+d))
    ntk           sqrt(m)     1                  1
    mean-field    m           1                  1
    e-et-al       1           beta(m)            1
    ============  ==========  =================  =================

    Parameters
    ----------
    name : str
        One of :data:`SCHEMES`.
    d : int
        Input dimension (enters LeCun, He, Xavier; does not affect ``gamma, gamma'``).
    beta_exponent : float, optional
        For ``"e-et-al"``: ``beta(m) = m^(-beta_exponent)``.
    beta : callable, optional
        For ``"e-et-al"``: a general ``beta(m)`` instead of ``beta_exponent``.

    Returns
    -------
    tuple of three callables of ``m``
    """
    key = _canonical(name)
    if int(d) < 1:
        raise ValueError("d (input dimension) must be a positive integer.")
    d = int(d)
    one = lambda m: 1.0  # noqa: E731
    if key != "e-et-al" and (beta_exponent is not None or beta is not None):
        raise ValueError("beta_exponent/beta only apply to the 'e-et-al' family.")
    if key == "lecun":
        return one, lambda m: np.sqrt(1.0 / m), lambda m: np.sqrt(1.0 / d)
    if key == "he":
        return one, lambda m: np.sqrt(2.0 / m), lambda m: np.sqrt(2.0 / d)
    if key == "xavier":
        return one, lambda m: np.sqrt(2.0 / (m + 1.0)), lambda m: np.sqrt(2.0 / (m + d))
    if key == "ntk":
        return lambda m: np.sqrt(m), one, one
    if key == "mean-field":
        return lambda m: float(m), one, one
    # E et al. (2020): alpha = 1, beta1 = beta, beta2 = 1.
    if (beta_exponent is None) == (beta is None):
        raise ValueError("the 'e-et-al' family needs exactly one of beta_exponent=s (beta = m^-s) or beta=callable.")
    if beta is None:
        s = float(beta_exponent)
        if not np.isfinite(s):
            raise ValueError("beta_exponent must be finite.")
        beta = lambda m: float(m) ** (-s)  # noqa: E731
    elif not callable(beta):
        raise TypeError("beta must be a callable of m.")
    return one, beta, one


def e_et_al_coordinates(beta_exponent: float) -> tuple[float, float]:
    """Coordinates of E et al. (2020)'s family (Luo et al. Table 1, last row):
    ``alpha = 1``, ``beta1 = beta = m^-s``, ``beta2 = 1``, so ``kappa = kappa' = beta`` and
    ``gamma = gamma' = s`` (the line ``gamma = gamma'`` of Fig. 1).

    Parameters
    ----------
    beta_exponent : float
        ``s`` with ``beta(m) = m^-s`` (``s = lim log(1/beta) / log m``).

    Returns
    -------
    (gamma, gamma_prime) : tuple of float
    """
    return coordinates_from_exponents(0.0, -float(beta_exponent), 0.0)


# exponents (alpha, beta1, beta2) of m in Table 1 (d fixed)
_TABLE1_EXPONENTS = {
    "lecun": (0.0, -0.5, 0.0),
    "he": (0.0, -0.5, 0.0),
    "xavier": (0.0, -0.5, -0.5),
    "ntk": (0.5, 0.0, 0.0),
    "mean-field": (1.0, 0.0, 0.0),
}


def scheme_coordinates(name: str, *, beta_exponent: float | None = None) -> tuple[float, float]:
    """``(gamma, gamma')`` of Luo et al. Table 1.

    lecun (1/2, 1/2); he (1/2, 1/2); xavier (1, 0); ntk (1/2, 0); mean-field (1, 0);
    e-et-al (s, s) for ``beta = m^-s`` (pass ``beta_exponent=s``).

    Parameters
    ----------
    name : str
        One of :data:`SCHEMES`.
    beta_exponent : float, optional
        Required for (and only for) ``"e-et-al"``.

    Returns
    -------
    (gamma, gamma_prime) : tuple of float
    """
    key = _canonical(name)
    if key == "e-et-al":
        if beta_exponent is None:
            raise ValueError("the 'e-et-al' family needs beta_exponent=s (beta = m^-s).")
        return e_et_al_coordinates(beta_exponent)
    if beta_exponent is not None:
        raise ValueError("beta_exponent only applies to the 'e-et-al' family.")
    return coordinates_from_exponents(*_TABLE1_EXPONENTS[key])


# ----------------------------------------------------------------------------------------
# Regimes (Section 4.1, Theorems 6 and 8)
# ----------------------------------------------------------------------------------------
def boundary_gamma(gamma_prime):
    """``gamma`` of the linear/condensed boundary at a given ``gamma'`` (Luo et al.
    Section 4.1.1): ``gamma = 1`` for ``gamma' <= 0`` and ``gamma = gamma' + 1`` for
    ``gamma' > 0``, i.e. ``gamma_c(gamma') = 1 + max(gamma', 0)``.

    Parameters
    ----------
    gamma_prime : float or array_like

    Returns
    -------
    float or ndarray
    """
    gp = np.asarray(gamma_prime, dtype=np.float64)
    if not np.all(np.isfinite(gp)):
        raise ValueError("gamma_prime must be finite.")
    return _scalar_or_array(1.0 + np.maximum(gp, 0.0))


def regime(gamma, gamma_prime, *, atol: float = 1e-9):
    """Dynamical regime at ``(gamma, gamma')``, Luo et al. Theorems 6 and 8 / Fig. 1.

    * ``"linear"``:    ``gamma < 1`` or ``gamma' > gamma - 1`` (Theorem 6);
    * ``"condensed"``: ``gamma > 1`` and ``gamma' < gamma - 1`` (Theorem 8);
    * ``"critical"``:  the boundary between them, ``gamma = 1`` for ``gamma' <= 0`` and
      ``gamma' = gamma - 1`` for ``gamma' >= 0`` (e.g. mean-field, Xavier).

    Equivalently: the sign of ``gamma - gamma_c(gamma')`` with
    ``gamma_c = 1 + max(gamma', 0)`` (:func:`boundary_gamma`). Points within ``atol``
    of the boundary count as critical (so ``gamma = 1.1, gamma' = 0.1`` is critical
    despite rounding in ``1.1 - 1``).

    Parameters
    ----------
    gamma, gamma_prime : float or array_like
        Broadcastable coordinates (finite).
    atol : float
        Boundary thickness (>= 0).

    Returns
    -------
    str or ndarray of str
        A string for scalar inputs, an array of strings of the broadcast shape otherwise.
    """
    g = np.asarray(gamma, dtype=np.float64)
    gp = np.asarray(gamma_prime, dtype=np.float64)
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(gp))):
        raise ValueError("gamma and gamma_prime must be finite numbers.")
    if not (np.isfinite(atol) and atol >= 0):
        raise ValueError("atol must be a finite float >= 0.")
    g, gp = np.broadcast_arrays(g, gp)
    diff = g - (1.0 + np.maximum(gp, 0.0))
    out = np.where(diff < -atol, "linear", np.where(diff > atol, "condensed", "critical"))
    return str(out) if out.ndim == 0 else out


# ----------------------------------------------------------------------------------------
# Normalized model (eqs. (7)-(13))
# ----------------------------------------------------------------------------------------
def normalize_parameters(a, W, beta1: float, beta2: float, t=None):
    """Rescaling of Luo et al. eq. (7): ``a_bar = a / beta1``, ``w_bar = w / beta2``,
    ``t_bar = t / (beta1 beta2)``.

    Under it the model ``(1/alpha) sum a_k relu(w_k . x)`` equals the normalized model
    ``kappa sum a_bar_k relu(w_bar_k . x)`` (eq. (9)), and the gradient flow (6) becomes
    the weighted flow (12) with mobility ``diag(1/kappa', kappa' I)`` (eq. (13)).

    Parameters
    ----------
    a : array_like (m,)
    W : array_like (m, d)
    beta1, beta2 : float
        Positive initialization stds (eq. (4)).
    t : float or array_like, optional
        Times to rescale.

    Returns
    -------
    (a_bar, W_bar) or (a_bar, W_bar, t_bar)
    """
    b1, b2 = float(_positive(beta1, "beta1")), float(_positive(beta2, "beta2"))
    a = np.asarray(a, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    if a.ndim != 1 or W.ndim != 2 or W.shape[0] != a.shape[0]:
        raise ValueError(f"need a of shape (m,) and W of shape (m, d); got {a.shape} and {W.shape}.")
    if t is None:
        return a / b1, W / b2
    return a / b1, W / b2, _scalar_or_array(np.asarray(t, dtype=np.float64) / (b1 * b2))


# ----------------------------------------------------------------------------------------
# RD (eq. (16)) and S_w (eq. (19))
# ----------------------------------------------------------------------------------------
def relative_distance(theta_0, theta_t):
    """Relative distance ``RD(theta_t) = ||theta_t - theta_0||_2 / ||theta_0||_2``,
    Luo et al. eq. (16) (applied to the input weights ``theta_w``; also usable for
    ``theta`` or ``theta_a`` as in Appendix D).

    Parameters
    ----------
    theta_0 : array_like
        Initial parameters (any shape; flattened). Must be non-zero.
    theta_t : array_like
        Same shape as ``theta_0`` -> a float; or with one extra leading axis (a
        trajectory ``theta_t[k]``) -> an array over that axis.

    Returns
    -------
    float or ndarray
    """
    t0 = np.asarray(theta_0, dtype=np.float64)
    tt = np.asarray(theta_t, dtype=np.float64)
    if not (np.all(np.isfinite(t0)) and np.all(np.isfinite(tt))):
        raise ValueError("theta_0 and theta_t must be finite.")
    n0 = np.linalg.norm(t0.ravel())
    if t0.size == 0 or n0 == 0:
        raise ValueError("RD is undefined for theta_0 = 0 (eq. (16) divides by ||theta_0||).")
    if tt.shape == t0.shape:
        return float(np.linalg.norm((tt - t0).ravel()) / n0)
    if tt.ndim == t0.ndim + 1 and tt.shape[1:] == t0.shape:
        diff = (tt - t0).reshape(tt.shape[0], -1)
        return np.linalg.norm(diff, axis=1) / n0
    raise ValueError(
        f"theta_t must have theta_0's shape {t0.shape} or (T, *{t0.shape}), got {tt.shape}."
    )


def slope_over_widths(widths, values, *, return_intercept: bool = False):
    """``S_w``: least-squares slope of ``log RD`` against ``log m``, Luo et al. eq. (19)
    (the finite-width estimate of ``lim log RD / log m``, as in their Figs. 3-5; the same
    slope of other relative deviations gives ``S_theta``, ``S_a`` of Appendix D).

    Parameters
    ----------
    widths : array_like (k,)
        Widths ``m`` (positive, at least two distinct).
    values : array_like (k,)
        Positive values, e.g. ``RD(theta_w^*)`` at each width.
    return_intercept : bool
        Also return the intercept ``b`` of ``log RD ~ S_w log m + b``.

    Returns
    -------
    float or (float, float)
    """
    m = np.asarray(widths, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if m.ndim != 1 or m.shape != v.shape:
        raise ValueError(f"widths and values must be 1-D of equal length, got {m.shape} and {v.shape}.")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(v))) or np.any(m <= 0) or np.any(v <= 0):
        raise ValueError("widths and values must be positive and finite (their logs are regressed).")
    x, y = np.log(m), np.log(v)
    if np.unique(x).size < 2:
        raise ValueError("need at least two distinct widths to fit a slope.")
    s = _ls_slope(x, y)
    return (s, float(y.mean() - s * x.mean())) if return_intercept else s


# ----------------------------------------------------------------------------------------
# Condensation maps (Section 3.1, Figs. 2, 6, 7)
# ----------------------------------------------------------------------------------------
def condensation_features(a, W) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude and orientation of each neuron, Luo et al. Section 3.1.

    ``A_k = |a_k| ||w_k||_2`` and ``w_hat_k = w_k / ||w_k||_2``, so that by ReLU
    homogeneity ``a_k relu(w_k . x) = sign(a_k) A_k relu(w_hat_k . x)``. Rows with
    ``w_k = 0`` have no orientation: their ``w_hat_k`` is NaN (and ``A_k = 0``).

    Parameters
    ----------
    a : array_like (m,)
        Output weights.
    W : array_like (m, d)
        Input weights (bias included as the last coordinate if used).

    Returns
    -------
    A : ndarray (m,)
    w_hat : ndarray (m, d)
    """
    a = np.asarray(a, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    if a.ndim != 1 or W.ndim != 2 or W.shape[0] != a.shape[0]:
        raise ValueError(f"need a of shape (m,) and W of shape (m, d); got {a.shape} and {W.shape}.")
    norms = np.linalg.norm(W, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        w_hat = W / norms[:, None]
    w_hat[norms == 0] = np.nan
    return np.abs(a) * norms, w_hat


def orientation_angle(W) -> np.ndarray:
    """Orientation of 2-D input weights ``w = (w_x, b)`` (1-d input with bias) as the
    angle to the x-axis in ``[-pi, pi)``, Luo et al. Fig. 2 / Fig. 6: ``atan2(b, w_x)``.

    Parameters
    ----------
    W : array_like (m, 2)
        Rows ``(w_k, b_k)`` (or unit vectors ``w_hat_k``; the angle is scale-free).

    Returns
    -------
    ndarray (m,)
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] != 2:
        raise ValueError(f"orientation angles need W of shape (m, 2) = (weight, bias), got {W.shape}.")
    ang = np.arctan2(W[:, 1], W[:, 0])
    return np.where(ang >= np.pi, ang - 2 * np.pi, ang)


def projection_feature(w_hat, p=None) -> np.ndarray:
    """Projected orientation ``I_w_hat = w_hat . p`` for high-dimensional inputs
    (Luo et al. Section 4.2, Fig. 7).

    The extracted text reads ``p = 1/sqrt(n)``; since ``p`` must be a unit reference
    direction in the weight space, we implement the default ``p = 1_D / sqrt(D)`` with
    ``D`` the dimension of ``w_hat``.

    Parameters
    ----------
    w_hat : array_like (m, D)
        Unit orientations (e.g. from :func:`condensation_features`).
    p : array_like (D,), optional
        Reference direction (normalized to unit length here).

    Returns
    -------
    ndarray (m,)
    """
    w_hat = np.asarray(w_hat, dtype=np.float64)
    if w_hat.ndim != 2:
        raise ValueError(f"w_hat must have shape (m, D), got {w_hat.shape}.")
    D = w_hat.shape[1]
    if p is None:
        p = np.full(D, 1.0 / np.sqrt(D))
    else:
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (D,) or not np.all(np.isfinite(p)) or np.linalg.norm(p) == 0:
            raise ValueError(f"p must be a non-zero finite vector of shape ({D},).")
        p = p / np.linalg.norm(p)
    return w_hat @ p
