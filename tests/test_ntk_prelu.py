"""nn.PReLU (issue 13 sec. 1): the structured rule and the self-checks of the autograd paths.

torch.func's vmap through PReLU raises when the batch differs from the number of outputs and
silently returns wrong Jacobians when the two are equal, so every (n1, n2, c) coincidence is
tested, for every method, against the brute-force float64 oracle (tests/ntk_oracle.py).
Tolerance 1e-10 relative (max-abs error / max-abs entry), float64 throughout.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

from lazyrich.ntk import NTKMethod, empirical_ntk
from lazyrich.ntk.jacobians import per_sample_jacobian, plain_jacobian
from ntk_oracle import brute_ntk, per_sample_jacobians, reduce_mode, rel_err

TOL64 = 1e-10
C = 3  # outputs


def _model(kind: str, per_channel: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "linear":
        layers = [nn.Linear(4, 5), nn.PReLU(5 if per_channel else 1), nn.Linear(5, C)]
    elif kind == "conv2d":
        layers = [nn.Conv2d(2, 4, 3), nn.PReLU(4 if per_channel else 1), nn.Flatten(), nn.Linear(4 * 2 * 2, C)]
    else:
        layers = [nn.Conv3d(2, 3, 2), nn.PReLU(3 if per_channel else 1), nn.Flatten(), nn.Linear(3 * 8, C)]
    m = nn.Sequential(*layers).double()
    with torch.no_grad():  # slopes of both signs, far from the default 0.25
        p = m[1].weight
        p.copy_(torch.linspace(-0.7, 1.3, p.numel(), dtype=p.dtype))
    return m


def _inputs(kind: str, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    shape = {"linear": (4,), "conv2d": (2, 4, 4), "conv3d": (2, 3, 3, 3)}[kind]
    return torch.randn((n,) + shape, generator=g, dtype=torch.float64)


# (n1, n2): n1 == c, n2 == c, both, neither, and x2 = None with n1 == c and n1 != c
SHAPES = [(C, C + 2), (C + 1, C), (C, C), (C + 2, C + 1), (C, None), (C + 1, None)]


@pytest.mark.parametrize("kind", ["linear", "conv2d", "conv3d"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["one-slope", "per-channel"])
@pytest.mark.parametrize("trainable", [True, False], ids=["slope-trainable", "slope-frozen"])
def test_prelu_kernels_match_oracle_for_every_method_and_shape(kind, per_channel, trainable):
    model = _model(kind, per_channel)
    model[1].weight.requires_grad_(trainable)
    for s, (n1, n2) in enumerate(SHAPES):
        x1 = _inputs(kind, n1, 10 + s)
        x2 = None if n2 is None else _inputs(kind, n2, 20 + s)
        ref = brute_ntk(model, x1, x2)["total"]
        for method in [m.value for m in NTKMethod]:
            if method == "structured" and kind == "conv3d":  # no Conv3d rule: an error naming method='auto'
                with pytest.raises(ValueError, match="method='auto'"):
                    empirical_ntk(model, x1, x2, outputs="full", method=method)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the self-check's fallback warning is tested below
                K = empirical_ntk(model, x1, x2, outputs="full", method=method)
            err = rel_err(K, reduce_mode(ref, "full"))
            assert err < TOL64, (method, n1, n2, err)


def test_prelu_per_layer_and_trace_match_oracle():
    model = _model("conv2d", per_channel=True)
    x1, x2 = _inputs("conv2d", C, 1), _inputs("conv2d", C + 1, 2)
    ref = brute_ntk(model, x1, x2)
    for method in ("auto", "structured"):
        got = empirical_ntk(model, x1, x2, method=method, per_layer=True)
        for name, K in got.items():
            assert rel_err(K, reduce_mode(ref[name], "trace")) < TOL64, (method, name)
    assert "1.weight" in got


def test_self_check_catches_wrong_vmap_and_warns_naming_the_layers():
    # batch size == number of outputs: torch.func's vmap through PReLU returns wrong Jacobians
    model = _model("linear", per_channel=True)
    model[1].weight.requires_grad_(False)
    x = _inputs("linear", C, 3)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    with pytest.warns(RuntimeWarning, match=r"wrong per-sample Jacobians.*'1' \(PReLU\)|wrong per-sample Jacobians.*PReLU"):
        jac = per_sample_jacobian(model, x, names, list(range(C)), chunk=C)
    ref = per_sample_jacobians(model, x)
    for n in names:
        assert rel_err(jac[n], ref[n]) < TOL64
    # the verdict is cached: a second call does not warn again and is still right
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jac = per_sample_jacobian(model, x, names, list(range(C)), chunk=C)
    for n in names:
        assert rel_err(jac[n], ref[n]) < TOL64


def test_self_check_passes_silently_on_a_model_vmap_gets_right():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, C)).double()
    x = _inputs("linear", C, 4)
    names = [n for n, _ in model.named_parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jac = per_sample_jacobian(model, x, names, list(range(C)), chunk=2)  # chunks of 2 and 1
    ref = per_sample_jacobians(model, x)
    for n in names:
        assert rel_err(jac[n], ref[n]) < TOL64


def test_plain_jacobian_matches_oracle():
    model = _model("conv2d", per_channel=False)
    x = _inputs("conv2d", 2, 5)
    names = [n for n, _ in model.named_parameters()]
    got = plain_jacobian(model, x, names, [2, 0])
    ref = per_sample_jacobians(model, x)
    for n in names:
        assert rel_err(got[n], ref[n][:, [2, 0]]) < TOL64


@pytest.mark.parametrize("which", ["parametrizations", "old-hook"])
def test_ntk_vp_with_weight_norm_falls_back_to_jacobian_with_a_warning(which):
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(2)
    lin = nn.Linear(4, 5).double()
    if which == "parametrizations":
        lin = weight_norm(lin)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            lin = nn.utils.weight_norm(lin)
    model = nn.Sequential(lin, nn.Tanh(), nn.Linear(5, 2)).double()
    x1, x2 = _inputs("linear", 3, 6), _inputs("linear", 2, 7)
    with pytest.warns(RuntimeWarning, match=r"forward-mode AD.*method='jacobian'"):
        K = empirical_ntk(model, x1, x2, outputs="full", method="ntk_vp")
    assert rel_err(K, reduce_mode(brute_ntk(model, x1, x2)["total"], "full")) < TOL64
