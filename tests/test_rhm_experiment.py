"""rhm experiment: one small cell end to end (real files), against independent facts.

* the plain-``nn.Linear`` model with per-layer learning rates trains exactly like a direct implementation of
  Cagnetta et al.'s parameterization (weights N(0, 1), pre-activations / sqrt(fan_in), readout / width, one
  learning rate), written here independently;
* rebalancing a bias-free ReLU MLP leaves the function at initialization unchanged (oracle: alpha = 1);
* seeded, not recomputed when finished, one row with the documented columns; bad input names the fix.
"""

import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from lazyrich.data import make_rhm
from lazyrich.dynamics import train
from lazyrich.experiments import registry
from lazyrich.experiments.rhm import COLUMNS, RHMConfig, build_model, run, train_kwargs


def _reference_forward(ws, x):
    h = x
    for w in ws[:-1]:
        h = torch.relu(h @ w / math.sqrt(w.shape[0]))
    return h @ ws[-1] / ws[-1].shape[0]


def test_parameterization_equals_direct_implementation():
    cfg = RHMConfig(alpha=3.0, epochs=15, batch_size=256)
    data = make_rhm(256, 64, seed=0)
    x, y = data.x_train, data.y_train
    model, mults = build_model(cfg)
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    # the same network in the reference parameterization: w = effective weight / c
    cs = [lin.in_features ** -0.5 for lin in lins[:-1]] + [1.0 / lins[-1].in_features]
    ws = [torch.nn.Parameter((lin.weight.detach().T / c).clone()) for lin, c in zip(lins, cs)]
    out0 = model(x).detach()
    torch.testing.assert_close(_reference_forward(ws, x), out0, rtol=1e-5, atol=1e-6)

    kw = train_kwargs(cfg, 256)
    assert kw["steps"] == 15
    train(model, (x, y), layer_lrs=mults, progress=False, **kw)
    opt = torch.optim.SGD(ws, lr=cfg.lr, momentum=cfg.momentum)
    for t in range(15):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * t / (0.8 * 15)))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(_reference_forward(ws, x), y).backward()
        opt.step()
    with torch.no_grad():
        ref, out = _reference_forward(ws, x), model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert (out - out0).abs().max() > 100 * (out - ref).abs().max()  # training moved it far more than the gap


def test_rebalanced_function_unchanged_at_init():
    x = make_rhm(200, 10, seed=1).x_train
    m1, _ = build_model(RHMConfig(alpha=1.0, seed=4))
    m10, _ = build_model(RHMConfig(alpha=10.0, seed=4))
    torch.testing.assert_close(m10(x), m1(x), rtol=1e-5, atol=1e-6)
    w1 = [m.weight for m in m1 if isinstance(m, torch.nn.Linear)]
    w10 = [m.weight for m in m10 if isinstance(m, torch.nn.Linear)]
    torch.testing.assert_close(w10[0], w1[0] / 10)
    torch.testing.assert_close(w10[-1], w1[-1] * 10)


def _cfg(**kw):
    return RHMConfig(**{"train_fraction": 0.01, "n_test": 500, "epochs": 2, **kw})


def test_cell_row_seeded_and_not_recomputed(tmp_path):
    a = pd.read_csv(run(_cfg(alpha=10.0), tmp_path / "a") / "results.csv")
    b = pd.read_csv(run(_cfg(alpha=10.0), tmp_path / "b") / "results.csv")
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == list(COLUMNS) and len(a) == 1
    r = a.iloc[0]
    assert r.n_train == 1311 and r.steps == 2 * (1311 // 128) and r.n_c == 8
    assert 0 <= r.test_acc <= 1 and 0 <= r.train_acc <= 1 and r.train_loss > 0
    ckpts = sorted((tmp_path / "a" / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1  # only the final state is kept
    mtime = (tmp_path / "a" / "results.csv").stat().st_mtime_ns
    run(_cfg(alpha=10.0), tmp_path / "a")
    assert (tmp_path / "a" / "results.csv").stat().st_mtime_ns == mtime


_CHILD = textwrap.dedent(
    """
    import os, signal
    from lazyrich.dynamics.store import RunStore
    from lazyrich.experiments.rhm import RHMConfig, run

    save = RunStore.save_checkpoint

    def save_then_die(self, step, state):  # a real kill -9 right after the checkpoint of step 10
        path = save(self, step, state)
        if step == 10:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    RunStore.save_checkpoint = save_then_die
    run(RHMConfig(**{cfg!r}), {out!r})
    """
)


def test_killed_cell_resumes_to_the_same_result(tmp_path):
    kw = {"train_fraction": 0.01, "n_test": 500, "epochs": 10, "alpha": 3.0}  # 100 steps, checkpoints every 10
    code = _CHILD.format(cfg=kw, out=str(tmp_path / "k"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not (tmp_path / "k" / "results.csv").exists()
    from lazyrich.dynamics.store import step_file

    assert sorted(p.name for p in (tmp_path / "k" / "checkpoints").glob("*.pt"))[-1] == f"{step_file(10)}.pt"
    resumed = pd.read_csv(run(RHMConfig(**kw), tmp_path / "k") / "results.csv")
    ref = pd.read_csv(run(RHMConfig(**kw), tmp_path / "ref") / "results.csv")
    # different processes: allow 1e-6 relative for float reduction order
    np.testing.assert_allclose(resumed.to_numpy(dtype=float), ref.to_numpy(dtype=float), rtol=1e-6, atol=1e-9)


def test_registered_with_grids_and_figure(tmp_path):
    import lazyrich.plots

    exp = registry.get("rhm")
    assert exp.presets["paper"].grid["alpha"] == (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    paper = exp.preset("paper")
    assert (paper.L, paper.n_c, paper.m, paper.s, paper.v, paper.width, paper.depth) == (3, 8, 4, 2, 8, 64, 3)
    assert (paper.epochs, paper.lr, paper.momentum, paper.batch_size, paper.n_test) == (250, 6.4, 0.9, 128, 20000)
    for f in exp.presets["paper"].grid["train_fraction"]:
        exp.config("paper", [f"train_fraction={f}"])  # every cell of the grid is valid
    for a in (0.1, 1.0):
        run(_cfg(alpha=a, epochs=1), tmp_path / str(a))
    (name,) = exp.figures
    fig = getattr(lazyrich.plots, name)(tmp_path)
    assert len(fig.axes[0].lines) >= 2
    # a sweep directory's aggregated results.csv is read instead of the cells' (no double counting)
    from lazyrich.plots.tables import read_table

    cells = read_table(tmp_path)
    assert len(cells) == 2
    cells.to_csv(tmp_path / "results.csv", index=False)
    assert len(read_table(tmp_path)) == 2


@pytest.mark.parametrize("kw, match", [({"alpha": -1.0}, "alpha must be a positive"),
                                       ({"train_fraction": 0.9, "n_test": 20000}, "lower train_fraction or n_test"),
                                       ({"train_fraction": 0.0005}, "raise train_fraction or lower batch_size"),
                                       ({"m": 9}, "lower m or")])
def test_bad_config(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run(_cfg(**kw), tmp_path / "x")


def test_refuses_other_devices(tmp_path):
    with pytest.raises(ValueError, match="device=cpu"):
        run(_cfg(), tmp_path / "x", device="cuda")
