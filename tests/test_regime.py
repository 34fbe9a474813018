"""classify_regime: calibrated on exact single-neuron gradient flows (Kunin et al. Fig. 2 setup)."""

import numpy as np
import pandas as pd
import pytest

from lazyrich.dynamics import RunStore
from lazyrich.dynamics.regime import THRESHOLDS, classify_regime, regime_table
from lazyrich.experiments.single_neuron import initialization
from lazyrich.theory import single_neuron as sn

PAPER = {-4.0: "delayed-rich", -2.0: "delayed-rich", 0.0: "rich", 2.0: "lazy", 4.0: "lazy"}


def _exact(delta, t):
    a0, w0 = initialization(delta, (-1.0, 0.0))
    tr = sn.solve(np.eye(2), np.array([0.0, 1.0]), a0, w0)
    return pd.DataFrame({"t": t, "kernel_distance": tr.kernel_distance(t), "train_loss": tr.loss(t)})


@pytest.mark.parametrize("times", [np.linspace(0, 20, 81), np.r_[0.0, np.geomspace(1e-2, 20, 60)]],
                         ids=["linear", "log-spaced"])
def test_paper_classification_on_exact_single_neuron_flows(times):
    verdicts = {d: classify_regime(_exact(d, times)).verdict for d in (-4, -2, -1, 0, 1, 2, 4)}
    for d, v in PAPER.items():
        assert verdicts[d] == v, (d, verdicts)
    # the intermediate cases get a moved-kernel verdict (delta = -1) or stay honest (delta = +1)
    assert verdicts[-1] == "rich" and verdicts[1] == "undetermined"


def test_evidence_and_undetermined_when_not_trained():
    t = np.linspace(0, 20, 81)
    r = classify_regime(_exact(-4.0, t))
    assert r.evidence["t_kernel_half"] > 5 * r.evidence["t_loss_half"] and r.evidence["S_max"] > 0.8
    assert set(r.thresholds) == set(THRESHOLDS) and str(r) == "delayed-rich"
    # stopped before the fit: no verdict
    early = classify_regime(_exact(-4.0, np.linspace(0, 0.05, 10)))
    assert early.verdict == "undetermined" and "train longer" in early.reason
    # a stricter lazy threshold moves delta = 2 out of "lazy"
    assert classify_regime(_exact(2.0, t), s_lazy=0.005).verdict == "undetermined"


def test_lazy_gap_evidence_and_regime_table():
    t = np.linspace(0, 20, 41)
    df = pd.concat([_exact(d, t).assign(delta=d) for d in (-4.0, 0.0, 4.0)])
    df["test_loss"] = df.train_loss
    df["lazy_test_loss"] = 0.25
    tab = regime_table(df, by="delta")
    assert list(tab.regime) == ["delayed-rich", "rich", "lazy"]
    assert np.allclose(tab.lazy_gap, tab.test_loss_end - 0.25)


def test_run_directory_and_bad_inputs(tmp_path):
    store = RunStore(tmp_path / "r", {"experiment": "x"}, seed=0)
    for step in range(4):
        store.append_metrics({"step": step, "train_loss": 1.0 / (1 + step)})
    with pytest.raises(ValueError, match="record the kernel at several checkpoints"):
        classify_regime(tmp_path / "r")
    store2 = RunStore(tmp_path / "r2", {"experiment": "x"}, seed=0)
    ex = _exact(0.0, np.linspace(0, 20, 21))
    for row in ex.assign(step=range(21)).rename(columns={"kernel_distance": "kernel_dist_init"}).to_dict("records"):
        store2.append_metrics({"step": int(row["step"]), "train_loss": row["train_loss"],
                               "kernel_dist_init": row["kernel_dist_init"]})
    assert classify_regime(tmp_path / "r2").verdict == "rich"
    with pytest.raises(ValueError, match="at least 3"):
        classify_regime(ex.iloc[:2])
    with pytest.raises(ValueError, match="regime_table"):
        classify_regime(pd.concat([ex, ex]))
    with pytest.raises(ValueError, match="include the step-0 record"):
        classify_regime(ex.iloc[3:])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        classify_regime(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown thresholds"):
        classify_regime(ex, s_lazzy=0.1)
