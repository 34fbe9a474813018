"""train(): optimizers against hand-written float64 update rules, data order, NaN handling, interrupted and
resumed runs (exception and SIGKILL), linearized training, continuing from a checkpoint (switching)."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from lazyrich.dynamics import RunStore, Tracker, data_order_seed, load_run, train
from lazyrich.ntk import linearize


def _data(n=40, d=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = (x[:, 0] - x[:, 2] > 0).long()
    return x, y


def _net(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).to(dtype)


def _manual(model, x, y, steps, lr, *, mom=0.0, wd=0.0, mults=None, sched=None, loss="cross_entropy", bs=None, seed=0):
    """Independent float64 loop: heavy ball v <- mom v + (g + wd theta), theta <- theta - lr_p(s) v."""
    params = dict(model.named_parameters())
    vel = {n: torch.zeros_like(p) for n, p in params.items()}
    n = x.shape[0]
    losses = []
    for s in range(steps):
        if bs is None:
            xb, yb = x, y
        else:
            e, b = divmod(s, n // bs)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(data_order_seed(seed, e)))
            xb, yb = x[perm[b * bs:(b + 1) * bs]], y[perm[b * bs:(b + 1) * bs]]
        out = model(xb)
        if loss == "cross_entropy":
            L = nn.functional.cross_entropy(out, yb)
        else:
            L = 0.5 * ((out - nn.functional.one_hot(yb, 2).double()) ** 2).sum(1).mean()
        model.zero_grad()
        L.backward()
        losses.append(L.item())
        f = 1.0 if sched is None else sched(s)
        with torch.no_grad():
            for name, p in params.items():
                g = p.grad + wd * p
                vel[name] = mom * vel[name] + g if s > 0 or mom == 0 else g.clone()
                p -= lr * f * (mults or {}).get(name, 1.0) * vel[name]
    return losses


@pytest.mark.parametrize(
    "kw",
    [
        dict(optimizer="sgd"),
        dict(optimizer="momentum", momentum=0.8, weight_decay=0.01),
        dict(optimizer="sgd", layer_lrs={"0": 2.0, "2.weight": 0.5}, lr_schedule="cosine", loss="mse"),
        dict(optimizer="momentum", momentum=0.5, batch_size=8, lr_schedule=lambda s: 1.0 / (1 + s)),
    ],
)
def test_updates_match_hand_written_rule(kw):
    # oracle: _manual (float64); tolerance 1e-12 on parameters and per-step losses
    x, y = _data()
    steps, lr = 12, 0.3
    a, b = _net(), _net()
    hist = train(a, (x, y), steps=steps, lr=lr, seed=5, progress=False, **kw)
    mults = {"0.weight": 2.0, "0.bias": 2.0, "2.weight": 0.5} if "layer_lrs" in kw else None
    sched = kw.get("lr_schedule")
    if sched == "cosine":
        sched = lambda s: 0.5 * (1 + np.cos(np.pi * s / steps))  # noqa: E731
    ref = _manual(b, x, y, steps, lr, mom=kw.get("momentum", 0.9) if kw["optimizer"] == "momentum" else 0.0,
                  wd=kw.get("weight_decay", 0.0), mults=mults, sched=sched, loss=kw.get("loss", "cross_entropy"),
                  bs=kw.get("batch_size"), seed=5)
    np.testing.assert_allclose(hist["loss"].to_numpy(), ref, rtol=1e-12, atol=1e-12)
    assert hist["step"].tolist() == list(range(steps))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)


def test_adam_matches_torch_adam_loop():
    x, y = _data()
    a, b = _net(), _net()
    train(a, (x, y), steps=10, lr=0.01, optimizer="adam", weight_decay=0.1, progress=False)
    opt = torch.optim.Adam(b.parameters(), lr=0.01, weight_decay=0.1)
    for _ in range(10):
        opt.zero_grad()
        nn.functional.cross_entropy(b(x), y).backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)


def test_minibatch_order_is_a_seeded_permutation_per_epoch():
    x, y = _data(n=12)
    x = torch.arange(12, dtype=torch.float64)[:, None].repeat(1, 3)  # sample i has value i
    seen = []
    model = _net()
    model[0].register_forward_pre_hook(lambda m, inp: seen.append(inp[0][:, 0].long().tolist()))
    train(model, (x, y), steps=6, lr=0.01, batch_size=4, seed=11, progress=False)
    for e in range(2):
        perm = torch.randperm(12, generator=torch.Generator().manual_seed(data_order_seed(11, e))).tolist()
        assert sum(seen[3 * e:3 * e + 3], []) == perm


def test_nan_loss_raises_clear_error():
    x, y = _data()
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train(_net(), (x * 1000.0, y), steps=50, lr=1e6, loss="mse", progress=False)


def test_bad_arguments():
    x, y = _data()
    with pytest.raises(ValueError, match="optimizer"):
        train(_net(), (x, y), steps=1, lr=0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr must"):
        train(_net(), (x, y), steps=1, lr=-1.0)
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        train(_net(), (x, y), steps=1, lr=0.1, layer_lrs={"nope": 2.0})
    with pytest.raises(ValueError, match="start_step"):
        train(_net(), (x, y), steps=1, lr=0.1, start_step=3)


class _Boom(Exception):
    pass


class _CrashingTracker(Tracker):
    crash_at = None

    def step(self, step):
        acted = super().step(step)
        if step == self.crash_at:
            raise _Boom()
        return acted


def _tracked_run(run_dir, crash_at=None, steps=30, dtype=torch.float32):
    x, y = _data(n=48, dtype=dtype)
    model = _net(seed=3, dtype=dtype)
    store = RunStore(run_dir, {"experiment": "t", "steps": steps}, seed=4)
    tr = _CrashingTracker(model, x[:16], y[:16], schedule=5, store=store, test_data=(x[:8], y[:8]))
    tr.crash_at = crash_at
    hist = train(model, (x, y), steps=steps, lr=0.2, optimizer="momentum", batch_size=8, seed=4, tracker=tr,
                 progress=False)
    return hist, model


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    ref_hist, ref_model = _tracked_run(tmp_path / "ref")
    # crash right after recording step 17 (not scheduled) and after recording step 20's metrics but before
    # its checkpoint
    with pytest.raises(_Boom):
        _tracked_run(tmp_path / "a", crash_at=20)
    st = RunStore(tmp_path / "a", {"experiment": "t", "steps": 30}, seed=4)
    assert st.checkpoint_steps() == [0, 5, 10, 15] and 20 in st.completed_steps()
    hist, model = _tracked_run(tmp_path / "a")
    pd.testing.assert_frame_equal(hist, ref_hist)  # exact
    m_ref = pd.read_csv(tmp_path / "ref" / "metrics.csv")
    m = pd.read_csv(tmp_path / "a" / "metrics.csv")
    pd.testing.assert_frame_equal(m, m_ref)  # exact, no duplicate rows
    for pa, pb in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(pa, pb)
    ra, rb = load_run(tmp_path / "a"), load_run(tmp_path / "ref")
    np.testing.assert_array_equal(ra.kernel_distance_matrix(), rb.kernel_distance_matrix())
    # rerunning a finished run recomputes nothing
    before = (tmp_path / "a" / "metrics.csv").stat().st_mtime_ns
    _tracked_run(tmp_path / "a")
    assert (tmp_path / "a" / "metrics.csv").stat().st_mtime_ns == before


_CHILD = textwrap.dedent(
    """
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    import test_dynamics_train as T

    class Killer(T._CrashingTracker):
        def step(self, step):
            acted = T.Tracker.step(self, step)
            if step == 12:
                os.kill(os.getpid(), signal.SIGKILL)
            return acted

    T._CrashingTracker = Killer
    T._tracked_run({run!r})
    """
)


def test_sigkill_midway_then_resume(tmp_path):
    torch.set_num_threads(1)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    code = _CHILD.format(tests=tests_dir, run=str(tmp_path / "k"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    st = RunStore(tmp_path / "k", {"experiment": "t", "steps": 30}, seed=4)
    assert st.checkpoint_steps() == [0, 5, 10]
    hist, _ = _tracked_run(tmp_path / "k")
    ref_hist, _ = _tracked_run(tmp_path / "ref")
    # different processes: allow 1e-6 relative for possible differences in float reduction order
    np.testing.assert_allclose(hist["loss"], ref_hist["loss"], rtol=1e-6, atol=1e-9)
    m = pd.read_csv(tmp_path / "k" / "metrics.csv")
    m_ref = pd.read_csv(tmp_path / "ref" / "metrics.csv")
    assert m["step"].tolist() == m_ref["step"].tolist() == list(range(0, 31, 5))
    np.testing.assert_allclose(m.to_numpy(dtype=float), m_ref.to_numpy(dtype=float), rtol=1e-6, atol=1e-9)


def test_linearized_training_of_linear_model_equals_standard():
    # a random-features model is linear in its trainable parameters, so f_lin == f and training agrees (1e-10)
    x, y = _data()
    torch.manual_seed(0)
    std = nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 2)).double()
    std[0].weight.requires_grad_(False)
    std[0].bias.requires_grad_(False)
    lin = linearize(std)
    kw = dict(steps=15, lr=0.2, optimizer="momentum", batch_size=10, loss="mse", seed=2, progress=False,
              layer_lrs={"2.bias": 0.5})
    h_lin = train(lin, (x, y), **kw)
    h_std = train(std, (x, y), **kw)
    np.testing.assert_allclose(h_lin["loss"], h_std["loss"], rtol=1e-10, atol=1e-12)
    cur = lin.current()
    for n, p in std.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(cur[n], p, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lin(x), std(x), rtol=1e-10, atol=1e-12)


def test_continue_from_checkpoint_with_start_step(tmp_path):
    # switching-experiment plumbing: a fresh model loaded from the step-t checkpoint and trained with start_step=t
    # sees the batches and learning-rate schedule of the uninterrupted run (exact equality of the final
    # parameters for stateless SGD); a linearized continuation starts from the same function, so its first loss
    # equals the standard run's loss at step t (1e-12).
    x, y = _data(n=32)
    store = RunStore(tmp_path / "std", {"experiment": "s"}, seed=1)
    full = _net()
    kw = dict(steps=20, lr=0.1, batch_size=8, seed=1, lr_schedule="cosine", progress=False)
    h_full = train(full, (x, y), store=store, checkpoint_steps=[0, 8], **kw)
    assert store.checkpoint_steps() == [0, 8, 20]
    state = store.load_checkpoint(8)
    part = _net(seed=99)
    part.load_state_dict(state["model"])
    lin = linearize(part)
    h_part = train(part, (x, y), start_step=8, **kw)
    assert h_part["step"].tolist() == list(range(8, 20))
    np.testing.assert_array_equal(h_part["loss"].to_numpy(), h_full["loss"].to_numpy()[8:])
    for pa, pb in zip(part.parameters(), full.parameters()):
        assert torch.equal(pa, pb)
    h_lin = train(lin, (x, y), start_step=8, **kw)
    assert h_lin["loss"].iloc[0] == pytest.approx(h_full["loss"].iloc[8], rel=1e-12)
    assert h_lin["loss"].iloc[-1] < h_lin["loss"].iloc[0]
