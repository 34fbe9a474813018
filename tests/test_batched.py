"""dynamics/batched.py: batched path == separate runs (float64, 1e-10); eigenvalue == dense autograd Hessian;
trajectory == scipy ODE solution of the gradient flow (tolerance stated below)."""
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from lazyrich.dynamics.batched import _cell_losses, batched_top_eigenvalue, train_two_layer_batched

X = torch.tensor([[-1.0, 1.0], [-0.3, 1.0], [0.4, 1.0], [1.0, 1.0]], dtype=torch.float64)  # 1-D + bias column
Y = torch.tensor([0.3, -0.2, 0.25, 0.4], dtype=torch.float64)


def _init(C, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(C, m, 2, generator=g, dtype=torch.float64),
            torch.randn(C, m, generator=g, dtype=torch.float64))


def test_batched_equals_separate_runs_with_padded_widths():
    w, a = _init(4, 6)
    mask = torch.ones(4, 6, dtype=torch.float64)
    mask[1, 3:] = 0  # cell 1 has width 3 (padded)
    alpha = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    kw = dict(loss_tol=1e-5, time_budget=30.0, max_steps=400, reestimate_every=20)
    res = train_two_layer_batched(w, a, X, Y, alpha=alpha, mask=mask, **kw)
    for c in range(4):
        m = int(mask[c].sum())
        one = train_two_layer_batched(w[c:c + 1, :m], a[c:c + 1, :m], X, Y, alpha=alpha[c].item(), **kw)
        torch.testing.assert_close(res.w[c, :m], one.w[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(res.a[c, :m], one.a[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(res.time[c], one.time[0], rtol=0, atol=1e-10)
        assert res.steps[c] == one.steps[0]
    assert torch.all(res.a[1, 3:] == 0) and torch.all(res.w[1, 3:] == w[1, 3:])


def test_top_eigenvalue_matches_dense_hessian():
    w, a = _init(3, 4, seed=1)
    alpha = torch.ones(3, dtype=torch.float64)
    mask = torch.ones(3, 4, dtype=torch.float64)
    lam = batched_top_eigenvalue(w, a, X.expand(3, 4, 2), Y.expand(3, 4), alpha, mask, iters=300)
    for c in range(3):
        def f(theta):
            return _cell_losses(theta[:8].reshape(1, 4, 2), theta[8:].reshape(1, 4), X[None], Y[None],
                                alpha[:1], mask[:1]).sum()
        H = torch.autograd.functional.hessian(f, torch.cat([w[c].reshape(-1), a[c]]))
        ev = torch.linalg.eigvalsh(H)
        assert abs(lam[c].item() - ev.abs().max().item()) < 1e-6 * ev.abs().max().item()


def _np_grad(theta, m, alpha):
    w, a = theta[:2 * m].reshape(m, 2), theta[2 * m:]
    x, y = X.numpy(), Y.numpy()
    pre = x @ w.T
    r = (np.maximum(pre, 0) @ a / alpha - y) / len(y)
    ga = np.maximum(pre, 0).T @ r / alpha
    gw = ((pre > 0) * r[:, None] * a[None, :]).T @ x / alpha
    return np.concatenate([gw.reshape(-1), ga])


def test_trajectory_matches_scipy_gradient_flow():
    # Euler steps at safety * 2/lambda have global error O(safety): at flow time T = 5 the driver's parameters
    # agree with an RK45 solution (rtol 1e-10) to 5e-3 absolute at safety 0.02 (measured 1.8e-3), and the
    # error shrinks ~linearly with the step (ratio 4.5 measured for safety 0.1 -> 0.02).
    m, T = 3, 5.0
    w, a = _init(1, m, seed=0)
    theta0 = torch.cat([w[0].reshape(-1), a[0]]).numpy()
    sol = solve_ivp(lambda t, th: -_np_grad(th, m, 1.0), (0, T), theta0, rtol=1e-10, atol=1e-12)
    errs = []
    for safety in (0.1, 0.02):
        res = train_two_layer_batched(w, a, X, Y, loss_tol=0.0, time_budget=T, safety=safety, reestimate_every=10)
        assert res.time.item() == pytest.approx(T, abs=1e-12)
        got = torch.cat([res.w[0].reshape(-1), res.a[0]]).numpy()
        errs.append(np.max(np.abs(got - sol.y[:, -1])))
    assert errs[1] < 5e-3
    assert 3.0 < errs[0] / errs[1] < 7.0
    assert np.max(np.abs(sol.y[:, -1] - theta0)) > 0.5  # the flow moved: the comparison is not vacuous


def test_bad_shapes_and_safety_are_refused():
    w, a = _init(2, 3)
    with pytest.raises(ValueError, match="stack the cells"):
        train_two_layer_batched(w[0], a[0], X, Y)
    with pytest.raises(ValueError, match="safety"):
        train_two_layer_batched(w, a, X, Y, safety=1.5)


def test_cells_stop_at_their_own_loss_tolerance():
    w, a = _init(3, 20, seed=4)
    res = train_two_layer_batched(w, a, X, Y, loss_tol=1e-4, time_budget=1e4, max_steps=5000)
    assert len(set(res.steps.tolist())) == 3  # each cell stopped on its own
    assert bool(res.converged.all()) and torch.all(res.loss <= 1e-4)
    assert torch.all(res.loss > 1e-4 * 0.5)  # stopped at the tolerance, not long after it


def test_fixed_lr_and_checkpoints_equal_plain_gd_per_cell():
    """lr= (one per cell) and record_steps/callback: the same numbers as plain full-batch GD of each cell."""
    w, a = _init(3, 5, seed=3)
    lr = torch.tensor([0.05, 0.2, 0.1], dtype=torch.float64)
    seen = {}
    res = train_two_layer_batched(w, a, X, Y, lr=lr, loss_tol=0.0, max_steps=60, record_steps=(0, 7, 60),
                                  callback=lambda k, ww, aa: seen.__setitem__(k, (ww.clone(), aa.clone())))
    assert sorted(seen) == [0, 7, 60]
    for c in range(3):
        wc, ac = w[c].clone().requires_grad_(True), a[c].clone().requires_grad_(True)
        for k in range(61):
            if k in seen:
                torch.testing.assert_close(seen[k][0][c], wc.detach(), rtol=0, atol=1e-12)
                torch.testing.assert_close(seen[k][1][c], ac.detach(), rtol=0, atol=1e-12)
            if k == 60:
                break
            loss = 0.5 * ((torch.relu(X @ wc.T) @ ac - Y) ** 2).mean()
            gw, ga = torch.autograd.grad(loss, (wc, ac))
            with torch.no_grad():
                wc -= lr[c] * gw
                ac -= lr[c] * ga
        torch.testing.assert_close(res.w[c], wc.detach(), rtol=0, atol=1e-12)
        assert torch.isclose(res.time[c], 60 * lr[c])
    assert not torch.allclose(res.w, w)
    with pytest.raises(ValueError, match="lr must be positive"):
        train_two_layer_batched(w, a, X, Y, lr=-1.0, max_steps=2)
