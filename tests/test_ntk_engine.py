"""Oracle tests of the eNTK engine against brute-force per-sample autograd Jacobians.

Tolerances: 1e-10 relative (max-abs error / max-abs kernel entry) in float64; 1e-4 in float32
where the oracle also runs in float32 (same ReLU kinks on both sides).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from lazyrich import models
from lazyrich.ntk import NTKMethod, empirical_ntk, kernel_distance, register_rule
from ntk_oracle import brute_ntk, reduce_mode, rel_err

METHODS = [m.value for m in NTKMethod]
MODES = ["trace", "full", "diagonal", 1]
TOL64 = 1e-10


def _randomize_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen, dtype=m.running_mean.dtype))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen, dtype=m.running_var.dtype))
            if m.weight is None:
                continue
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen, dtype=m.weight.dtype))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen, dtype=m.bias.dtype))


# ------------------------------------------------------------------ a zoo of layer configurations


class ConvZoo(nn.Module):
    """Conv1d/Conv2d with stride, dilation, groups, 'same' and non-zero padding modes, GroupNorm,
    in-place ReLU, BatchNorm1d, and biases."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2, padding_mode="reflect")
        self.gn = nn.GroupNorm(3, 6)
        self.c3 = nn.Conv2d(6, 6, (2, 3), stride=(1, 2), padding=(1, 0), padding_mode="circular", bias=False)
        self.c1d = nn.Conv1d(6, 5, 3, stride=2, dilation=2, padding=2, groups=1)
        self.bn = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        x = torch.relu_(self.c1(x))
        x = torch.tanh(self.gn(self.c2(x)))
        x = self.c3(x)  # (n, 6, H, W)
        x = x.mean(2)  # (n, 6, W)
        x = torch.nn.functional.gelu(self.c1d(x)).mean(-1)
        return self.head(self.bn(x))


class TiedEmbedding(nn.Module):
    """A language-model-style tied weight: the embedding table is reused by the output head."""

    def __init__(self, vocab=11, d=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.ln = nn.LayerNorm(d)
        self.mix = nn.Linear(d, d)

    def forward(self, idx):
        h = torch.tanh(self.mix(self.ln(self.emb(idx)))).mean(1)
        return h @ self.emb.weight.T  # (n, vocab)


class Conv1dSeq(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(9, 4, padding_idx=0)
        self.conv = nn.Conv1d(4, 4, 3, groups=4, padding=1)
        self.fc = nn.Linear(4 * 7, 2)

    def forward(self, idx):
        h = self.emb(idx).transpose(1, 2)
        return self.fc(torch.tanh(self.conv(h)).flatten(1))


class SharedConv(nn.Module):
    """A convolution and a grouped one, each applied twice (the second time to its own output)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.gconv = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
        self.down = nn.Conv2d(2, 4, 2, stride=2, bias=False)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.down(x))
        h = torch.tanh(self.conv(torch.tanh(self.conv(h))))
        h = torch.tanh(self.gconv(torch.tanh(self.gconv(h))))
        return self.head(h.mean((2, 3)))


class BatchNormFeeds(nn.Module):
    """Layers feeding eval-mode BatchNorm in the ways the engine must tell apart: only into a
    BatchNorm (c1, c5, c6 into one shared BatchNorm, fc into BatchNorm1d, bn3 into bn4: output
    gradients derived from the BatchNorm's), also elsewhere (c2: a skip), into a BatchNorm whose
    own gradient is derived (c3), into a BatchNorm without parameters (c4); a grouped convolution
    called twice, each call into its own BatchNorm (c7: per-call scales)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.c3 = nn.Conv2d(4, 4, 1)
        self.bn3 = nn.BatchNorm2d(4)
        self.bn3.weight.requires_grad_(False)
        self.bn4 = nn.BatchNorm2d(4)
        self.c4 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn_plain = nn.BatchNorm2d(4, affine=False)
        self.c5 = nn.Conv2d(4, 4, 3, padding=1)
        self.c6 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.shared_bn = nn.BatchNorm2d(4)
        self.c7 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.bn7a = nn.BatchNorm2d(4)
        self.bn7b = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.bn1d = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.bn1(self.c1(x)))
        z = self.c2(h)
        h = torch.tanh(self.bn2(z)) + 0.5 * z
        h = torch.tanh(self.bn4(self.bn3(self.c3(h))))
        h = torch.tanh(self.bn_plain(self.c4(h)))
        h = torch.tanh(self.shared_bn(self.c5(h))) + torch.tanh(self.shared_bn(self.c6(h)))
        h = torch.tanh(self.bn7b(self.c7(torch.tanh(self.bn7a(self.c7(h))))))
        return self.head(torch.tanh(self.bn1d(self.fc(h.mean((2, 3))))))


def _zoo():
    """name -> (factory(dtype), input factory(n, gen))."""
    img = lambda c, s: (lambda n, g: torch.randn(n, c, s, s, generator=g, dtype=torch.float64))  # noqa: E731
    vec = lambda d: (lambda n, g: torch.randn(n, d, generator=g, dtype=torch.float64))  # noqa: E731
    tok = lambda v, L: (lambda n, g: torch.randint(0, v, (n, L), generator=g))  # noqa: E731
    return {
        "mlp_relu": (lambda: models.mlp([5, 16, 16, 3], "relu", seed=1), vec(5)),
        "mlp_tanh": (lambda: models.mlp([5, 12, 3], "tanh", seed=2), vec(5)),
        "mlp_gelu": (lambda: models.mlp([5, 12, 12, 2], "gelu", seed=3), vec(5)),
        "mlp_1out": (lambda: models.mlp([4, 9, 1], "tanh", seed=4), vec(4)),
        "lenet5": (lambda: models.lenet5(seed=5), img(1, 28)),
        "resnet20": (lambda: models.resnet20(seed=6), img(3, 16)),
        "vgg": (lambda: models.vgg_small(seed=7, input_size=16), img(3, 16)),
        "transformer": (lambda: models.tiny_transformer(seed=8), tok(50, 8)),
        "shared": (lambda: models.shared_layer_net(seed=9), vec(8)),
        "frozen": (lambda: models.frozen_mlp([5, 10, 10, 3], frozen_layers=(0,), seed=10), vec(5)),
        "convzoo": (ConvZoo, img(2, 9)),
        "tied_embedding": (TiedEmbedding, tok(11, 5)),
        "conv1d_seq": (Conv1dSeq, tok(9, 7)),
        "shared_conv": (SharedConv, img(2, 8)),
        "bn_feeds": (BatchNormFeeds, img(2, 6)),
    }


ZOO = _zoo()
_CACHE = {}


def _setup(name):
    if name not in _CACHE:
        factory, inp = ZOO[name]
        torch.manual_seed(123)
        model = factory().double().eval()
        gen = torch.Generator().manual_seed(7)
        _randomize_bn(model, gen)
        x1, x2 = inp(3, gen), inp(2, gen)
        _CACHE[name] = (model, x1, x2, brute_ntk(model, x1, x2))
    return _CACHE[name]


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_mode_matches_bruteforce_float64(name, method):
    model, x1, x2, ref = _setup(name)
    if method == "structured" and name in ("transformer", "tied_embedding"):
        # attention's fused projection / a tied weight have no rule: structured must refuse
        with pytest.raises(ValueError, match="method='auto'"):
            empirical_ntk(model, x1, x2, method=method)
        return
    c = ref["total"].shape[-1]
    for mode in MODES:
        if isinstance(mode, int) and mode >= c:
            continue
        K = empirical_ntk(model, x1, x2, outputs=mode, method=method)
        assert K.dtype == torch.float64
        assert rel_err(K, reduce_mode(ref["total"], mode)) < TOL64, (name, method, mode)


@pytest.mark.parametrize("form", ["hadamard", "explicit"])
@pytest.mark.parametrize("name", ["convzoo", "shared_conv", "conv1d_seq", "lenet5", "shared", "transformer", "bn_feeds"])
def test_both_weight_factor_forms_match_bruteforce(name, form, monkeypatch):
    """The flop model picks Hadamard or explicit per layer; force each form everywhere."""
    import lazyrich.ntk.engine as engine

    monkeypatch.setattr(engine, "_make_choose", lambda *a: (lambda da, dg, L, c: form))
    model, x1, x2, ref = _setup(name)
    c = ref["total"].shape[-1]
    for mode in ("trace", "full", "diagonal"):
        K = empirical_ntk(model, x1, x2, outputs=mode)
        assert rel_err(K, reduce_mode(ref["total"], mode)) < TOL64, (name, form, mode)
    blocks = empirical_ntk(model, x1, x2, outputs="full", per_layer=True)
    for n, K in blocks.items():
        assert rel_err(K, ref[n]) < TOL64 * 10 or ref[n].abs().max() == 0, (name, form, n)
    sym = empirical_ntk(model, x1, outputs="full", batch_size=2)  # x2 = x1: symmetric, chunked path
    assert rel_err(sym, empirical_ntk(model, x1, x1.clone(), outputs="full", method="jacobian")) < TOL64


@pytest.mark.parametrize("name", ["convzoo", "shared_conv", "resnet20", "bn_feeds"])
def test_conv_factor_split_along_logits_matches_oracle(name, monkeypatch):
    """Explicit conv factors are stored in logit parts when large (rules._PART_BYTES); chunks of
    different sizes get different parts, whose overlaps are contracted. (bn_feeds: BatchNorm
    scales applied to the stacked gradients or to the product, per part.)"""
    import lazyrich.ntk.engine as engine
    import lazyrich.ntk.rules as rules

    monkeypatch.setattr(rules, "_PART_BYTES", 1)  # one logit per part
    monkeypatch.setattr(engine, "_make_choose", lambda *a: (lambda da, dg, L, c: "explicit"))
    model, x1, x2, ref = _setup(name)
    for mode in ("trace", "full", "diagonal"):
        K = empirical_ntk(model, x1, x2, outputs=mode, batch_size=2)
        assert rel_err(K, reduce_mode(ref["total"], mode)) < TOL64, (name, mode)
    oracle = empirical_ntk(model, x1, x1.clone(), method="jacobian")
    for bs in (1, 2, 3):
        assert rel_err(empirical_ntk(model, x1, batch_size=bs), oracle) < TOL64, (name, bs)
    # parts of different sizes in the two chunks: 3 logits split 2+1 for 1 sample, 1+1+1 for 2
    monkeypatch.setattr(rules, "_PART_BYTES", 2 * 8 * max(p.numel() for p in model.parameters()) + 8)
    assert rel_err(empirical_ntk(model, x1, x2, batch_size=2), reduce_mode(ref["total"], "trace")) < TOL64


def _check_modes_layers_chunks(model, x1, x2, ref, modes, batch_sizes):
    """Every ``outputs`` mode with x2 != x1 and the per-layer trace blocks against the oracle
    ``ref``, and the symmetric kernel of x1 in chunks against ``method='jacobian'``."""
    for mode in modes:
        assert rel_err(empirical_ntk(model, x1, x2, outputs=mode), reduce_mode(ref["total"], mode)) < TOL64, mode
    for n, blk in empirical_ntk(model, x1, x2, per_layer=True).items():
        assert rel_err(blk, reduce_mode(ref[n], "trace")) < TOL64, n
    oracle = empirical_ntk(model, x1, x1.clone(), method="jacobian")
    for bs in batch_sizes:
        assert rel_err(empirical_ntk(model, x1, batch_size=bs), oracle) < TOL64, bs


class ChannelsLastConvs(nn.Module):
    """Convolutions the channels-last conv path handles (groups 1, zero padding): dilation,
    'same' padding with an even kernel (asymmetric), unequal strides, a bias, one called twice;
    the head ``.view()``s the activations when ``view`` (fails on channels-last tensors)."""

    def __init__(self, view=False):
        super().__init__()
        self.view = view
        self.a = nn.Conv2d(3, 4, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(4, 4, 2, padding="same", bias=False)
        self.c = nn.Conv2d(4, 5, (3, 2), stride=(1, 2), padding=(1, 0))
        self.head = nn.Linear(5 * 7 * 3, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        h = torch.tanh(self.b(torch.tanh(self.b(h))))
        h = torch.tanh(self.c(h))
        return self.head(h.view(h.shape[0], -1) if self.view else h.flatten(1))


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("form", ["explicit", "auto"])
def test_channels_last_conv_path_matches_oracle(view, form, monkeypatch):
    """Images run channels-last (engine._use_channels_last) and the conv rule's channels-last
    patches/gradients path; a model that cannot take channels-last input runs as given."""
    import lazyrich.ntk.engine as engine
    import lazyrich.ntk.rules as rules

    if form == "explicit":
        monkeypatch.setattr(engine, "_make_choose", lambda *a: (lambda da, dg, L, c: "explicit"))
    used = []
    patches_cl = rules.ConvRule._patches_cl
    monkeypatch.setattr(rules.ConvRule, "_patches_cl", lambda *a: used.append(1) or patches_cl(*a))
    torch.manual_seed(0)
    model = ChannelsLastConvs(view).double()
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(3, 3, 7, 7, generator=gen, dtype=torch.float64)
    x2 = torch.randn(2, 3, 7, 7, generator=gen, dtype=torch.float64)
    ref = brute_ntk(model, x1, x2)
    _check_modes_layers_chunks(model, x1, x2, ref, ("trace", "full", "diagonal"), (None, 1, 2))
    if view:
        assert not used  # ran as given after the channels-last forward failed
    elif form == "explicit":
        assert used
    monkeypatch.setattr(engine, "_CHANNELS_LAST", False)  # the plain layout gives the same kernel
    assert rel_err(empirical_ntk(model, x1, x2), reduce_mode(ref["total"], "trace")) < TOL64


def _bn_model_inputs(cls, shape):
    """A float64 eval-mode ``cls()`` with random BatchNorm statistics and affine parameters, and
    inputs x1 (3 samples) and x2 (2) of per-sample ``shape``."""
    torch.manual_seed(0)
    model = cls().double().eval()
    gen = torch.Generator().manual_seed(2)
    _randomize_bn(model, gen)
    x1 = torch.randn(3, *shape, generator=gen, dtype=torch.float64)
    x2 = torch.randn(2, *shape, generator=gen, dtype=torch.float64)
    return model, x1, x2


class FoldCases(nn.Module):
    """Layers into eval BatchNorm for the folded backward (capture._Capture): folded -- a strided,
    dilated, grouped conv; a Conv1d into BatchNorm1d; a conv into two BatchNorms (the first
    folds, the second is an other use); not folded -- asymmetric 'same' padding, reflect
    padding, an output scaled in place before its BatchNorm, a Linear on (n, L, d) into
    BatchNorm1d over L."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, stride=2, dilation=2, padding=2, groups=2)
        self.bn_a = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 4, 2, padding="same", bias=False)
        self.bn_b = nn.BatchNorm2d(4)
        self.c = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
        self.bn_c = nn.BatchNorm2d(4)
        self.d = nn.Conv2d(4, 4, 1)
        self.bn_d = nn.BatchNorm2d(4)
        self.e = nn.Conv2d(4, 3, 3, padding=1)
        self.bn_e1 = nn.BatchNorm2d(3)
        self.bn_e2 = nn.BatchNorm2d(3)
        self.f = nn.Conv1d(3, 4, 3, stride=2)
        self.bn_f = nn.BatchNorm1d(4)
        self.g = nn.Linear(12, 5)
        self.bn_g = nn.BatchNorm1d(4)
        self.head = nn.Linear(4 * 5, 3)

    def forward(self, x):
        h = torch.tanh(self.bn_a(self.a(x)))
        h = torch.tanh(self.bn_b(self.b(h)))
        h = torch.tanh(self.bn_c(self.c(h)))
        z = self.d(h)
        z.mul_(1.5)
        h = torch.tanh(self.bn_d(z))
        z = self.e(h)
        h = torch.tanh(self.bn_e1(z)) * torch.tanh(self.bn_e2(z))  # (n, 3, H, W)
        h = torch.tanh(self.bn_f(self.f(h.flatten(2))))  # (n, 4, 12)
        h = torch.tanh(self.bn_g(self.g(h)))  # Linear over the last axis; BatchNorm1d over axis 1
        return self.head(h.flatten(1))


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_folded_batchnorm_backward_matches_oracle(monkeypatch):
    """The backward passes go through a conv/linear layer and its eval BatchNorm in one step
    (the scale folded into the weight) only where that is exact; the kernels equal the oracle."""
    import lazyrich.ntk.engine as engine

    folded = []
    fusions = engine._batchnorm_fusions
    monkeypatch.setattr(engine, "_batchnorm_fusions", lambda p, cap, o: folded.append(dict(cap.folded)) or fusions(p, cap, o))
    model, x1, x2 = _bn_model_inputs(FoldCases, (2, 9, 9))
    ref = brute_ntk(model, x1, x2)
    _check_modes_layers_chunks(model, x1, x2, ref, ("trace", "full", "diagonal", 1), (None, 1, 2))
    pairs = {(layer, bn) for f in folded for (layer, _), (bn, _, _) in f.items()}
    assert pairs == {("a", "bn_a"), ("e", "bn_e1"), ("f", "bn_f")}


class TiedBatchNorm(nn.Module):
    """A conv into an eval BatchNorm whose weight is also used outside it: the BatchNorm goes to
    the autograd fallback, so the conv cannot derive its gradient from the BatchNorm's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        h = torch.tanh(self.bn(self.conv(x))).mean((2, 3))
        return self.head(h) + self.bn.weight[:2] ** 2


def test_folded_batchnorm_moved_to_fallback_matches_oracle():
    """The forward is rerun without folding (without that rerun the total was off by 8%)."""
    model, x1, x2 = _bn_model_inputs(TiedBatchNorm, (2, 5, 5))
    _check_modes_layers_chunks(model, x1, x2, brute_ntk(model, x1, x2), ("trace", "full"), (None, 2))


class SkipHead(nn.Module):
    """Linear -> tanh -> Linear, with the hidden pre-activation also added to the output: the
    hidden layer's output feeds more than the activation (no trace shortcut)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 6)
        self.b = nn.Linear(6, 6)

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.tanh(h)) + h


class TiedHead(nn.Module):
    """Linear(tanh(Linear(...))) whose last weight is also used on the input: the last layer
    goes to the autograd fallback (no trace shortcut)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x @ self.b.weight)))


@pytest.mark.parametrize(
    "make,hit",
    [
        (TiedHead, False),
        (lambda: models.mlp([5, 7, 3], "relu", seed=1), True),
        (lambda: models.mlp([5, 7, 6, 3], "tanh", seed=2), True),
        (lambda: models.mlp([5, 7, 3], "gelu", seed=3), True),
        (lambda: nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 3)), True),
        (lambda: nn.Sequential(nn.Linear(5, 7), nn.LeakyReLU(0.1), nn.Linear(7, 3, bias=False)), True),
        (lambda: nn.Sequential(nn.Linear(5, 7), nn.Softplus(), nn.Linear(7, 3), nn.Unflatten(1, (3, 1))), True),
        (SkipHead, False),
        (lambda: nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.Tanh()), False),
    ],
)
def test_trace_shortcut_for_an_mlp_head_matches_oracle(make, hit, monkeypatch):
    """Trace mode of a model ending in Linear(phi(Linear(...))): the last hidden layer's output
    gradients collapse to one virtual output (engine._mlp_head); every other case, and every
    other mode, takes the per-output backward passes. Oracle: brute-force Jacobians, float64."""
    import lazyrich.ntk.engine as engine

    seen = []

    def spy(*a):
        virtual = head(*a)
        seen.append(bool(virtual))  # the engine consumes the dict
        return virtual

    head = engine._mlp_head
    monkeypatch.setattr(engine, "_mlp_head", spy)
    torch.manual_seed(0)
    model = make().double()
    x1 = torch.randn(4, 5, dtype=torch.float64)
    x2 = torch.randn(3, 5, dtype=torch.float64)
    ref = brute_ntk(model, x1, x2)
    _check_modes_layers_chunks(model, x1, x2, ref, ("trace", "full", "diagonal", 1), (None, 1, 3))
    assert any(seen) == hit
    # weight and bias scaled differently: the virtual output's bias factor is merged with others
    names = [n for n, p in model.named_parameters()]
    lr = {n: 0.5 + i for i, n in enumerate(names)}
    want = sum(lr[n] * reduce_mode(ref[n], "trace") for n in names)
    assert rel_err(empirical_ntk(model, x1, x2, lr_scales=lr), want) < TOL64


@pytest.mark.parametrize("name", ["convzoo", "transformer", "shared", "frozen", "resnet20", "tied_embedding"])
def test_per_layer_blocks_equal_oracle_and_sum_to_total(name):
    model, x1, x2, ref = _setup(name)
    for method in ("auto", "jacobian"):
        blocks = empirical_ntk(model, x1, x2, outputs="full", method=method, per_layer=True)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert list(blocks) == trainable
        for n, K in blocks.items():
            assert rel_err(K, ref[n]) < TOL64 * 10 or ref[n].abs().max() == 0, n
        total = sum(blocks.values())
        assert rel_err(total, ref["total"]) < TOL64


def test_frozen_parameters_do_not_count():
    model, x1, x2, ref = _setup("frozen")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen, "the zoo's frozen model must freeze something"
    K = empirical_ntk(model, x1, x2, outputs="trace")
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        K_all = empirical_ntk(model, x1, x2, outputs="trace")
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(n not in frozen)
    assert rel_err(K, reduce_mode(ref["total"], "trace")) < TOL64
    assert (K_all - K).abs().max() > 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_lr_scales_equal_explicitly_scaled_jacobians(method):
    model, x1, x2, _ = _setup("convzoo")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    scales = {n: 0.5 + i for i, n in enumerate(names[::2])}
    scales[names[1]] = 0.0
    ref = brute_ntk(model, x1, x2, lr_scales=scales)["total"]
    K = empirical_ntk(model, x1, x2, outputs="full", method=method, lr_scales=scales)
    assert rel_err(K, ref) < TOL64


@pytest.mark.parametrize("name", ["lenet5", "transformer", "convzoo"])
def test_symmetric_and_chunked_paths_are_exact(name):
    model, x1, x2, _ = _setup(name)
    x = torch.cat([x1, x2])
    ref = brute_ntk(model, x)["total"]
    for bs in (None, 1, 2):
        K = empirical_ntk(model, x, outputs="full", batch_size=bs)
        assert rel_err(K, ref) < TOL64
        assert torch.equal(K, K.permute(1, 0, 3, 2))
    K12 = empirical_ntk(model, x1, x2, outputs="diagonal", batch_size=2)
    assert rel_err(K12, reduce_mode(brute_ntk(model, x1, x2)["total"], "diagonal")) < TOL64
    # per-layer blocks: one chunk contracted layer by layer == several chunks with a factor cache
    one = empirical_ntk(model, x, per_layer=True)
    for bs in (2, 3):
        chunked = empirical_ntk(model, x, per_layer=True, batch_size=bs)
        for n in one:
            assert rel_err(chunked[n], one[n]) < TOL64 or one[n].abs().max() == 0, (name, n, bs)


def test_default_is_one_chunk_contracted_layer_by_layer(monkeypatch):
    """Small problems take the one-chunk path (each layer's factors contracted, then dropped);
    with a tiny working-set limit and budget the same call is chunked, with the same kernel."""
    import lazyrich.ntk.engine as engine

    model, x1, x2, ref = _setup("resnet20")
    calls = []
    one_block = engine._one_block
    monkeypatch.setattr(engine, "_one_block", lambda *a, **k: calls.append(1) or one_block(*a, **k))
    K = empirical_ntk(model, x1, x2, outputs="full")
    assert calls and rel_err(K, ref["total"]) < TOL64
    calls.clear()
    import lazyrich.ntk.memory as memory

    monkeypatch.setattr(memory, "_STREAM_SET", 1)
    monkeypatch.setattr(engine, "available_memory", lambda device=None: 8 * 3 * 2 * 1024**2)
    monkeypatch.setattr(memory, "_WORKING_SET", 1)
    Kc = empirical_ntk(model, x1, x2, outputs="full")
    assert not calls and rel_err(Kc, ref["total"]) < TOL64


@pytest.mark.parametrize("fold", [True, False])
def test_layers_feeding_batchnorm_derive_their_output_gradients(monkeypatch, fold):
    """A layer whose output feeds only an eval BatchNorm takes its output gradient from the
    BatchNorm's (times gamma / sqrt(var + eps)); every other case computes its own. With
    ``fold``, the backward passes go through a convolution or linear layer and its BatchNorm in
    one step, and a folded layer whose output is also used elsewhere (c2) adds the BatchNorm
    path to its own gradient; a folded conv into a BatchNorm that feeds another (c3 -> bn3 ->
    bn4) makes bn3 compute its own gradient."""
    import lazyrich.ntk.engine as engine

    monkeypatch.setattr(engine, "_FOLD_BATCHNORM", fold)
    model, x1, x2, ref = _setup("bn_feeds")
    seen, folded = [], []
    fusions = engine._batchnorm_fusions

    def spy(plan, cap, out):
        folded.append(dict(cap.folded))
        seen.append(fusions(plan, cap, out))
        return seen[-1]

    monkeypatch.setattr(engine, "_batchnorm_fusions", spy)
    K = empirical_ntk(model, x1, x2, outputs="full")
    assert rel_err(K, ref["total"]) < TOL64
    pairs = {(layer, bn) for f in seen for (layer, _), (bn, _, _) in f.items()}
    chain = ("c3", "bn3") if fold else ("bn3", "bn4")
    assert pairs == {
        ("c1", "bn1"), chain, ("c5", "shared_bn"), ("c6", "shared_bn"), ("c7", "bn7a"), ("c7", "bn7b"),
        ("fc", "bn1d"),
    }
    folded_pairs = {(layer, bn) for f in folded for (layer, _), (bn, _, _) in f.items()}
    assert folded_pairs == ((pairs - {("bn3", "bn4")}) | {("c2", "bn2")} if fold else set())
    # a channel with gamma = 0 (zero gradient through it) and per-layer blocks, on a copy: the
    # cached model and oracle of _setup serve other tests
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.bn1.weight[0] = 0.0
        model.shared_bn.weight[1] = 0.0
    ref0 = brute_ntk(model, x1, x2)
    blocks = empirical_ntk(model, x1, x2, per_layer=True)
    for name, blk in blocks.items():
        assert rel_err(blk, reduce_mode(ref0[name], "trace")) < TOL64 or blk.abs().max() == 0, name
    assert rel_err(empirical_ntk(model, x1, x2, outputs="full"), ref0["total"]) < TOL64


def test_large_symmetric_gram_block_path():
    # n >= 512 exercises the recursive block-triangular symmetric product
    model = models.mlp([3, 8, 2], "tanh", seed=0).double()
    x = torch.randn(520, 3, dtype=torch.float64)
    K = empirical_ntk(model, x, outputs="trace", method="structured")
    Kj = empirical_ntk(model, x, x.clone(), outputs="trace", method="jacobian")
    assert rel_err(K, Kj) < 1e-12
    assert torch.equal(K, K.T)


@pytest.mark.parametrize("shape", [(7, 5), (64, 3000), (300, 40), (300, 1100), (600, 30), (513, 1030)])
def test_gram_matches_product_and_is_exactly_symmetric(shape):
    # every branch of factors.gram: one product (few rows, or short rows below 512) and the
    # recursive block triangle; the oracle is the plain float64 product
    from lazyrich.ntk.factors import gram

    a = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(shape[0]))
    G = gram(a, None)
    assert torch.equal(G, G.T)
    assert rel_err(G, a @ a.T) < 1e-13
    assert rel_err(gram(a, a[:3]), a @ a[:3].T) < 1e-13


@pytest.mark.parametrize("name", ["mlp_relu", "lenet5", "transformer", "convzoo"])
def test_float32_paths_agree(name):
    factory, inp = ZOO[name]
    torch.manual_seed(0)
    model = factory().float().eval()
    gen = torch.Generator().manual_seed(3)
    x1, x2 = inp(3, gen), inp(2, gen)
    if x1.is_floating_point():
        x1, x2 = x1.float(), x2.float()
    ref = brute_ntk(model, x1, x2)["total"]  # float32 oracle: same kinks
    for method in ("auto", "jacobian", "ntk_vp"):
        K = empirical_ntk(model, x1, x2, outputs="full", method=method)
        assert K.dtype == torch.float32
        assert rel_err(K, ref) < 1e-4, method


def test_integer_inputs_and_single_output_shapes():
    model, x1, x2, ref = _setup("mlp_1out")
    for mode in ("trace", "full", "diagonal", 0):
        K = empirical_ntk(model, x1, x2, outputs=mode)
        assert K.shape == (3, 2)
    model, x1, x2, _ = _setup("transformer")
    assert not x1.is_floating_point()
    assert empirical_ntk(model, x1, x2).shape == (3, 2)


def test_negative_logit_index_and_out_of_range():
    model, x1, x2, ref = _setup("mlp_relu")
    K = empirical_ntk(model, x1, x2, outputs=-1)
    assert rel_err(K, ref["total"][:, :, -1, -1]) < TOL64
    with pytest.raises(ValueError, match="out of range"):
        empirical_ntk(model, x1, x2, outputs=3)


def test_register_rule_for_a_subclass():
    class MyLinear(nn.Linear):
        pass

    from lazyrich.ntk.rules import LinearRule, get_rule

    model = nn.Sequential(MyLinear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    assert get_rule(model[0]) is None  # exact type match: subclasses are not assumed safe
    x1, x2 = torch.randn(3, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="No structured rule"):
        empirical_ntk(model, x1, x2, method="structured")
    register_rule(MyLinear, LinearRule())
    K = empirical_ntk(model, x1, x2, outputs="full", method="structured")
    assert rel_err(K, brute_ntk(model, x1, x2)["total"]) < TOL64


def test_weight_used_outside_its_module_goes_to_fallback():
    lin = nn.Linear(4, 4).double()

    class Abuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return torch.tanh(self.lin(x)) @ self.lin.weight  # weight used twice, once outside

    model = Abuse()
    x1, x2 = torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    K = empirical_ntk(model, x1, x2, outputs="full")
    assert rel_err(K, brute_ntk(model, x1, x2)["total"]) < TOL64


# ------------------------------------------------------------------ errors


def test_errors_are_clear():
    model = models.mlp([4, 6, 2], seed=0)
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="per-sample shapes"):
        empirical_ntk(model, x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="empty"):
        empirical_ntk(model, x[:0])
    for bad in (float("nan"), float("inf"), -float("inf")):  # one bad entry among finite ones
        y = x.clone()
        y[1, 2] = bad
        with pytest.raises(ValueError, match="x1 contains NaN or inf"):
            empirical_ntk(model, y)
        with pytest.raises(ValueError, match="x2 contains NaN or inf"):
            empirical_ntk(model, x, y)
    with pytest.raises(ValueError, match="outputs"):
        empirical_ntk(model, x, outputs="mean")
    with pytest.raises(ValueError, match="method"):
        empirical_ntk(model, x, method="magic")
    with pytest.raises(ValueError, match="lr_scales"):
        empirical_ntk(model, x, lr_scales={"nope": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        empirical_ntk(model, x, lr_scales={"1.weight": -1.0})
    with pytest.raises(TypeError, match="nn.Module"):
        empirical_ntk(lambda z: z, x)

    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        empirical_ntk(bn.train(), x)
    assert empirical_ntk(bn.eval(), x).shape == (3, 3)

    drop = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        empirical_ntk(drop, x)

    frozen = models.mlp([4, 6, 2], seed=0).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        empirical_ntk(frozen, x)


def test_kernel_too_large_for_memory(monkeypatch):
    model = models.mlp([4, 6, 10], seed=0)
    monkeypatch.setenv("LAZYRICH_MEMORY_BUDGET_GB", "0.0001")  # ~100 KiB
    x = torch.randn(64, 4)
    with pytest.raises(MemoryError, match="outputs='trace'"):
        empirical_ntk(model, x, outputs="full")  # 64*64*100*4 B = 1.6 MB
    assert empirical_ntk(model, x[:8], outputs="trace").shape == (8, 8)


# ------------------------------------------------------------------ kernel distance


def test_kernel_distance_properties():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    K1, K2 = A @ A.T, torch.randn(6, 6, generator=g, dtype=torch.float64)
    assert abs(kernel_distance(K1, K1)) < 1e-15
    assert abs(kernel_distance(K1, 3.7 * K1)) < 1e-15
    s = kernel_distance(K1, K2)
    assert abs(kernel_distance(2 * K1, 0.1 * K2) - s) < 1e-14
    manual = 1 - (K1 * K2).sum() / (K1.norm() * K2.norm())
    assert abs(s - manual.item()) < 1e-14
    assert abs(kernel_distance(torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])) - 1.0) < 1e-15
    with pytest.raises(ValueError, match="shapes"):
        kernel_distance(K1, K1[:3])
    with pytest.raises(ValueError, match="zero"):
        kernel_distance(K1, 0 * K1)
