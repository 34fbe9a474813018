"""early-time (Hu et al.): the net and its surrogates trained by the same GD, against independent facts."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from lazyrich.experiments import registry
from lazyrich.experiments.early_time import COLUMNS, SPLIT_COLUMNS, EarlyTimeConfig, residual_split, run, train_pair
from lazyrich.ntk import lazy_predict
from lazyrich.theory import early_time as et

SMALL = EarlyTimeConfig(ds=(8, 32), width=64, n_train=200, n_test=100, steps=40, n_records=6, fc_depth=2)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = run(SMALL, tmp_path_factory.mktemp("et") / "small")
    return path, pd.read_csv(path / "results.csv")


def test_surrogate_equals_closed_form_linear_training():
    """The surrogate's GD on gamma equals lazy_predict with the kernel psi psi^T (eq. (11)) at the same steps."""
    rng = np.random.default_rng(0)
    X, Xt = rng.standard_normal((50, 6)), rng.standard_normal((20, 6))
    y = np.sign(X[:, 0])
    W0, v0 = et.symmetric_init(16, 6, rng)
    out = train_pair(X, y, Xt, np.zeros(20), "relu", W0, v0, eta1=0.5, eta2=1.0, record=[0, 3, 17])
    c = et.constants("relu")
    P, Pt = et.psi(X, c, eta1=0.5, eta2=1.0), et.psi(Xt, c, eta1=0.5, eta2=1.0)
    ref = lazy_predict(P @ P.T, y, K_test_train=Pt @ P.T, steps=[0, 3, 17], lr=1.0)
    for j, k in enumerate([0, 3, 17]):
        assert np.abs(out[k][1] - ref.test[j]).max() < 1e-12
        # the net starts at f = 0 (symmetric init) and its output is the paper's eq. (1)
    assert np.abs(out[0][0]).max() < 1e-14
    assert np.abs(out[17][0]).max() > 1e-3


def test_table_early_agreement_and_discrepancy_falls_with_d(table):
    _, df = table
    assert list(df.columns) == list(COLUMNS)
    first = df[df.step == 0]
    assert (first.discrepancy < 1e-28).all() and np.allclose(first.test_loss_net, first.test_loss_lin)
    sign = df[(df.target == "sign") & (df.step == 4)].set_index(["activation", "d"])
    for act in ("erf", "relu"):
        assert sign.loc[(act, 32)].discrepancy < sign.loc[(act, 8)].discrepancy
        # early on the net and f^lin agree far better than the net moved
        moved = sign.loc[(act, 8)].test_loss_net
        assert sign.loc[(act, 8)].discrepancy < 0.05 * moved
    # erf: vartheta0 = vartheta1 = vartheta2 = 0 (footnote 9), so f^lin and the naive model coincide
    erf = df[df.activation == "erf"]
    assert np.allclose(erf.discrepancy, erf.discrepancy_naive, rtol=1e-9, atol=1e-15)


def test_norm_target_full_surrogate_tracks_the_net(table):
    _, df = table
    g = df[(df.target == "norm") & (df.d == 8) & (df.step > 0) & (df.step <= 10)]
    assert len(g) and (g.discrepancy < 0.7 * g.discrepancy_naive).all()


def test_one_layer_and_bad_inputs(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 5))
    W0, v0 = et.symmetric_init(8, 5, rng)
    out = train_pair(X, X[:, 0], X, X[:, 0], "erf", W0, v0, eta1=1.0, eta2=0.0, record=[0, 5])
    assert np.isfinite(out[5][3]["test_loss_lin"])
    with pytest.raises(ValueError, match="not both 0"):
        replace(SMALL, eta1=0.0, eta2=0.0).validated()
    with pytest.raises(ValueError, match="unknown activations"):
        replace(SMALL, activations=("sigmoidish",)).validated()
    assert registry.get("early-time").preset("paper").n_train == 20000


def test_figures(table):
    import lazyrich.plots as P

    path, _ = table
    for name in registry.get("early-time").figures:
        assert getattr(P, name)(path).axes


def test_residual_split_against_lstsq_projection():
    """The V_lin part equals the float64 lstsq projection onto the span of X (Hu et al. Fig. 3a); the two
    halves add up to the whole loss; a residual inside V_lin has no perp part."""
    rng = np.random.default_rng(3)
    X, r = rng.standard_normal((40, 5)), rng.standard_normal(40)
    a, b = residual_split(r, X)
    p = X @ np.linalg.lstsq(X, r, rcond=None)[0]
    assert abs(a - p @ p / 80) < 1e-12 and abs(b - (r - p) @ (r - p) / 80) < 1e-12
    assert abs(a + b - r @ r / 80) < 1e-12 and b > 0.1 * a
    assert residual_split(X @ np.arange(5.0), X)[1] < 1e-20
    # a rank-deficient X: the duplicated column adds nothing to V_lin
    assert abs(residual_split(r, np.hstack([X, X[:, :1]]))[0] - a) < 1e-12
    with pytest.raises(ValueError, match="shape"):
        residual_split(r[:-1], X)


def test_residual_split_table_early_progress_in_v_lin(table):
    path, _ = table
    sp = pd.read_csv(path / "residual_split.csv")
    assert list(sp.columns) == list(SPLIT_COLUMNS) and (sp.depth == 2).all() and (sp.d == 32).all()
    assert np.allclose(sp.loss_lin_space + sp.loss_lin_perp, sp.test_loss, rtol=1e-10)
    s0, s1 = sp.iloc[0], sp[sp.step == 4].iloc[0]
    # early on the test loss falls in V_lin and barely moves in V_lin^perp
    drop_lin, drop_perp = s0.loss_lin_space - s1.loss_lin_space, abs(s0.loss_lin_perp - s1.loss_lin_perp)
    assert drop_lin > 0 and drop_perp < 0.2 * drop_lin
    with pytest.raises(ValueError, match="n_test"):
        replace(SMALL, n_test=20, n_logits=5).validated()
