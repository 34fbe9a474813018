"""The Random Hierarchy Model generator (lazyrich.data.rhm) against independent facts.

Oracles: the language enumerated by brute-force recursive expansion of the rules (itertools, no index
arithmetic) equals the indexed data; the grammar is non-ambiguous (all productions of a level distinct);
labels are recovered from inputs by parsing; P_max = n_c m^((s^L-1)/(s-1)) (the paper's count, 131072 for
L=3, n_c=8, m=4, s=2, v=8); seeded reproducibility; train and test disjoint.
"""

import itertools

import numpy as np
import pytest
import torch

from lazyrich.data.rhm import make_rhm, sample_rhm


def _expand(rhm, level, symbol):
    """All strings derivable from ``symbol`` at ``level`` (0 = the class level), by brute force."""
    if level == rhm.L:
        return [(symbol,)]
    out = []
    for prod in rhm.rules[level][symbol]:
        for parts in itertools.product(*[_expand(rhm, level + 1, int(c)) for c in prod]):
            out.append(sum(parts, ()))
    return out


@pytest.mark.parametrize("params", [dict(L=2, n_c=3, m=2, s=2, v=3), dict(L=2, n_c=2, m=2, s=3, v=3),
                                    dict(L=3, n_c=2, m=2, s=2, v=4)])
def test_indexed_data_is_the_whole_language(params):
    rhm = sample_rhm(**params, seed=3)
    brute = {(tuple(int(t) for t in x), c) for c in range(rhm.n_c) for x in _expand(rhm, 0, c)}
    x, y = rhm.tokens(np.arange(rhm.n_samples))
    indexed = {(tuple(r), int(c)) for r, c in zip(x.tolist(), y)}
    assert rhm.n_samples == params["n_c"] * params["m"] ** sum(params["s"] ** l for l in range(params["L"]))
    assert indexed == brute and len(indexed) == rhm.n_samples  # a bijection onto the language
    assert len({s for s, _ in brute}) == rhm.n_samples  # no string has two derivations / two labels


def test_paper_rhm_rules_are_non_ambiguous_and_labels_parse():
    rhm = sample_rhm(seed=0)  # L=3, n_c=8, m=4, s=2, v=8
    assert rhm.n_samples == 8 * 4**7 == 131072 and rhm.input_dim == 8 * 8
    assert [r.shape for r in rhm.rules] == [(8, 4, 2), (8, 4, 2), (8, 4, 2)]
    for r in rhm.rules:
        tuples = {tuple(t) for t in r.reshape(-1, 2).tolist()}
        assert len(tuples) == r.shape[0] * r.shape[1]  # no tuple serves two symbols, no repeated production
        assert r.min() >= 0 and r.max() < 8
    x, y = rhm.tokens(np.arange(rhm.n_samples))
    assert len(np.unique(x, axis=0)) == rhm.n_samples
    np.testing.assert_array_equal(rhm.parse(x), y)
    assert np.bincount(y).tolist() == [4**7] * 8
    # a string with an s-tuple that no symbol produces is outside the language
    used = {tuple(t) for t in rhm.rules[-1].reshape(-1, 2).tolist()}
    unused = next(t for t in itertools.product(range(8), repeat=2) if t not in used)
    bad = x[:5].copy()
    bad[:, :2] = unused
    assert (rhm.parse(bad) == -1).all()


def test_seeded_and_disjoint_splits():
    a, b = make_rhm(500, 300, seed=7), make_rhm(500, 300, seed=7)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, k), getattr(b, k))
    c = make_rhm(500, 300, seed=8)
    assert not all(np.array_equal(r1, r2) for r1, r2 in zip(a.info["rhm"].rules, c.info["rhm"].rules))
    assert not set(a.info["train_index"]) & set(a.info["test_index"])
    rows = lambda x: {tuple(r) for r in x.tolist()}  # noqa: E731
    assert not rows(a.x_train) & rows(a.x_test) and len(rows(a.x_train)) == 500
    # one-hot: s^L positions, one symbol each; decoding the one-hot and parsing gives the label
    assert a.x_train.shape == (500, 64) and a.x_train.dtype == torch.float32
    oh = a.x_train.reshape(500, 8, 8)
    assert torch.equal(oh.sum(-1), torch.ones(500, 8))
    np.testing.assert_array_equal(a.info["rhm"].parse(oh.argmax(-1).numpy()), a.y_train.numpy())


@pytest.mark.parametrize("call, match", [
    (lambda: sample_rhm(L=2, n_c=2, m=5, s=2, v=4), "cannot be non-ambiguous; lower m"),
    (lambda: sample_rhm(s=1), "s must be an integer >= 2"),
    (lambda: sample_rhm(m=0), "m must be an integer >= 1"),
    (lambda: make_rhm(131072, 1), "exceeds the 131072 data"),
    (lambda: sample_rhm(L=1, n_c=2, m=2, s=2, v=2).tokens([4]), r"indices must lie in \[0, P_max=4\)"),
])
def test_bad_input_names_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()
