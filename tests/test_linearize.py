"""linearize(): f(x; theta0) + J(theta0)(theta - theta0), checked against brute-force Jacobians."""

import pytest
import torch
import torch.nn as nn

from lazyrich import models
from lazyrich.ntk import linearize
from ntk_oracle import per_sample_jacobians


def _model():
    torch.manual_seed(0)
    return models.lenet5(seed=1, input_size=12, in_channels=1).double().eval()


def test_equals_model_at_theta0_and_change_is_J_dtheta():
    model = _model()
    x = torch.randn(4, 1, 12, 12, dtype=torch.float64)
    lin = linearize(model)
    assert torch.allclose(lin(x), model(x), rtol=0, atol=1e-13)
    J = per_sample_jacobians(model, x)  # name -> (n, c, P)
    gen = torch.Generator().manual_seed(2)
    expected = torch.zeros(4, 10, dtype=torch.float64)
    with torch.no_grad():
        for n, p in lin.current().items():
            d = 1e-2 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.add_(d)
            expected += J[n] @ d.reshape(-1)
    change = lin(x) - model(x)
    assert (change - expected).abs().max() / expected.abs().max() < 1e-10
    # the original model is untouched and theta0 was deep-copied
    assert torch.allclose(linearize(model)(x), model(x), atol=1e-13)


def test_gradient_is_constant_jacobian():
    model = _model()
    x = torch.randn(3, 1, 12, 12, dtype=torch.float64)
    lin = linearize(model)
    with torch.no_grad():
        for p in lin.parameters():
            p.add_(0.05 * torch.randn_like(p))
    w = torch.randn(3, 10, dtype=torch.float64)
    (lin(x) * w).sum().backward()
    J = per_sample_jacobians(model, x)
    for n, p in lin.current().items():
        ref = torch.einsum("nk,nkp->p", w, J[n])
        assert (p.grad.reshape(-1) - ref).abs().max() <= 1e-10 * ref.abs().max().clamp_min(1e-12), n


def test_model_linear_in_parameters_is_its_own_linearization():
    class RandomFeatures(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("P", torch.randn(5, 20, dtype=torch.float64))
            self.head = nn.Linear(20, 3).double()

        def forward(self, x):
            return self.head(torch.tanh(x @ self.P))

    model = RandomFeatures()
    lin = linearize(model)
    x = torch.randn(7, 5, dtype=torch.float64)
    with torch.no_grad():
        for (n, p), q in zip(lin.current().items(), model.parameters()):
            new = 10 * torch.randn_like(p)
            p.copy_(new)
            q.copy_(new)
    assert torch.allclose(lin(x), model(x), rtol=1e-12, atol=1e-12)


def test_trains_with_a_torch_optimizer_and_frozen_parameters_stay():
    model = models.frozen_mlp([4, 8, 2], frozen_layers=(0,), seed=0).double()
    lin = linearize(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(n.replace("__", ".") for n in lin.theta.keys()) == sorted(names)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = ((lin(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_linearize_errors():
    with pytest.raises(TypeError):
        linearize(lambda x: x)
    with pytest.raises(ValueError, match="trainable"):
        linearize(nn.Linear(2, 2).requires_grad_(False))
