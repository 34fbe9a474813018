"""lazyrich.rebalance / layer_balance against independent oracles.

* function unchanged: the float64 output of an untouched deep copy (ReLU MLP with biases, LeNet-5 with
  ReLU + max-pooling); tanh changes it (documented);
* which tensors are scaled: compared tensor by tensor with the copy;
* balance: an explicit per-unit loop (MLP), and the conservation law itself -- under gradient descent with a
  tiny step the per-unit delta moves O(lr^2) while the norms move O(lr) (LeNet-5: conv channels and the
  flatten grouping of fc1's columns).
"""

import copy
import math

import pytest
import torch
from torch import nn

import lazyrich
from lazyrich.models import layer_balance, lenet5, mlp, rebalance, trainable_layers


def _mlp(act="relu", bias=True):
    return mlp([6, 9, 7, 3], activation=act, bias=bias, seed=0).double()


def _lenet():
    return lenet5(input_size=16, padding=0, seed=1).double()


@pytest.mark.parametrize("alpha", [0.1, 0.5, 3.0, 10.0])
def test_relu_mlp_function_unchanged(alpha):
    m = _mlp()
    x = torch.randn(20, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = copy.deepcopy(m)(x)
    assert rebalance(m, alpha) is m
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.2, 4.0])
def test_lenet5_relu_maxpool_function_unchanged(alpha):
    m = _lenet()
    x = torch.randn(8, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = copy.deepcopy(m)(x)
    rebalance(m, alpha)
    torch.testing.assert_close(m(x), ref, rtol=1e-11, atol=1e-12)


def test_tanh_changes_the_function():
    m = _mlp("tanh")
    x = torch.randn(20, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = copy.deepcopy(m)(x)
    rebalance(m, 10.0)
    assert (m(x) - ref).abs().max() > 1e-2


def test_exactly_which_tensors_are_scaled():
    m = _mlp()
    ref = dict(copy.deepcopy(m).named_parameters())
    rebalance(m, 4.0)
    p = dict(m.named_parameters())
    names = [n for n, _ in trainable_layers(m)]
    assert names == ["1", "3", "5"]
    torch.testing.assert_close(p["1.weight"], ref["1.weight"] / 4)
    torch.testing.assert_close(p["1.bias"], ref["1.bias"] / 4)
    torch.testing.assert_close(p["3.weight"], ref["3.weight"])
    torch.testing.assert_close(p["3.bias"], ref["3.bias"] / 4)
    torch.testing.assert_close(p["5.weight"], ref["5.weight"] * 4)
    torch.testing.assert_close(p["5.bias"], ref["5.bias"])
    m2 = _mlp()
    rebalance(m2, 4.0, scale_biases=False)
    torch.testing.assert_close(dict(m2.named_parameters())["3.bias"], ref["3.bias"])


def test_named_layers_match_automatic_choice_and_accept_a_list():
    a, b = _lenet(), _lenet()
    rebalance(a, 3.0)
    rebalance(b, 3.0, first="conv1", last="fc3")
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p, q, msg=n)

    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos, self.out = nn.Embedding(5, 4), nn.Embedding(3, 4), nn.Linear(4, 5)

    e = Emb()
    ref = copy.deepcopy(e)
    rebalance(e, 2.0, first=["tok", "pos"], last="out")
    torch.testing.assert_close(e.tok.weight, ref.tok.weight / 2)
    torch.testing.assert_close(e.pos.weight, ref.pos.weight / 2)
    torch.testing.assert_close(e.out.weight, ref.out.weight * 2)


def test_balance_matches_a_per_unit_loop():
    m = _mlp()
    df = layer_balance(m)
    layers = [mod for _, mod in trainable_layers(m)]
    expect = []
    for k in range(2):
        W, b, A = (t.detach() for t in (layers[k].weight, layers[k].bias, layers[k + 1].weight))
        for i in range(W.shape[0]):
            s_in = sum(float(W[i, j]) ** 2 for j in range(W.shape[1])) + float(b[i]) ** 2
            s_out = sum(float(A[r, i]) ** 2 for r in range(A.shape[0]))
            expect.append(s_out - s_in)
    assert len(df) == 9 + 7
    assert df["delta"].tolist() == pytest.approx(expect, rel=1e-12, abs=1e-12)


def test_rebalance_shifts_balance_as_documented():
    m = _lenet()
    before = layer_balance(m)
    rebalance(m, 3.0)
    after = layer_balance(m)
    j0, jl = before.junction == 0, before.junction == before.junction.max()
    torch.testing.assert_close(torch.tensor(after.delta[j0].values),
                               torch.tensor((before.out_norm2 - before.in_norm2 / 9)[j0].values))
    torch.testing.assert_close(torch.tensor(after.out_norm2[jl].values), torch.tensor(9 * before.out_norm2[jl].values))
    w, b = m.fc2.weight.detach(), m.fc2.bias.detach()  # fc2 lies between: its bias was divided by 3
    torch.testing.assert_close(torch.tensor(after.in_norm2[jl].values), (w ** 2).sum(1) + b ** 2)
    assert (after.delta[j0] > before.delta[j0]).all()  # alpha > 1: upstream, delta grows


def test_balance_is_conserved_by_small_step_gradient_descent_on_lenet5():
    torch.manual_seed(0)
    m = _lenet()
    x = torch.randn(32, 1, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 10, (32,))
    d0 = layer_balance(m)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    d1 = layer_balance(m)
    moved = (d1.in_norm2 - d0.in_norm2).abs().max()
    drift = (d1.delta - d0.delta).abs().max()
    assert moved > 1e-4  # the layers did move
    assert drift < 1e-2 * moved  # ... but delta per unit / per channel is (nearly) conserved
    assert list(d0.layer.unique()) == ["conv1", "conv2", "fc1", "fc2"]
    assert (d0.groupby("layer").size() == pd_sizes()).all()


def pd_sizes():
    import pandas as pd

    return pd.Series({"conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84})


def test_top_level_export():
    assert lazyrich.rebalance is rebalance and lazyrich.layer_balance is layer_balance


@pytest.mark.parametrize("alpha", [0, -1.0, math.nan, math.inf])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="positive finite"):
        rebalance(_mlp(), alpha)


def test_bad_alpha_type():
    with pytest.raises(TypeError, match="positive finite"):
        rebalance(_mlp(), True)


def test_missing_layer_names_the_available_ones():
    with pytest.raises(ValueError, match="no layer named 'conv9'.*conv1, conv2, fc1, fc2, fc3"):
        rebalance(_lenet(), 2.0, first="conv9")


def test_too_few_layers():
    with pytest.raises(ValueError, match="at least two trainable"):
        rebalance(nn.Sequential(nn.Linear(3, 2)), 2.0)
    with pytest.raises(ValueError, match="at least two trainable"):
        layer_balance(nn.Sequential(nn.Linear(3, 2)))


def test_same_first_and_last():
    with pytest.raises(ValueError, match="same layer"):
        rebalance(_lenet(), 2.0, first="fc3", last="fc3")
