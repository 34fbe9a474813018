r"""Exact gradient-flow theory of the single-neuron two-layer linear network.

Kunin, Raventós, Dominé, Chen, Klindt, Saxe, Ganguli, *Get rich quick: exact
solutions reveal how unbalanced initializations promote rapid feature learning*
(``/work/shared/papers/003_4ea9ee8c590a09a7.txt``): main-text section "A Minimal
Model of Lazy and Rich Learning with Exact Solutions", appendix "Single-Neuron
Linear Network" and Theorem 1.

Model and conventions (all stated once here, used everywhere below)
-------------------------------------------------------------------
* Network ``f(x) = a w^T x`` with ``a`` scalar, ``w`` in ``R^d``; data ``X`` of
  shape ``(n, d)`` (rows are samples), targets ``y`` of shape ``(n,)``.
* Loss ``L = 1/2 * sum_i (y_i - a w^T x_i)^2 = 1/2 ||X a w - y||^2`` -- **no**
  ``1/n``.  This is the convention under which the paper's appendix equations
  ``da/dt = -eta_a w^T (X^T X a w - X^T y)`` and
  ``dw/dt = -eta_w a (X^T X a w - X^T y)`` are exactly
  ``da/dt = -eta_a dL/da`` and ``dw/dt = -eta_w dL/dw``.
* Conserved quantity ``delta = eta_w a^2 - eta_a ||w||^2`` (paper, section
  "Conserved quantity"); ``delta > 0`` upstream, ``= 0`` balanced, ``< 0``
  downstream.
* ``beta = a w``; ``beta_*`` is the least-squares solution ``(X^T X)^+ X^T y``
  (minimum-norm one when ``X^T X`` is singular).
* ``mu = a ||w||`` and ``phi = w^T beta_* / (||w|| ||beta_*||)`` (paper's
  hyperbolic/spherical coordinates); ``nu = w^T beta_* / a`` and
  ``upsilon = a / w^T beta_*`` (paper's Riccati variables).
* NTK ``K = X (eta_w a^2 I + eta_a w w^T) X^T`` (paper eq. for the
  single-neuron NTK matrix) and kernel distance
  ``S = 1 - <K0, Kt>_F / (||K0||_F ||Kt||_F)``.

Closed form used here (derivation, equivalent to the paper's case analysis)
---------------------------------------------------------------------------
With whitened data ``X^T X = I``, ``eta_a = eta_w = 1`` and
``omega = w^T beta_*`` the paper writes ``da/dt = omega - a(a^2 - delta)``,
``domega/dt = a ||beta_*||^2 - a^2 omega`` (proof of Lemma 4).  Using
``||w||^2 = a^2 - delta`` the full flow is in fact

    d/dt (a, w) = L (a, w) - a^2 (a, w),   L = [[delta, beta_*^T], [beta_*, 0]],

i.e. a linear flow minus a scalar multiple of the state.  Hence
``(a, w)(t) = exp(L t)(a0, w0) / N(t)`` with
``N(t)^2 = 1 + 2 int_0^t [exp(L s)(a0, w0)]_a^2 ds``.  On the plane
``(a, omega)`` the eigenvalues of ``L`` are ``lambda_pm = delta/2 pm R``,
``R = sqrt(delta^2 + 4 ||beta_*||^2) / 2``; the component of ``w`` orthogonal
to ``beta_*`` sits in the zero eigenspace and is only divided by ``N``.
Writing ``a_lin(t) = P e^{lambda_+ t} + Q e^{lambda_- t}`` gives

    a(t)     = (P + Q e^{-2Rt}) / Ntil(t)
    omega(t) = (-lambda_- P - lambda_+ Q e^{-2Rt}) / Ntil(t)
    w_perp(t) = w_perp(0) e^{-lambda_+ t} / Ntil(t)
    Ntil^2   = e^{-2 lambda_+ t} + 2 [P^2 D(0, 2l+) + 2PQ D(2R, 2l+) + Q^2 D(4R, 2l+)]

with ``P = (omega0 + a0 lambda_+)/(2R)``, ``Q = (-a0 lambda_- - omega0)/(2R)`` and
``D(p, q) = (e^{-pt} - e^{-qt})/(q - p)`` (``= t e^{-pt}`` when ``p = q``); every
exponent is non-positive, so nothing overflows at long times.  This single
expression is valid for ``delta > 0``, ``delta = 0`` and ``delta < 0``, for either
sign of ``a0`` and through a sign change of ``a``.  It is the same solution as
the paper's: ``nu = omega/a`` reproduces the paper's Riccati solution eq. (nu)
(``z = a_lin e^{-delta t}`` linearises ``dnu/dt = |beta_*|^2 - delta nu - nu^2``),
``upsilon = a/omega`` the inverse Riccati equation used when ``a`` crosses zero,
the ``1/a^2`` Bernoulli equation is what ``N`` solves, and at ``delta = 0``
``phi = tanh(c_phi + |beta_*| t)`` (all checked in the tests, together with the
paper's explicit upstream ``a(t)``).

Reductions.  (i) Learning rates: ``a_hat = sqrt(eta_w) a``,
``w_hat = sqrt(eta_a) w``, ``beta_hat_* = sqrt(eta_a eta_w) beta_*`` (the paper's
``mu' = sqrt(eta_a eta_w) mu``, ``beta_*' = sqrt(eta_a eta_w) beta_*``) gives the
unit-rate flow with the same ``delta`` and the same time.  (ii) Whitening:
``X^T X = s I`` is the unit case with ``eta -> s eta``.  (iii) More generally the
flow is exactly that of whitened data whenever ``c = X^T y`` lies in one
eigenspace ``E_s`` of ``X^T X`` (eigenvalue ``s > 0``) and ``w0`` lies in
``E_s + ker(X^T X)``: the kernel component of ``w`` is then constant and the
``E_s`` part follows the whitened flow with conserved quantity
``delta + eta_a ||P_ker w0||^2``.  In every other case :func:`solve` integrates
the ODE with ``scipy.integrate.solve_ivp`` (DOP853, ``rtol=1e-12``) and sets
``trajectory.exact = False``.

Basins.  ``basin = sign(lim_{t->inf} a(t))``, 0 when ``a(t) -> 0`` (convergence to
a saddle ``a = 0, w^T X^T y = 0``).  In the closed form ``basin = sign(P)``,
i.e. the sign of ``w0^T beta_* + a0/2 (delta + sqrt(delta^2 + 4||beta_*||^2))``
(paper, "Basins of attraction" and footnote 4; for ``delta >= 0`` this equals
``sign(a0)`` because ``|omega0| < |a0| lambda_+``).  ``P = 0`` is the separating
surface: for ``delta < 0`` the hyperplane of the paper, for ``delta = 0`` the ray
``phi0 = -sign(a0)``, and the saddles themselves (``a0 = 0``,
``w0 perp beta_*``).  ``a`` vanishes at most once, at
``t* = log(-Q/P)/(2R)`` when ``-Q/P`` is in ``(0, 1]`` (Lemma 4).

Readings of the extracted paper text (each checked in the tests)
----------------------------------------------------------------
* Balanced ``mu(t)``: the paper prints
  ``mu = 2 cosh^2(x) / (2x + sinh 2x + c_mu)``, ``c_mu = 2 cosh^2(c_phi)/mu0 - (2c_phi + sinh 2c_phi)``;
  solving its Bernoulli equation gives ``mu = 2|b| cosh^2(x) / (2x + sinh 2x + c_mu)`` with
  ``c_mu = 2|b| cosh^2(c_phi)/mu0 - ...`` (``b = beta_*``), identical when ``|beta_*| = 1`` (the
  paper's figures).  The closed form here satisfies the corrected one.
* The explicit upstream ``a(t)`` contains ``atanh((2 nu0 + delta)/sqrt(delta^2 + 4|b|^2))`` and is
  real only when that argument is in ``(-1, 1)``; the unified form above has no such restriction.
* Theorem 1's constraint ``X beta = y`` is implemented as the normal equations
  ``X^T X beta = X^T y`` (the same set when interpolation is possible).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import solve_ivp

__all__ = [
    "SingleNeuronTrajectory",
    "solve",
    "M",
    "M_inv",
    "potential",
    "potential_grad",
    "potential_hessian",
    "implicit_bias",
    "basin_of_attraction",
]

FloatArray = NDArray[np.float64]

_EPS = np.finfo(np.float64).eps
#: Tolerances of the numerical (non-exact) path.
ODE_RTOL = 1e-12
ODE_METHOD = "DOP853"


# ---------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------
def _finite_scalar(x: object, name: str) -> float:
    arr = np.asarray(x)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real scalar, got {x!r}; pass a single float.")
    val = float(arr)
    if not np.isfinite(val):
        raise ValueError(f"{name} must be finite, got {val}; pass a finite float.")
    return val


def _positive_scalar(x: object, name: str) -> float:
    val = _finite_scalar(x, name)
    if val <= 0.0:
        raise ValueError(f"{name} must be > 0, got {val}; pass a positive learning rate.")
    return val


def _finite_array(x: ArrayLike, name: str, ndim: int) -> FloatArray:
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric array; got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}; reshape it.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass at least one entry.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; pass finite values only.")
    return arr


def _times(t: ArrayLike) -> FloatArray:
    arr = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if arr.ndim != 1:
        raise ValueError(f"t must be a 1-D array of times, got shape {arr.shape}; pass t.ravel().")
    if not np.all(np.isfinite(arr)):
        raise ValueError("t contains NaN or inf; pass finite times.")
    if np.any(arr < 0):
        raise ValueError("t must be >= 0 (gradient flow is solved forward in time from t = 0).")
    return arr


def _beta_array(beta: ArrayLike, name: str = "beta") -> FloatArray:
    arr = np.asarray(beta, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (d,) or (..., d) with d >= 1, got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; pass finite values only.")
    return arr


# ---------------------------------------------------------------------------
# closed-form kernel
# ---------------------------------------------------------------------------
def _expdiff(p: float, q: float, t: FloatArray) -> FloatArray:
    """``(exp(-p t) - exp(-q t)) / (q - p)`` for ``p, q >= 0`` without overflow/cancellation."""
    m = min(p, q)
    h = abs(q - p)
    core = t if h == 0.0 else -np.expm1(-h * t) / h
    return np.exp(-m * t) * core


class _UnitFlow:
    """Whitened unit-rate flow ``a' = w^T b - a|w|^2``, ``w' = a b - a^2 w`` (hat variables).

    ``delta = a0^2 - |w0|^2`` is passed explicitly (the conserved quantity).
    """

    def __init__(self, a0: float, w0: FloatArray, bstar: FloatArray, delta: float) -> None:
        self.a0 = a0
        self.delta = delta
        B = float(np.linalg.norm(bstar))
        d = delta
        R = float(np.hypot(0.5 * d, B))
        u = bstar / B if B > 0 else np.zeros_like(bstar)
        om0 = float(w0 @ bstar)
        if R == 0.0:  # beta_* = 0 and delta = 0: a' = -a^3, w' = -a^2 w
            lp = nm = 0.0
            P, Q = 0.0, a0
        else:
            # lambda_+ = delta/2 + R and -lambda_- = R - delta/2, cancellation-free
            lp = 0.5 * d + R if d >= 0 else B * B / (R - 0.5 * d)
            nm = R - 0.5 * d if d <= 0 else B * B / (R + 0.5 * d)
            num = om0 + a0 * lp
            # rounding scale of omega0 + a0 lambda_+ is eps (|w0| |b| + |a0| lambda_+)
            if abs(num) <= 16 * _EPS * (float(np.linalg.norm(w0)) * B + abs(a0) * lp):
                num = 0.0  # on the separating surface to rounding: treat as exactly on it
            P = num / (2 * R)
            Q = (a0 * nm - om0) / (2 * R)
        self._B, self._R, self._u = B, R, u
        self._wperp0 = w0 - (w0 @ u) * u
        self._lp, self._nm, self._P, self._Q = lp, nm, P, Q

    @property
    def basin(self) -> int:
        if self._lp == 0.0:  # beta_* = 0 and delta <= 0: a(t) -> 0
            return 0
        return int(np.sign(self._P))

    @property
    def t_sign_change(self) -> float:
        P, Q = self._P, self._Q
        if Q == 0.0 or P * Q > 0:
            return np.inf
        if P == 0.0:
            return 0.0 if self.a0 == 0.0 else np.inf
        ratio = -Q / P
        if ratio < 1.0:
            return 0.0 if self.a0 == 0.0 else np.inf
        return float(np.log(ratio) / (2 * self._R))

    def state(self, t: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Return ``a(t)``, ``omega(t) = w^T b``, ``w(t)`` (shape ``(T, d)``) in hat variables."""
        P, Q, R, lp, nm = self._P, self._Q, self._R, self._lp, self._nm
        if P != 0.0:
            # scale by the growing mode e^{lambda_+ t}: all exponents <= 0
            E = np.exp(-2 * R * t)
            q = 2 * lp
            n2 = np.exp(-q * t) + 2 * (
                P * P * _expdiff(0.0, q, t)
                + 2 * P * Q * _expdiff(2 * R, q, t)
                + Q * Q * _expdiff(4 * R, q, t)
            )
            nt = np.sqrt(n2)
            a = (P + Q * E) / nt
            om = (P * nm - Q * lp * E) / nt
            perp = np.exp(-lp * t) / nt
        else:
            # on the separating surface only the decaying mode e^{lambda_- t} is present
            decay = np.exp(-nm * t)
            nt = np.sqrt(1.0 + 2 * Q * Q * _expdiff(0.0, 2 * nm, t))
            a = Q * decay / nt
            om = -Q * lp * decay / nt
            perp = 1.0 / nt
        B = self._B
        par = om / B if B > 0 else np.zeros_like(om)
        w = par[:, None] * self._u[None, :] + perp[:, None] * self._wperp0[None, :]
        return a, om, w


# ---------------------------------------------------------------------------
# trajectory object
# ---------------------------------------------------------------------------
class SingleNeuronTrajectory:
    r"""Gradient-flow trajectory of ``f(x) = a w^T x`` (Kunin et al., single-neuron model).

    Created by :func:`solve`.  All methods take an array of times ``t >= 0``
    (a scalar is treated as length 1) and are vectorised over it.

    Attributes
    ----------
    X, y : ndarray
        Data, shapes ``(n, d)`` and ``(n,)``.
    a0 : float
    w0 : ndarray, shape (d,)
    eta_a, eta_w : float
        Layer learning rates.
    delta : float
        Conserved ``eta_w a^2 - eta_a ||w||^2`` (Kunin et al., "Conserved quantity").
    beta_star : ndarray, shape (d,)
        Least-squares solution ``(X^T X)^+ X^T y``.
    exact : bool
        True when the closed form applies (see module docstring, "Reductions");
        False when the ODE is integrated numerically (DOP853, rtol 1e-12).
    method : str
        ``"closed_form"`` or ``"ode"``.
    basin : int
        ``sign(lim a(t))``: +1 / -1 for the positive / negative branch of the
        minima manifold, 0 for convergence to a saddle.  Exact on the closed-form
        path; on the ODE path exact when ``delta + eta_a ||P_ker w0||^2 > 0`` or
        ``X^T y = 0``, otherwise determined numerically (see :func:`solve`).
    t_sign_change : float
        Unique ``t >= 0`` with ``a(t) = 0`` (``inf`` if none; Lemma 4); NaN on
        the ODE path (not computed).
    at_saddle : bool
        True when ``(a0, w0)`` is itself a saddle: ``a0 = 0`` and ``w0^T X^T y = 0``
        (to rounding); the flow then stays put.  Initialisations that only
        *converge* to a saddle have ``basin == 0`` and ``at_saddle`` False.
    """

    def __init__(
        self,
        X: FloatArray,
        y: FloatArray,
        a0: float,
        w0: FloatArray,
        eta_a: float,
        eta_w: float,
        *,
        flow: _UnitFlow | None,
        scale_a: float,
        scale_w: float,
        w_ker: FloatArray,
        basin_t_max: float,
    ) -> None:
        self.X = X
        self.y = y
        self.a0 = a0
        self.w0 = w0
        self.eta_a = eta_a
        self.eta_w = eta_w
        self.delta = eta_w * a0 * a0 - eta_a * float(w0 @ w0)
        self._G = X.T @ X
        self._c = X.T @ y
        self.beta_star = np.linalg.lstsq(X, y, rcond=None)[0]
        self._flow = flow
        self._scale_a = scale_a
        self._scale_w = scale_w
        self._w_ker = w_ker
        self._basin_t_max = basin_t_max
        self._basin: int | None = None
        self.exact = flow is not None
        self.method = "closed_form" if self.exact else "ode"
        # the initialisation is itself a saddle (critical point with a = 0): a0 = 0, w0^T X^T y = 0
        cw = float(self._c @ w0)
        self.at_saddle = a0 == 0.0 and abs(cw) <= 16 * _EPS * float(np.linalg.norm(self._c) * np.linalg.norm(w0))

    # ---- core state -------------------------------------------------------
    def _state(self, t: ArrayLike) -> tuple[FloatArray, FloatArray]:
        tt = _times(t)
        if self.at_saddle:  # a fixed point: exactly constant (the formulas would add rounding)
            return np.zeros(tt.size), np.tile(np.asarray(self.w0, dtype=float), (tt.size, 1))
        if self._flow is not None:
            ah, _, wh = self._flow.state(tt)
            return ah / self._scale_a, wh / self._scale_w + self._w_ker[None, :]
        return self._ode_state(tt)

    def _rhs(self) -> Callable[[float, FloatArray], FloatArray]:
        G, c, ea, ew = self._G, self._c, self.eta_a, self.eta_w

        def rhs(_t: float, z: FloatArray) -> FloatArray:
            a, w = z[0], z[1:]
            g = a * (G @ w) - c  # X^T (X a w - y)
            out = np.empty_like(z)
            out[0] = -ea * (w @ g)
            out[1:] = -ew * a * g
            return out

        return rhs

    def _atol(self) -> float:
        scale = max(abs(self.a0), float(np.max(np.abs(self.w0))),
                    float(np.sqrt(np.linalg.norm(self.beta_star))), 1e-300)
        return 1e-15 * scale

    def _ode_state(self, tt: FloatArray) -> tuple[FloatArray, FloatArray]:
        z0 = np.concatenate([[self.a0], self.w0])
        tu, inv = np.unique(tt, return_inverse=True)
        if tu[-1] == 0.0:
            Z = np.repeat(z0[:, None], tu.size, axis=1)
        else:
            sol = solve_ivp(self._rhs(), (0.0, float(tu[-1])), z0, method=ODE_METHOD,
                            t_eval=tu, rtol=ODE_RTOL, atol=self._atol())
            if not sol.success:  # pragma: no cover - defensive
                raise RuntimeError(f"solve_ivp failed: {sol.message}")
            Z = sol.y
        Z = Z[:, inv.ravel()]
        return Z[0].copy(), Z[1:].T.copy()

    # ---- basin ------------------------------------------------------------
    @property
    def basin(self) -> int:
        if self._basin is None:
            self._basin = self._compute_basin()
        return self._basin

    @property
    def t_sign_change(self) -> float:
        if self._flow is None:
            return float("nan")
        return self._flow.t_sign_change

    def _compute_basin(self) -> int:
        if self._flow is not None:
            return self._flow.basin
        # ODE path.  A saddle initialisation is a fixed point (do not integrate: rounding would
        # let the flow escape).  The kernel part of w is constant, so
        # delta_R = eta_w a^2 - eta_a |P_range w|^2 = delta + eta_a |P_ker w0|^2 is conserved.
        delta_r = self.delta + self.eta_a * float(self._w_ker @ self._w_ker)
        if self.at_saddle:
            return 0
        c = self._c
        if not np.any(c):
            # a' = -eta_a a w^T G w: a keeps its sign; a(inf) != 0 iff delta_R > 0.
            return int(np.sign(self.a0)) if delta_r > 0 else 0
        if delta_r > 0:
            return int(np.sign(self.a0))  # eta_w a^2 >= delta_R > 0: a never vanishes
        return self._numerical_basin()

    def _numerical_basin(self) -> int:
        """Integrate until the loss drops below L(beta=0); sign(a) is then final.

        Gain ``g(beta) = L(0) - L(beta) = c^T beta - beta^T G beta / 2``.  a = 0 forces
        beta = 0 and g = 0, and g is non-decreasing along gradient flow, so once
        g > 0 the sign of a can never change again.  If the flow reaches a
        critical point (gradient below rounding) or ``basin_t_max`` with g <= 0 the
        initialisation is reported as converging to a saddle (basin 0).
        """
        G, c = self._G, self._c
        gstar = 0.5 * float(c @ self.beta_star)
        thr = 1e-8 * gstar
        rhs = self._rhs()

        def gain(_t: float, z: FloatArray) -> float:
            b = z[0] * z[1:]
            return float(c @ b - 0.5 * b @ G @ b) - thr

        gain.terminal = True  # type: ignore[attr-defined]
        gain.direction = 1.0  # type: ignore[attr-defined]
        z = np.concatenate([[self.a0], self.w0])
        if gain(0.0, z) > 0:
            return int(np.sign(self.a0))
        t0, t1 = 0.0, 1.0 / max(float(np.linalg.norm(G, 2)), 1e-300)
        gnorm0 = float(np.linalg.norm(rhs(0.0, z))) + 1e-300
        while t0 < self._basin_t_max:
            t1 = min(t1, self._basin_t_max)
            sol = solve_ivp(rhs, (t0, t1), z, method=ODE_METHOD, rtol=1e-10,
                            atol=self._atol(), events=gain)
            if sol.t_events[0].size:
                return int(np.sign(sol.y_events[0][0][0]))
            z = sol.y[:, -1]
            if float(np.linalg.norm(rhs(t1, z))) <= 1e-14 * gnorm0:
                return 0
            t0, t1 = t1, 2 * t1
        return 0

    # ---- public observables ----------------------------------------------
    def state(self, t: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """``(a(t), w(t))`` from one evaluation, shapes ``(T,)`` and ``(T, d)``."""
        a, w = self._state(t)
        return a, w

    def a(self, t: ArrayLike) -> FloatArray:
        """Second-layer weight ``a(t)``, shape ``(T,)``."""
        return self._state(t)[0]

    def w(self, t: ArrayLike) -> FloatArray:
        """First-layer weights ``w(t)``, shape ``(T, d)``."""
        return self._state(t)[1]

    def beta(self, t: ArrayLike) -> FloatArray:
        """Function-space predictor ``beta(t) = a(t) w(t)``, shape ``(T, d)``."""
        a, w = self._state(t)
        return a[:, None] * w

    def mu(self, t: ArrayLike) -> FloatArray:
        """Paper's ``mu = a ||w||`` (signed magnitude of beta), shape ``(T,)``."""
        a, w = self._state(t)
        return a * np.linalg.norm(w, axis=1)

    def omega(self, t: ArrayLike) -> FloatArray:
        """``omega = w^T beta_*`` (proof of Lemma 4), shape ``(T,)``."""
        return self._state(t)[1] @ self.beta_star

    def phi(self, t: ArrayLike) -> FloatArray:
        """Paper's ``phi = w^T beta_* / (||w|| ||beta_*||)``; NaN where ``w = 0`` or ``beta_* = 0``."""
        w = self._state(t)[1]
        den = np.linalg.norm(w, axis=1) * np.linalg.norm(self.beta_star)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (w @ self.beta_star) / np.where(den > 0, den, 1.0), np.nan)

    def nu(self, t: ArrayLike) -> FloatArray:
        """Paper's ``nu = w^T beta_* / a`` (inf/NaN where ``a = 0``)."""
        a, w = self._state(t)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ self.beta_star) / a

    def upsilon(self, t: ArrayLike) -> FloatArray:
        """Paper's ``upsilon = a / w^T beta_*`` (inf/NaN where ``w^T beta_* = 0``)."""
        a, w = self._state(t)
        with np.errstate(invalid="ignore", divide="ignore"):
            return a / (w @ self.beta_star)

    def loss(self, t: ArrayLike) -> FloatArray:
        """``L = 1/2 ||X a w - y||^2`` (no 1/n), shape ``(T,)``."""
        r = self.beta(t) @ self.X.T - self.y[None, :]
        return 0.5 * np.sum(r * r, axis=1)

    def ntk(self, t: ArrayLike) -> FloatArray:
        """NTK ``K = X (eta_w a^2 I + eta_a w w^T) X^T`` (Kunin et al.), shape ``(T, n, n)``."""
        a, w = self._state(t)
        return _ntk(self.X, a, w, self.eta_a, self.eta_w)

    def kernel_distance(self, t: ArrayLike) -> FloatArray:
        """``S(t) = 1 - <K(0), K(t)>_F / (||K(0)||_F ||K(t)||_F)``, shape ``(T,)``.

        Evaluated as ``||K0/||K0|| - Kt/||Kt|| ||_F^2 / 2`` (algebraically identical,
        free of the cancellation in ``1 - cos``).  NaN where a kernel is zero.
        """
        a, w = self._state(t)
        K = _ntk(self.X, a, w, self.eta_a, self.eta_w)
        K0 = _ntk(self.X, np.array([self.a0]), self.w0[None, :], self.eta_a, self.eta_w)[0]
        n0 = np.linalg.norm(K0)
        nt = np.linalg.norm(K, axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = K0[None] / n0 - K / nt[:, None, None]
            S = 0.5 * np.sum(diff * diff, axis=(1, 2))
        return np.where((nt > 0) & (n0 > 0), S, np.nan)

    def __repr__(self) -> str:
        return (f"SingleNeuronTrajectory(d={self.w0.size}, delta={self.delta:.6g}, "
                f"basin={self._basin if self._basin is not None else '?'}, exact={self.exact})")


def _ntk(X: FloatArray, a: FloatArray, w: FloatArray, eta_a: float, eta_w: float) -> FloatArray:
    XXt = X @ X.T
    Xw = w @ X.T
    return eta_w * (a * a)[:, None, None] * XXt[None] + eta_a * Xw[:, :, None] * Xw[:, None, :]


# ---------------------------------------------------------------------------
# solve
# ---------------------------------------------------------------------------
def _validate_problem(X: ArrayLike, y: ArrayLike, a0: object, w0: ArrayLike,
                      eta_a: object, eta_w: object) -> tuple[FloatArray, FloatArray, float, FloatArray, float, float]:
    Xa = _finite_array(X, "X", 2)
    ya = _finite_array(y, "y", 1)
    if ya.shape[0] != Xa.shape[0]:
        raise ValueError(f"y has {ya.shape[0]} entries but X has {Xa.shape[0]} rows; they must match.")
    a0f = _finite_scalar(a0, "a0")
    w0a = _finite_array(w0, "w0", 1)
    if w0a.shape[0] != Xa.shape[1]:
        raise ValueError(f"w0 has {w0a.shape[0]} entries but X has {Xa.shape[1]} columns; they must match.")
    return Xa, ya, a0f, w0a, _positive_scalar(eta_a, "eta_a"), _positive_scalar(eta_w, "eta_w")


def solve(
    X: ArrayLike,
    y: ArrayLike,
    a0: float,
    w0: ArrayLike,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
    *,
    method: str = "auto",
    whiten_rtol: float = 1e-12,
    basin_t_max: float = 1e8,
) -> SingleNeuronTrajectory:
    r"""Gradient flow of ``f(x) = a w^T x`` on ``L = 1/2 ||X a w - y||^2`` (Kunin et al.).

    ``da/dt = -eta_a dL/da``, ``dw/dt = -eta_w dL/dw`` from ``(a0, w0)`` (paper's
    appendix eqs. single-neuron-dynamics-unwhitened).

    Parameters
    ----------
    X : array, shape (n, d)
    y : array, shape (n,)
    a0 : float
        Initial second-layer weight (any sign, may be 0).
    w0 : array, shape (d,)
    eta_a, eta_w : float
        Positive layer learning rates.
    method : {"auto", "closed_form", "ode"}
        ``"auto"`` uses the exact closed form whenever it applies and the ODE
        otherwise; ``"closed_form"`` raises ``ValueError`` if it does not apply;
        ``"ode"`` forces numerical integration (``exact = False``).
    whiten_rtol : float
        The closed form is used when ``||G c - s c|| <= whiten_rtol ||G|| ||c||`` and
        ``||G^2 w0 - s G w0|| <= whiten_rtol ||G||^2 ||w0||`` (``G = X^T X``,
        ``c = X^T y``), i.e. when the reduction (iii) of the module docstring holds
        to rounding (e.g. QR-whitened data).  The result is then exact for data
        perturbed by that relative amount.
    basin_t_max : float
        Horizon for the numerical basin determination on the ODE path (only used when
        ``delta + eta_a ||P_ker w0||^2 <= 0`` and ``X^T y != 0``): the flow is integrated until
        ``L < L(beta = 0)``, after which ``sign(a)`` is final, or until it stalls at a critical
        point / reaches ``basin_t_max`` (reported as 0, a saddle).

    Returns
    -------
    SingleNeuronTrajectory

    Raises
    ------
    ValueError
        Shape mismatch, non-finite input, ``eta <= 0``, unknown ``method``, or
        ``method="closed_form"`` for data where it is not exact.
    """
    Xa, ya, a0f, w0a, ea, ew = _validate_problem(X, y, a0, w0, eta_a, eta_w)
    if method not in ("auto", "closed_form", "ode"):
        raise ValueError(f"method must be 'auto', 'closed_form' or 'ode', got {method!r}.")
    whiten_rtol = _positive_scalar(whiten_rtol, "whiten_rtol")
    basin_t_max = _positive_scalar(basin_t_max, "basin_t_max")

    G = Xa.T @ Xa
    c = Xa.T @ ya
    # kernel / range split of w0 (exact: the kernel part of w never moves)
    U, sv, _ = np.linalg.svd(Xa.T, full_matrices=False)  # columns of U span range(G)
    rank = int(np.sum(sv > max(Xa.shape) * _EPS * (sv[0] if sv.size else 0.0)))
    Ur = U[:, :rank]
    w_ker = w0a - Ur @ (Ur.T @ w0a)

    reduction = None if method == "ode" else _whitened_reduction(G, c, w0a, whiten_rtol)
    if reduction is None and method == "closed_form":
        raise ValueError("closed form is exact only if X^T y lies in one eigenspace of X^T X and w0 in "
                         "that eigenspace plus ker(X^T X); use method='auto' or 'ode'.")
    flow = None
    scale_a = scale_w = 1.0
    w_ker_used = w_ker
    if reduction is not None:
        s, wE0 = reduction
        w_ker_used = w0a - wE0
        scale_a = float(np.sqrt(s * ew))
        scale_w = float(np.sqrt(s * ea))
        ah0 = scale_a * a0f
        wh0 = scale_w * wE0
        bh = float(np.sqrt(ea * ew)) * c
        dh = s * (ew * a0f * a0f - ea * float(wE0 @ wE0))
        flow = _UnitFlow(a0=ah0, w0=wh0, bstar=bh, delta=dh)
    return SingleNeuronTrajectory(Xa, ya, a0f, w0a, ea, ew, flow=flow, scale_a=scale_a,
                                  scale_w=scale_w, w_ker=w_ker_used,
                                  basin_t_max=basin_t_max)


def _whitened_reduction(G: FloatArray, c: FloatArray, w0: FloatArray,
                        rtol: float) -> tuple[float, FloatArray] | None:
    """Return ``(s, w0_E)`` if reduction (iii) of the module docstring applies, else None."""
    gn = float(np.linalg.norm(G, 2))
    if gn == 0.0:  # X = 0: nothing moves; treat as s = 1 whitened with c = 0 and w in the kernel
        return 1.0, np.zeros_like(w0)
    Gw = G @ w0
    if np.any(c):
        s = float(c @ G @ c) / float(c @ c)
        if np.linalg.norm(G @ c - s * c) > rtol * gn * np.linalg.norm(c):
            return None
    elif np.any(Gw):
        s = float(Gw @ Gw) / float(w0 @ Gw)
    else:  # c = 0 and G w0 = 0: a and w are constant
        return 1.0, np.zeros_like(w0)
    if s <= rtol * gn:
        return None
    if np.linalg.norm(G @ Gw - s * Gw) > rtol * gn * gn * np.linalg.norm(w0):
        return None
    return s, Gw / s


def basin_of_attraction(a0: float, w0: ArrayLike, beta_star: ArrayLike,
                        eta_a: float = 1.0, eta_w: float = 1.0) -> int:
    r"""Basin for whitened data ``X^T X = I`` (Kunin et al., "Basins of attraction", footnote 4).

    Returns ``sign(w0^T beta_* + a0/2 (delta' + sqrt(delta'^2 + 4 ||beta_*'||^2)))`` in the
    rescaled variables of the module docstring (which is ``sign(a0)`` for
    ``delta >= 0``); 0 means the trajectory converges to a saddle.
    """
    w0a = _finite_array(w0, "w0", 1)
    bs = _finite_array(beta_star, "beta_star", 1)
    if bs.shape != w0a.shape:
        raise ValueError(f"beta_star shape {bs.shape} does not match w0 shape {w0a.shape}.")
    a0f = _finite_scalar(a0, "a0")
    ea, ew = _positive_scalar(eta_a, "eta_a"), _positive_scalar(eta_w, "eta_w")
    flow = _UnitFlow(a0=np.sqrt(ew) * a0f, w0=np.sqrt(ea) * w0a, bstar=np.sqrt(ea * ew) * bs,
                     delta=ew * a0f * a0f - ea * float(w0a @ w0a))
    return flow.basin


# ---------------------------------------------------------------------------
# function space: M, M^{-1}, potential
# ---------------------------------------------------------------------------
def _kappa_parts(beta: FloatArray, delta: float, eta_a: float, eta_w: float
                 ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Return ``|beta|``, ``kappa``, ``lam1 = (kappa + delta)/2`` (stable), ``beta_hat``."""
    p2 = eta_a * eta_w
    nb = np.linalg.norm(beta, axis=-1)
    kappa = np.sqrt(delta * delta + 4 * p2 * nb * nb)
    if delta >= 0:
        lam1 = 0.5 * (kappa + delta)
    else:
        lam1 = 2 * p2 * nb * nb / (kappa - delta)
    with np.errstate(invalid="ignore", divide="ignore"):
        bhat = np.where(nb[..., None] > 0, beta / np.where(nb > 0, nb, 1.0)[..., None], 0.0)
    return nb, kappa, lam1, bhat


def _check_delta_eta(delta: object, eta_a: object, eta_w: object) -> tuple[float, float, float]:
    return _finite_scalar(delta, "delta"), _positive_scalar(eta_a, "eta_a"), _positive_scalar(eta_w, "eta_w")


def M(beta: ArrayLike, delta: float, eta_a: float = 1.0, eta_w: float = 1.0) -> FloatArray:
    r"""Function-space preconditioner ``M`` with ``dbeta/dt = -M grad_beta L`` (Kunin et al. eq. M_c=1).

    ``M = (kappa + delta)/2 I + (kappa - delta)/2 beta beta^T / ||beta||^2``,
    ``kappa = sqrt(delta^2 + 4 eta_a eta_w ||beta||^2)``; equals
    ``eta_w a^2 I + eta_a w w^T`` for any ``(a, w)`` with ``a w = beta`` and
    conserved quantity ``delta``.

    Parameters
    ----------
    beta : array, shape (d,) or (..., d)
    delta : float
    eta_a, eta_w : float

    Returns
    -------
    ndarray, shape (d, d) or (..., d, d)

    Raises
    ------
    ValueError
        If ``beta = 0`` with ``delta < 0`` (then ``M = eta_a w w^T`` depends on the
        direction of ``w``, not on ``beta``).  At ``beta = 0`` and ``delta >= 0``,
        ``M = delta I``.
    """
    b = _beta_array(beta)
    delta, eta_a, eta_w = _check_delta_eta(delta, eta_a, eta_w)
    nb, kappa, lam1, bhat = _kappa_parts(b, delta, eta_a, eta_w)
    if delta < 0 and np.any(nb == 0):
        raise ValueError("M is not a function of beta at beta = 0 when delta < 0; pass beta != 0.")
    d = b.shape[-1]
    outer = bhat[..., :, None] * bhat[..., None, :]
    eye = np.eye(d)
    return lam1[..., None, None] * (eye - outer) + kappa[..., None, None] * outer


def M_inv(beta: ArrayLike, delta: float, eta_a: float = 1.0, eta_w: float = 1.0) -> FloatArray:
    r"""Inverse of :func:`M` (Kunin et al., "Computing M^{-1}", Sherman-Morrison).

    ``M^{-1} = 2/(kappa + delta) (I - bhat bhat^T) + 1/kappa bhat bhat^T`` (spectral
    form of the paper's ``f_delta I - h_delta beta beta^T``).

    Raises
    ------
    ValueError
        If ``M`` is singular: ``beta = 0`` with ``delta <= 0``.
    """
    b = _beta_array(beta)
    delta, eta_a, eta_w = _check_delta_eta(delta, eta_a, eta_w)
    nb, kappa, lam1, bhat = _kappa_parts(b, delta, eta_a, eta_w)
    if delta <= 0 and np.any(nb == 0):
        raise ValueError("M is singular at beta = 0 when delta <= 0; pass beta != 0.")
    d = b.shape[-1]
    outer = bhat[..., :, None] * bhat[..., None, :]
    eye = np.eye(d)
    return (1.0 / lam1)[..., None, None] * (eye - outer) + (1.0 / kappa)[..., None, None] * outer


def potential(beta: ArrayLike, delta: float, eta_a: float = 1.0, eta_w: float = 1.0) -> FloatArray:
    r"""Potential ``Phi_delta`` of Kunin et al. ("Solving for the potential"), with ``Phi(0) = 0``.

    ``Phi_delta(b) = 1/3 (kappa - 2 delta) sqrt(kappa + delta) + max(0, sgn(delta) sqrt(2) |delta|^{3/2}/3)``,
    ``kappa = sqrt(delta^2 + 4 ||b||^2)``, evaluated at ``b = sqrt(eta_a eta_w) beta``
    (the paper's rescaling ``beta' = sqrt(eta_a eta_w) beta``; the paper sets
    ``eta_a eta_w = 1``).  Its Hessian is ``g M^{-1}`` with
    ``g = eta_a eta_w sqrt(kappa + delta)`` (see :func:`potential_hessian`), which
    makes ``dbeta/dt = -M grad L`` a time-warped mirror flow.

    For ``delta > 0`` the constant ``c_delta`` is folded in analytically
    (``Phi = eps (delta + eps + r1 r0) / (3 (r1 + r0))`` with ``eps = kappa - delta``,
    ``r1 = sqrt(kappa + delta)``, ``r0 = sqrt(2 delta)``) to avoid cancellation.

    Returns
    -------
    ndarray, shape ``beta.shape[:-1]``
    """
    b = _beta_array(beta)
    delta, eta_a, eta_w = _check_delta_eta(delta, eta_a, eta_w)
    x = np.sqrt(eta_a * eta_w) * np.linalg.norm(b, axis=-1)
    kappa = np.sqrt(delta * delta + 4 * x * x)
    if delta > 0:
        eps = 4 * x * x / (kappa + delta)
        r1 = np.sqrt(kappa + delta)
        r0 = np.sqrt(2 * delta)
        return eps * (delta + eps + r1 * r0) / (3 * (r1 + r0))
    kpd = 4 * x * x / (kappa - delta) if delta < 0 else kappa
    return (kappa - 2 * delta) * np.sqrt(kpd) / 3.0


def potential_grad(beta: ArrayLike, delta: float, eta_a: float = 1.0, eta_w: float = 1.0) -> FloatArray:
    r"""``grad Phi_delta(beta) = 2 p b / sqrt(kappa + delta)``, ``b = p beta``, ``p = sqrt(eta_a eta_w)``.

    At ``beta`` proportional to ``beta0`` this is the paper's Theorem 1 linear term
    ``psi_delta beta0/||beta0||`` with ``psi_delta = sqrt(kappa0 - delta)`` (for ``p = 1``).

    Raises
    ------
    ValueError
        At ``beta = 0`` with ``delta < 0``, where ``Phi`` has a conical kink.
    """
    bb = _beta_array(beta)
    delta, eta_a, eta_w = _check_delta_eta(delta, eta_a, eta_w)
    p = np.sqrt(eta_a * eta_w)
    b = p * bb
    x = np.linalg.norm(b, axis=-1)
    if delta < 0 and np.any(x == 0):
        raise ValueError("Phi_delta is not differentiable at beta = 0 when delta < 0; pass beta != 0.")
    kappa = np.sqrt(delta * delta + 4 * x * x)
    if delta < 0:
        # 2/sqrt(kappa + delta) = sqrt(kappa - delta)/|b|
        coef = np.sqrt(kappa - delta) / np.where(x > 0, x, 1.0)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = np.where(kappa + delta > 0, 2.0 / np.sqrt(np.where(kappa + delta > 0, kappa + delta, 1.0)), 0.0)
    return p * coef[..., None] * b


def potential_hessian(beta: ArrayLike, delta: float, eta_a: float = 1.0, eta_w: float = 1.0) -> FloatArray:
    r"""``Hess Phi_delta(beta) = g(beta) M^{-1}(beta)`` with ``g = eta_a eta_w sqrt(kappa + delta)``.

    Kunin et al., "Finding a scalar function g_delta": with ``eta_a eta_w = 1`` this
    is ``sqrt(sqrt(delta^2 + 4||beta||^2) + delta) M^{-1}`` (paper eq. g-m-inv-two-layer).

    Raises
    ------
    ValueError
        At ``beta = 0`` with ``delta <= 0``.
    """
    bb = _beta_array(beta)
    delta, eta_a, eta_w = _check_delta_eta(delta, eta_a, eta_w)
    Minv = M_inv(bb, delta, eta_a, eta_w)
    nb, kappa, lam1, _ = _kappa_parts(bb, delta, eta_a, eta_w)
    g = eta_a * eta_w * np.sqrt(2 * lam1)
    return g[..., None, None] * Minv


# ---------------------------------------------------------------------------
# implicit bias (Theorem 1)
# ---------------------------------------------------------------------------
def _null_space(X: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Orthonormal bases of row space and null space of ``X`` (numpy matrix_rank tolerance)."""
    _, sv, Vt = np.linalg.svd(X, full_matrices=True)
    tol = max(X.shape) * _EPS * (sv[0] if sv.size else 0.0)
    r = int(np.sum(sv > tol))
    return Vt[:r].T, Vt[r:].T


def implicit_bias(
    X: ArrayLike,
    y: ArrayLike,
    beta0: ArrayLike,
    delta: float,
    *,
    eta_a: float = 1.0,
    eta_w: float = 1.0,
    method: str = "auto",
    tol: float = 1e-14,
    max_iter: int = 200,
) -> FloatArray:
    r"""Interpolant selected by gradient flow, Kunin et al. Theorem 1.

    ``beta(inf) = argmin_beta Psi_delta(beta) - psi_delta (beta0/||beta0||)^T beta``
    subject to ``X^T X beta = X^T y`` (``= {X beta = y}`` when that is consistent),
    with ``Psi_delta = Phi_delta`` up to a constant and ``psi_delta beta0/||beta0|| =
    grad Phi_delta(beta0)``.  ``eta_a, eta_w`` enter through the paper's rescaling
    ``beta' = sqrt(eta_a eta_w) beta``, ``y' = sqrt(eta_a eta_w) y``.  Theorem 1 assumes
    ``beta(t) != 0`` for all t (no sign change of ``a``); it is not claimed otherwise.

    Parameters
    ----------
    X : array, shape (n, d)
    y : array, shape (n,)
    beta0 : array, shape (d,), nonzero
        Initial predictor ``a0 w0``.
    delta : float
        Conserved quantity ``eta_w a0^2 - eta_a ||w0||^2``.
    method : {"auto", "closed_form", "numerical"}
        ``"auto"``: closed form when the null space of ``X`` is one-dimensional
        (paper, "Exact solution when interpolating manifold is one-dimensional":
        ``beta = beta_mn + alpha v``, ``alpha = k sqrt(m)``,
        ``m = (k^2 + delta)/2 + sqrt(((k^2 + delta)/2)^2 + ||beta_mn||^2)``,
        ``k = sqrt(sqrt(||beta0||^2 + delta^2/4) - delta/2) beta0_hat^T v``), the
        least-squares solution when it is zero-dimensional, and otherwise a damped
        Newton method on the null-space coordinates ``z`` of
        ``Q(beta_mn + V z) = Phi_delta - grad Phi_delta(beta0)^T beta`` (strictly convex;
        exact gradient and Hessian ``V^T g M^{-1} V``; stops when the Newton step is
        below ``tol (1 + ||z||)``).  ``"numerical"`` forces Newton.
    tol, max_iter : Newton stopping rule.

    Returns
    -------
    ndarray, shape (d,)

    Raises
    ------
    ValueError
        Bad shapes, non-finite input, ``beta0 = 0``, ``eta <= 0``, unknown method.
    RuntimeError
        If Newton does not converge within ``max_iter`` iterations.
    """
    Xa = _finite_array(X, "X", 2)
    ya = _finite_array(y, "y", 1)
    if ya.shape[0] != Xa.shape[0]:
        raise ValueError(f"y has {ya.shape[0]} entries but X has {Xa.shape[0]} rows; they must match.")
    b0 = _finite_array(beta0, "beta0", 1)
    if b0.shape[0] != Xa.shape[1]:
        raise ValueError(f"beta0 has {b0.shape[0]} entries but X has {Xa.shape[1]} columns; they must match.")
    delta, eta_a, eta_w = _check_delta_eta(delta, eta_a, eta_w)
    if not np.any(b0):
        raise ValueError("beta0 must be nonzero (Theorem 1 needs beta(t) != 0); pass a nonzero beta0.")
    if method not in ("auto", "closed_form", "numerical"):
        raise ValueError(f"method must be 'auto', 'closed_form' or 'numerical', got {method!r}.")
    p = float(np.sqrt(eta_a * eta_w))
    _, V = _null_space(Xa)
    k = V.shape[1]
    bmn = p * np.linalg.lstsq(Xa, ya, rcond=None)[0]  # min-norm LS solution in beta' units
    bp0 = p * b0
    if k == 0:
        return bmn / p
    if method == "closed_form" and k != 1:
        raise ValueError(f"closed form needs a one-dimensional null space, got dimension {k}; use 'auto'.")
    if k == 1 and method != "numerical":
        v = V[:, 0]
        nb0 = float(np.linalg.norm(bp0))
        kk = float(np.sqrt(np.hypot(nb0, 0.5 * delta) - 0.5 * delta)) * float(bp0 @ v) / nb0
        h = 0.5 * (kk * kk + delta)
        r = float(np.hypot(h, np.linalg.norm(bmn)))
        m = h + r if h >= 0 else float(bmn @ bmn) / (r - h)
        alpha = kk * np.sqrt(m)
        return (bmn + alpha * v) / p
    g0 = potential_grad(bp0, delta)
    z = V.T @ bp0  # start from the projection of beta0 on the null space

    def Q(zz: FloatArray) -> float:
        b = bmn + V @ zz
        return float(potential(b, delta)) - float(g0 @ b)

    for _ in range(max_iter):
        b = bmn + V @ z
        grad = V.T @ (potential_grad(b, delta) - g0)
        H = V.T @ potential_hessian(b, delta) @ V
        step = -np.linalg.solve(H, grad)
        q0 = Q(z)
        slope = float(grad @ step)
        tstep = 1.0
        slack = 64 * _EPS * (abs(q0) + 1.0)  # accept steps whose increase is rounding noise
        while Q(z + tstep * step) > q0 + 1e-4 * tstep * slope + slack and tstep > 1e-12:
            tstep *= 0.5
        z = z + tstep * step
        if np.linalg.norm(tstep * step) <= tol * (1.0 + np.linalg.norm(z)):
            return (bmn + V @ z) / p
    raise RuntimeError("Newton iteration for Theorem 1 did not converge; increase max_iter.")
