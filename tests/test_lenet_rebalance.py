"""lenet-rebalance: one small cell end to end (real files), against independent facts.

* at step 0 every distance is exactly 0 and, rebalancing being function-preserving for ReLU/max-pool
  LeNet-5, the step-0 losses are the same for every alpha (oracle: the alpha = 1 run);
* seeded: the same config gives the same table; a finished cell is not recomputed;
* bad input names the fix.
"""

import pandas as pd
import pytest

from lazyrich.experiments import registry
from lazyrich.experiments.lenet_rebalance import COLUMNS, LenetRebalanceConfig, run


def _cfg(**kw):
    return LenetRebalanceConfig(steps=12, n_checkpoints=3, **kw)


def test_cell_table_and_function_preserving_start(tmp_path):
    tabs = {a: pd.read_csv(run(_cfg(alpha=a), tmp_path / str(a)) / "results.csv") for a in (1.0, 4.0)}
    for a, df in tabs.items():
        assert list(df.columns) == list(COLUMNS)
        assert df.step.iloc[0] == 0 and df.step.iloc[-1] == 12 and (df.alpha == a).all()
        first = df.iloc[0]
        assert first.kernel_distance == pytest.approx(0.0, abs=1e-6)
        assert first.hamming == 0.0 and first.param_distance == 0.0
        assert df.param_distance.iloc[-1] > 0
    for col in ("train_loss", "test_loss", "test_acc"):
        assert tabs[4.0][col].iloc[0] == pytest.approx(tabs[1.0][col].iloc[0], rel=1e-4)


def test_seeded_and_not_recomputed(tmp_path):
    a = pd.read_csv(run(_cfg(alpha=2.0), tmp_path / "a") / "results.csv")
    b = pd.read_csv(run(_cfg(alpha=2.0), tmp_path / "b") / "results.csv")
    pd.testing.assert_frame_equal(a, b)
    path = tmp_path / "a" / "results.csv"
    mtime = path.stat().st_mtime_ns
    run(_cfg(alpha=2.0), tmp_path / "a")
    assert path.stat().st_mtime_ns == mtime


def test_registered_with_grids():
    exp = registry.get("lenet-rebalance")
    assert exp.presets["quick"].grid["alpha"] == (0.3, 1.0, 3.0, 10.0)
    assert exp.presets["paper"].seeds == tuple(range(8))
    assert exp.preset("quick").dataset == "digits"


@pytest.mark.parametrize("kw, match", [({"alpha": 0.0}, "alpha must be a positive"),
                                       ({"dataset": "mnist"}, "data_dir="),
                                       ({"optimizer": "rmsprop"}, "use sgd or adam")])
def test_bad_config(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run(_cfg(**kw), tmp_path / "x")


def test_figure_from_a_directory_of_cells(tmp_path):
    import lazyrich.plots
    from lazyrich.plots.rebalance import fig_lenet_rebalance

    for a in (1.0, 3.0):
        run(_cfg(alpha=a), tmp_path / str(a))
    names = registry.get("lenet-rebalance").figures  # what `lazyrich report` draws
    assert getattr(lazyrich.plots, names[0]) is fig_lenet_rebalance
    bal = getattr(lazyrich.plots, names[1])(tmp_path)
    assert len(bal.axes[0].lines) == 1 + 2 + 1  # before, after for each alpha, the zero line
    fig = fig_lenet_rebalance(tmp_path)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 2
    with pytest.raises(FileNotFoundError, match="no results.csv"):
        fig_lenet_rebalance(tmp_path / "empty")


def test_balance_before_and_after(tmp_path):
    """balance.csv: each layer's mean a_k^2 - ||w_k||^2 before (He init) and after rebalance(alpha).
    Oracle: rebalance divides only the first layer by alpha and multiplies only the last by alpha, so the
    junctions in between keep their balance exactly, the first and last gain (upstream, delta > 0 side),
    and alpha = 1 changes nothing."""
    b1 = pd.read_csv(run(_cfg(alpha=1.0), tmp_path / "1") / "balance.csv")
    assert (b1.delta_after == b1.delta_before).all()
    b4 = pd.read_csv(run(_cfg(alpha=4.0), tmp_path / "4") / "balance.csv")
    assert list(b4.layer) == list(b1.layer) and len(b4) >= 3
    pd.testing.assert_series_equal(b4.delta_before, b1.delta_before)
    mid = b4.iloc[1:-1]
    assert mid.delta_after.to_numpy() == pytest.approx(mid.delta_before.to_numpy(), rel=1e-6)
    assert b4.delta_after.iloc[0] > b4.delta_before.iloc[0]
    assert b4.delta_after.iloc[-1] > b4.delta_before.iloc[-1]


def test_regime_column_is_the_verdict_of_the_cells_table(tmp_path):
    """Every row carries the cell's classify_regime verdict, recomputed here from the same table."""
    from lazyrich.dynamics import classify_regime

    df = pd.read_csv(run(_cfg(alpha=4.0), tmp_path / "c") / "results.csv")
    assert df.regime.nunique() == 1
    expect = classify_regime(df.drop(columns=["alpha", "seed", "regime"])).verdict
    assert df.regime.iloc[0] == expect and expect in ("lazy", "rich", "delayed-rich", "undetermined")
