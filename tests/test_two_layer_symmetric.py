"""TwoLayerNet(symmetric=True) (antisymmetric initialization, f0 = 0) and the normalized view of Luo et al.
eqs. (7)-(13). Oracles: exact zeros, the non-symmetric net of half the width drawn from the same seed, the
chain rule of eq. (7) applied to plain autograd gradients, and brute-force per-sample autograd eNTKs."""

import pytest
import torch

from ntk_oracle import brute_ntk, rel_err
from lazyrich import empirical_ntk
from lazyrich.models import TwoLayerNet, two_layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_symmetric_init_gives_exactly_zero_output(dtype, bias):
    for seed in range(3):
        net = two_layer(3, 40, alpha=0.3, beta1=2.0, beta2=1.5, bias=bias, seed=seed, symmetric=True).to(dtype)
        x = torch.randn(50, 3, dtype=dtype)
        assert torch.equal(net(x), torch.zeros(50, 1, dtype=dtype))
        # the test can fail: one gradient step breaks the symmetry and the output is no longer zero
        y = torch.randn(50, 1, dtype=dtype)
        loss = 0.5 * ((net(x) - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.1 * p.grad
        assert net(x).abs().max() > 1e-3


def test_symmetric_halves_are_the_half_width_draw_with_flipped_output():
    sym = two_layer(4, 10, beta1=0.5, beta2=2.0, bias=True, seed=7, symmetric=True)
    half = two_layer(4, 5, beta1=0.5, beta2=2.0, bias=True, seed=7)
    assert torch.equal(sym.w[:5], half.w) and torch.equal(sym.w[5:], half.w)
    assert torch.equal(sym.a[:5], half.a) and torch.equal(sym.a[5:], -half.a)
    assert sym.symmetric and "symmetric=True" in repr(sym)


def test_symmetric_needs_even_width():
    with pytest.raises(ValueError, match="m must be even"):
        two_layer(2, 5, symmetric=True)
    with pytest.raises(TypeError, match="symmetric"):
        TwoLayerNet(2, 4, symmetric="yes")


@pytest.mark.parametrize("symmetric", [False, True])
def test_normalized_view_forward_and_round_trip(symmetric):
    alpha, beta1, beta2 = 7.0, 0.3, 2.5
    net = two_layer(3, 12, alpha=alpha, beta1=beta1, beta2=beta2, bias=True, seed=1, symmetric=symmetric).double()
    with torch.no_grad():  # move off the symmetric init so the outputs are non-zero
        net.a.add_(0.1 * torch.randn(net.a.shape, dtype=torch.float64))
    view = net.normalized()
    assert view.kappa == pytest.approx(beta1 * beta2 / alpha, rel=1e-15)
    assert view.kappa_prime == pytest.approx(beta1 / beta2, rel=1e-15)
    x = torch.rand(9, 3, dtype=torch.float64)
    out = net(x).detach()
    assert out.abs().max() > 1e-3
    torch.testing.assert_close(view(x), out, rtol=1e-13, atol=0)
    # eq. (11): with the paper's init, the normalized parameters are standard normal -- here a_bar = a / beta1
    torch.testing.assert_close(view.a * beta1, net.a.detach(), rtol=1e-15, atol=0)
    other = two_layer(3, 12, alpha=alpha, beta1=beta1, beta2=beta2, bias=True, seed=2, symmetric=symmetric).double()
    other.load_normalized(view)
    torch.testing.assert_close(other.w.detach(), net.w.detach(), rtol=1e-15, atol=0)
    torch.testing.assert_close(other.a.detach(), net.a.detach(), rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="same size"):
        two_layer(3, 4, bias=True).double().load_normalized(view)


def test_normalized_velocity_is_the_rescaled_gradient_flow():
    # eq. (7): a_bar = a/beta1, t_bar = t/(beta1 beta2) => d a_bar/d t_bar = beta2 da/dt = -beta2 dR/da and
    # d w_bar/d t_bar = -beta1 dR/dw; eq. (12)-(13) must give the same numbers from the normalized risk.
    alpha, beta1, beta2 = 3.0, 0.4, 1.7
    net = two_layer(2, 8, alpha=alpha, beta1=beta1, beta2=beta2, bias=True, seed=3).double()
    x = torch.rand(5, 2, dtype=torch.float64)
    y = torch.randn(5, 1, dtype=torch.float64)
    risk = 0.5 * ((net(x) - y) ** 2).mean()
    ga, gw = torch.autograd.grad(risk, (net.a, net.w))
    va, vw = net.normalized().velocity(x, y)
    torch.testing.assert_close(va, -beta2 * ga, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(vw, -beta1 * gw, rtol=1e-12, atol=1e-15)
    assert net.normalized().time(2.0) == pytest.approx(2.0 / (beta1 * beta2))


@pytest.mark.parametrize("method", ["auto", "jacobian", "ntk_vp"])
def test_symmetric_entk_matches_brute_force(method):
    net = two_layer(3, 10, alpha=2.0, beta1=0.7, beta2=1.3, bias=True, seed=4, symmetric=True).double()
    x1, x2 = torch.randn(6, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    K = empirical_ntk(net, x1, x2, method=method)
    oracle = brute_ntk(net, x1, x2)["total"][:, :, 0, 0]
    assert rel_err(K, oracle) < 1e-10
    # the duplicated neurons are real parameters: the kernel is not that of the half-width net
    assert oracle.abs().max() > 0
