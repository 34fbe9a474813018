"""Bad inputs: every row gets one clear error (or warning) whose message names the fix.

One table per public entry point.  Each row: ``(id, call, expected exception or warning class,
a regular expression the message must match)``.  ``call`` is a zero-argument function building
its own inputs, so rows share no state.  Issue 13, section 3.
"""

from __future__ import annotations

import re

import pytest

# ------------------------------------------------------------------ eNTK engine (empirical_ntk)
def _ntk(build_model=None, x1=None, x2=None, **kw):
    """``empirical_ntk`` of a small MLP (4 -> 5 -> 3) or ``build_model()`` on ``x1`` (default 3 samples)."""
    import torch
    import torch.nn as nn

    from lazyrich.ntk import empirical_ntk

    def call():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)) if build_model is None else build_model()
        a = torch.randn(3, 4) if x1 is None else x1()
        empirical_ntk(model, a, None if x2 is None else x2(), **kw)

    return call


def _mlp_with(fill=None, dtype2=None, device=None):
    def build():
        import torch
        import torch.nn as nn

        model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
        if fill is not None:
            with torch.no_grad():
                model[0].weight[1, 2] = fill
        if dtype2 is not None:
            model[2].to(dtype2)
        if device is not None:
            model.to(device)
        return model

    return build


class _BatchMean:
    """A forward that subtracts the batch mean: it mixes samples."""

    def __new__(cls):
        import torch.nn as nn

        class BatchMean(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 3)

            def forward(self, x):
                return self.lin(x - x.mean(0, keepdim=True))

        return BatchMean()


class _FunctionalDropout:
    """``F.dropout(training=True)`` in forward: a random kernel even in eval mode."""

    def __new__(cls):
        import torch.nn as nn
        import torch.nn.functional as F

        class Drop(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 3)

            def forward(self, x):
                return self.lin(F.dropout(x, 0.5, training=True))

        return Drop()


def _train_mode(layer):
    def build():
        import torch.nn as nn

        return nn.Sequential(nn.Linear(4, 5), layer, nn.Linear(5, 3)).train()

    return build


def _t(*shape, dtype=None):
    import torch

    return lambda: torch.randn(*shape) if dtype is None else torch.randint(0, 3, shape, dtype=dtype)


NTK_CASES: list = [
    ("ntk-nan-weights", _ntk(_mlp_with(fill=float("nan"))), ValueError, r"'0\.weight'.*NaN or inf.*reinitialise or reload"),
    ("ntk-inf-weights", _ntk(_mlp_with(fill=float("inf"))), ValueError, r"NaN or inf.*reinitialise or reload"),
    ("ntk-integer-input", _ntk(x1=_t(3, 4, dtype=__import__("torch").long)), ValueError, r"integer tensor.*pass x1\.to\(torch\.float32\)"),
    ("ntk-wrong-feature-size", _ntk(x1=_t(3, 5)), ValueError, r"per-sample shape \(5,\).*shape \(n, \*feature_shape\) the model was built for"),
    ("ntk-no-batch-axis", _ntk(x1=_t(4)), ValueError, r"no batch axis.*x1\.unsqueeze\(0\)"),
    ("ntk-mixed-dtypes", _ntk(_mlp_with(dtype2=__import__("torch").float64)), ValueError, r"mixes parameter dtypes.*model\.double\(\) or model\.float\(\)"),
    ("ntk-meta-device", _ntk(_mlp_with(device="meta")), ValueError, r"meta device.*to_empty"),
    ("ntk-batch-size-zero", _ntk(batch_size=0), ValueError, r"batch_size=0 must be a positive int"),
    ("ntk-batch-size-negative", _ntk(batch_size=-2), ValueError, r"batch_size=-2 must be a positive int"),
    ("ntk-batch-size-string", _ntk(batch_size="8"), TypeError, r"batch_size must be a positive int.*not '8'"),
    ("ntk-batch-size-float", _ntk(batch_size=2.5), TypeError, r"batch_size must be a positive int"),
    ("ntk-functional-dropout", _ntk(_FunctionalDropout), ValueError, r"different outputs for the same input.*model\.eval\(\)"),
    ("ntk-dropout-train-mode", _ntk(_train_mode(__import__("torch").nn.Dropout(0.5))), ValueError, r"Dropout.*model\.eval\(\)"),
    ("ntk-batchnorm-train-mode", _ntk(_train_mode(__import__("torch").nn.BatchNorm1d(5))), ValueError, r"batch statistics.*model\.eval\(\)"),
    ("ntk-forward-mixes-samples", _ntk(_BatchMean), ValueError, r"mixes samples.*act on each sample alone"),
    ("ntk-forward-mixes-samples-x2", _ntk(_BatchMean, x1=_t(1, 4), x2=_t(2, 4)), ValueError, r"mixes samples"),
]

# ------------------------------------------------------------------ kernel_distance, linearize, train, Tracker
def _kd(K1, K2):
    import numpy as np

    from lazyrich.ntk import kernel_distance

    return lambda: kernel_distance(np.asarray([["a", None]], dtype=object) if K1 == "object" else K1, K2)


def _linearize_train_mode(layer):
    import torch.nn as nn

    from lazyrich.ntk import linearize

    def call():
        model = nn.Sequential(nn.Linear(3, 4), layer, nn.Linear(4, 1)).train()
        linearize(model)

    return call


def _linearize_cases():
    import torch.nn as nn

    return [
        ("linearize-batchnorm-train-mode", _linearize_train_mode(nn.BatchNorm1d(4)), ValueError, r"model\.eval\(\)"),
        ("linearize-active-dropout", _linearize_train_mode(nn.Dropout(0.5)), ValueError, r"Dropout.*model\.eval\(\)"),
    ]


OTHER_CASES: list = [
    ("kernel_distance-string", _kd("abc", [[1.0]]), TypeError, r"numeric array or tensor"),
    ("kernel_distance-object-array", _kd("object", [[1.0, 2.0]]), TypeError, r"numeric array or tensor"),
    ("kernel_distance-shape-mismatch", _kd([[1.0]], [[1.0, 0.0], [0.0, 1.0]]), ValueError, r"same probe set"),
    ("kernel_distance-zero-kernel", _kd([[0.0]], [[1.0]]), ValueError, r"pass a non-zero kernel"),
    ("kernel_distance-nan", _kd([[float("nan")]], [[1.0]]), ValueError, r"NaN or inf; recompute"),
    ("kernel_distance-empty", _kd([[]], [[]]), ValueError, r"at least one probe sample"),
    *_linearize_cases(),
]

CASES = NTK_CASES + OTHER_CASES


@pytest.mark.parametrize("call, expected, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_fix(call, expected, pattern):
    if issubclass(expected, Warning):
        with pytest.warns(expected) as record:
            call()
        assert any(re.search(pattern, str(w.message)) for w in record), [str(w.message) for w in record]
    else:
        with pytest.raises(expected) as info:
            call()
        assert re.search(pattern, str(info.value)), str(info.value)
