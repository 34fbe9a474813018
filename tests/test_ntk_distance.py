"""kernel_distance (Zhou et al., cone effect, eq. (4)): oracle = the formula in float64; scale invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lazyrich.ntk import kernel_distance


def _kernels(seed=0, n=6):
    rng = np.random.default_rng(seed)
    J1, J2 = rng.standard_normal((n, 9)), rng.standard_normal((n, 9))
    return J1 @ J1.T, (J1 + 0.3 * J2) @ (J1 + 0.3 * J2).T


def test_matches_the_papers_formula_in_float64():
    # oracle: S = 1 - Tr(K1 K2^T) / sqrt(Tr(K1 K1^T) Tr(K2 K2^T)) written out directly; tol 1e-12
    for seed in range(4):
        K1, K2 = _kernels(seed)
        ref = 1.0 - np.trace(K1 @ K2.T) / np.sqrt(np.trace(K1 @ K1.T) * np.trace(K2 @ K2.T))
        assert 1e-4 < ref < 1.0  # an ordinary, non-trivial pair
        assert kernel_distance(K1, K2) == pytest.approx(ref, abs=1e-12)
        assert kernel_distance(torch.tensor(K1), torch.tensor(K2)) == pytest.approx(ref, abs=1e-12)
    K = np.eye(3)
    assert kernel_distance(K, -K) == pytest.approx(2.0, abs=1e-15)
    assert kernel_distance(K, np.ones((3, 3)) - K) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("c", [1e-200, 1e-100, 1e-10, 1.0, 1e10, 1e100, 1e200])
def test_scale_invariant_over_400_decades(c):
    K1, K2 = _kernels(1)
    assert kernel_distance(c * K1, c * K2) == pytest.approx(kernel_distance(K1, K2), abs=1e-12)
    assert kernel_distance(c * K1, K2) == pytest.approx(kernel_distance(K1, K2), abs=1e-12)
    assert kernel_distance(c * K1, c * K1) == 0.0  # identical kernels: exactly 0, not NaN or "zero kernel"


def test_identical_float32_kernels_give_exactly_zero():
    K1, _ = _kernels(2)
    K = torch.tensor(K1, dtype=torch.float32)
    assert kernel_distance(K, K.clone()) == 0.0
