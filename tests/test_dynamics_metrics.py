"""Pure quantities of lazyrich.dynamics.metrics against brute-force / closed-form oracles."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from lazyrich.dynamics import metrics as M
from lazyrich.dynamics.tracker import _hamming_packed, _pack
from lazyrich.ntk import kernel_distance


def _rand_state(seed, shapes):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(*s, generator=g, dtype=torch.float64) for n, s in shapes.items()}


def test_param_distance_and_rd_match_numpy():
    # oracle: numpy norms of flattened differences; Luo et al. eq. (16) per tensor; tol 1e-12
    shapes = {"w": (5, 3), "b": (5,), "a": (1, 5)}
    t0, t1 = _rand_state(0, shapes), _rand_state(1, shapes)
    total, per = M.param_distances(t1, t0)
    rd = M.relative_distances(t1, t0)
    ref = {n: np.linalg.norm((t1[n] - t0[n]).numpy().ravel()) for n in shapes}
    assert total == pytest.approx(math.sqrt(sum(v**2 for v in ref.values())), rel=1e-12)
    for n in shapes:
        assert per[n] == pytest.approx(ref[n], rel=1e-12)
        assert rd[n] == pytest.approx(ref[n] / np.linalg.norm(t0[n].numpy().ravel()), rel=1e-12)
    # zero-initialised tensor has no relative distance
    t0["b"] = torch.zeros(5, dtype=torch.float64)
    assert math.isnan(M.relative_distances(t1, t0)["b"])
    with pytest.raises(ValueError, match="different names"):
        M.param_distances({"w": t1["w"]}, t0)


def test_hamming_brute_force_and_packed_agree():
    # oracle: explicit double loop over (site, point, unit) counting state changes; exact
    g = torch.Generator().manual_seed(3)
    init = [torch.randn(7, 11, generator=g) > 0, torch.randn(7, 3, generator=g) > 0]
    now = [m.clone() for m in init]
    now[0][2, 4] = ~now[0][2, 4]
    now[0][6, 0] = ~now[0][6, 0]
    now[1][0, 1] = ~now[1][0, 1]
    flips = 0
    total = 0
    for a, b in zip(now, init):
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                flips += int(a[i, j] != b[i, j])
                total += 1
    h, per = M.hamming_distance(now, init)
    assert h == flips / total == 3 / (77 + 21)
    assert per == [2 / 77, 1 / 21]
    hp, perp = _hamming_packed(_pack(now), _pack(init), [m.numel() for m in init])
    assert hp == h and perp == per
    with pytest.raises(ValueError, match="architecture"):
        M.hamming_distance(now[:1], init)


def test_two_layer_delta_formula_linear_pair_and_w_a():
    # oracle: delta_k = eta_w ||a_k||^2 - eta_a (||w_k||^2 + b_k^2) computed entry by entry; tol 1e-12
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    st = M.two_layer_structure(net)
    assert st == {"w": "0.weight", "b": "0.bias", "a": "2.weight", "a_axis": 1}
    p = dict(net.named_parameters())
    d = M.two_layer_deltas(p, st, {"0.weight": 2.0, "0.bias": 2.0, "2.weight": 0.5})
    W, b, A = p["0.weight"].detach().double(), p["0.bias"].detach().double(), p["2.weight"].detach().double()
    for k in range(4):
        ref = 2.0 * float((A[:, k] ** 2).sum()) - 0.5 * (float((W[k] ** 2).sum()) + float(b[k] ** 2))
        assert d[k] == pytest.approx(ref, rel=1e-12)
    # tanh is not positively homogeneous: no conserved delta
    assert M.two_layer_structure(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))) is None
    assert M.two_layer_structure(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))) is None

    class WA(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 3))
            self.a = nn.Parameter(torch.randn(6, 1))

        def forward(self, x):
            return torch.relu(x @ self.w.T) @ self.a

    from lazyrich.models import two_layer

    assert M.two_layer_structure(two_layer(3, 5, activation="relu", seed=0))["a_axis"] == 0
    assert M.two_layer_structure(two_layer(3, 5, activation="tanh", seed=0)) is None
    m = WA()
    st = M.two_layer_structure(m)
    d = M.two_layer_deltas(dict(m.named_parameters()), st)
    ref = (m.a.detach().double() ** 2).sum(1) - (m.w.detach().double() ** 2).sum(1)
    np.testing.assert_allclose(d, ref.numpy(), rtol=1e-12)


def _gd_drift(lr, steps, layer_lrs=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randn(16, 1, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    st = M.two_layer_structure(net)
    mult = layer_lrs or {}
    pairs = M.linear_pairs(net)
    d0 = M.two_layer_deltas(dict(net.named_parameters()), st, mult)
    a0 = net[2].weight.detach().clone()
    b0 = M.layer_balances(net, pairs, mult)
    for _ in range(steps):
        net.zero_grad()
        loss = 0.5 * ((net(x) - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for n, p in net.named_parameters():
                p -= lr * mult.get(n, 1.0) * p.grad
    d1 = M.two_layer_deltas(dict(net.named_parameters()), st, mult)
    b1 = M.layer_balances(net, pairs, mult)
    moved = float(((net[2].weight.detach() ** 2 - a0**2).abs()).max())  # change of a_k^2 itself
    return np.abs(d1 - d0).max(), abs(b1["0->2"] - b0["0->2"]), moved, loss.item()


@pytest.mark.parametrize("layer_lrs", [None, {"0.weight": 3.0, "0.bias": 3.0, "2.weight": 0.5, "2.bias": 0.5}])
def test_delta_and_balance_conserved_drift_shrinks_with_lr(layer_lrs):
    # oracle: exact conservation under gradient flow (Kunin et al.); gradient descent with step eta over a fixed
    # time eta * steps drifts by O(eta): quartering eta must shrink the drift by > 3x (ideal 4x).
    drift1, bal1, moved, _ = _gd_drift(0.04, 50, layer_lrs)
    drift2, bal2, _, _ = _gd_drift(0.01, 200, layer_lrs)
    assert drift1 > 0 and drift2 > 0
    assert drift1 / drift2 > 3.0
    assert bal1 / bal2 > 3.0
    assert drift2 < 0.05 * moved  # the terms of delta_k move, their difference (nearly) does not


def test_layer_balance_formula():
    # oracle: direct Frobenius norms, balance = ||W2||^2 - (||W1||^2 + ||b1||^2)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    pairs = M.linear_pairs(net)
    assert pairs == [("1", "3"), ("3", "5")]
    bal = M.layer_balances(net, pairs)
    W1, b1, W2 = (t.detach().double() for t in (net[1].weight, net[1].bias, net[3].weight))
    ref = float((W2**2).sum() - (W1**2).sum() - (b1**2).sum())
    assert bal["1->3"] == pytest.approx(ref, rel=1e-12)


def test_gram_to_distance_equals_kernel_distance_and_scale_invariance():
    # oracle: lazyrich.ntk.kernel_distance (Zhou et al. eq. 4) pairwise; tol 1e-12
    g = np.random.default_rng(0)
    Ks = [g.standard_normal((6, 6)) for _ in range(4)]
    Ks = [k @ k.T for k in Ks]
    Ks.append(3.7 * Ks[0])  # scaled copy
    G = np.array([[np.vdot(a, b) for b in Ks] for a in Ks])
    S = M.gram_to_distance(G)
    for i in range(5):
        for j in range(5):
            ref = 0.0 if i == j else kernel_distance(Ks[i], Ks[j])
            assert S[i, j] == pytest.approx(ref, abs=1e-12)
    assert S[0, 4] == pytest.approx(0.0, abs=1e-12)  # equal up to scale -> 0
    assert S[1, 4] == pytest.approx(S[1, 0], abs=1e-12)  # scaling either kernel leaves S unchanged


def test_classical_mds_recovers_planar_trajectory():
    # oracle: kernels K(phi) = cos(phi) E1 + sin(phi) E2 with orthonormal E1, E2 lie on a great circle, so the
    # chordal distances sqrt(2S) are exactly those of points on a unit circle in 2-D: the embedding must reproduce
    # all pairwise distances (tol 1e-10) and put row 0 at phi=0.
    g = np.random.default_rng(1)
    E = np.linalg.qr(g.standard_normal((16, 2)))[0]
    E1, E2 = E[:, 0].reshape(4, 4), E[:, 1].reshape(4, 4)
    phis = np.linspace(0, 1.2, 7)
    Ks = [np.cos(p) * E1 + np.sin(p) * E2 for p in phis]
    S = M.gram_to_distance(np.array([[np.vdot(a, b) for b in Ks] for a in Ks]))
    X = M.classical_mds(S)
    D = np.linalg.norm(X[:, None] - X[None], axis=-1)
    np.testing.assert_allclose(D, np.sqrt(2 * S), atol=1e-10)
    ref = 2 * np.abs(np.sin((phis[:, None] - phis[None]) / 2))
    np.testing.assert_allclose(D, ref, atol=1e-10)
    assert X[-1, 0] >= X[0, 0]


def test_velocity_phase_split_synthetic():
    # oracle: a velocity with a fast phase up to step 100 then a flat plateau; the split must be at 100
    steps = np.arange(0, 400, 10)
    v = np.where(steps < 100, 1.0 - steps / 200.0, 0.01) + 1e-4 * np.sin(steps)
    out = M.velocity_phase_split(steps, v)
    assert out["step"] == 100 and out["method"] == "velocity_threshold"
    with pytest.raises(ValueError, match="at least 3"):
        M.velocity_phase_split(steps[:2], v[:2])


def test_alignment_and_effective_rank_closed_forms():
    # oracle: K = Y Y^T has alignment 1; identity has effective rank n; rank-1 kernel has effective rank 1
    y = np.array([0, 1, 1, 2, 0])
    Y = np.eye(3)[y]
    assert M.kernel_target_alignment(Y @ Y.T, y) == pytest.approx(1.0, abs=1e-12)
    K = np.eye(5)
    ref = np.trace(K @ (Y @ Y.T)) / (np.linalg.norm(K) * np.linalg.norm(Y @ Y.T))
    assert M.kernel_target_alignment(K, y) == pytest.approx(ref, abs=1e-12)
    assert M.effective_rank(np.eye(7)) == pytest.approx(7.0, rel=1e-12)
    u = np.arange(1.0, 6.0)
    assert M.effective_rank(np.outer(u, u)) == pytest.approx(1.0, abs=1e-9)
    # full (n, n, c, c) kernel = I_n (x) I_c has effective rank n c
    Kf = np.einsum("ij,ab->ijab", np.eye(4), np.eye(3))
    assert M.effective_rank(Kf) == pytest.approx(12.0, rel=1e-12)
