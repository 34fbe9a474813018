"""The self-checks of the autograd paths (issue 13 sec. 1) on real faulty rules: a custom
``torch.autograd.Function`` whose ``vmap`` (batching) rule or ``jvp`` (forward-mode) rule is
wrong, while its ``backward`` -- what plain autograd and the oracle use -- is right. Every
method must still return the oracle's kernel (float64, 1e-10), warning where it fell back."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

from lazyrich.ntk import empirical_ntk
from ntk_oracle import brute_ntk, reduce_mode, rel_err

TOL64 = 1e-10


def _double(vmap_factor: float, jvp_factor: float):
    class Double(torch.autograd.Function):
        """``2 x``, with a ``vmap_factor x`` batching rule and a ``jvp_factor t`` forward-mode rule."""

        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            return g * 2

        @staticmethod
        def jvp(ctx, t):
            return t * jvp_factor

        @staticmethod
        def vmap(info, in_dims, x):
            return x * vmap_factor, in_dims[0]

    return Double


class _Net(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.a, self.b, self.fn = nn.Linear(4, 5), nn.Linear(5, 3), fn

    def forward(self, x):
        return self.b(self.fn.apply(torch.tanh(self.a(x))))


def _run(model, method):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(4, 4, generator=g, dtype=torch.float64)
    x2 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        K = empirical_ntk(model, x1, x2, outputs="full", method=method)
    ref = reduce_mode(brute_ntk(model, x1, x2)["total"], "full")
    return rel_err(K, ref), [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("method", ["jacobian", "ntk_vp"])
def test_wrong_batching_rule_is_caught(method):
    torch.manual_seed(0)
    err, msgs = _run(_Net(_double(vmap_factor=3, jvp_factor=2)).double(), method)
    assert err < TOL64
    assert any("wrong per-sample Jacobians" in m and "'a' (Linear)" in m for m in msgs), msgs


def test_wrong_forward_mode_rule_is_caught_by_the_ntk_vp_column_check():
    torch.manual_seed(0)
    err, msgs = _run(_Net(_double(vmap_factor=2, jvp_factor=3)).double(), "ntk_vp")
    assert err < TOL64
    assert any("wrong kernel columns" in m for m in msgs), msgs


@pytest.mark.parametrize("method", ["auto", "jacobian", "ntk_vp"])
def test_correct_rules_pass_the_checks_silently(method):
    torch.manual_seed(0)
    err, msgs = _run(_Net(_double(vmap_factor=2, jvp_factor=2)).double(), method)
    assert err < TOL64 and not msgs, msgs


@pytest.mark.parametrize("n1", [1, 3])
def test_sample_independence_check_passes_eval_batchnorm_and_token_ids(n1):
    """The two-sample forward of input_checks.check_samples_independent must not misfire on
    per-sample models: eval-mode BatchNorm (floats) and an embedding of token ids (ints)."""
    torch.manual_seed(1)
    bn = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2)).double().eval()
    bn[1].running_mean.normal_()
    x = torch.randn(n1, 4, dtype=torch.float64)
    assert rel_err(empirical_ntk(bn, x, outputs="full"), reduce_mode(brute_ntk(bn, x)["total"], "full")) < TOL64
    emb = nn.Sequential(nn.Embedding(7, 3), nn.Flatten(), nn.Linear(6, 2)).double()
    ids = torch.randint(0, 7, (n1, 2))
    assert rel_err(empirical_ntk(emb, ids, outputs="full"), reduce_mode(brute_ntk(emb, ids)["total"], "full")) < TOL64
