"""Tracker: schedule semantics, what it records, against brute-force oracles; lazy vs rich kernel movement."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from lazyrich.dynamics import ActivationRecorder, Tracker, load_run, parse_schedule, train
from lazyrich.ntk import empirical_ntk, kernel_distance


def _data(n=24, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _mlp(seed=0, d=4, h=8, c=2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(inplace=True), nn.Linear(h, c))


def test_parse_schedule_semantics():
    s = parse_schedule(5)
    assert [t for t in range(23) if t in s] == [0, 5, 10, 15, 20]
    s = parse_schedule({"log": 5, "max": 1000})
    assert s.up_to(1000) == [0, 1, 6, 32, 178, 1000]
    s = parse_schedule([3, 1, 3])
    assert [t for t in range(10) if t in s] == [1, 3]
    for bad, err in [(0, ValueError), (-2, ValueError), ({"log": 3}, ValueError), ("every", TypeError), ([-1], ValueError)]:
        with pytest.raises(err):
            parse_schedule(bad)


def test_tracker_acts_only_at_scheduled_steps_and_once(tmp_path):
    x, y = _data()
    model = _mlp()
    tr = Tracker(model, x, y, schedule=[0, 2, 7], run_dir=tmp_path / "r", train_data=(x, y), test_data=False)
    acted = [t for t in range(10) if tr.step(t)]
    assert acted == [0, 2, 7]
    assert not tr.step(2) and not tr.should_record(7)  # already recorded
    run = load_run(tmp_path / "r")
    assert run.metrics["step"].tolist() == [0, 2, 7]
    assert run.kernel_steps.tolist() == [0, 2, 7]
    assert "test_loss" not in run.metrics.columns and "train_loss" in run.metrics.columns


def test_recorded_values_match_brute_force(tmp_path):
    # oracles: empirical_ntk (float32 storage, rel 1e-6), numpy norms for distances/RD, explicit pre-activation
    # signs for the Hamming distance, F.cross_entropy for losses
    x, y = _data()
    model = _mlp()
    tr = Tracker(model, x, y, schedule=[0, 1], run_dir=tmp_path / "r", train_data=(x, y), test_data=(x[:10], y[:10]),
                 record_patterns=True)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    pre0 = [model[0](x) > 0, model[2](torch.relu(model[0](x))) > 0]
    tr.step(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tr.step(1)
    run = load_run(tmp_path / "r")
    row = run.metrics.set_index("step").loc[1]
    K = empirical_ntk(model, x)
    np.testing.assert_allclose(run.kernel(1), K.numpy(), rtol=1e-6, atol=1e-6 * float(K.abs().max()))
    with torch.no_grad():
        h1 = model[0](x)
        h2 = model[2](torch.relu(h1))
        pre1 = [h1 > 0, h2 > 0]
        out = model(x)
    flips = sum(int((a != b).sum()) for a, b in zip(pre1, pre0))
    assert row["hamming"] == pytest.approx(flips / (2 * 24 * 8), abs=0)
    assert row["hamming/1"] == pytest.approx(int((pre1[0] != pre0[0]).sum()) / (24 * 8), abs=0)
    assert row["hamming/3"] == pytest.approx(int((pre1[1] != pre0[1]).sum()) / (24 * 8), abs=0)
    z = np.load(tmp_path / "r" / "activations" / "step_00000001.npz")  # stored patterns round-trip
    assert z["sites"].tolist() == ["1", "3"]
    for i, m in enumerate(pre1):
        bits = np.unpackbits(z[f"site_{i}"])[: int(z["sizes"][i])].reshape(24, -1).astype(bool)
        np.testing.assert_array_equal(bits, m.numpy())
    tot = 0.0
    for n, p in model.named_parameters():
        dn = np.linalg.norm((p.detach().double() - theta0[n].double()).numpy().ravel())
        tot += dn**2
        assert row[f"param_dist/{n}"] == pytest.approx(dn, rel=1e-10)
        assert row[f"rd/{n}"] == pytest.approx(dn / np.linalg.norm(theta0[n].double().numpy().ravel()), rel=1e-10)
    assert row["param_dist"] == pytest.approx(math.sqrt(tot), rel=1e-10)
    assert row["train_loss"] == pytest.approx(float(nn.functional.cross_entropy(out, y)), rel=1e-6)
    assert row["train_acc"] == pytest.approx(float((out.argmax(1) == y).double().mean()), abs=1e-12)
    assert row["test_loss"] == pytest.approx(float(nn.functional.cross_entropy(out[:10], y[:10])), rel=1e-6)
    assert row["kernel_dist_init"] == pytest.approx(kernel_distance(run.kernel(0), run.kernel(1)), abs=1e-12)
    assert {"balance/0->2", "balance/2->4"} <= set(run.metrics.columns)
    # training mode is restored after recording
    model.train()
    tr.record(1)
    assert all(m.training for m in model.modules())


def test_activation_recorder_functional_inplace_and_shared_modules():
    # oracle: masks equal explicit (pre-activation > 0); a shared activation module gives one site per call
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3, 5)
            self.fc2 = nn.Linear(5, 5)
            self.act = nn.ReLU(inplace=True)
            self.fc3 = nn.Linear(5, 1)

        def forward(self, x):
            h1 = self.act(self.fc1(x))
            h2 = torch.relu(self.fc2(h1))  # functional call
            h3 = self.act(h2 - 0.1)
            return self.fc3(nn.functional.leaky_relu(h3 - 0.2))

    torch.manual_seed(0)
    net = Net()
    x = torch.randn(6, 3)
    with torch.no_grad():
        out, sites, masks = ActivationRecorder(net).run(x)
        z1 = net.fc1(x)
        z2 = net.fc2(torch.relu(z1))
        z3 = torch.relu(z2) - 0.1
        z4 = torch.relu(z3) - 0.2
    assert sites == ["act", "model", "act#1", "model#1"]
    for m, z in zip(masks, [z1, z2, z3, z4]):
        assert torch.equal(m, z > 0)
    assert torch.allclose(out, net(x))


def test_per_layer_kernels_sum_to_total(tmp_path):
    x, y = _data(n=10)
    model = _mlp()
    tr = Tracker(model, x, y, schedule=[0, 1], run_dir=tmp_path / "r", per_layer=True, train_data=False, test_data=False)
    tr.step(0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5).add_(0.2)
    tr.step(1)
    run = load_run(tmp_path / "r")
    assert run.layers == sorted(n for n, _ in model.named_parameters())
    total = sum(np.asarray(run.kernel(1, layer=l), dtype=np.float64) for l in run.layers)
    np.testing.assert_allclose(total, run.kernel(1), rtol=1e-5, atol=1e-5)
    pl = run.per_layer_distance()
    for l in run.layers:  # oracle: kernel_distance on the stored per-layer kernels
        assert pl.set_index("step").loc[1, l] == pytest.approx(kernel_distance(run.kernel(0, l), run.kernel(1, l)), abs=1e-10)


def test_two_layer_delta_recorded_and_probe_subsample(tmp_path):
    x, y = _data(n=30)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 2, bias=False))
    tr = Tracker(model, x, y, schedule=2, run_dir=tmp_path / "r", probe_size=12, seed=3, test_data=False)
    assert tr.probe_x.shape[0] == 12
    train(model, (x, y), steps=4, lr=0.05, tracker=tr, progress=False)
    run = load_run(tmp_path / "r")
    steps, deltas = run.deltas()
    assert steps.tolist() == [0, 2, 4] and deltas.shape == (3, 6)
    W, A = model[0].weight.detach().double(), model[2].weight.detach().double()
    np.testing.assert_allclose(deltas[-1], ((A**2).sum(0) - (W**2).sum(1)).numpy(), rtol=1e-12)
    assert run.metrics["delta/drift"].iloc[-1] == pytest.approx(np.abs(deltas[-1] - deltas[0]).max(), rel=1e-12)
    px, py = run.probe()
    assert px.shape == (12, 4) and py.shape == (12,)
    # resuming with another probe set is refused
    from lazyrich.dynamics import RunStoreError

    with pytest.raises(RunStoreError):
        Tracker(model, x, y, schedule=2, store=tr.store, probe_size=12, seed=4)


def _two_layer(d, m, alpha, beta, seed):
    from lazyrich.models import two_layer

    return two_layer(d, m, alpha=alpha, beta1=beta, beta2=beta, bias=True, seed=seed)


def test_lazy_vs_rich_kernel_distance(tmp_path):
    # Luo et al. / Chizat: a wide NTK-scaled net (alpha = sqrt(m), unit init) barely moves its kernel; a narrow net
    # from a small initialization (beta = 1e-2) changes it substantially. Same data, GD, MSE, 300 steps.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    y = torch.sin(3 * x[:, :1]) + 2 * x[:, 1:2] * x[:, 2:3]
    S = {}
    for name, model, lr in [
        ("lazy", _two_layer(4, 2048, math.sqrt(2048), 1.0, 0), 1.0),
        ("rich", _two_layer(4, 64, 1.0, 1e-2, 0), 2.0),
    ]:
        tr = Tracker(model, x, schedule=[0, 300], run_dir=tmp_path / name, loss="mse", train_data=(x, y),
                     test_data=False, record_activations=False)
        train(model, (x, y), steps=300, lr=lr, loss="mse", tracker=tr, progress=False)
        run = load_run(tmp_path / name)
        S[name] = run.kernel_distance_matrix()[0, -1]
        assert run.metrics["train_loss"].iloc[-1] < 0.5 * run.metrics["train_loss"].iloc[0]  # both learn
    assert S["lazy"] < 0.01, S
    assert S["rich"] > 0.1, S


def test_full_output_kernels_flow_through_analysis(tmp_path):
    x, y = _data(n=8)
    model = _mlp(c=3)
    tr = Tracker(model, x, y, schedule=1, run_dir=tmp_path / "r", outputs="full", train_data=False, test_data=False)
    train(model, (x, y), steps=3, lr=0.5, tracker=tr, progress=False)
    run = load_run(tmp_path / "r")
    K = run.kernel(3)
    assert K.shape == (8, 8, 3, 3) and K.dtype == np.float32
    np.testing.assert_allclose(K, empirical_ntk(model, x, outputs="full").numpy(), rtol=1e-5, atol=1e-6)
    S = run.kernel_distance_matrix()
    assert S[0, 3] == pytest.approx(kernel_distance(run.kernel(0), K), abs=1e-10)
    assert run.metrics["kernel_dist_init"].iloc[0] == 0.0
    assert run.embedding_2d().shape == (4, 2)
    assert np.all(np.isfinite(run.kernel_alignment()["alignment"]))
    assert np.all(run.effective_rank()["effective_rank"] >= 1)


def test_schedule_within_the_run_gives_no_warning_and_beyond_lists_the_rest(tmp_path):
    import warnings

    assert parse_schedule({"log": 4, "max": 10}).beyond(5) == [10]
    assert parse_schedule([0, 3, 8]).beyond(3) == [8] and parse_schedule(3).beyond(0) == []
    x, y = _data(n=8)
    model = _mlp()
    tr = Tracker(model, x, y, schedule={"log": 3, "max": 4}, run_dir=tmp_path / "r", train_data=False, test_data=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a spurious "beyond the run" warning would fail here
        train(model, (x, y), steps=4, lr=0.1, tracker=tr, checkpoint_steps=[2, 4], progress=False)
    assert load_run(tmp_path / "r").metrics["step"].tolist() == [0, 1, 2, 4]
