"""lazy_predict: closed-form linearized training vs training ntk.linearize step by step (float64)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from lazyrich import models
from lazyrich.ntk import empirical_ntk, lazy_predict, linearize


def _problem(c):
    g = torch.Generator().manual_seed(0)
    model = models.mlp([3, 12, c], activation="tanh", seed=1).double().eval()
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, c, generator=g, dtype=torch.float64)
    return model, x, xt, y


def _train_linearized(model, x, xt, y, lr, steps, record):
    """Full-batch GD on 1/(2n) sum ||f_lin - y||^2; outputs at the recorded steps."""
    lin = linearize(model)
    opt = torch.optim.SGD(lin.parameters(), lr=lr)
    out_tr, out_te = [], []
    for s in range(steps + 1):
        if s in record:
            with torch.no_grad():
                out_tr.append(lin(x).clone())
                out_te.append(lin(xt).clone())
        if s == steps:
            break
        opt.zero_grad()
        loss = 0.5 * ((lin(x) - y) ** 2).sum() / x.shape[0]
        loss.backward()
        opt.step()
    return torch.stack(out_tr).numpy(), torch.stack(out_te).numpy()


def _kernels(model, x, xt):
    with torch.no_grad():
        f0, ft0 = model(x), model(xt)
    K = empirical_ntk(model, x, x, outputs="full")
    Kt = empirical_ntk(model, xt, x, outputs="full")
    return f0, ft0, K, Kt


@pytest.mark.parametrize("c", [1, 2])
def test_discrete_gd_equals_stepwise_linearized_training(c):
    model, x, xt, y = _problem(c)
    f0, ft0, K, Kt = _kernels(model, x, xt)
    if c == 1:
        y, f0, ft0 = y[:, 0], f0[:, 0], ft0[:, 0]
    steps = [0, 1, 7, 40]
    pred = lazy_predict(K, y, f0_train=f0, K_test_train=Kt, f0_test=ft0, steps=steps, lr=0.3)
    tr, te = _train_linearized(model, x, xt, y.reshape(7, -1) if c == 1 else y, 0.3, 40, set(steps))
    if c == 1:
        tr, te = tr[..., 0], te[..., 0]
    scale = np.abs(tr).max()
    assert np.abs(pred.train - tr).max() < 1e-10 * scale
    assert np.abs(pred.test - te).max() < 1e-10 * scale
    assert np.allclose(pred.times, np.array(steps) * 0.3)


def test_gradient_flow_equals_matrix_exponential_and_small_step_training():
    model, x, xt, y = _problem(2)
    f0, ft0, K, Kt = _kernels(model, x, xt)
    t = np.array([0.0, 0.5, 3.0])
    pred = lazy_predict(K, y, f0_train=f0, K_test_train=Kt, f0_test=ft0, y_test=torch.zeros(5, 2), t=t)
    # independent oracle: the function-space ODE solved with scipy's expm (no eigendecomposition)
    Kf = K.numpy().transpose(0, 2, 1, 3).reshape(14, 14)
    r0 = (f0 - y).numpy().reshape(-1)
    for i, ti in enumerate(t):
        ref = y.numpy().reshape(-1) + scipy.linalg.expm(-Kf * ti / 7) @ r0
        assert np.abs(pred.train[i].reshape(-1) - ref).max() < 1e-10
    # small-step GD of the linearized model converges to the flow (Euler error O(lr))
    lr = 1e-3
    tr, te = _train_linearized(model, x, xt, y, lr, 3000, {0, 500, 3000})
    assert np.abs(pred.test - te).max() < 2e-3 * np.abs(te).max()
    assert np.abs(pred.test - te).max() > 0  # the comparison is not vacuous
    assert np.allclose(pred.test_loss, 0.5 * (pred.test ** 2).reshape(3, -1).sum(1) / 5)


def test_zero_modes_and_sum_reduction():
    # A rank-1 kernel: the component of the residual outside its range never moves, test predictions stay finite.
    phi = np.array([1.0, 2.0, -1.0])
    K = np.outer(phi, phi)
    y = np.array([1.0, 0.0, 2.0])
    pred = lazy_predict(K, y, K_test_train=np.array([[0.5 * p for p in phi]]), t=[0.0, 1e6], reduction="sum")
    resid = pred.train[-1] - y
    assert abs(resid @ phi) < 1e-9  # the kernel direction is fitted
    assert np.allclose(resid, -y + phi * (phi @ y) / (phi @ phi))
    # one feature: train features phi, test feature 0.5; the least-squares coefficient is phi.y / phi.phi
    assert np.isclose(pred.test[-1, 0], 0.5 * (phi @ y) / (phi @ phi), rtol=1e-8)
    assert np.all(np.isfinite(pred.test))


def test_bad_inputs():
    with pytest.raises(ValueError, match="exactly one of t="):
        lazy_predict(np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="positive learning rate"):
        lazy_predict(np.eye(2), np.zeros(2), steps=[3])
    with pytest.raises(ValueError, match="outputs='full'"):
        lazy_predict(np.eye(3), np.zeros(2), t=[1.0])
