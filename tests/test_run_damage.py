"""A run directory that detects its own damage (issue 13 section 2): the manifest, load_run's checks,
`lazyrich check`, resume from the last intact checkpoint, and the writer's lock.

Real files and real processes: every damage is done to the files of a real (small) tracked run; the lock is
held by a real second process; oracles are an independent SHA-256 of every file on disk and an uninterrupted
run of the same config (resumed runs must end with identical numbers).
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from lazyrich.cli import main as cli
from lazyrich.dynamics import RunStore, RunStoreError, Tracker, load_run, train
from lazyrich.dynamics.manifest import MANIFEST, check_run, read_manifest

K10 = "kernels/total/step_00000010.npy"


def _run(run_dir, steps=30):
    """A small tracked run: kernels, metrics and checkpoints every 5 steps (float32, CPU, seeded)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g)
    y = (x[:, 0] - x[:, 2] > 0).long()
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    store = RunStore(run_dir, {"experiment": "t", "steps": steps}, seed=4)
    tr = Tracker(model, x[:16], y[:16], schedule=5, store=store, test_data=(x[:8], y[:8]))
    hist = train(model, (x, y), steps=steps, lr=0.2, optimizer="momentum", batch_size=8, seed=4, tracker=tr,
                 progress=False)
    return hist, model


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref") / "run"
    hist, model = _run(d)
    return d, hist, model


@pytest.fixture
def copy(ref, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(ref[0], d)
    return d


def _check(d, capsys):
    code = cli(["check", str(d)])
    return code, capsys.readouterr().out


# --------------------------------------------------------------------------------------------- the manifest


def test_manifest_records_every_file_with_its_sha256(ref, capsys):
    d = ref[0]
    records, bad = read_manifest(d)
    on_disk = sorted(p.relative_to(d).as_posix() for p in d.rglob("*")
                     if p.is_file() and p.name not in (MANIFEST, ".lock"))
    assert bad == 0 and sorted(records) == on_disk
    for rel, rec in records.items():  # oracle: an independent hash of the bytes on disk
        raw = (d / rel).read_bytes()
        assert rec == {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}, rel
    assert {"metrics.csv", "kernels/index.csv", K10, "checkpoints/step_00000030.pt"} <= set(records)
    code, out = _check(d, capsys)
    assert code == 0 and f"intact ({len(records)} files, {len(records)} checked against their SHA-256)" in out
    assert load_run(d, verify=True).kernel_steps.tolist() == list(range(0, 31, 5))


# --------------------------------------------------------------------------------------------- damage


def _delete(d):
    (d / K10).unlink()


def _nan(d):
    K = np.load(d / K10)
    np.save(d / K10, np.full_like(K, np.nan))  # well-formed, same size


def _alter(d):
    K = np.load(d / K10)
    np.save(d / K10, K * np.float32(1.01))  # well-formed, same size, finite


def _truncate_metrics(d):
    raw = (d / "metrics.csv").read_bytes()
    (d / "metrics.csv").write_bytes(raw[: raw.rindex(b"\n", 0, len(raw) - 1) + 20])  # cut inside the last row


def _truncate_npy(d):
    raw = (d / K10).read_bytes()
    (d / K10).write_bytes(raw[: len(raw) // 2])


# (damage, file named, pattern of the cheap load_run, pattern of verify=True / lazyrich check)
CASES = [
    (_delete, K10, "is missing", "is missing"),
    (_nan, K10, None, "SHA-256"),
    (_alter, K10, None, "SHA-256"),
    (_truncate_metrics, "metrics.csv", "is truncated", "is truncated"),
    (_truncate_npy, K10, "is truncated", "is truncated"),
]


@pytest.mark.parametrize("damage,name,cheap,full", CASES, ids=[c[0].__name__ for c in CASES])
def test_damage_is_detected(copy, capsys, damage, name, cheap, full):
    damage(copy)
    if cheap is not None:
        with pytest.raises(RunStoreError, match=rf"^{name} in run directory .* {cheap}.*; rerun .*lazyrich check"):
            load_run(copy)
    else:  # same size: only the checksum sees it on opening ...
        run = load_run(copy)
        if damage is _nan:  # ... but the NaN is refused as soon as the kernel is read
            with pytest.raises(RunStoreError, match=rf"step_00000010.npy holds NaN"):
                run.kernel_distance_matrix()
            with pytest.raises(RunStoreError, match=rf"step_00000010.npy holds NaN"):
                run.kernel(10)
    with pytest.raises(RunStoreError, match=rf"^{name} in run directory .* {full}"):
        load_run(copy, verify=True)
    code, out = _check(copy, capsys)
    assert code == 1 and f"damaged: {name} " in out and full in out and out.count("damaged:") == 1


LEGACY = [
    (_delete, "is missing (listed in kernels/index.csv)", True),
    (_nan, "holds NaN", False),
    (_truncate_metrics, "ends in the middle of a row", True),
    (_truncate_npy, "is truncated or padded", True),
]


@pytest.mark.parametrize("damage,reason,cheap", LEGACY, ids=[c[0].__name__ for c in LEGACY])
def test_damage_in_a_legacy_run_without_manifest(copy, capsys, damage, reason, cheap):
    (copy / MANIFEST).unlink()  # as written before the manifest existed
    with pytest.warns(RuntimeWarning, match="no manifest"):
        load_run(copy)  # intact: opens, saying that only sizes were checked
    damage(copy)
    if cheap:
        with pytest.raises(RunStoreError, match=re.escape(reason)):
            load_run(copy)
    with pytest.raises(RunStoreError, match=re.escape(reason)):
        load_run(copy, verify=True)
    code, out = _check(copy, capsys)
    assert code == 1 and "no manifest" in out and reason in out


def _same_end(d, ref):
    """The resumed run ends with the numbers of the uninterrupted one: metrics, kernels, final parameters."""
    ref_dir, _, ref_model = ref
    pd.testing.assert_frame_equal(pd.read_csv(d / "metrics.csv"), pd.read_csv(ref_dir / "metrics.csv"))
    for k in range(0, 31, 5):
        f = f"kernels/total/step_{k:08d}.npy"
        np.testing.assert_array_equal(np.load(d / f), np.load(ref_dir / f))
    final = torch.load(d / "checkpoints/step_00000030.pt", weights_only=True)["model"]
    for n, p in ref_model.state_dict().items():
        assert torch.equal(final[n], p), n


def test_legacy_run_resumes_and_records_new_files(copy, ref, capsys):
    (copy / MANIFEST).unlink()
    (copy / "checkpoints/step_00000030.pt").unlink()
    with pytest.warns(RuntimeWarning, match="no manifest .* completeness only"):
        _run(copy)
    records, _ = read_manifest(copy)
    assert "checkpoints/step_00000030.pt" in records and K10 not in records  # new files recorded, old ones not
    _same_end(copy, ref)
    code, out = _check(copy, capsys)
    assert code == 0 and "not in the manifest (checked for completeness only)" in out


# --------------------------------------------------------------------------------------------- resume


def test_truncated_latest_checkpoint_is_set_aside_and_the_run_resumes_from_the_previous(copy, ref, capsys):
    p = copy / "checkpoints/step_00000030.pt"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 3])
    code, out = _check(copy, capsys)
    assert code == 1 and "damaged: checkpoints/step_00000030.pt is truncated" in out
    with pytest.warns(RuntimeWarning, match=r"set aside 1 damaged file.*step_00000030.pt is truncated.*"
                                            r"training resumes from the last intact checkpoint, step 25"):
        _run(copy)
    assert (copy / "checkpoints/step_00000030.pt.damaged").read_bytes() == raw[: len(raw) // 3]  # kept
    _same_end(copy, ref)
    code, out = _check(copy, capsys)
    assert code == 0 and "set aside earlier" in out


def test_damaged_kernels_are_recomputed_on_rerun(copy, ref):
    _alter(copy)
    (copy / "kernels/total/step_00000020.npy").unlink()
    with pytest.warns(RuntimeWarning, match=r"set aside 2 damaged file.*training resumes from the last intact "
                                            r"checkpoint, step 10"):
        _run(copy)
    _same_end(copy, ref)
    assert check_run(copy).ok
    load_run(copy, verify=True)


def test_damaged_metrics_are_recomputed_from_the_start(copy, ref):
    _truncate_metrics(copy)
    with pytest.warns(RuntimeWarning, match=r"metrics.csv is truncated.*resumes from the last intact checkpoint, "
                                            r"step 0"):
        _run(copy)
    _same_end(copy, ref)
    assert check_run(copy).ok


def test_checkpoint_damaged_while_open_is_refused_by_name(tmp_path):
    st = RunStore(tmp_path / "r", {"experiment": "x"}, seed=0)
    p = st.save_checkpoint(15, {"model": {"w": torch.arange(1000.0)}})
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte, same size
    p.write_bytes(bytes(raw))
    with pytest.raises(RunStoreError, match=r"step_00000015.pt does not match its SHA-256.*set it aside"):
        st.load_checkpoint(15)


# --------------------------------------------------------------------------------------------- the lock

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from lazyrich.dynamics import RunStore
    st = RunStore(sys.argv[1], {"experiment": "x"}, seed=0)
    print("holding", flush=True)
    time.sleep(120)
    """
)


def test_second_writer_is_refused_and_kill_9_leaves_no_stale_lock(tmp_path):
    d = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(d)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"holding"
        with pytest.raises(RunStoreError, match=rf"being written by another process \(pid {proc.pid} on .*\); wait"):
            RunStore(d, {"experiment": "x"}, seed=0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with RunStore(d, {"experiment": "x"}, seed=0) as st:  # the dead holder's lock is gone with it
        st.append_metrics({"step": 0, "loss": 1.0})
        RunStore(d, {"experiment": "x"}, seed=0)  # the same process may open it again
    assert not st._lock


# --------------------------------------------------------------------------------------------- kill -9 of the CLI

TINY = ["n_train=400", "n_test=200", "hidden=32,32", "steps=200", "lr=0.2", "batch_size=50", "n_probe=32",
        "record_every=10", "record_log=5", "switch_points=0,100", "taus=20,40", "dts=20,40", "eval_batch_size=500"]


def _cli(out, *extra):
    return [sys.executable, "-m", "lazyrich", "run", "cone", "--preset", "quick", *TINY, "--out", str(out),
            "--no-progress", *extra]


def test_kill_9_of_lazyrich_run_then_rerun_equals_uninterrupted(tmp_path, capsys):
    from lazyrich.experiments import cone

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    d = tmp_path / "killed"
    proc = subprocess.Popen(_cli(d), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((d / "checkpoints").glob("step_*.pt"))) < 3 \
            and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    # the kill left no lock behind and nothing damaged: the rerun resumes and finishes
    assert cone.run(cone.preset("quick").with_overrides(TINY), d, progress=False) == d
    ref = cone.run(cone.preset("quick").with_overrides(TINY), tmp_path / "ref", progress=False)
    m, m_ref = pd.read_csv(d / "metrics.csv"), pd.read_csv(ref / "metrics.csv")
    assert m["step"].tolist() == m_ref["step"].tolist()
    np.testing.assert_allclose(m.to_numpy(float), m_ref.to_numpy(float), rtol=1e-6, atol=1e-9)
    sw, sw_ref = pd.read_csv(d / "switching.csv"), pd.read_csv(ref / "switching.csv")
    pd.testing.assert_frame_equal(sw, sw_ref, rtol=1e-6)
    code, out = _check(d, capsys)
    assert code == 0, out
    # a finished run whose final checkpoint is truncated is not reported as a silent success: it is redone
    p = d / "checkpoints" / "step_00000200.pt"
    p.write_bytes(p.read_bytes()[:100])
    rerun = subprocess.run(_cli(d), env=env, capture_output=True, timeout=300)
    err = rerun.stderr.decode()
    assert rerun.returncode == 0, err[-2000:]
    assert "step_00000200.pt is truncated" in err and "training resumes from the last intact checkpoint, step 190" in err
    final = torch.load(p, weights_only=True)["model"]
    want = torch.load(ref / "checkpoints" / "step_00000200.pt", weights_only=True)["model"]
    for n in want:
        torch.testing.assert_close(final[n], want[n], rtol=1e-6, atol=1e-9)
    assert _check(d, capsys)[0] == 0


def test_check_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert cli(["check", str(tmp_path)]) == 1
    assert "is not a run directory (no config.json)" in capsys.readouterr().err
