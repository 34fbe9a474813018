"""teacher-student: batched (tau, delta, seed) cells vs independent oracles, real files and a kill -9 resume."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from lazyrich.experiments import registry
from lazyrich.experiments.teacher_student import (COLUMNS, TeacherStudentConfig, batched_kernel_distance,
                                                   two_layer_ntk, run)
from lazyrich.ntk import empirical_ntk, kernel_distance

SMALL = TeacherStudentConfig(d=5, width=8, n_train=30, n_test=50, taus=(0.1, 2.0), deltas=(-1.0, 0.0, 1.0),
                             seeds=(0,), steps=300, n_checkpoints=6, n_probe=20, fig1a_steps=0)


class _Student(nn.Module):
    def __init__(self, w, a):
        super().__init__()
        self.w, self.a = nn.Parameter(w.clone()), nn.Parameter(a.clone())

    def forward(self, x):
        return torch.relu(x @ self.w.T) @ self.a


def test_two_layer_ntk_and_batched_distance_match_the_engine():
    g = torch.Generator().manual_seed(0)
    w, a = torch.randn(3, 6, 4, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    x, x2 = torch.randn(3, 9, 4, generator=g, dtype=torch.float64), torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    K = two_layer_ntk(w, a, x, x2)
    for c in range(3):
        ref = empirical_ntk(_Student(w[c], a[c]), x[c], x2[c])
        assert torch.allclose(K[c], ref, rtol=0, atol=1e-10 * ref.abs().max())
    K0, K1 = two_layer_ntk(w, a, x), two_layer_ntk(w * 1.3 + 0.1, a, x)
    S = batched_kernel_distance(K0, K1)
    for c in range(3):
        assert S[c].item() == pytest.approx(kernel_distance(K0[c], K1[c]), abs=1e-12)
    assert batched_kernel_distance(K0, 7.0 * K0).abs().max() < 1e-15


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts")
    return root, pd.read_csv(run(SMALL, root / "all") / "results.csv")


def test_table_and_batched_equals_cell_alone(small):
    root, df = small
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 6 * 7 and sorted(df.step.unique()) == [0, 1, 3, 10, 31, 96, 300]
    first = df[df.step == 0]
    assert (first.kernel_distance == 0).all() and (first.hamming == 0).all() and (first.param_distance == 0).all()
    assert np.allclose(first.test_loss, first.lazy_test_loss, rtol=1e-12)  # f0 = 0 for both
    assert np.allclose(df.t, df.step * 5e-3 / df.tau ** 2)
    # oracle: the same cell trained on its own gives the same numbers
    alone = pd.read_csv(run(replace(SMALL, taus=(0.1,), deltas=(1.0,)), root / "alone") / "results.csv")
    mine = df[(df.tau == 0.1) & (df.delta == 1.0)].reset_index(drop=True)
    cols = [c for c in COLUMNS if c != "regime"]
    np.testing.assert_allclose(mine[cols].to_numpy(), alone[cols].to_numpy(), rtol=1e-9, atol=1e-12)


def test_small_tau_moves_the_kernel_and_large_tau_follows_the_lazy_prediction(small):
    _, df = small
    last = df[df.step == 300].set_index(["tau", "delta"])
    assert last.loc[(0.1, 1.0)].kernel_distance > 20 * last.loc[(2.0, 1.0)].kernel_distance
    lazy = last.loc[2.0]
    assert np.allclose(lazy.test_loss, lazy.lazy_test_loss, rtol=0.05)
    assert set(df.regime.unique()) <= {"lazy", "rich", "delayed-rich", "undetermined"}
    assert (df[df.tau == 2.0].regime == "lazy").all()


def test_kill9_and_resume_gives_the_same_table(small, tmp_path):
    _, df = small
    cfg = replace(SMALL, steps=4000, n_checkpoints=8)
    ref = pd.read_csv(run(cfg, tmp_path / "ref") / "results.csv")
    code = ("import sys; from dataclasses import replace; from lazyrich.experiments.teacher_student import run, "
            "TeacherStudentConfig as T; "
            f"run(replace(T(), d=5, width=8, n_train=30, n_test=50, taus=(0.1, 2.0), deltas=(-1.0, 0.0, 1.0), "
            f"seeds=(0,), steps=4000, n_checkpoints=8, n_probe=20, fig1a_steps=0), sys.argv[1])")
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)])
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(out.glob("checkpoints/*.pt")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.csv").exists(), "the run finished before it was killed; the test did not test resuming"
    resumed = pd.read_csv(run(cfg, out) / "results.csv")
    pd.testing.assert_frame_equal(resumed, ref, check_exact=False, rtol=1e-10, atol=1e-13)


def test_bad_inputs(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="tau must be a positive"):
        replace(SMALL, taus=(0.0,)).validated()
    with pytest.raises(ValueError, match="even int"):
        replace(SMALL, width=7).validated()
    monkeypatch.setenv("LAZYRICH_MEMORY_BUDGET_GB", "0.0001")
    with pytest.raises(MemoryError, match="split the grid"):
        run(SMALL, tmp_path / "mem")
    assert registry.get("teacher-student").preset("paper").d == 100
    env = {**os.environ, "LAZYRICH_MEMORY_BUDGET_GB": "0.0001"}
    proc = subprocess.run([sys.executable, "-m", "lazyrich", "run", "teacher-student", "--preset", "quick",
                           "--out", str(tmp_path / "cli")], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "split the grid" in proc.stderr and "Traceback" not in proc.stderr


def test_fig1a_side_run_small_scale_turns_neurons_large_scale_does_not(tmp_path):
    from lazyrich.experiments.teacher_student import fig1a_trajectories
    from lazyrich.plots import fig_teacher_student_neurons

    df = fig1a_trajectories(steps=2000, lr=5e-3, n_records=8)
    assert set(df.columns) == {"tau", "delta", "step", "neuron", "w1", "w2", "a"} and df.tau.isna().sum() == 3

    def turn(tau, delta):
        g = df[(df.tau == tau) & (df.delta == delta)]
        first, last = g[g.step == 0].set_index("neuron"), g[g.step == 2000].set_index("neuron")
        cos = (first.w1 * last.w1 + first.w2 * last.w2) / np.hypot(first.w1, first.w2) / np.hypot(last.w1, last.w2)
        return float(np.degrees(np.arccos(cos.clip(-1, 1))).mean())

    assert turn(0.1, 0.0) > 10 * turn(2.0, 0.0)
    df.to_csv(tmp_path / "trajectories.csv", index=False)
    assert len(fig_teacher_student_neurons(tmp_path).axes) == 2


def test_figure(small):
    from lazyrich.plots import fig_teacher_student_maps

    root, _ = small
    assert len(fig_teacher_student_maps(root / "all").axes) == 12  # 6 maps + 6 colour bars
