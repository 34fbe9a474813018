"""RunStore: layout, atomic writes, resume validation, corrupt/foreign directories; load_run basics."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from lazyrich.dynamics import RunStore, RunStoreError, load_run


def test_create_layout_and_env(tmp_path):
    d = tmp_path / "run"
    st = RunStore(d, {"experiment": "cone", "lr": 0.1, "widths": (3, 4)}, seed=7)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["format"] == "lazyrich-run" and cfg["format_version"] == 1
    assert cfg["experiment"] == "cone" and cfg["widths"] == [3, 4]
    env = json.loads((d / "env.json").read_text())
    for k in ("python", "torch", "numpy", "lazyrich", "git_commit", "seed", "device", "hostname", "created"):
        assert k in env
    assert env["seed"] == 7
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    assert st.figures_dir.is_dir() and st.completed_steps() == set()


def test_metrics_append_replace_and_pandas_readable(tmp_path):
    st = RunStore(tmp_path / "r", {"experiment": "x"}, seed=0)
    st.append_metrics({"step": 10, "train_loss": 0.5})
    st.append_metrics({"step": 0, "train_loss": 1.0, "hamming": 0.0})
    st.append_metrics({"step": 10, "train_loss": 0.25})  # replaces, no duplicate
    df = pd.read_csv(tmp_path / "r" / "metrics.csv")
    assert list(df.columns)[0] == "step"
    assert df["step"].tolist() == [0, 10]
    assert df["train_loss"].tolist() == [1.0, 0.25]
    assert st.completed_steps() == {0, 10}
    # a fresh store object on the same directory sees the same rows (resume)
    st2 = RunStore(tmp_path / "r", {"experiment": "x"}, seed=0)
    assert st2.completed_steps() == {0, 10}
    # no temporary files are left behind
    assert not [p for p in (tmp_path / "r").rglob("*.tmp")]


def test_kernels_and_checkpoints(tmp_path):
    st = RunStore(tmp_path / "r", {"experiment": "x"}, seed=0)
    K = torch.randn(4, 4, dtype=torch.float64)
    st.save_kernel(5, K)
    st.save_kernel(0, K * 2)
    st.save_kernel(5, K, layer="0.weight")
    idx = pd.read_csv(tmp_path / "r" / "kernels" / "index.csv")
    assert idx["step"].tolist() == [0, 5]
    arr = np.load(tmp_path / "r" / idx["file"][1])
    assert arr.dtype == np.float32 and np.allclose(arr, K.float().numpy())
    assert (tmp_path / "r" / "kernels" / "layers" / "0.weight" / "step_00000005.npy").exists()
    assert st.latest_checkpoint() is None
    st.save_checkpoint(3, {"model": {"w": torch.ones(2)}, "extra": {"a": 1}})
    st.save_checkpoint(8, {"model": {"w": torch.zeros(2)}})
    s, state = st.latest_checkpoint()
    assert s == 8 and state["step"] == 8 and torch.equal(state["model"]["w"], torch.zeros(2))
    # a truncated newest checkpoint is set aside (renamed, not deleted) with a warning, the previous one used
    p = tmp_path / "r" / "checkpoints" / "step_00000008.pt"
    p.write_bytes(p.read_bytes()[:20])
    with pytest.warns(RuntimeWarning, match=r"step_00000008.pt is truncated: 20 bytes .* set aside as"):
        s, state = st.latest_checkpoint()
    assert s == 3 and state["extra"] == {"a": 1}
    assert (p.parent / "step_00000008.pt.damaged").stat().st_size == 20 and st.checkpoint_steps() == [3]


def test_resume_validation_errors(tmp_path):
    d = tmp_path / "r"
    RunStore(d, {"experiment": "x", "lr": 0.1}, seed=1)
    RunStore(d, {"experiment": "x", "lr": 0.1}, seed=1)  # same config: fine
    with pytest.raises(RunStoreError, match=r"different config \(keys \['lr'\]"):
        RunStore(d, {"experiment": "x", "lr": 0.2}, seed=1)
    with pytest.raises(RunStoreError, match="seed"):
        RunStore(d, {"experiment": "x", "lr": 0.1}, seed=2)
    # foreign: non-empty directory without config.json
    f = tmp_path / "foreign"
    f.mkdir()
    (f / "notes.txt").write_text("hello")
    with pytest.raises(RunStoreError, match="not a lazyrich run"):
        RunStore(f, {"experiment": "x"}, seed=0)
    # another format
    o = tmp_path / "other"
    o.mkdir()
    (o / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(RunStoreError, match="not a lazyrich run directory"):
        RunStore(o, {"experiment": "x"}, seed=0)
    # corrupt config
    (d / "config.json").write_text("{not json")
    with pytest.raises(RunStoreError, match="corrupt"):
        RunStore(d, {"experiment": "x", "lr": 0.1}, seed=1)
    with pytest.raises(RunStoreError, match="corrupt"):
        load_run(d)
    with pytest.raises(RunStoreError, match="no config.json"):
        load_run(f)
    with pytest.raises(RunStoreError, match="not a lazyrich run directory"):
        load_run(o)
    with pytest.raises(TypeError, match="JSON-serializable"):
        RunStore(tmp_path / "new", {"experiment": "x", "t": torch.ones(1)}, seed=0)
    # an empty existing directory is fine
    e = tmp_path / "empty"
    e.mkdir()
    RunStore(e, {"experiment": "x"}, seed=0)


def test_load_run_readable_without_lazyrich_objects(tmp_path):
    st = RunStore(tmp_path / "r", {"experiment": "x"}, seed=0)
    st.append_metrics({"step": 0, "a": 1.0})
    st.save_kernel(0, torch.eye(3))
    run = load_run(tmp_path / "r")
    assert run.config["experiment"] == "x" and run.env["seed"] == 0
    assert run.kernel_steps.tolist() == [0]
    assert isinstance(run.kernel(0), np.memmap)
    assert run.switching() is None
    pd.DataFrame({"switch_step": [0], "T": [10], "test_loss": [1.0], "test_acc": [0.5],
                  "train_loss": [1.0], "train_acc": [0.5]}).to_csv(tmp_path / "r" / "switching.csv", index=False)
    assert run.switching()["T"].tolist() == [10]
    with pytest.raises(KeyError, match="stored steps"):
        run.kernel(3)
