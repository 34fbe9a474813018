"""Closed-form training of the linearized model under MSE: the lazy prediction.

The linearized model ``f_lin(x; theta) = f(x; theta0) + J(x; theta0)(theta - theta0)`` (Lee et al. 2019,
"Wide neural networks of any depth evolve as linear models under gradient descent", eqs. (8)-(11); the same
solution as neural-tangents' ``predict.gradient_descent_mse``) trained on the loss

    L(theta) = 1/(2N) sum_i ||f_lin(x_i; theta) - y_i||^2,   N = n ("mean", this library's MSE) or 1 ("sum"),

moves its training outputs by ``df/dt = -(1/N) K (f - y)`` with ``K = K(X, X)`` the eNTK at theta0. With
``K = V diag(lambda) V^T`` and ``r0 = f0(X) - y``:

* gradient flow:    ``f(X, t) = y + V exp(-lambda t / N) V^T r0``;
* gradient descent with step ``lr``, after ``k`` steps: ``exp(-lambda t/N)`` becomes ``(1 - lr lambda / N)^k``;
* test points: ``f(x*, t) = f0(x*) - K(x*, X) V diag(g(lambda)) V^T r0`` with
  ``g(lambda) = (1 - exp(-lambda t/N)) / lambda`` (``-> t/N`` at ``lambda = 0``), resp.
  ``(1 - (1 - lr lambda/N)^k) / lambda`` (``-> k lr / N``).

The test formula is exact also for singular ``K``: ``theta - theta0`` stays in the row space of ``J(X)``.
Everything is computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["LazyPrediction", "lazy_predict"]


@dataclass
class LazyPrediction:
    """Outputs of the linearized model at each requested time.

    ``times``: (T,) flow times (``steps * lr`` for GD); ``steps``: (T,) ints or None; ``train``: (T, n, ...)
    predictions on the training inputs; ``test``: (T, n_test, ...) or None; ``train_loss`` / ``test_loss``:
    (T,) MSE ``1/(2N) sum ||f - y||^2`` with the same ``N`` convention (test: ``N = n_test`` for "mean"),
    the test loss only when ``y_test`` was given.
    """

    times: np.ndarray
    steps: Optional[np.ndarray]
    train: np.ndarray
    test: Optional[np.ndarray]
    train_loss: np.ndarray
    test_loss: Optional[np.ndarray]


def _f64(x, name):
    if x is None:
        return None
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float64).numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a numeric array or tensor (got {type(x).__name__}); pass numbers.") from None
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf; recompute it from finite inputs.")
    return a


def _flatten_kernel(K, n1, n2, c, name):
    """(n1, n2) -> per-output kernel (same for every output); (n1, n2, c, c) -> (n1*c, n2*c) block matrix."""
    if K.shape == (n1, n2):
        return np.kron(K, np.eye(c)) if c > 1 else K
    if K.shape == (n1, n2, c, c):
        return K.transpose(0, 2, 1, 3).reshape(n1 * c, n2 * c)
    raise ValueError(
        f"{name} has shape {K.shape}, expected ({n1}, {n2}) or ({n1}, {n2}, {c}, {c}) for {n1} x {n2} points and "
        f"{c} outputs; pass empirical_ntk(model, x1, x2, outputs='full') (or the per-output kernel)."
    )


def lazy_predict(K_train, y_train, *, f0_train=None, K_test_train=None, f0_test=None, y_test=None,
                 t=None, steps=None, lr=None, reduction: str = "mean") -> LazyPrediction:
    """Predictions of the linearized model trained from theta0 by gradient flow (``t``) or GD (``steps``, ``lr``).

    Parameters
    ----------
    K_train : (n, n) or (n, n, c, c)
        eNTK on the training inputs at theta0 (``empirical_ntk(model, X, X, outputs="full")``). An ``(n, n)``
        kernel with ``c > 1`` outputs is taken as the kernel of each output (``K ⊗ I_c``), which is **not** the
        library's ``outputs="trace"`` (a sum over outputs).
    y_train : (n,) or (n, c)
        targets. ``f0_train`` (same shape): outputs at theta0 (default 0).
    K_test_train : (n_test, n) or (n_test, n, c, c), optional
        ``empirical_ntk(model, X_test, X, outputs="full")``; with ``f0_test`` (default 0) gives test predictions.
    t : array of flow times (gradient flow), or ``steps`` (ints) with ``lr`` (gradient descent). Exactly one.
    reduction : "mean" (``N = n``, this library's MSE) or "sum" (``N = 1``, Kunin et al.'s loss).

    Returns
    -------
    LazyPrediction
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    if (t is None) == (steps is None):
        raise ValueError("Pass exactly one of t= (flow times) or steps= with lr= (gradient descent).")
    K = _f64(K_train, "K_train")
    y = _f64(y_train, "y_train")
    if y.ndim not in (1, 2):
        raise ValueError(f"y_train must be (n,) or (n, c), got shape {y.shape}.")
    n = y.shape[0]
    c = 1 if y.ndim == 1 else y.shape[1]
    f0 = np.zeros_like(y) if f0_train is None else _f64(f0_train, "f0_train")
    if f0.shape != y.shape:
        raise ValueError(f"f0_train has shape {f0.shape} but y_train {y.shape}; pass the model's outputs on X.")
    Kf = _flatten_kernel(K, n, n, c, "K_train")
    if not np.allclose(Kf, Kf.T, rtol=1e-8, atol=1e-10 * max(np.abs(Kf).max(), 1e-300)):
        raise ValueError("K_train is not symmetric; pass the kernel of the training inputs with themselves.")
    N = float(n) if reduction == "mean" else 1.0
    if steps is not None:
        if lr is None or not (float(lr) > 0):
            raise ValueError(f"Gradient descent needs a positive learning rate lr=, got {lr!r}.")
        steps_arr = np.asarray(steps)
        if steps_arr.ndim > 1 or np.any(steps_arr < 0) or not np.all(steps_arr == np.round(steps_arr)):
            raise ValueError("steps must be a non-negative integer or a 1-D sequence of them.")
        steps_arr = np.atleast_1d(steps_arr).astype(np.int64)
        times = steps_arr * float(lr)
    else:
        steps_arr = None
        times = np.atleast_1d(_f64(t, "t"))
        if times.ndim != 1 or np.any(times < 0):
            raise ValueError("t must be a non-negative number or a 1-D sequence of flow times.")
    lam, V = np.linalg.eigh(0.5 * (Kf + Kf.T))
    lam = np.clip(lam, 0.0, None)  # a PSD kernel; round-off negatives are zero modes
    r0 = (f0 - y).reshape(-1)
    c0 = V.T @ r0
    if steps_arr is None:
        decay = np.exp(-np.outer(times, lam) / N)  # (T, nc)
        # g = (1 - decay) / lam, with limit t/N at lam = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(lam > 0, -np.expm1(-np.outer(times, lam) / N) / np.where(lam > 0, lam, 1.0),
                         times[:, None] / N)
    else:
        q = 1.0 - float(lr) * lam / N
        decay = q[None, :] ** steps_arr[:, None].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(lam > 0, (1.0 - decay) / np.where(lam > 0, lam, 1.0), steps_arr[:, None] * float(lr) / N)
    train = y.reshape(-1)[None, :] + (decay * c0[None, :]) @ V.T
    train = train.reshape((len(times),) + y.shape)
    train_loss = 0.5 * ((train - y[None]) ** 2).reshape(len(times), -1).sum(axis=1) / N
    test = test_loss = None
    if K_test_train is not None:
        Kt = _f64(K_test_train, "K_test_train")
        m = Kt.shape[0]
        Ktf = _flatten_kernel(Kt, m, n, c, "K_test_train")
        ft0 = np.zeros((m,) + y.shape[1:]) if f0_test is None else _f64(f0_test, "f0_test")
        if ft0.shape != (m,) + y.shape[1:]:
            raise ValueError(f"f0_test has shape {ft0.shape}, expected {(m,) + y.shape[1:]}.")
        test = ft0.reshape(-1)[None, :] - (g * c0[None, :]) @ (Ktf @ V).T
        test = test.reshape((len(times), m) + y.shape[1:])
        if y_test is not None:
            yt = _f64(y_test, "y_test")
            if yt.shape != ft0.shape:
                raise ValueError(f"y_test has shape {yt.shape}, expected {ft0.shape}.")
            Nt = float(m) if reduction == "mean" else 1.0
            test_loss = 0.5 * ((test - yt[None]) ** 2).reshape(len(times), -1).sum(axis=1) / Nt
    elif f0_test is not None or y_test is not None:
        raise ValueError("f0_test / y_test need K_test_train; pass empirical_ntk(model, X_test, X, outputs='full').")
    return LazyPrediction(times=times, steps=steps_arr, train=train, test=test, train_loss=train_loss,
                          test_loss=test_loss)
