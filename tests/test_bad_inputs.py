"""Bad inputs: every row gets one clear error (or warning) whose message names the fix.

One table per public entry point.  Each row: ``(id, call, expected exception or warning class,
a regular expression the message must match)``.  ``call`` is a zero-argument function building
its own inputs, so rows share no state.  Issue 13, section 3.
"""

from __future__ import annotations

import re

import pytest

# ------------------------------------------------------------------ eNTK engine (empirical_ntk)
NTK_CASES: list = []

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


def _student(tau, delta):
    from lazyrich.models.teacher_student import student

    return lambda: student(tau, delta, d=3, width=4, seed=0)


def _regime_no_kernels():
    import tempfile

    from lazyrich.dynamics import RunStore, classify_regime

    def call():
        with tempfile.TemporaryDirectory() as tmp:
            store = RunStore(tmp, {"experiment": "x"}, seed=0)
            for step in range(3):
                store.append_metrics({"step": step, "train_loss": 1.0})
            classify_regime(tmp)

    return call


def _teacher_student_too_big():
    import os
    import tempfile

    from lazyrich.experiments.teacher_student import TeacherStudentConfig, run

    def call():
        old = os.environ.get("LAZYRICH_MEMORY_BUDGET_GB")
        os.environ["LAZYRICH_MEMORY_BUDGET_GB"] = "0.001"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                run(TeacherStudentConfig(width=4000), tmp)
        finally:
            if old is None:
                os.environ.pop("LAZYRICH_MEMORY_BUDGET_GB")
            else:
                os.environ["LAZYRICH_MEMORY_BUDGET_GB"] = old

    return call


OTHER_CASES: list = [
    ("kernel_distance-string", _kd("abc", [[1.0]]), TypeError, r"numeric array or tensor"),
    ("kernel_distance-object-array", _kd("object", [[1.0, 2.0]]), TypeError, r"numeric array or tensor"),
    ("kernel_distance-shape-mismatch", _kd([[1.0]], [[1.0, 0.0], [0.0, 1.0]]), ValueError, r"same probe set"),
    ("kernel_distance-zero-kernel", _kd([[0.0]], [[1.0]]), ValueError, r"pass a non-zero kernel"),
    ("kernel_distance-nan", _kd([[float("nan")]], [[1.0]]), ValueError, r"NaN or inf; recompute"),
    ("kernel_distance-empty", _kd([[]], [[]]), ValueError, r"at least one probe sample"),
    *_linearize_cases(),
    ("student-tau-zero", _student(0.0, 0.0), ValueError, r"tau must be a positive finite number"),
    ("student-delta-inf", _student(0.1, float("inf")), ValueError, r"delta must be finite"),
    ("teacher-student-width-too-large", _teacher_student_too_big(), MemoryError, r"split the grid into runs of fewer seeds"),
    ("classify_regime-no-kernel-checkpoints", _regime_no_kernels(), ValueError, r"record the kernel at several checkpoints"),
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
