"""Early-time linear surrogate of a two-layer network.

Implements the theory of Hu, Xiao, Adlam & Pennington, *The surprising simplicity of
the early-time learning dynamics of neural networks* (NeurIPS 2020), Section 3:

* the NTK-parameterized two-layer net ``f(x; W, v) = v^T phi(W x / sqrt(d)) / sqrt(m)``
  (eq. (1)) and its symmetric initialization (eq. (3));
* the Gaussian constants ``zeta, nu, theta0, theta1, theta2`` (eqs. (5) and (9));
* the feature maps ``psi1`` (eq. (5)), ``psi2`` (eq. (9)), ``psi`` (eq. (11)) and the
  weighted combination for first/second-layer learning rates ``eta1 != eta2`` (end of
  Section 3.3);
* the linear-model kernels ``Theta^lin1 = psi1 psi1^T`` (Section 3.1.1) and its
  second-layer / combined analogues, and the empirical NTKs ``Theta1(W)``
  (Section 3.1.1) and ``Theta2(W)`` of the network at weights ``W``.

Conventions (Hu et al.): ``X`` has shape ``(n, d)`` with one data point per row,
``W`` has shape ``(m, d)`` (rows ``w_r``), ``v`` has shape ``(m,)``. The theory assumes
``Tr(Sigma) = d`` (Assumption 3.1), so that ``||x||^2 / d ~ 1``.

Gaussian expectations ``E[h(g)]``, ``g ~ N(0, 1)``, are computed by Gaussian
quadrature: Gauss-Hermite (probabilists' weight) for smooth integrands, and
panel-wise Gauss-Legendre on ``[-20, 20]`` split at user-given ``breakpoints``
(kinks of the activation) otherwise. Each value is computed at two resolutions and a
``ValueError`` is raised if they disagree by more than ``tol``, so a kinked activation
passed without its breakpoints is reported rather than silently integrated badly.

Pure NumPy/SciPy, float64, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss
from scipy.special import erf, expit, ndtr

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "get_activation",
    "gaussian_expectation",
    "constants",
    "symmetric_init",
    "network",
    "psi1",
    "psi2",
    "psi",
    "theta_lin1",
    "theta_lin2",
    "theta_lin",
    "theta1",
    "theta2",
    "theta",
]

ArrayFn = Callable[[np.ndarray], np.ndarray]

#: Activation names understood by :func:`get_activation` and :func:`constants`.
ACTIVATIONS: tuple[str, ...] = ("relu", "erf", "tanh", "gelu", "softplus", "leaky_relu")

_CONSTANT_KEYS = ("zeta", "nu", "theta0", "theta1", "theta2")
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
_CUTOFF = 20.0  # |g| > 20 has Gaussian mass ~1e-89: negligible for polynomially bounded h


# ----------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Activation:
    """An activation ``phi`` with its derivative and the points where ``phi'`` jumps.

    Attributes
    ----------
    name : str
        Name (``"callable"`` for user functions).
    phi : callable
        Vectorized ``phi``: float64 array -> array of the same shape.
    dphi : callable or None
        Vectorized ``phi'`` (``None`` if unknown; only the empirical NTK ``Theta1``
        needs it).
    breakpoints : tuple of float
        Points where ``phi`` is not smooth (e.g. ``(0.0,)`` for ReLU); used to split the
        quadrature.
    """

    name: str
    phi: ArrayFn
    dphi: ArrayFn | None
    breakpoints: tuple[float, ...]


def _leaky(a: float) -> tuple[ArrayFn, ArrayFn]:
    def phi(z: np.ndarray) -> np.ndarray:
        return np.where(z >= 0, z, a * z)

    def dphi(z: np.ndarray) -> np.ndarray:
        # Hu et al., footnote 8: phi'(0) := 1 for piecewise-linear activations.
        return np.where(z >= 0, 1.0, a)

    return phi, dphi


def _gelu(z: np.ndarray) -> np.ndarray:
    return z * ndtr(z)


def _dgelu(z: np.ndarray) -> np.ndarray:
    return ndtr(z) + z * np.exp(-0.5 * z * z) * _INV_SQRT_2PI


def _derf(z: np.ndarray) -> np.ndarray:
    return (2.0 / np.sqrt(np.pi)) * np.exp(-z * z)


def _dtanh(z: np.ndarray) -> np.ndarray:
    return 1.0 - np.tanh(z) ** 2


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def get_activation(
    activation: str | ArrayFn | Activation,
    *,
    dphi: ArrayFn | None = None,
    breakpoints: Sequence[float] | None = None,
    negative_slope: float = 0.01,
) -> Activation:
    """Resolve an activation name or callable into an :class:`Activation`.

    Parameters
    ----------
    activation : str, callable or Activation
        One of :data:`ACTIVATIONS` (Hu et al., Assumption 3.2 lists ReLU, Leaky ReLU,
        Erf, Tanh, Softplus, ...; ``"gelu"`` is the exact ``z * Phi(z)``), or a
        vectorized callable ``phi`` acting entry-wise on float64 arrays.
    dphi : callable, optional
        Derivative of a callable ``phi`` (ignored for names, whose derivative is known).
    breakpoints : sequence of float, optional
        Kinks of a callable ``phi`` (ignored for names). Pass them for piecewise
        activations, otherwise the quadrature cannot reach machine precision.
    negative_slope : float
        Slope ``a`` of ``"leaky_relu"`` for ``z < 0`` (Assumption 3.2(ii)).

    Returns
    -------
    Activation
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.lower().replace("-", "_")
        if key == "relu":
            phi, d = _leaky(0.0)
            return Activation("relu", phi, d, (0.0,))
        if key == "leaky_relu":
            a = float(negative_slope)
            if not np.isfinite(a):
                raise ValueError("negative_slope must be a finite float, e.g. 0.01.")
            phi, d = _leaky(a)
            return Activation("leaky_relu", phi, d, (0.0,))
        if key == "erf":
            return Activation("erf", erf, _derf, ())
        if key == "tanh":
            return Activation("tanh", np.tanh, _dtanh, ())
        if key == "gelu":
            return Activation("gelu", _gelu, _dgelu, ())
        if key == "softplus":
            return Activation("softplus", _softplus, expit, ())
        raise ValueError(
            f"unknown activation {activation!r}; use one of {ACTIVATIONS} or pass a callable."
        )
    if callable(activation):
        bps = tuple(float(b) for b in (breakpoints or ()))
        if not all(np.isfinite(bps)):
            raise ValueError("breakpoints must be finite floats (the kinks of phi).")
        return Activation("callable", activation, dphi, bps)
    raise TypeError(
        f"activation must be a name from {ACTIVATIONS} or a callable, got {type(activation).__name__}."
    )


# ----------------------------------------------------------------------------------------
# Gaussian quadrature
# ----------------------------------------------------------------------------------------
def _hermite_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = hermegauss(n)
    return x, w * _INV_SQRT_2PI


def _panel_rule(breakpoints: Sequence[float], q: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre panels of width <= 1 on [-CUTOFF, CUTOFF] split at breakpoints,
    with the standard normal density folded into the weights."""
    cuts = sorted({-_CUTOFF, _CUTOFF, *(b for b in breakpoints if -_CUTOFF < b < _CUTOFF)})
    t, wt = leggauss(q)
    xs, ws = [], []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        k = max(1, int(np.ceil(hi - lo)))
        edges = np.linspace(lo, hi, k + 1)
        for a, b in zip(edges[:-1], edges[1:]):
            half = 0.5 * (b - a)
            x = 0.5 * (a + b) + half * t
            xs.append(x)
            ws.append(half * wt * np.exp(-0.5 * x * x) * _INV_SQRT_2PI)
    return np.concatenate(xs), np.concatenate(ws)


def _rules(breakpoints: Sequence[float], n_nodes: int):
    if len(breakpoints) == 0:
        return _hermite_rule(n_nodes // 2), _hermite_rule(n_nodes)
    return _panel_rule(breakpoints, 16), _panel_rule(breakpoints, 32)


def _expectations(
    fs: Sequence[ArrayFn], breakpoints: Sequence[float], n_nodes: int, tol: float
) -> list[float]:
    n_nodes = int(n_nodes)
    if not 20 <= n_nodes <= 300:
        raise ValueError("n_nodes must be between 20 and 300 (numpy's Gauss-Hermite rule overflows beyond).")
    tol = float(tol)
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError("tol must be a positive finite float, e.g. 1e-10.")
    coarse, fine = _rules(breakpoints, n_nodes)
    out = []
    for f in fs:
        vals = []
        for x, w in (coarse, fine):
            y = np.asarray(f(x), dtype=np.float64)
            if y.shape != x.shape:
                raise ValueError(
                    "the integrand must be vectorized: map a float64 array to an array of the same shape."
                )
            vals.append(float(np.dot(w, y)))
        if not np.isfinite(vals[1]):
            raise ValueError(
                "Gaussian expectation is not finite; phi must be finite and grow at most polynomially."
            )
        if abs(vals[1] - vals[0]) > tol * max(1.0, abs(vals[1])):
            raise ValueError(
                f"Gaussian quadrature did not converge (|fine - coarse| = {abs(vals[1] - vals[0]):.2e}"
                f" > tol = {tol:.1e}); pass breakpoints=[...] at the kinks of the activation."
            )
        out.append(vals[1])
    return out


def gaussian_expectation(
    f: ArrayFn,
    *,
    breakpoints: Sequence[float] = (),
    n_nodes: int = 200,
    tol: float = 1e-10,
) -> float:
    """``E[f(g)]`` for ``g ~ N(0, 1)`` by Gaussian quadrature.

    Gauss-Hermite with ``n_nodes`` nodes (checked against ``n_nodes // 2``) when
    ``breakpoints`` is empty; otherwise Gauss-Legendre panels (width <= 1, 32 nodes,
    checked against 16) on ``[-20, 20]`` split at ``breakpoints``.

    Parameters
    ----------
    f : callable
        Vectorized integrand.
    breakpoints : sequence of float
        Points where ``f`` is not smooth.
    n_nodes : int
        Gauss-Hermite nodes (between 20 and 300).
    tol : float
        Maximum allowed ``|fine - coarse| / max(1, |fine|)``.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If the two resolutions disagree by more than ``tol`` (typically a kink that was
        not declared in ``breakpoints``).
    """
    if not callable(f):
        raise TypeError("f must be a vectorized callable.")
    return _expectations([f], tuple(breakpoints), n_nodes, tol)[0]


# ----------------------------------------------------------------------------------------
# Constants (eqs. (5), (9))
# ----------------------------------------------------------------------------------------
def _trace_ratio(tr_sigma2_over_d: float | None, cov: np.ndarray | None) -> float:
    if tr_sigma2_over_d is not None and cov is not None:
        raise ValueError("pass either tr_sigma2_over_d or cov, not both.")
    if cov is not None:
        c = np.asarray(cov, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
            raise ValueError("cov must be a square (d, d) covariance matrix.")
        if not np.allclose(c, c.T, rtol=1e-10, atol=1e-12):
            raise ValueError("cov must be symmetric.")
        d = c.shape[0]
        tr = float(np.trace(c))
        if not np.isclose(tr, d, rtol=1e-6, atol=0.0):
            raise ValueError(
                f"Hu et al. (Assumption 3.1) require Tr(cov) = d = {d}, got {tr:.6g}; "
                f"rescale the data by sqrt(d / Tr(cov))."
            )
        return float(np.sum(c * c)) / d  # Tr(Sigma^2) = ||Sigma||_F^2 for symmetric Sigma
    if tr_sigma2_over_d is None:
        return 1.0
    r = float(tr_sigma2_over_d)
    if not np.isfinite(r) or r <= 0:
        raise ValueError("tr_sigma2_over_d = Tr(Sigma^2)/d must be a positive finite float (1 for Sigma = I).")
    return r


def constants(
    activation: str | ArrayFn | Activation,
    *,
    tr_sigma2_over_d: float | None = None,
    cov: np.ndarray | None = None,
    negative_slope: float = 0.01,
    breakpoints: Sequence[float] | None = None,
    n_nodes: int = 200,
    tol: float = 1e-10,
) -> dict[str, float]:
    """Constants of the early-time linear model, Hu et al. eqs. (5) and (9).

    With ``g ~ N(0, 1)``::

        zeta   = E[phi'(g)]
        nu     = E[g phi'(g)] * sqrt(Tr[Sigma^2] / d)              (eq. (5))
        theta0 = E[phi(g)]
        theta1 = E[g phi'(g)]
        theta2 = E[(g^3/2 - g) phi'(g)]                            (eq. (9))

    ``Sigma`` is the input covariance normalized to ``Tr(Sigma) = d`` (Assumption 3.1);
    it enters only ``nu``, through the scalar ``Tr(Sigma^2)/d`` (= 1 for ``Sigma = I``;
    ``>= 1`` in general). The expectations are evaluated without ``phi'`` through
    Stein's lemma ``E[h(g) phi'(g)] = E[(g h(g) - h'(g)) phi(g)]`` (valid for
    continuous, a.e.-differentiable ``phi``)::

        zeta = E[g phi],  theta1 = E[(g^2 - 1) phi],  theta2 = E[(g^4/2 - 5 g^2/2 + 1) phi],

    by Gaussian quadrature (see :func:`gaussian_expectation`) to ~1e-15.

    Parameters
    ----------
    activation : str, callable or Activation
        A name from :data:`ACTIVATIONS` or a vectorized continuous ``phi``.
    tr_sigma2_over_d : float, optional
        ``Tr(Sigma^2)/d`` of the input covariance; default 1 (isotropic).
    cov : ndarray of shape (d, d), optional
        The input covariance itself (must have ``Tr(cov) = d``); alternative to
        ``tr_sigma2_over_d``.
    negative_slope : float
        Slope for ``"leaky_relu"``.
    breakpoints : sequence of float, optional
        Kinks of a callable ``phi`` (e.g. ``[0.0]`` for a hand-written ReLU).
    n_nodes : int
        Gauss-Hermite nodes for smooth activations.
    tol : float
        Convergence tolerance of the quadrature self-check.

    Returns
    -------
    dict
        Keys ``"zeta"``, ``"nu"``, ``"theta0"``, ``"theta1"``, ``"theta2"`` (floats).
    """
    act = get_activation(activation, breakpoints=breakpoints, negative_slope=negative_slope)
    ratio = _trace_ratio(tr_sigma2_over_d, cov)
    phi = act.phi
    integrands = [
        lambda g: g * phi(g),
        lambda g: phi(g),
        lambda g: (g * g - 1.0) * phi(g),
        lambda g: (0.5 * g**4 - 2.5 * g * g + 1.0) * phi(g),
    ]
    zeta, t0, t1, t2 = _expectations(integrands, act.breakpoints, int(n_nodes), float(tol))
    return {
        "zeta": zeta,
        "nu": t1 * float(np.sqrt(ratio)),
        "theta0": t0,
        "theta1": t1,
        "theta2": t2,
    }


# ----------------------------------------------------------------------------------------
# Network (eq. (1)) and initialization (eq. (3))
# ----------------------------------------------------------------------------------------
def symmetric_init(m: int, d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric initialization of Hu et al. eq. (3).

    The equation is lost in the extracted text; we implement the reading fixed by the
    surrounding prose ("the difference between two identical (random) networks", zero
    output, ``w ~ N(0, I)``, ``v ~ Unif{+-1}`` by footnote 6)::

        W = [W~; W~],  v = [v~; -v~],  W~_{rj} ~ N(0, 1),  v~_r ~ Unif{-1, +1},

    with ``W~`` of shape ``(m/2, d)``, so ``f(x; W, v) = 0`` for every ``x``.

    Parameters
    ----------
    m : int
        Width (must be even).
    d : int
        Input dimension.
    rng : numpy.random.Generator

    Returns
    -------
    W : ndarray of shape (m, d)
    v : ndarray of shape (m,)
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator, e.g. np.random.default_rng(0).")
    m, d = int(m), int(d)
    if m <= 0 or m % 2:
        raise ValueError(f"m must be a positive even width for the symmetric init, got {m}.")
    if d <= 0:
        raise ValueError(f"d must be positive, got {d}.")
    half = m // 2
    Wt = rng.standard_normal((half, d))
    vt = rng.choice(np.array([-1.0, 1.0]), size=half)
    return np.vstack([Wt, Wt]), np.concatenate([vt, -vt])


def _check_X(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty (n, d) data matrix, got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains non-finite values.")
    return X


def _check_W(W: np.ndarray, d: int) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] != d or W.shape[0] == 0:
        raise ValueError(f"W must have shape (m, d) with d = {d} (rows w_r), got {W.shape}.")
    return W


def _check_v(v: np.ndarray | None, m: int) -> np.ndarray:
    if v is None:
        return np.ones(m)
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (m,):
        raise ValueError(f"v must have shape (m,) = ({m},), got {v.shape}.")
    return v


def network(
    X: np.ndarray,
    W: np.ndarray,
    v: np.ndarray,
    activation: str | ArrayFn | Activation,
    *,
    negative_slope: float = 0.01,
) -> np.ndarray:
    """Outputs ``f(x_i; W, v) = v^T phi(W x_i / sqrt(d)) / sqrt(m)``, Hu et al. eq. (1).

    Parameters
    ----------
    X : ndarray (n, d)
    W : ndarray (m, d)
    v : ndarray (m,)
    activation : str, callable or Activation
    negative_slope : float

    Returns
    -------
    ndarray (n,)
    """
    X = _check_X(X)
    n, d = X.shape
    W = _check_W(W, d)
    v = _check_v(v, W.shape[0])
    act = get_activation(activation, negative_slope=negative_slope)
    return act.phi(X @ W.T / np.sqrt(d)) @ v / np.sqrt(W.shape[0])


# ----------------------------------------------------------------------------------------
# Feature maps (eqs. (5), (9), (11)) and linear kernels
# ----------------------------------------------------------------------------------------
def _consts(c: Mapping[str, float]) -> tuple[float, ...]:
    if not isinstance(c, Mapping):
        raise TypeError("consts must be the dict returned by constants(...).")
    missing = [k for k in _CONSTANT_KEYS if k not in c]
    if missing:
        raise ValueError(f"consts is missing keys {missing}; build it with constants(activation).")
    return tuple(float(c[k]) for k in _CONSTANT_KEYS)


def _norm_feature(X: np.ndarray, t0: float, t1: float, t2: float) -> np.ndarray:
    s = np.linalg.norm(X, axis=1) / np.sqrt(X.shape[1]) - 1.0
    return t0 + t1 * s + t2 * s * s


def psi1(X: np.ndarray, consts: Mapping[str, float]) -> np.ndarray:
    """First-layer feature map, Hu et al. eq. (5): ``psi1(x) = [zeta x; nu] / sqrt(d)``.

    Parameters
    ----------
    X : ndarray (n, d)
        Data, rows ``x_i`` (the theory assumes ``||x||^2 ~ d``).
    consts : dict
        Output of :func:`constants`.

    Returns
    -------
    ndarray (n, d + 1)
    """
    X = _check_X(X)
    zeta, nu, *_ = _consts(consts)
    n, d = X.shape
    return np.hstack([zeta * X, np.full((n, 1), nu)]) / np.sqrt(d)


def psi2(X: np.ndarray, consts: Mapping[str, float]) -> np.ndarray:
    """Second-layer feature map, Hu et al. eq. (9)::

        psi2(x) = [ zeta x / sqrt(d);  nu / sqrt(2 d);
                    theta0 + theta1 (||x||/sqrt(d) - 1) + theta2 (||x||/sqrt(d) - 1)^2 ].

    Returns
    -------
    ndarray (n, d + 2)
    """
    X = _check_X(X)
    zeta, nu, t0, t1, t2 = _consts(consts)
    n, d = X.shape
    return np.hstack(
        [
            zeta * X / np.sqrt(d),
            np.full((n, 1), nu / np.sqrt(2.0 * d)),
            _norm_feature(X, t0, t1, t2)[:, None],
        ]
    )


def _rates(eta1: float, eta2: float, eta: float | None) -> tuple[float, float, float]:
    eta1, eta2 = float(eta1), float(eta2)
    if not (np.isfinite(eta1) and np.isfinite(eta2)) or eta1 < 0 or eta2 < 0 or eta1 + eta2 == 0:
        raise ValueError("eta1, eta2 must be finite, >= 0 and not both 0 (layer learning rates).")
    eta = max(eta1, eta2) if eta is None else float(eta)
    if not np.isfinite(eta) or eta <= 0:
        raise ValueError("eta (learning rate of the linear model) must be a positive finite float.")
    return eta1, eta2, eta


def psi(
    X: np.ndarray,
    consts: Mapping[str, float],
    *,
    eta1: float = 1.0,
    eta2: float = 1.0,
    eta: float | None = None,
) -> np.ndarray:
    """Feature map of the linear model for training both layers, Hu et al. eq. (11),
    generalized to layer learning rates ``eta1 != eta2`` (end of Section 3.3).

    The network trained by GD with rates ``(eta1, eta2)`` (eq. (4)) evolves in function
    space with kernel ``eta1 Theta1 + eta2 Theta2``; a linear model trained by GD with
    rate ``eta`` therefore needs ``<psi(x), psi(x')> = (eta1 k1 + eta2 k2) / eta`` with
    ``k1 = <psi1, psi1>``, ``k2 = <psi2, psi2>``. Merging the shared coordinates::

        psi(x) = [ sqrt((eta1 + eta2)/eta)   * zeta x / sqrt(d);
                   sqrt((eta1 + eta2/2)/eta) * nu / sqrt(d);
                   sqrt(eta2/eta) * (theta0 + theta1 (s - 1) + theta2 (s - 1)^2) ],

    ``s = ||x||/sqrt(d)``. For ``eta1 = eta2 = eta`` this is exactly eq. (11)
    (``sqrt(2/d) zeta x``, ``sqrt(3/(2d)) nu``, unit norm feature).

    Parameters
    ----------
    X : ndarray (n, d)
    consts : dict
        Output of :func:`constants`.
    eta1, eta2 : float
        First- and second-layer learning rates of the network (>= 0, not both 0).
    eta : float, optional
        Learning rate of the linear model; default ``max(eta1, eta2)`` (so that
        ``eta1 = eta2`` gives eq. (11), ``eta2 = 0`` the kernel of eq. (5) and
        ``eta1 = 0`` eq. (9)).

    Returns
    -------
    ndarray (n, d + 2)
    """
    X = _check_X(X)
    eta1, eta2, eta = _rates(eta1, eta2, eta)
    zeta, nu, t0, t1, t2 = _consts(consts)
    n, d = X.shape
    return np.hstack(
        [
            np.sqrt((eta1 + eta2) / eta) * zeta * X / np.sqrt(d),
            np.full((n, 1), np.sqrt((eta1 + 0.5 * eta2) / eta) * nu / np.sqrt(d)),
            (np.sqrt(eta2 / eta) * _norm_feature(X, t0, t1, t2))[:, None],
        ]
    )


def theta_lin1(X: np.ndarray, consts: Mapping[str, float]) -> np.ndarray:
    """``Theta^lin1 = (zeta^2 X X^T + nu^2 1 1^T) / d = psi1(X) psi1(X)^T``
    (Hu et al., Section 3.1.1). Returns an ``(n, n)`` matrix."""
    P = psi1(X, consts)
    return P @ P.T


def theta_lin2(X: np.ndarray, consts: Mapping[str, float]) -> np.ndarray:
    """``Theta^lin2 = psi2(X) psi2(X)^T`` (Hu et al., eq. (9)). Returns ``(n, n)``."""
    P = psi2(X, consts)
    return P @ P.T


def theta_lin(
    X: np.ndarray,
    consts: Mapping[str, float],
    *,
    eta1: float = 1.0,
    eta2: float = 1.0,
    eta: float | None = None,
) -> np.ndarray:
    """``psi(X) psi(X)^T = (eta1 Theta^lin1 + eta2 Theta^lin2) / eta`` (Hu et al., eq. (11)
    and Section 3.3). Returns ``(n, n)``; see :func:`psi` for the rates."""
    P = psi(X, consts, eta1=eta1, eta2=eta2, eta=eta)
    return P @ P.T


# ----------------------------------------------------------------------------------------
# Empirical NTKs of the network (Section 3.1.1)
# ----------------------------------------------------------------------------------------
def theta1(
    X: np.ndarray,
    W: np.ndarray,
    activation: str | ArrayFn | Activation,
    *,
    v: np.ndarray | None = None,
    dphi: ArrayFn | None = None,
    negative_slope: float = 0.01,
) -> np.ndarray:
    """First-layer empirical NTK of the net eq. (1), Hu et al. Section 3.1.1::

        Theta1(W) = (phi'(X W^T/sqrt(d)) diag(v^2) phi'(X W^T/sqrt(d))^T / m) ⊙ (X X^T / d),

    i.e. ``[Theta1]_ij = <grad_W f(x_i), grad_W f(x_j)>``. With ``v in {+-1}^m``
    (eq. (3)) ``diag(v^2) = I`` and this is the paper's formula; ``v = None`` means
    ``v^2 = 1``.

    Parameters
    ----------
    X : ndarray (n, d)
    W : ndarray (m, d)
    activation : str, callable or Activation
    v : ndarray (m,), optional
        Second-layer weights (only ``v**2`` matters).
    dphi : callable, optional
        Required when ``activation`` is a bare callable.
    negative_slope : float

    Returns
    -------
    ndarray (n, n)
    """
    X = _check_X(X)
    n, d = X.shape
    W = _check_W(W, d)
    m = W.shape[0]
    v = _check_v(v, m)
    act = get_activation(activation, dphi=dphi, negative_slope=negative_slope)
    if act.dphi is None:
        raise TypeError("theta1 needs phi': pass dphi=<derivative> for a callable activation.")
    D = act.dphi(X @ W.T / np.sqrt(d)) * np.abs(v)
    return (D @ D.T / m) * (X @ X.T / d)


def theta2(
    X: np.ndarray,
    W: np.ndarray,
    activation: str | ArrayFn | Activation,
    *,
    negative_slope: float = 0.01,
) -> np.ndarray:
    """Second-layer empirical NTK of the net eq. (1) (Hu et al., Section 3.2)::

        Theta2(W) = phi(X W^T/sqrt(d)) phi(X W^T/sqrt(d))^T / m,

    i.e. ``[Theta2]_ij = <grad_v f(x_i), grad_v f(x_j)>``. Returns ``(n, n)``."""
    X = _check_X(X)
    n, d = X.shape
    W = _check_W(W, d)
    act = get_activation(activation, negative_slope=negative_slope)
    F = act.phi(X @ W.T / np.sqrt(d))
    return F @ F.T / W.shape[0]


def theta(
    X: np.ndarray,
    W: np.ndarray,
    activation: str | ArrayFn | Activation,
    *,
    v: np.ndarray | None = None,
    dphi: ArrayFn | None = None,
    eta1: float = 1.0,
    eta2: float = 1.0,
    eta: float | None = None,
    negative_slope: float = 0.01,
) -> np.ndarray:
    """Learning-rate-weighted NTK ``(eta1 Theta1(W) + eta2 Theta2(W)) / eta`` of the net
    eq. (1) under GD eq. (4) (Hu et al., Section 3.3); the network counterpart of
    :func:`theta_lin`. Returns ``(n, n)``."""
    eta1, eta2, eta = _rates(eta1, eta2, eta)
    out = np.zeros((np.shape(X)[0], np.shape(X)[0]))
    if eta1 > 0:
        out += eta1 * theta1(X, W, activation, v=v, dphi=dphi, negative_slope=negative_slope)
    if eta2 > 0:
        out += eta2 * theta2(X, W, activation, negative_slope=negative_slope)
    return out / eta
