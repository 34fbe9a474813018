"""Tests of the cone-effect experiment (lazyrich.experiments.cone): config, presets, end-to-end run, switching
experiment and resume.

Oracles: for a model that is linear in its parameters the linearization is exact, so every switched run
theta_std->lin(T; t) must equal standard training theta_std(T) (same batches, same SGD steps); losses and
accuracies of ``evaluate`` are checked against scikit-learn's ``log_loss``/``accuracy_score``; the standard
endpoint row of switching.csv against the tracker's independently computed metrics.csv row.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from lazyrich.dynamics import RunStoreError
from lazyrich.experiments import cone
from lazyrich.experiments.cone import ConeConfig, preset

# A config much smaller than `quick` (a few seconds): MNIST-1D subset, small MLP, 60 SGD steps.
TINY = [
    "n_train=400", "n_test=200", "hidden=32,32", "steps=60", "lr=0.2", "batch_size=50", "n_probe=32",
    "record_every=20", "record_log=5", "switch_points=0,20,40", "taus=20,40", "dts=20,40", "eval_batch_size=500",
]


def tiny(**changes) -> ConeConfig:
    return preset("quick").with_overrides(TINY).replace(**changes)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = tiny()
    path = cone.run(cfg, tmp_path_factory.mktemp("cone") / "run", progress=False)
    return cfg, path


# --------------------------------------------------------------------------------------------- config


def test_presets_valid_and_paper_setup():
    q = preset("quick")
    assert q.dataset == "mnist1d" and q.steps == 3000 and q.optimizer == "sgd"
    p = preset("paper")
    # Frankle et al. (2020) / OpenLTH CIFAR-10 hyperparameters, T = 10^4 and taus of the paper's Fig. 1a.
    assert (p.dataset, p.model, p.optimizer, p.lr, p.momentum, p.weight_decay, p.batch_size) == (
        "cifar10", "resnet20", "momentum", 0.1, 0.9, 1e-4, 128)
    assert p.steps == 10_000 and p.taus == (2000, 4000, 6000, 8000)
    assert preset("paper-vgg16").model == "vgg16"
    l5 = preset("paper-lenet5")
    assert (l5.dataset, l5.model, l5.optimizer) == ("mnist", "lenet5", "sgd")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("fast")


def test_overrides_parse_types():
    c = preset("quick").with_overrides(
        ["steps=500", "lr=1e-2", "hidden=8,16", "batch_size=none", "per_layer=true", "switch_points=[0, 10]",
         "data_dir=/x", "lr_schedule=cosine", "taus=", "dts=100"])
    assert c.steps == 500 and isinstance(c.steps, int)
    assert c.lr == 0.01 and isinstance(c.lr, float)
    assert c.hidden == (8, 16) and c.batch_size is None and c.per_layer is True
    assert c.switch_points == (0, 10) and c.data_dir == "/x" and c.lr_schedule == "cosine" and c.taus == ()
    assert preset("quick").with_overrides(["hidden="]).hidden == ()
    assert preset("quick").with_overrides(["lr_schedule=none"]).lr_schedule is None


@pytest.mark.parametrize(
    "item, match",
    [
        ("bogus=1", "unknown config key 'bogus'.*valid keys: preset, dataset"),
        ("steps=abc", "steps expects an integer"),
        ("lr=fast", "lr expects a number"),
        ("per_layer=maybe", "per_layer expects true or false"),
        ("hidden=8,x", "hidden expects an integer"),
        ("steps", "not of the form key=value"),
        ("model=transformer", "model='transformer' is not supported"),
        ("switch_points=0,5000", r"switch_points \[5000\] lie outside"),
        ("dts=150", "multiples of record_every"),
        ("lr=-1", "lr must be a positive number"),
        ("steps=0", "steps must be >= 1"),
    ],
)
def test_overrides_reject_bad_input(item, match):
    with pytest.raises(ValueError, match=match):
        preset("quick").with_overrides([item])


def test_config_roundtrip_and_schedule():
    c = tiny()
    d = c.to_dict()
    assert d["experiment"] == "cone" and d["hidden"] == [32, 32]
    assert ConeConfig.from_dict(d) == c
    s = cone.record_schedule(c)
    assert s == sorted(set(s)) and s[0] == 0 and s[-1] == c.steps
    for t in (*c.switch_points, *c.taus, *range(0, c.steps + 1, c.record_every)):
        assert t in s
    assert c.switch_steps[0] == 0
    with pytest.raises(TypeError, match="steps must be int"):
        dataclasses.replace(c, steps=1.5).validated()


def test_probe_indices_seeded():
    a = cone.probe_indices(1000, 50, seed=3)
    assert np.array_equal(a, cone.probe_indices(1000, 50, seed=3))
    assert len(np.unique(a)) == 50 and np.all(np.diff(a) > 0) and a.max() < 1000
    assert not np.array_equal(a, cone.probe_indices(1000, 50, seed=4))
    assert len(cone.probe_indices(10, 50, seed=0)) == 10


def test_evaluate_matches_sklearn():
    from sklearn.metrics import accuracy_score, log_loss

    g = torch.Generator().manual_seed(0)
    x = torch.randn(257, 7, generator=g)
    y = torch.randint(0, 4, (257,), generator=g)
    model = torch.nn.Linear(7, 4)
    loss, acc = cone.evaluate(model, x, y, batch_size=50)  # uneven chunks
    with torch.no_grad():
        logits = model(x).double()
    p = torch.softmax(logits, 1).numpy()
    assert loss == pytest.approx(log_loss(y.numpy(), p, labels=range(4)), rel=1e-9, abs=1e-9)
    assert acc == pytest.approx(accuracy_score(y.numpy(), p.argmax(1)), abs=1e-12)
    mse, _ = cone.evaluate(model, x, y, loss="mse", batch_size=1000)
    onehot = np.eye(4)[y.numpy()]
    assert mse == pytest.approx(0.5 * ((logits.numpy() - onehot) ** 2).sum(1).mean(), rel=1e-9)


# --------------------------------------------------------------------------------------------- data errors


@pytest.mark.parametrize("name", ["paper", "paper-lenet5"])
def test_paper_preset_missing_data_dir(tmp_path, name):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="set data_dir=") as e:
        cone.run(preset(name), out, progress=False)
    assert "\n" not in str(e.value)
    assert not out.exists()  # nothing half-made
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"'{missing}' does not exist.*data_dir="):
        cone.run(preset(name).with_overrides([f"data_dir={missing}"]), out, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="missing.*data_dir="):
        cone.run(preset(name).with_overrides([f"data_dir={empty}"]), out, progress=False)


# --------------------------------------------------------------------------------------------- end to end


def test_tiny_run_end_to_end(tiny_run):
    cfg, path = tiny_run
    import json

    stored = json.loads((path / "config.json").read_text())
    assert stored["format"] == "lazyrich-run" and stored["experiment"] == "cone" and stored["steps"] == cfg.steps
    m = pd.read_csv(path / "metrics.csv")
    assert list(m["step"]) == cone.record_schedule(cfg)
    ks = pd.read_csv(path / "kernels" / "index.csv")
    assert list(ks["step"]) == cone.record_schedule(cfg)
    K = np.load(path / ks["file"].iloc[-1])
    assert K.shape == (cfg.n_probe, cfg.n_probe) and K.dtype == np.float32

    sw = pd.read_csv(path / "switching.csv")
    assert list(sw.columns) == [*cone.SWITCHING_COLUMNS, cone.REGIME_COLUMN]
    assert list(sw["switch_step"]) == [0, 20, 40, cfg.steps]
    assert list(sw["kind"]) == ["linearized", "switch", "switch", "standard"]
    assert (sw["T"] == cfg.steps).all()
    assert sw[["test_loss", "test_acc", "train_loss", "train_acc"]].notna().all().all()
    # standard endpoint: our evaluation of the final checkpoint == the tracker's row at T (independent code)
    std = sw[sw["kind"] == "standard"].iloc[0]
    last = m[m["step"] == cfg.steps].iloc[0]
    for col in ("test_loss", "test_acc", "train_loss", "train_acc"):
        assert std[col] == pytest.approx(last[col], rel=1e-5, abs=1e-6), col
    # non-linear MLP: switching early really changes the outcome
    assert not np.isclose(sw["test_loss"].iloc[0], std["test_loss"], rtol=1e-3)


def test_regime_column_is_classify_regime_of_the_metrics(tiny_run):
    """The ``regime`` column of switching.csv (one verdict per run) is classify_regime of the tracker's
    metrics.csv, and ``lazyrich report``'s regime line finds it."""
    from lazyrich.dynamics import classify_regime
    from lazyrich.plots.report import regime_summary

    _, path = tiny_run
    sw = pd.read_csv(path / "switching.csv")
    expected = classify_regime(pd.read_csv(path / "metrics.csv")).verdict
    assert sw["regime"].nunique() == 1 and sw["regime"].iloc[0] == expected
    assert expected in ("lazy", "rich", "delayed-rich", "undetermined")
    line = regime_summary(path)
    assert line is not None and f"{expected} × 1" in line


def test_switch_linear_model_equals_standard(tmp_path):
    """Oracle: an MLP with no hidden layer is linear in its parameters, so its linearization at any theta(t)
    is the model itself and theta_std->lin(T; t) = theta_std(T) for every t (same batches and SGD steps)."""
    cfg = tiny(hidden=(), switch_points=(0, 10, 30), steps=40, taus=(20,), dts=(20,), lr=0.5)
    threads = torch.get_num_threads()
    path = cone.run(cfg, tmp_path / "lin", progress=False)
    assert torch.get_num_threads() == threads  # the temporary single-thread setting is undone
    sw = pd.read_csv(path / "switching.csv")
    std = sw[sw["kind"] == "standard"].iloc[0]
    assert len(sw) == 4
    for _, r in sw.iterrows():
        assert r["test_loss"] == pytest.approx(std["test_loss"], rel=1e-5), r["switch_step"]
        assert r["train_loss"] == pytest.approx(std["train_loss"], rel=1e-5), r["switch_step"]
        assert r["test_acc"] == pytest.approx(std["test_acc"], abs=1.5 / cfg.n_test)
    # and training did move the model (the check is not vacuous)
    m = pd.read_csv(path / "metrics.csv")
    assert m["test_loss"].iloc[-1] < 0.9 * m["test_loss"].iloc[0]


def test_resume_does_not_recompute(tiny_run, monkeypatch):
    cfg, path = tiny_run
    before = pd.read_csv(path / "switching.csv")
    kernels_before = {p.name: p.stat().st_mtime_ns for p in (path / "kernels" / "total").glob("*.npy")}

    def boom(*a, **k):
        raise AssertionError("finished work was recomputed")

    # 1. everything finished: neither standard training nor any switch run happens again
    monkeypatch.setattr(cone, "switch_run", boom)
    import lazyrich.dynamics as dyn

    monkeypatch.setattr(dyn, "train", boom)
    assert cone.run(cfg, path, progress=False) == path
    pd.testing.assert_frame_equal(pd.read_csv(path / "switching.csv"), before)
    monkeypatch.undo()

    # 2. drop the row of t=20 (as if killed during that switch run): only t=20 is recomputed, identically
    calls = []
    real = cone.switch_run

    def spy(config, data, state, t, **kw):
        calls.append(t)
        return real(config, data, state, t, **kw)

    monkeypatch.setattr(cone, "switch_run", spy)
    cone._write_switching(path / "switching.csv", before[before["switch_step"] != 20])  # as the run writes it
    cone.run(cfg, path, progress=False)
    assert calls == [20]
    after = pd.read_csv(path / "switching.csv")
    pd.testing.assert_frame_equal(after, before, rtol=1e-6)
    assert {p.name: p.stat().st_mtime_ns for p in (path / "kernels" / "total").glob("*.npy")} == kernels_before


def test_rerun_with_other_config_is_refused(tiny_run):
    cfg, path = tiny_run
    with pytest.raises(RunStoreError, match="different config"):
        cone.run(cfg.replace(lr=0.1), path, progress=False)
    with pytest.raises(TypeError, match="ConeConfig"):
        cone.run({"steps": 3}, path)


# --------------------------------------------------------------------------------------------- BatchNorm / paper path


def test_calibrate_batchnorm_matches_batch_statistics():
    """Oracle: after calibration on one chunk, BN running mean/var are the per-channel mean and unbiased
    variance of the BN input over the data (computed directly from the conv output); nothing else changes."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.BatchNorm2d(5), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(5 * 6 * 6, 4))
    net.eval()
    params = {k: v.clone() for k, v in net.named_parameters()}
    x = torch.randn(64, 3, 8, 8) * 3 + 1
    assert cone.calibrate_batchnorm(net, x, batch_size=1000) == 1
    with torch.no_grad():
        z = net[0](x).double()
    mean = z.mean(dim=(0, 2, 3))
    var = z.var(dim=(0, 2, 3), unbiased=True)
    bn = net[1]
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and not net.training and not bn.training
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k])
    assert cone.calibrate_batchnorm(torch.nn.Linear(3, 2), torch.randn(4, 3)) == 0


def _fake_cifar(root, n=12, seed=0):
    import pickle

    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, n)]}, fh)
    return root


def test_paper_preset_runs_on_tiny_cifar_files(tmp_path):
    """The paper path end to end (CIFAR-10 reader, ResNet-20 with BatchNorm, switching) on tiny files in the
    CIFAR-10 python format; the standard row must agree with the tracker's eval-mode metrics at T."""
    root = _fake_cifar(tmp_path / "cifar")
    cfg = preset("paper").with_overrides(
        [f"data_dir={root}", "steps=4", "batch_size=10", "n_probe=4", "record_every=2", "record_log=0",
         "switch_points=0,2", "taus=2", "dts=2", "eval_batch_size=60"])
    path = cone.run(cfg, tmp_path / "run", progress=False, device="cpu", threads=1)
    sw = pd.read_csv(path / "switching.csv")
    m = pd.read_csv(path / "metrics.csv")
    assert list(sw["switch_step"]) == [0, 2, 4]
    assert np.isfinite(sw[["test_loss", "train_loss"]].to_numpy()).all()
    std, last = sw.iloc[-1], m[m["step"] == 4].iloc[0]
    assert std["test_loss"] == pytest.approx(last["test_loss"], rel=1e-4)
    # calibrated BatchNorm: the eval-mode network at init has sane logits (cross-entropy near log 10, not 100s)
    assert m["test_loss"].iloc[0] < 10
    assert (path / "kernels" / "total" / "step_00000000.npy").exists()
