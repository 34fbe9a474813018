"""Tests for lazyrich.models.zoo.

Oracles: closed-form parameter counts from the layer formulas (and the
literature values they reproduce), float64 re-implementations of the forward
passes, forward-hook counts, and sampling statistics with stated tolerances.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lazyrich.models import (
    ACTIVATIONS,
    SharedLayerNet,
    TwoLayerNet,
    frozen_mlp,
    lenet5,
    make_activation,
    mlp,
    resnet20,
    shared_layer_net,
    tiny_transformer,
    two_layer,
    vgg16,
    vgg_small,
    with_frozen,
)

torch.set_num_threads(1)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "build, x, out",
    [
        (lambda: mlp([784, 32, 10], seed=0), torch.randn(3, 1, 28, 28), (3, 10)),
        (lambda: mlp([5, 7, 7, 2], activation="tanh", seed=0), torch.randn(4, 5), (4, 2)),
        (lambda: lenet5(seed=0), torch.randn(2, 1, 28, 28), (2, 10)),
        (lambda: lenet5(in_channels=3, input_size=32, num_classes=7, seed=0), torch.randn(2, 3, 32, 32), (2, 7)),
        (lambda: resnet20(seed=0), torch.randn(2, 3, 32, 32), (2, 10)),
        (lambda: vgg_small(seed=0), torch.randn(2, 3, 32, 32), (2, 10)),
        (lambda: vgg_small(num_classes=4, cfg=(8, "M", 8), batch_norm=False, in_channels=1, input_size=8, seed=0),
         torch.randn(2, 1, 8, 8), (2, 4)),
        (lambda: vgg16(seed=0), torch.randn(2, 3, 32, 32), (2, 10)),
        (lambda: tiny_transformer(seed=0), torch.randint(0, 50, (5, 8)), (5, 3)),
        (lambda: tiny_transformer(seed=0), torch.randint(0, 50, (5, 4)), (5, 3)),
        (lambda: shared_layer_net(6, 4, seed=0), torch.randn(3, 6), (3, 4)),
        (lambda: two_layer(5, 11, seed=0), torch.randn(3, 5), (3, 1)),
        (lambda: two_layer(5, 11, bias=True, out_features=10, seed=0), torch.randn(3, 5), (3, 10)),
    ],
)
def test_output_shapes(build, x, out):
    model = build().eval()
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == out
    assert torch.isfinite(y).all()


# ----------------------------------------------------------------- parameter counts


def conv(cin, cout, k, bias):
    return cin * cout * k * k + (cout if bias else 0)


def test_resnet20_param_count_option_b():
    # He et al. (2016) CIFAR ResNet-20, counted layer by layer; BN has 2 params/channel.
    bn = lambda c: 2 * c  # noqa: E731
    stem = conv(3, 16, 3, False) + bn(16)
    block = lambda ci, co: conv(ci, co, 3, False) + bn(co) + conv(co, co, 3, False) + bn(co)  # noqa: E731
    shortcut_b = lambda ci, co: conv(ci, co, 1, False) + bn(co)  # noqa: E731
    stages = 3 * block(16, 16)
    stages += block(16, 32) + shortcut_b(16, 32) + 2 * block(32, 32)
    stages += block(32, 64) + shortcut_b(32, 64) + 2 * block(64, 64)
    head = 64 * 10 + 10
    expected = stem + stages + head
    assert expected == 272_474
    # option A (zero-padding shortcuts) has no shortcut parameters: the known 0.27M (269,722)
    assert expected - shortcut_b(16, 32) - shortcut_b(32, 64) == 269_722
    assert n_params(resnet20(seed=0)) == expected
    # shortcut really is 1x1 conv + BN where the shape changes, identity elsewhere
    model = resnet20(seed=0)
    assert isinstance(model.layer2[0].shortcut[0], nn.Conv2d) and model.layer2[0].shortcut[0].kernel_size == (1, 1)
    assert isinstance(model.layer1[0].shortcut, nn.Identity)


def test_vgg16_param_count():
    cfg = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    expected, c = 0, 3
    for w in cfg:
        expected += conv(c, w, 3, True) + 2 * w
        c = w
    expected += 512 * 10 + 10
    assert expected == 14_728_266
    model = vgg16(seed=0)
    assert n_params(model) == expected
    assert model.classifier.in_features == 512


def test_lenet5_param_counts():
    def count(cin, flat, classes):
        return conv(cin, 6, 5, True) + conv(6, 16, 5, True) + flat * 120 + 120 + 120 * 84 + 84 + 84 * classes + classes

    assert count(1, 400, 10) == 61_706  # classic LeNet-5 count
    assert n_params(lenet5(seed=0)) == 61_706
    assert lenet5(seed=0).conv1.padding == (2, 2)
    assert n_params(lenet5(in_channels=3, input_size=32, seed=0)) == count(3, 400, 10)
    assert lenet5(in_channels=3, input_size=32, seed=0).conv1.padding == (0, 0)


# ----------------------------------------------------------------- forward oracles (float64)


def test_mlp_matches_manual_forward():
    model = mlp([12, 9, 7, 3], activation="gelu", seed=3).double()
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    lin = [m for m in model if isinstance(m, nn.Linear)]
    h = x.reshape(5, -1).numpy()

    def gelu_tanh(z):  # erf-free GELU formula
        return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))

    for i, layer in enumerate(lin):
        h = h @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
        if i < len(lin) - 1:
            h = gelu_tanh(h)
    np.testing.assert_allclose(model(x).detach().numpy(), h, rtol=1e-12, atol=1e-12)


def test_two_layer_forward_matches_paper_formula():
    # Luo et al. eq. (1): f(x) = (1/alpha) sum_k a_k relu(w_k . x), bias via x -> (x, 1)
    d, m, alpha = 4, 13, 2.5
    for bias in (False, True):
        net = two_layer(d, m, alpha=alpha, beta1=0.7, beta2=1.3, bias=bias, seed=1).double()
        x = torch.randn(6, d, dtype=torch.float64)
        w, a = net.w.detach().numpy(), net.a.detach().numpy()[:, 0]
        xe = np.concatenate([x.numpy(), np.ones((6, 1))], axis=1) if bias else x.numpy()
        expected = np.array([sum(a[k] * max(0.0, w[k] @ xi) for k in range(m)) / alpha for xi in xe])
        assert net.w.shape == (m, d + int(bias))
        np.testing.assert_allclose(net(x).detach().numpy()[:, 0], expected, rtol=1e-12, atol=1e-12)


def test_two_layer_init_statistics():
    # eq. (4): a_k ~ N(0, beta1^2), w_k ~ N(0, beta2^2 I). Sample std of N iid normals has
    # relative sd ~ 1/sqrt(2N); tolerances below are > 6 such sds. Means: |mean| < 6 * beta / sqrt(N).
    d, m, beta1, beta2 = 20, 20_000, 0.3, 2.0
    net = two_layer(d, m, alpha=7.0, beta1=beta1, beta2=beta2, bias=True, seed=0)
    w, a = net.w.detach().double(), net.a.detach().double()
    nw, na = w.numel(), a.numel()
    assert abs(w.std().item() / beta2 - 1) < 6 / math.sqrt(2 * nw)
    assert abs(a.std().item() / beta1 - 1) < 6 / math.sqrt(2 * na)
    assert abs(w.mean().item()) < 6 * beta2 / math.sqrt(nw)
    assert abs(a.mean().item()) < 6 * beta1 / math.sqrt(na)
    # the bias column is drawn like the other input weights (expanded-w convention)
    assert abs(w[:, -1].std().item() / beta2 - 1) < 6 / math.sqrt(2 * m)
    assert net.alpha == 7.0 and net.beta1 == beta1 and net.beta2 == beta2


# ----------------------------------------------------------------- seeding


BUILDERS = {
    "mlp": lambda **kw: mlp([6, 5, 3], **kw),
    "lenet5": lambda **kw: lenet5(**kw),
    "resnet20": lambda **kw: resnet20(**kw),
    "vgg_small": lambda **kw: vgg_small(**kw),
    "tiny_transformer": lambda **kw: tiny_transformer(**kw),
    "shared": lambda **kw: shared_layer_net(**kw),
    "two_layer": lambda **kw: two_layer(4, 9, **kw),
    "frozen_mlp": lambda **kw: frozen_mlp([6, 5, 3], **kw),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_determinism_given_seed(name):
    build = BUILDERS[name]
    state = torch.get_rng_state()
    a, b, c = build(seed=123), build(seed=123), build(seed=124)
    assert torch.equal(torch.get_rng_state(), state), "a seeded build must not touch the global RNG"
    assert same_state(a, b)
    assert not same_state(a, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert same_state(build(generator=g1), build(generator=g2))
    assert not torch.equal(g1.get_state(), torch.Generator().manual_seed(5).get_state()), "generator must advance"
    with pytest.raises(ValueError, match="either seed or generator"):
        build(seed=1, generator=torch.Generator())


# ----------------------------------------------------------------- weight sharing


def test_shared_layer_called_twice():
    net = shared_layer_net(5, 3, seed=0)
    calls = []
    handle = net.shared.register_forward_hook(lambda mod, inp, out: calls.append(out.shape))
    x = torch.randn(4, 5)
    y = net(x)
    handle.remove()
    assert len(calls) == 2
    # parameters appear once; gradient of the shared weight sums both uses (autograd vs manual)
    names = [n for n, _ in net.named_parameters()]
    assert names == ["shared.weight", "shared.bias", "head.weight", "head.bias"]
    W, b = net.shared.weight, net.shared.bias
    manual = net.head(torch.relu(torch.relu(x @ W.T + b) @ W.T + b))
    torch.testing.assert_close(y, manual, rtol=0, atol=0)
    # oracle: two independent copies W1, W2 of the shared weight; d/dW = d/dW1 + d/dW2
    (gW,) = torch.autograd.grad(y.sum(), W)
    W1, W2 = W.detach().clone().requires_grad_(), W.detach().clone().requires_grad_()
    y12 = net.head(torch.relu(torch.relu(x @ W1.T + b) @ W2.T + b))
    g1, g2 = torch.autograd.grad(y12.sum(), (W1, W2))
    torch.testing.assert_close(gW, g1 + g2, rtol=1e-6, atol=1e-7)
    assert g2.abs().sum() > 0  # the second use really contributes
    assert isinstance(net, SharedLayerNet)


# ----------------------------------------------------------------- freezing


def test_with_frozen_and_frozen_mlp():
    model = mlp([4, 6, 2], seed=0)
    with_frozen(model, ["1"])  # module prefix -> weight and bias of the first Linear
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"1.weight", "1.bias"}
    model(torch.randn(3, 4)).sum().backward()
    assert model[1].weight.grad is None and model[3].weight.grad is not None
    with pytest.raises(ValueError, match="no parameter named"):
        with_frozen(model, ["nope"])
    fm = frozen_mlp([4, 6, 6, 2], frozen_layers=(0, -1), seed=0)
    assert {n for n, p in fm.named_parameters() if not p.requires_grad} == {"1.weight", "1.bias", "5.weight", "5.bias"}
    with pytest.raises(ValueError, match="out of range"):
        frozen_mlp([4, 2], frozen_layers=(3,))


# ----------------------------------------------------------------- transformer details


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_tiny_transformer_structure_and_jacobian():
    model = tiny_transformer(vocab_size=11, seq_len=6, d_model=8, nhead=2, num_layers=2, num_classes=3, seed=0)
    layers = model.encoder.layers
    assert len(layers) == 2 and all(layer.self_attn.batch_first for layer in layers)
    assert all(layer.dropout.p == 0.0 for layer in layers)
    assert isinstance(model.encoder.norm, nn.LayerNorm)
    tokens = torch.randint(0, 11, (3, 6))
    # output = head(mean over positions of the encoded sequence)
    with torch.no_grad():
        h = model.encoder(model.tok(tokens) + model.pos(torch.arange(6)))
        torch.testing.assert_close(model(tokens), model.head(h.mean(1)))
    # per-sample Jacobians via torch.func (what eNTK code does) work and match autograd
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = vmap(jacrev(lambda p, t: functional_call(model, p, (t.unsqueeze(0),))[0]), in_dims=(None, 0))(params, tokens)
    out = model(tokens[:1])[0, 1]
    grad = torch.autograd.grad(out, model.head.weight)[0]
    torch.testing.assert_close(jac["head.weight"][0, 1], grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.randn(2, 6))
    with pytest.raises(ValueError, match="exceeds seq_len"):
        model(torch.randint(0, 11, (2, 7)))


# ----------------------------------------------------------------- bad input


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="at least input and output"):
        mlp([5])
    with pytest.raises(ValueError, match="unknown activation"):
        mlp([5, 2], activation="swishy")
    with pytest.raises(ValueError, match="too small for LeNet-5"):
        lenet5(input_size=8, padding=0)
    with pytest.raises(ValueError, match="input_size=32"):
        lenet5(seed=0)(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible by nhead"):
        tiny_transformer(d_model=10, nhead=3)
    with pytest.raises(ValueError, match="positive finite"):
        two_layer(3, 4, alpha=0.0)
    with pytest.raises(ValueError, match="d=3 features"):
        two_layer(3, 4, seed=0)(torch.randn(2, 5))
    with pytest.raises(TypeError, match="seed must be an int"):
        mlp([3, 2], seed=1.5)
    with pytest.raises(ValueError, match="3 entries"):
        resnet20(channels=(16, 32))
    with pytest.raises(ValueError, match="'M'"):
        vgg_small(cfg=(8, "X"))
    for name in ACTIVATIONS:
        assert isinstance(make_activation(name), nn.Module)
    assert isinstance(TwoLayerNet(2, 3), nn.Module)
