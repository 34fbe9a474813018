"""fig_phase_diagram / fig_phase_rd drawn from a small directory of phase-diagram tables."""

import numpy as np
import pandas as pd
import pytest

from lazyrich.plots import fig_phase_diagram, fig_phase_rd


def _write(tmp_path):
    rows = [{"gamma": g, "gamma_prime": gp, "S_w": s} for g, gp, s in
            [(0.5, 0.0, -0.5), (1.5, 0.0, 0.3), (0.5, 0.5, -0.4), (1.5, 0.5, 0.1)]]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    for i, r in enumerate(rows):
        cell = tmp_path / f"cell{i}"
        cell.mkdir()
        pd.DataFrame([{"gamma": r["gamma"], "gamma_prime": r["gamma_prime"], "m": m, "seed": 0,
                       "rd_w": m ** r["S_w"]} for m in (100, 200, 400)]).to_csv(cell / "rd.csv", index=False)


def test_phase_figures_draw_boundary_crossings_and_lines(tmp_path):
    _write(tmp_path)
    ax = fig_phase_diagram(tmp_path).axes[0]
    labels = {l.get_label(): l for l in ax.get_lines()}
    b = labels["boundary gamma = 1 + max(gamma', 0)"]
    np.testing.assert_allclose(b.get_xdata(), 1 + np.maximum(b.get_ydata(), 0))
    z = labels["zero crossing of S_w"]
    # linear interpolation: gamma'=0: 0.5 + 1*0.5/0.8 = 1.125; gamma'=0.5: 0.5 + 0.4/0.5 = 1.3
    np.testing.assert_allclose(sorted(z.get_xdata()), [1.125, 1.3])
    assert len(ax.collections[0].get_offsets()) == 4
    ax = fig_phase_rd(tmp_path).axes[0]
    assert len(ax.get_lines()) == 4 and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [100 ** -0.5, 200 ** -0.5, 400 ** -0.5])


def test_phase_figures_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="run"):
        fig_phase_rd(tmp_path)
    with pytest.raises(ValueError, match="S_w"):
        fig_phase_diagram(pd.DataFrame({"gamma": [1.0]}))


def test_condensation_map_plots_the_saved_features(tmp_path):
    from lazyrich.experiments import registry
    from lazyrich.experiments.phase_diagram import run
    from lazyrich.plots import fig_condensation

    cfg = registry.get("phase-diagram").config("quick", ["widths=20,40", "n_seeds=1", "max_steps=300", "loss_tol=1e-6",
                                                          "gamma=1.5"])
    out = run(cfg, tmp_path / "cell")
    fig = fig_condensation(out)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "gamma=1.5, gamma'=0"
    assert fig.axes[0].get_xlabel().startswith("angle")
    with np.load(out / "widths" / "m40.npz") as z:
        a_init, o_init, a_fin, o_fin = (z[k] for k in ("A_init", "orient_init", "A_final", "orient_final"))
    cols = {c.get_label(): c.get_offsets() for c in fig.axes[0].collections}
    np.testing.assert_allclose(cols["final, m=40"], np.c_[o_fin, a_fin / a_fin.max()], rtol=1e-6)
    np.testing.assert_allclose(cols["init, m=40"], np.c_[o_init, a_init / a_init.max()], rtol=1e-6)
    assert set(cols) == {"final, m=20", "final, m=40", "init, m=40"}
    # the orientation is the angle of (w, bias) in 1-d: recompute it from the saved final weights
    with np.load(out / "widths" / "m40.npz") as z:
        w, a = z["w_final"], z["a_final"]
    np.testing.assert_allclose(a_fin, np.abs(a) * np.linalg.norm(w, axis=1), rtol=1e-6)
    np.testing.assert_allclose(o_fin, np.arctan2(w[:, 1], w[:, 0]), rtol=1e-6, atol=1e-6)


def test_condensation_map_bad_input(tmp_path):
    from lazyrich.plots import fig_condensation

    with pytest.raises(FileNotFoundError, match="lazyrich run phase-diagram"):
        fig_condensation(tmp_path)
    (tmp_path / "widths").mkdir()
    np.savez(tmp_path / "widths" / "m10.npz", A_init=np.ones(2))
    with pytest.raises(FileNotFoundError, match="config.json"):
        fig_condensation(tmp_path)
