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


def _xy(n=8, d=3, classes=2, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, torch.arange(n) % classes


def _net(d=3, c=2):
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 4), nn.ReLU(), nn.Linear(4, c))


def _train(mutate=None, model=None, **kw):
    """``train`` on a small classification set; ``mutate(x, y) -> (x, y)`` spoils the data."""

    def call():
        from lazyrich.dynamics import train

        x, y = _xy()
        if mutate is not None:
            x, y = mutate(x, y)
        train(model() if model else _net(), (x, y), **{"steps": 2, "lr": 0.1, "progress": False, **kw})

    return call


def _with(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


def _tracker(probe=None, train_kw=None, **kw):
    """A Tracker on ``_net`` in a fresh temporary directory; with ``train_kw`` also a ``train`` call."""

    def call():
        import tempfile

        from lazyrich.dynamics import Tracker, train

        x, y = _xy()
        with tempfile.TemporaryDirectory() as d:
            model = _net()
            px = x if probe is None else probe(x)
            tr = Tracker(model, px, schedule=kw.pop("schedule", 1), run_dir=d, **kw)
            if train_kw is not None:
                train(model, (x, y), tracker=tr, progress=False, **train_kw)

    return call


def _damaged_run(damage, *, verify=False, read=False):
    """A run directory with two kernels, damaged by ``damage(kernel_file)``, then opened with load_run."""

    def call():
        import tempfile
        from pathlib import Path

        import numpy as np

        from lazyrich.dynamics import RunStore, load_run

        d = Path(tempfile.mkdtemp()) / "run"
        with RunStore(d, {"experiment": "bad-input"}, seed=0) as st:
            st.save_kernel(0, np.eye(3))
            f = st.save_kernel(1, 2 * np.eye(3))
        damage(f)
        run = load_run(d, verify=verify)
        if read:
            run.kernel_distance_matrix()

    return call


def _train_cases():
    import torch

    return [
        ("train-label-above-classes", _train(lambda x, y: (x, _with(y, 0, 2))), ValueError,
         r"\[0, 2\).*relabel the classes"),
        ("train-negative-label", _train(lambda x, y: (x, _with(y, 1, -1))), ValueError, r"relabel the classes"),
        ("train-mse-label-above-classes", _train(lambda x, y: (x, _with(y, 0, 5)), loss="mse"), ValueError,
         r"give the model 6 outputs"),
        ("train-labels-2d", _train(lambda x, y: (x, y[:, None])), ValueError, r"shape \(n,\).*reshape"),
        ("train-nan-input", _train(lambda x, y: (_with(x, (0, 1), float("nan")), y)), ValueError,
         r"train inputs x hold 1 NaN.*remove or impute"),
        ("train-inf-input", _train(lambda x, y: (_with(x, 3, float("inf")), y)), ValueError, r"NaN or infinite"),
        ("train-nan-target-mse", _train(lambda x, y: (x, _with(torch.zeros(8, 2), 0, float("nan"))), loss="mse"),
         ValueError, r"train targets y hold 2 NaN"),
        ("train-input-dtype-mismatch", _train(lambda x, y: (x.double(), y)), ValueError, r"x\.to\(torch\.float32\)"),
        ("train-batch-size-string", _train(batch_size="8"), ValueError, r"batch_size must be None .* positive int"),
        ("train-batch-size-float", _train(batch_size=2.5), ValueError, r"positive int"),
        ("train-weight-decay-string", _train(weight_decay="0.1"), ValueError, r"weight_decay must be a finite number"),
    ]


def _tracker_cases():
    import torch

    return [
        ("tracker-probe-wrong-feature-size", _tracker(probe=lambda x: torch.randn(4, 5)), ValueError,
         r"cannot take the probe points \(shape \(5,\).*per-sample shape"),
        ("tracker-probe-int-dtype", _tracker(probe=lambda x: torch.ones(4, 3, dtype=torch.long)), ValueError,
         r"per-sample shape and dtype"),
        ("tracker-probe-vs-train-data", _tracker(probe=lambda x: torch.randn(4, 3, 1), train_data=(torch.randn(4, 3),
         torch.zeros(4, dtype=torch.long))), ValueError, r"probe points have shape \(3, 1\).*same inputs"),
        ("tracker-probe-nan", _tracker(probe=lambda x: _with(x, 0, float("nan"))), ValueError,
         r"probe_x holds NaN.*clean data"),
        ("tracker-eval-batch-size-zero", _tracker(eval_batch_size=0), ValueError, r"eval_batch_size must be a positive"),
        ("tracker-schedule-beyond-run", _tracker(schedule=[0, 1, 50, 70], train_kw={"steps": 3, "lr": 0.1}),
         UserWarning, r"steps 50, 70 lie beyond the run's length steps=3.*raise steps"),
        ("train-checkpoint-steps-beyond-run", _tracker(train_kw={"steps": 3, "lr": 0.1, "checkpoint_steps": [2, 9]}),
         UserWarning, r"checkpoint_steps steps 9 lie beyond"),
    ]


def _damaged_run_cases():
    import numpy as np

    from lazyrich.dynamics import RunStoreError

    fix = r"rerun the run on (this|its) directory .*lazyrich check"
    return [
        ("load_run-deleted-kernel", _damaged_run(lambda f: f.unlink()), RunStoreError, r"step_00000001.npy .*is missing.*" + fix),
        ("load_run-truncated-npy", _damaged_run(lambda f: f.write_bytes(f.read_bytes()[:100])), RunStoreError,
         r"step_00000001.npy .*is truncated.*" + fix),
        ("load_run-nan-kernel", _damaged_run(lambda f: np.save(f, np.full((3, 3), np.nan, np.float32)), read=True),
         RunStoreError, r"step_00000001.npy holds NaN.*" + fix),
        ("load_run-altered-kernel-verify", _damaged_run(lambda f: np.save(f, np.eye(3, dtype=np.float32)), verify=True),
         RunStoreError, r"step_00000001.npy .*SHA-256.*" + fix),
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
    *_train_cases(),
    *_tracker_cases(),
    *_damaged_run_cases(),
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
