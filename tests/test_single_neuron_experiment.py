"""lazyrich run single-neuron: closed-form flow (theory.single_neuron) vs float64 GD on the torch model."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lazyrich.experiments import registry
from lazyrich.experiments.single_neuron import COLUMNS, SingleNeuronConfig, initialization, run


@pytest.fixture(scope="module")
def quick_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("sn") / "quick"
    path = run(registry.get("single-neuron").preset("quick"), out)
    return path, pd.read_csv(path / "results.csv")


def test_quick_preset_exact_and_gd_agree_on_every_row(quick_table):
    _, df = quick_table
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert sorted(df.delta.unique()) == [-4, -2, -1, 0, 1, 2, 4]
    assert len(df) == 7 * 81 and df.t.max() == 20.0
    assert (df.S_exact - df.S_gd).abs().max() < 1e-3
    assert np.hypot(df.beta1_exact - df.beta1_gd, df.beta2_exact - df.beta2_gd).max() < 2e-3
    # the comparison is not vacuous: the kernel moves (rich / delayed rich) for delta <= 0
    assert df[df.delta <= 0].S_exact.max() > 0.1
    # GD conserves delta = a^2 - ||w||^2 up to the O(lr) discretisation error; the exact flow to rounding
    assert (df.a_gd ** 2 - df.wnorm_gd ** 2 - df.delta).abs().max() < 2e-3
    assert (df.a_exact ** 2 - df.wnorm_exact ** 2 - df.delta).abs().max() < 1e-9
    first = df[df.t == 0]
    assert np.allclose(first.beta1_gd, -1.0) and np.allclose(first.beta2_gd, 0.0) and (first.S_gd == 0).all()


def test_paper_reading_lazy_rich_delayed(quick_table):
    _, df = quick_table
    S_end = df[df.t == 20].set_index("delta").S_exact
    assert S_end[4] < 0.01 < 0.1 < S_end[0] < S_end[-4]          # upstream lazy, balanced rich, downstream moves most
    g = df[df.delta == -4]
    assert g[g.t <= 2].S_exact.max() < 0.01                       # ... but late: delayed rich
    verdict = df.groupby("delta").regime.first()
    assert verdict[-4] == verdict[-2] == "delayed-rich" and verdict[0] == "rich" and verdict[2] == verdict[4] == "lazy"


def test_initialization_and_rerun(quick_table, tmp_path):
    a0, w0 = initialization(-2.0, (-1.0, 0.0))
    assert np.allclose(a0 * w0, [-1.0, 0.0]) and np.isclose(a0 ** 2 - w0 @ w0, -2.0) and a0 > 0
    path, _ = quick_table
    mtime = (path / "results.csv").stat().st_mtime_ns
    run(registry.get("single-neuron").preset("quick"), path)
    assert (path / "results.csv").stat().st_mtime_ns == mtime


def test_bad_config_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="whole number of steps"):
        run(SingleNeuronConfig(lr=3e-3), tmp_path / "x")
    with pytest.raises(ValueError, match="beta0 must be non-zero"):
        SingleNeuronConfig(beta0=(0.0, 0.0)).validated()
    proc = subprocess.run([sys.executable, "-m", "lazyrich", "run", "single-neuron", "--preset", "quick", "t_max=-1",
                           "--out", str(tmp_path / "y")], capture_output=True, text=True)
    assert proc.returncode != 0 and "t_max must be a positive number" in proc.stderr


def test_figure(quick_table):
    from lazyrich.plots import fig_single_neuron

    path, _ = quick_table
    fig = fig_single_neuron(path)
    assert len(fig.axes) == 3


def test_report_draws_the_declared_figure_and_the_regime_line(quick_table):
    from lazyrich.plots import report
    from lazyrich.plots.report import regime_summary

    path, df = quick_table
    page = report(path).read_text()
    assert "fig_single_neuron" in page and (path / "figures" / "fig_single_neuron.png").exists()
    line = regime_summary(path)
    assert line in page and "delayed-rich × 2" in line and "lazy × 2" in line
