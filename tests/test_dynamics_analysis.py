"""load_run analyses (Zhou et al. eqs. 4-5, Fig. 1a-c) against pairwise recomputation from stored kernels."""

import numpy as np
import pytest

from lazyrich.dynamics import RunStore, load_run, streaming_gram
from lazyrich.dynamics import analysis as A
from lazyrich.ntk import kernel_distance


def _fake_run(tmp_path, steps=(0, 1, 3, 7, 15, 31), n=6, seed=0, labels=True):
    """Kernels K(t) = K0 + f(t) D with psd K0, D: a trajectory that moves fast early then slows down."""
    st = RunStore(tmp_path / "run", {"experiment": "fake"}, seed=seed)
    g = np.random.default_rng(seed)
    B = g.standard_normal((n, n))
    C = g.standard_normal((n, n))
    K0, D = B @ B.T, C @ C.T
    for t in steps:
        f = 1 - np.exp(-t / 4.0)
        st.save_kernel(t, K0 + 2.0 * f * D + 0.01 * t * np.eye(n))
        st.append_metrics({"step": t})
    if labels:
        (st.path / "probe").mkdir()
        np.save(st.path / "probe" / "y.npy", np.arange(n) % 2)
    return st.path


def test_kernel_distance_matrix_equals_pairwise_recomputation(tmp_path):
    # oracle: lazyrich.ntk.kernel_distance on every pair of stored kernels; tol 1e-10
    run = load_run(_fake_run(tmp_path))
    S = run.kernel_distance_matrix()
    T = len(run.kernel_steps)
    assert S.shape == (T, T)
    for i, si in enumerate(run.kernel_steps):
        for j, sj in enumerate(run.kernel_steps):
            ref = 0.0 if i == j else kernel_distance(run.kernel(si), run.kernel(sj))
            assert S[i, j] == pytest.approx(ref, abs=1e-10)


def test_streaming_gram_reads_each_kernel_once_and_slabs_agree(tmp_path, monkeypatch):
    path = _fake_run(tmp_path, steps=tuple(range(12)), n=9)
    files = [path / "kernels" / "total" / f"step_{s:08d}.npy" for s in range(12)]
    calls = []
    real = np.load

    def counting(f, *a, **k):
        calls.append(str(f))
        return real(f, *a, **k)

    monkeypatch.setattr(A.np, "load", counting)
    G = streaming_gram(files)
    # one pass: every kernel opened once (plus one shape probe of the first), not T^2 times
    assert len(calls) == 12 + 1
    monkeypatch.setattr(A.np, "load", real)
    ref = np.array([[np.vdot(real(a).astype(np.float64), real(b).astype(np.float64)) for b in files] for a in files])
    np.testing.assert_allclose(G, ref, rtol=1e-12)
    # a tiny memory budget cuts the kernels into row slabs: same Gram (each row still read once)
    np.testing.assert_allclose(streaming_gram(files, budget_bytes=1), ref, rtol=1e-12)


def test_adjacent_velocity_reference_embedding(tmp_path):
    run = load_run(_fake_run(tmp_path))
    S = run.kernel_distance_matrix()
    t = run.kernel_steps
    adj = run.adjacent_distances(dts=(1, 2))
    assert adj[1]["step"].tolist() == t[:-1].tolist()
    np.testing.assert_allclose(adj[2]["S"], [S[i, i + 2] for i in range(len(t) - 2)])
    v = run.kernel_velocity()  # Zhou et al. eq. (5)
    for i in range(len(t) - 1):
        assert v["velocity"].iloc[i] == pytest.approx(
            kernel_distance(run.kernel(t[i]), run.kernel(t[i + 1])) / (t[i + 1] - t[i]), rel=1e-9)
    ref = run.reference_distances([3, 16])
    assert list(ref.columns) == ["step", "S_tau=3", "S_tau=15"]  # 16 snapped to the nearest stored step
    np.testing.assert_allclose(ref["S_tau=15"], S[:, 4])
    X = run.embedding_2d()
    assert X.shape == (len(t), 2)
    # the 2-D embedding preserves the (dominant) geometry: distance from the initial kernel grows along training
    d0 = np.linalg.norm(X - X[0], axis=1)
    assert np.all(np.diff(d0) > 0)
    ps = run.phase_split()
    assert ps["method"] == "velocity_threshold" and ps["step"] in set(t.tolist())
    with pytest.raises(ValueError, match="dt must be"):
        run.adjacent_distances(dts=(0,))


def test_alignment_and_effective_rank_use_stored_kernels(tmp_path):
    from lazyrich.dynamics import metrics as M

    run = load_run(_fake_run(tmp_path))
    al = run.kernel_alignment()
    y = np.arange(6) % 2
    for s, a in zip(al["step"], al["alignment"]):
        assert a == pytest.approx(M.kernel_target_alignment(np.asarray(run.kernel(s)), y), rel=1e-12)
    er = run.effective_rank()
    assert er.shape == (len(run.kernel_steps), 2) and np.all(er["effective_rank"].between(1, 6))
    with pytest.raises(ValueError, match="no per-layer"):
        run.per_layer_distance()
    with pytest.raises(ValueError, match="conserved"):
        run.deltas()


def test_too_few_kernels_errors(tmp_path):
    run = load_run(_fake_run(tmp_path, steps=(0,)))
    assert run.kernel_distance_matrix().shape == (1, 1)
    with pytest.raises(ValueError, match="at least 2 stored kernels"):
        run.kernel_velocity()


def test_equal_and_scaled_kernels_have_zero_distance(tmp_path):
    # S(K, K) = 0 and S is invariant to scaling either kernel (Zhou et al. eq. 4); via the stored-kernel path
    st = RunStore(tmp_path / "r", {"experiment": "x"}, seed=0)
    g = np.random.default_rng(2)
    B, C = g.standard_normal((5, 5)), g.standard_normal((5, 5))
    K, L = B @ B.T, C @ C.T
    for t, M_ in enumerate([K, K, 1e3 * K, L, 1e-3 * L]):
        st.save_kernel(t, M_)
    S = load_run(st.path).kernel_distance_matrix()
    assert np.abs(S[:3, :3]).max() < 1e-6  # float32 storage
    assert S[0, 3] == pytest.approx(S[2, 4], abs=1e-6) and S[0, 3] > 0.01
