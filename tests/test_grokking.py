"""grokking: modular data, the alpha/tau knobs of the transformer, censoring and resuming (real files, a
real process killed with kill -9).

Oracles: brute-force modular arithmetic (``label * y == x mod p`` for division); exact float identities of
the knobs (same seed: embeddings of alpha equal those of alpha = 1 divided by alpha, every other parameter
identical; logits of tau equal tau times those of tau = 1); the optimizer's rate read back after warm-up
against ``lr / tau**2``; an uninterrupted run for the resumed one.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lazyrich.data.modular import modular_pairs, modular_split
from lazyrich.experiments import registry
from lazyrich.experiments.grokking import (CURVE_COLUMNS, RESULT_COLUMNS, GrokkingConfig, build_model,
                                           first_crossing, make_optimizer, run)
from lazyrich.models.grok_transformer import grok_transformer

SRC = Path(__file__).resolve().parents[1] / "src"


# ------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("op, oracle", [("x/y", lambda x, y, p: next(c for c in range(p) if (c * y) % p == x)),
                                        ("x+y", lambda x, y, p: (x + y) % p),
                                        ("x-y", lambda x, y, p: (x - y) % p),
                                        ("x*y", lambda x, y, p: (x * y) % p)])
def test_all_equations_once_with_correct_labels(op, oracle):
    p = 7
    tok, lab = modular_pairs(p, op)
    pairs = [(int(a), int(b)) for a, b in tok[:, [0, 2]]]
    want = {(x, y) for x in range(p) for y in (range(1, p) if op == "x/y" else range(p))}
    assert len(pairs) == len(want) and set(pairs) == want
    assert (tok[:, 1] == p + 1).all() and (tok[:, 3] == p).all() and tok.dtype == torch.long
    assert [int(v) for v in lab] == [oracle(x, y, p) for x, y in pairs]


def test_split_sizes_disjoint_and_seeded():
    p = 11
    xtr, ytr, xva, yva = modular_split(p, "x/y", 0.5, seed=3)
    n = p * (p - 1)
    assert len(xtr) == n // 2 and len(xva) == n - n // 2 and len(ytr) == len(xtr) and len(yva) == len(xva)
    rows = {tuple(r.tolist()) for r in torch.cat([xtr, xva])}
    assert len(rows) == n  # disjoint, and together every equation
    again = modular_split(p, "x/y", 0.5, seed=3)
    assert torch.equal(again[0], xtr) and torch.equal(again[3], yva)
    assert not torch.equal(modular_split(p, "x/y", 0.5, seed=4)[0], xtr)
    assert len(modular_split(p, "x+y", 0.3, seed=0)[0]) == int(0.3 * p * p)


@pytest.mark.parametrize("kw, match", [({"p": 12}, "p must be a prime"), ({"operation": "x^y"}, "use one of x/y"),
                                       ({"train_fraction": 1.0}, "strictly between 0 and 1")])
def test_bad_data_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        modular_split(**{"p": 7, **kw})


# ------------------------------------------------------------------------------------------- knobs


def test_alpha_divides_exactly_the_two_embeddings():
    m1 = grok_transformer(13, d_model=16, heads=2, alpha=1.0, seed=5)
    m4 = grok_transformer(13, d_model=16, heads=2, alpha=4.0, seed=5)
    p1, p4 = dict(m1.named_parameters()), dict(m4.named_parameters())
    emb = {"token_embeddings.weight", "position_embeddings.weight"}
    for name in p1:
        if name in emb:
            assert torch.equal(p4[name], p1[name] / 4.0)
            assert p4[name].norm().item() == pytest.approx(p1[name].norm().item() / 4.0, rel=1e-6)
        else:
            assert torch.equal(p4[name], p1[name]), name
    # the embedding share of the parameters (the paper: < 6 % of all parameters at p = 97, d = 128)
    m = grok_transformer(99)
    share = sum(m.get_parameter(n).numel() for n in emb) / sum(q.numel() for q in m.parameters())
    assert 0.05 < share < 0.06


def test_tau_multiplies_the_logits_exactly_and_alpha_barely_changes_them():
    x = modular_pairs(11, "x/y")[0][:20]
    f1 = grok_transformer(13, d_model=16, heads=2, seed=1).eval()(x)
    f3 = grok_transformer(13, d_model=16, heads=2, tau=3.0, seed=1).eval()(x)
    assert torch.equal(f3, 3.0 * f1)
    # the embeddings enter a LayerNorm, so alpha changes the initial function only through its eps
    fa = grok_transformer(13, d_model=16, heads=2, alpha=10.0, seed=1).eval()(x)
    assert (fa - f1).abs().max() < 2e-3 * f1.abs().max()
    assert not torch.equal(fa, f1)


def test_learning_rate_is_divided_by_tau_squared_after_warmup():
    for opt_name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        cfg = GrokkingConfig(p=7, d_model=16, heads=2, tau=2.5, lr=1e-3, optimizer=opt_name, warmup_steps=10)
        model = build_model(cfg)
        opt, sched = make_optimizer(model, cfg)
        assert type(opt) is cls and opt.param_groups[0]["betas"] == (0.9, 0.98)
        rates = []
        for _ in range(12):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        target = 1e-3 / 2.5 ** 2
        assert rates[0] == 0.0 and rates[5] == pytest.approx(0.5 * target, rel=1e-12)
        assert rates[10] == pytest.approx(target, rel=1e-12) and rates[11] == pytest.approx(target, rel=1e-12)


# ------------------------------------------------------------------------------------------- censoring


def test_first_crossing_is_nan_when_never_reached():
    assert first_crossing([0, 10, 20], [0.2, 0.995, 1.0], 0.99) == 10.0
    assert np.isnan(first_crossing([0, 10, 20], [0.2, 0.5, 0.98], 0.99))


def _tiny(**kw):
    base = dict(p=7, d_model=16, heads=2, batch_size=512, lr=1e-2, max_steps=300, eval_every=10,
                checkpoint_every=1000)
    return GrokkingConfig(**{**base, **kw})


def test_cell_memorizes_but_is_censored_on_validation(tmp_path):
    # p = 7: the 21 training equations are memorized in ~200 steps; the 21 unseen ones are not solved
    # within 300 steps, so steps_to_val is censored: NaN and a flag, never the budget.
    path = run(_tiny(stop_when_grokked=True), tmp_path / "c")
    res = pd.read_csv(path / "results.csv")
    cur = pd.read_csv(path / "curves.csv")
    assert list(res.columns) == list(RESULT_COLUMNS) and list(cur.columns) == list(CURVE_COLUMNS)
    r = res.iloc[0]
    assert not r.censored_train and r.steps_to_train == first_crossing(cur.step, cur.train_acc, 0.99)
    assert r.steps_to_train % 10 == 0 and 0 < r.steps_to_train <= 300
    assert r.censored_val and np.isnan(r.steps_to_val) and cur.val_acc.max() < 0.99
    assert r.steps_run == 300 and cur.step.iloc[-1] == 300 and cur.step.iloc[0] == 0
    assert r.lr_effective == 1e-2


def test_stops_once_both_thresholds_are_reached(tmp_path):
    # oracle: the same seeded run without stopping; with the threshold set to the best validation accuracy
    # it reached, the stopping run must end exactly at the later of the two first crossings, on the same curve
    full = pd.read_csv(run(_tiny(stop_when_grokked=False), tmp_path / "full") / "curves.csv")
    thr = float(full.val_acc.max())
    end = max(first_crossing(full.step, full.train_acc, thr), first_crossing(full.step, full.val_acc, thr))
    assert 0 < end < 300
    path = run(_tiny(threshold=thr), tmp_path / "stop")
    r = pd.read_csv(path / "results.csv").iloc[0]
    assert not r.censored_val and not r.censored_train and r.steps_run == end
    pd.testing.assert_frame_equal(pd.read_csv(path / "curves.csv"), full[full.step <= end].reset_index(drop=True))


# ------------------------------------------------------------------------------------------- resume


def test_resume_after_kill_9_equals_uninterrupted_run(tmp_path):
    cfg = _tiny(max_steps=600, checkpoint_every=50, stop_when_grokked=False)
    ref = pd.read_csv(run(cfg, tmp_path / "ref") / "curves.csv")
    out = tmp_path / "killed"
    code = ("from lazyrich.experiments.grokking import GrokkingConfig, run; "
            f"run(GrokkingConfig.from_dict({cfg.to_dict()!r}), {str(out)!r})")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "checkpoints").glob("step_*.pt")) and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "results.csv").exists(), "the child finished before it was killed; raise max_steps"
    resumed = pd.read_csv(run(cfg, out) / "curves.csv")
    pd.testing.assert_frame_equal(resumed, ref)


# ------------------------------------------------------------------------------------------- registry


def test_registered_presets_and_bad_config(tmp_path):
    exp = registry.get("grokking")
    paper = exp.preset("paper")
    assert (paper.p, paper.train_fraction, paper.max_steps, paper.num_layers) == (97, 0.5, 30_000, 1)
    assert exp.presets["paper"].grid == {"alpha": (0.1, 0.3, 1.0, 3.0, 10.0), "tau": (0.5, 0.75, 1.0, 1.25, 1.5)}
    assert exp.presets["paper"].seeds == (0, 1, 2, 3, 4)
    assert exp.preset("quick").threshold == 0.99
    with pytest.raises(ValueError, match="use adam or adamw"):
        run(_tiny(optimizer="sgd"), tmp_path / "x")
    with pytest.raises(ValueError, match="d_model=10 must be divisible by heads=4"):
        exp.config("quick", ["d_model=10"])


def test_figures_from_a_directory_of_cells(tmp_path):
    from lazyrich.plots import fig_grokking_curves, fig_grokking_heatmaps
    from lazyrich.plots.grokking import grokking_grid
    from lazyrich.plots.tables import read_table

    for tau in (1.0, 2.0):
        run(_tiny(tau=tau, max_steps=40), tmp_path / f"t{tau}")
    res = read_table(tmp_path)
    grid = grokking_grid(res, "steps_to_val")
    assert list(grid.columns) == [1.0, 2.0] and grid.isna().all().all()  # all censored: NaN, not the budget
    assert fig_grokking_heatmaps(tmp_path).axes and fig_grokking_curves(tmp_path).axes
    with pytest.raises(FileNotFoundError, match="run `lazyrich run grokking`"):
        read_table(tmp_path / "empty", experiment="grokking")


def test_read_prefers_a_sweep_directorys_aggregated_table(tmp_path):
    """A sweep directory holds the aggregated results.csv and each cell's own copy: rows are read once."""
    import pandas as pd

    from lazyrich.plots.tables import read_table

    row = pd.DataFrame({"alpha": [1.0], "tau": [1.0], "steps_to_val": [5.0]})
    (tmp_path / "cells" / "h1").mkdir(parents=True)
    row.to_csv(tmp_path / "cells" / "h1" / "results.csv", index=False)
    row.to_csv(tmp_path / "results.csv", index=False)
    assert len(read_table(tmp_path)) == 1
    assert len(read_table(tmp_path / "cells")) == 1  # a plain directory of cells: every cell once
