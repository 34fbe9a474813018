"""Oracle tests for lazyrich.theory.piecewise_linear (Kunin et al., two-layer piecewise-linear nets).

Oracle: the learning-rate-weighted empirical NTK ``sum_p eta_p J_p J_p^T`` of a float64 torch
network, from per-sample Jacobians computed with torch.func (inputs kept away from the kinks),
and autograd gradients / Jacobian-vector products for the dynamics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, jvp

from lazyrich.theory import piecewise_linear as pl


pytestmark = pytest.mark.usefixtures("float64_default")  # these oracles build float64 tensors


class TwoLayerPL(nn.Module):
    """f(x) = a^T sigma(W x), sigma(z) = max(z, gamma z), no biases (test-only model)."""

    def __init__(self, W: np.ndarray, a: np.ndarray, gamma: float) -> None:
        super().__init__()
        h, d = W.shape
        self.hidden = nn.Linear(d, h, bias=False)
        self.readout = nn.Linear(h, 1, bias=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor(W))
            self.readout.weight.copy_(torch.tensor(a)[None, :])
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.hidden(x)
        act = F.relu(z) if self.gamma == 0.0 else F.leaky_relu(z, self.gamma)
        return self.readout(act)  # (n, 1)


def _setup(h: int, d: int, n: int, seed: int, gamma: float):
    rng = np.random.default_rng(seed)
    W, a = rng.standard_normal((h, d)), rng.standard_normal(h)
    X = rng.standard_normal((n, d))
    assert np.min(np.abs(W @ X.T)) > 1e-3, "inputs too close to a kink for this seed"
    return W, a, X, TwoLayerPL(W, a, gamma)


def _brute_force_ntk(model: nn.Module, X1: np.ndarray, X2: np.ndarray, lr: dict[str, float]) -> np.ndarray:
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (x,)).reshape(-1)

    J1 = jacrev(f)(params, torch.tensor(X1))
    J2 = jacrev(f)(params, torch.tensor(X2))
    K = np.zeros((X1.shape[0], X2.shape[0]))
    for name, eta in lr.items():
        j1 = J1[name].reshape(X1.shape[0], -1).numpy()
        j2 = J2[name].reshape(X2.shape[0], -1).numpy()
        K += eta * j1 @ j2.T
    return K


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


CASES = [(0.0, 0.3, 2.5), (0.0, 1.7, 0.6), (0.2, 0.3, 2.5), (0.05, 1.7, 0.6)]  # gamma, eta_a, eta_w


@pytest.mark.parametrize("gamma,eta_a,eta_w", CASES)
def test_ntk_equals_bruteforce_empirical_ntk(gamma: float, eta_a: float, eta_w: float) -> None:
    h, d, n = 9, 3, 7
    W, a, X, model = _setup(h, d, n, 31, gamma)
    X2 = np.random.default_rng(32).standard_normal((5, d))
    assert np.min(np.abs(W @ X2.T)) > 1e-3
    lr = {"hidden.weight": eta_w, "readout.weight": eta_a}
    for Xb in (X, X2):
        K = pl.piecewise_linear_ntk(W, a, X, Xb, gamma=gamma, eta_a=eta_a, eta_w=eta_w)
        assert _rel(K, _brute_force_ntk(model, X, Xb, lr)) < 1e-10
    # default X2 = X1 gives a symmetric kernel
    K = pl.piecewise_linear_ntk(W, a, X, gamma=gamma, eta_a=eta_a, eta_w=eta_w)
    assert np.allclose(K, K.T, atol=1e-13)
    # negative control: the wrong activation slope gives a clearly different kernel
    K_wrong = pl.piecewise_linear_ntk(W, a, X, gamma=gamma + 0.3, eta_a=eta_a, eta_w=eta_w)
    assert _rel(K_wrong, K) > 1e-2


@pytest.mark.parametrize("gamma", [0.0, 0.2])
def test_ntk_literal_sum_with_beta_form_of_M(gamma: float) -> None:
    """K_ij = sum_k c_ki x_i^T M_k x_j c_kj with M_k written via (beta_k, delta_k)."""
    eta_a, eta_w = 0.4, 1.3
    h, d, n = 6, 4, 5
    W, a, X, _ = _setup(h, d, n, 77, gamma)
    Mk = pl.neuron_preconditioners(W, a, eta_a, eta_w)
    Mk_beta = pl.neuron_preconditioners_from_beta(
        pl.neuron_betas(W, a), pl.neuron_deltas(W, a, eta_a, eta_w), eta_a, eta_w)
    assert _rel(Mk_beta, Mk) < 1e-12
    C = pl.activation_matrix(W, X, gamma)
    K_loop = np.einsum("ki,id,kde,je,kj->ij", C, X, Mk_beta, X, C)
    assert _rel(pl.piecewise_linear_ntk(W, a, X, gamma=gamma, eta_a=eta_a, eta_w=eta_w), K_loop) < 1e-12
    # C entries: 1 on the active side, gamma on the inactive side
    assert set(np.unique(C)) <= {1.0, gamma}
    assert np.array_equal(C == 1.0, W @ X.T > 0)


def test_ntk_matches_lazyrich_empirical_ntk_engine() -> None:
    ntk_mod = pytest.importorskip("lazyrich.ntk")
    if not hasattr(ntk_mod, "empirical_ntk"):
        pytest.skip("lazyrich.ntk.empirical_ntk not implemented yet")
    for gamma, eta_a, eta_w in CASES:
        W, a, X, model = _setup(8, 3, 6, 5, gamma)
        lr = {"hidden.weight": eta_w, "readout.weight": eta_a}
        X2 = np.random.default_rng(6).standard_normal((4, 3))
        assert np.min(np.abs(W @ X2.T)) > 1e-3
        for Xb in (None, X2):
            K_eng = ntk_mod.empirical_ntk(model, torch.tensor(X),
                                          None if Xb is None else torch.tensor(Xb), lr_scales=lr)
            K_eng = np.asarray(K_eng.detach().cpu() if torch.is_tensor(K_eng) else K_eng,
                               dtype=np.float64)
            K = pl.piecewise_linear_ntk(W, a, X, Xb, gamma=gamma, eta_a=eta_a, eta_w=eta_w)
            assert _rel(K_eng.reshape(K.shape), K) < 1e-10


def _torch_grads(W, a, X, y, gamma):
    Wt = torch.tensor(W, requires_grad=True)
    at = torch.tensor(a, requires_grad=True)
    z = torch.tensor(X) @ Wt.T
    act = F.relu(z) if gamma == 0.0 else F.leaky_relu(z, gamma)
    loss = 0.5 * ((act @ at - torch.tensor(y)) ** 2).sum()
    gW, ga = torch.autograd.grad(loss, (Wt, at))
    return gW, ga


@pytest.mark.parametrize("gamma,eta_a,eta_w", CASES)
def test_dynamics_against_autograd(gamma: float, eta_a: float, eta_w: float) -> None:
    h, d, n = 5, 3, 8
    W, a, X, model = _setup(h, d, n, 99, gamma)
    y = np.random.default_rng(100).standard_normal(n)
    with torch.no_grad():
        f_t = model(torch.tensor(X)).reshape(-1).numpy()
    assert np.allclose(pl.forward(W, a, X, gamma), f_t, atol=1e-13)

    gW, ga = _torch_grads(W, a, X, y, gamma)
    dW, da = pl.param_velocity(W, a, X, y, gamma, eta_a, eta_w)
    assert _rel(dW, -eta_w * gW.numpy()) < 1e-13
    assert _rel(da, -eta_a * ga.numpy()) < 1e-13

    # time derivatives along the flow via torch forward-mode (jvp) of the coordinate maps
    Wt, at = torch.tensor(W), torch.tensor(a)
    tangents = (-eta_w * gW, -eta_a * ga)

    def coords(Wp: torch.Tensor, ap: torch.Tensor):
        nw = Wp.norm(dim=1)
        delta = eta_w * ap**2 - eta_a * nw**2
        return ap[:, None] * Wp, ap * nw, Wp / nw[:, None], delta

    _, (beta_dot, mu_dot, bh_dot, delta_dot) = jvp(coords, (Wt, at), tangents)
    assert _rel(pl.beta_velocity(W, a, X, y, gamma, eta_a, eta_w), beta_dot.numpy()) < 1e-12
    mu_dot_th, bh_dot_th = pl.spherical_velocity(W, a, X, y, gamma, eta_a, eta_w)
    assert _rel(mu_dot_th, mu_dot.numpy()) < 1e-12
    assert _rel(bh_dot_th, bh_dot.numpy()) < 1e-12
    # delta_k is conserved: its time derivative vanishes (relative to the size of its terms)
    scale = eta_w * np.abs(a * da).max() + eta_a * np.abs(W * dW).max()
    assert np.max(np.abs(delta_dot.numpy())) < 1e-13 * scale
    # coordinates reconstruct beta_k = mu_k beta_hat_k
    mu, bh = pl.signed_spherical(W, a)
    assert np.allclose(mu[:, None] * bh, pl.neuron_betas(W, a), atol=1e-14)


def test_bad_inputs_raise_clear_errors() -> None:
    W, a, X = np.ones((3, 2)), np.ones(3), np.ones((4, 2))
    with pytest.raises(ValueError, match="gamma"):
        pl.piecewise_linear_ntk(W, a, X, gamma=1.0)
    with pytest.raises(ValueError, match="length h"):
        pl.piecewise_linear_ntk(W, np.ones(4), X)
    with pytest.raises(ValueError, match="shape"):
        pl.piecewise_linear_ntk(W, a, np.ones((4, 3)))
    with pytest.raises(ValueError, match="learning rate"):
        pl.piecewise_linear_ntk(W, a, X, eta_a=-1.0)
    W0 = W.copy()
    W0[0] = 0.0
    with pytest.raises(ValueError, match="w_k"):
        pl.signed_spherical(W0, a)
    with pytest.raises(ValueError, match="beta_k"):
        pl.neuron_preconditioners_from_beta(pl.neuron_betas(W0, a), np.zeros(3))
