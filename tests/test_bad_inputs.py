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


OTHER_CASES: list = [
    ("kernel_distance-string", _kd("abc", [[1.0]]), TypeError, r"numeric array or tensor"),
    ("kernel_distance-object-array", _kd("object", [[1.0, 2.0]]), TypeError, r"numeric array or tensor"),
    ("kernel_distance-shape-mismatch", _kd([[1.0]], [[1.0, 0.0], [0.0, 1.0]]), ValueError, r"same probe set"),
    ("kernel_distance-zero-kernel", _kd([[0.0]], [[1.0]]), ValueError, r"pass a non-zero kernel"),
    ("kernel_distance-nan", _kd([[float("nan")]], [[1.0]]), ValueError, r"NaN or inf; recompute"),
    ("kernel_distance-empty", _kd([[]], [[]]), ValueError, r"at least one probe sample"),
    *_linearize_cases(),
    *_damaged_run_cases(),
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
