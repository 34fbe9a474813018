"""filter-smoothness: the normalized-Laplacian smoothness against hand computations, the first-layer
alpha scaling, and one tiny cell end to end (real files)."""

import numpy as np
import pandas as pd
import pytest
import torch

from lazyrich.experiments import registry
from lazyrich.experiments.filter_smoothness import (COLUMNS, LAPLACIAN, FilterSmoothnessConfig, build_model,
                                                    filter_smoothness, run)


def test_constant_filter_is_perfectly_smooth():
    assert filter_smoothness(torch.full((15, 15), 0.3)).item() == pytest.approx(0.0, abs=1e-24)
    # the kernel as printed in the paper (centre 2) sums to -1: each valid output is -1/k
    assert filter_smoothness(torch.full((15, 15), 0.3), center=2.0).item() == pytest.approx(13 ** 2 / 15 ** 2, rel=1e-12)


def test_centred_impulse_gives_the_squared_laplacian_entries():
    w = torch.zeros(15, 15)
    w[7, 7] = -2.0  # sign and scale do not matter
    assert filter_smoothness(w).item() == pytest.approx(9 + 4 * 0.25 + 4 * 0.0625, rel=1e-14)  # 10.25


def test_checkerboard_hand_value_and_the_symbol_bound():
    k = 15
    i, j = np.indices((k, k))
    board = torch.tensor((-1.0) ** (i + j))
    # every one of the (k-2)^2 valid outputs is 3 + 4*0.5 - 4*0.25 = 4 times 1/k (unit norm)
    assert filter_smoothness(board).item() == pytest.approx(16 * (k - 2) ** 2 / k ** 2, rel=1e-14)
    # the largest possible value: the top singular value^2 of the valid-convolution matrix, below sup |symbol|^2 = 16
    A = torch.stack([torch.nn.functional.conv2d(e.reshape(1, 1, k, k), LAPLACIAN[None, None]).flatten()
                     for e in torch.eye(k * k, dtype=torch.float64)], 1)
    top = torch.linalg.matrix_norm(A, ord=2).item() ** 2
    assert filter_smoothness(board).item() <= top <= 16.0
    rand = filter_smoothness(torch.randn(64, 3, k, k, generator=torch.Generator().manual_seed(0)))
    assert rand.shape == (64, 3) and (rand < filter_smoothness(board)).all()


def test_scale_invariance_and_per_filter_shape():
    w = torch.randn(4, 3, 15, 15, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = filter_smoothness(w)
    assert torch.allclose(filter_smoothness(17.0 * w), s, rtol=1e-12, atol=0)
    assert s[2, 1].item() == pytest.approx(filter_smoothness(w[2, 1]).item(), rel=1e-14)
    with pytest.raises(ValueError, match="all zeros"):
        filter_smoothness(torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="k >= 3"):
        filter_smoothness(torch.ones(2, 2))


def test_alpha_divides_only_the_first_layer():
    m1 = build_model(FilterSmoothnessConfig(width=4, alpha=1.0))
    m5 = build_model(FilterSmoothnessConfig(width=4, alpha=5.0))
    assert m1.first_layer.weight.shape == (4, 3, 15, 15)
    for (n, p1), p5 in zip(m1.named_parameters(), m5.parameters()):
        if n == "prep.0.weight":
            assert torch.equal(p5, p1 / 5.0)
        else:
            assert torch.equal(p5, p1), n


def test_tiny_cell_and_figures(tmp_path):
    from lazyrich.plots.filters import fig_filter_grid, fig_filter_smoothness

    cfg = FilterSmoothnessConfig(width=2, epochs=1, batch_size=64, max_train=128)
    path = run(cfg, tmp_path / "a")
    df = pd.read_csv(path / "results.csv")
    assert list(df.columns) == list(COLUMNS) and len(df) == 1
    w = np.load(path / "filters.npy")
    assert w.shape == (2, 3, 15, 15)
    assert df.smoothness_mean.iloc[0] == pytest.approx(float(filter_smoothness(torch.tensor(w)).mean()), rel=1e-12)
    assert 0 <= df.test_acc.iloc[0] <= 1
    assert fig_filter_smoothness(tmp_path).axes and fig_filter_grid(path).axes
    mtime = (path / "results.csv").stat().st_mtime_ns
    run(cfg, tmp_path / "a")
    assert (path / "results.csv").stat().st_mtime_ns == mtime


def test_registered_and_bad_config(tmp_path):
    exp = registry.get("filter-smoothness")
    assert exp.preset("paper").first_kernel == 15 and exp.presets["paper"].grid["alpha"] == (0.1, 0.3, 1.0, 3.0, 10.0)
    with pytest.raises(ValueError, match="data_dir="):
        run(FilterSmoothnessConfig(dataset="cifar10"), tmp_path / "x")
    with pytest.raises(ValueError, match="first_kernel must be odd"):
        exp.config("quick", ["first_kernel=4"])
