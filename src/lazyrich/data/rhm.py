"""The Random Hierarchy Model (RHM) of Cagnetta, Petrini, Tomasini, Favero & Wyart (2023), as recapped in
Kunin et al., *Get rich quick*, "Experimental Details", "Random Hierarchy Model".

The model
---------
Parameters: depth ``L``, classes ``n_c``, multiplicity ``m``, tuple size ``s``, vocabulary size ``v``
(the same at every level).  The top level gives each class ``m`` equivalent "high-level features", each an
``s``-tuple of level-``L-1`` symbols; each of the ``v`` symbols of a level ``l`` has ``m`` equivalent
``s``-tuples of level-``l-1`` symbols, down to the input level.  A datum is drawn by picking a class, then
uniformly one of its ``m`` productions, then, recursively for every symbol, one of its ``m`` productions; it
is a string of ``s**L`` input symbols, fed to a network one-hot, shape ``(s**L, v)``, flattened.

Rules are sampled so that the grammar is **non-ambiguous** (as the RHM requires): at every level the
``m * n_symbols`` productions are drawn *without replacement* from the ``v**s`` possible ``s``-tuples, so no
tuple is the production of two symbols (the paper: class 2's features "are not features for class 1") and a
symbol's ``m`` productions are distinct.  This needs ``m * n_c <= v**s`` and ``m * v <= v**s``; sampling
uses ``m n_c + (L-1) m v`` rules, as the paper counts.  Consequences, both tested: every string has exactly
one derivation, so the label is recovered from the input by parsing bottom-up (:meth:`RHM.parse`), and the
``P_max = n_c * m**((s**L - 1) / (s - 1))`` derivations give ``P_max`` distinct strings.

Data sets are drawn **without repetition**: datum ``i`` in ``[0, P_max)`` is the derivation whose class is
``i // m**N`` and whose ``N = (s**L-1)/(s-1)`` production choices are the base-``m`` digits of
``i % m**N`` (nodes in breadth-first order) -- a bijection onto the language (:meth:`RHM.tokens`).  The
test set is a seeded random subset of the indices and the training set a disjoint one, as in Cagnetta et
al.'s code (a held-out test set, the training-set size given as a fraction of ``P_max``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch

from lazyrich.data.datasets import Dataset

__all__ = ["RHM", "sample_rhm", "make_rhm"]


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


@dataclass(frozen=True, eq=False)
class RHM:
    """One sampled Random Hierarchy Model (its production rules).

    Attributes
    ----------
    L, n_c, m, s, v : int
        Depth, classes, multiplicity, tuple size, vocabulary size.
    rules : tuple of numpy.ndarray
        ``rules[0]``: ``(n_c, m, s)`` -- the ``m`` productions of each class (symbols of level ``L-1``);
        ``rules[l]`` for ``l = 1 .. L-1``: ``(v, m, s)`` -- the productions of each symbol of the level
        ``l`` steps below the top.  ``int64``.
    seed : int
        The seed the rules were drawn with.
    """

    L: int
    n_c: int
    m: int
    s: int
    v: int
    rules: Tuple[np.ndarray, ...]
    seed: int = 0

    @property
    def n_nodes(self) -> int:
        """Number of production choices in one derivation, ``N = 1 + s + ... + s**(L-1)``."""
        return sum(self.s**l for l in range(self.L))

    @property
    def n_samples(self) -> int:
        """``P_max = n_c * m**N``: the number of distinct data the model generates."""
        return self.n_c * self.m**self.n_nodes

    @property
    def input_length(self) -> int:
        """``s**L`` input symbols per datum."""
        return self.s**self.L

    @property
    def input_dim(self) -> int:
        """``s**L * v``: the length of the flattened one-hot input."""
        return self.input_length * self.v

    def tokens(self, index) -> Tuple[np.ndarray, np.ndarray]:
        """Inputs ``(n, s**L)`` (symbols in ``[0, v)``) and labels ``(n,)`` of the data with these indices.

        ``index``: integers in ``[0, P_max)`` (see the module docstring for the bijection).
        """
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_samples):
            raise ValueError(f"indices must lie in [0, P_max={self.n_samples}); got values in [{idx.min()}, {idx.max()}].")
        per_class = self.m**self.n_nodes
        labels, rest = idx // per_class, idx % per_class
        digits = np.empty((idx.size, self.n_nodes), dtype=np.int64)
        for j in range(self.n_nodes - 1, -1, -1):  # most significant digit = the root's choice
            rest, digits[:, j] = np.divmod(rest, self.m)
        symbols, pos = labels[:, None], 0
        for level, rule in enumerate(self.rules):
            width = symbols.shape[1]  # = s**level nodes at this level
            choice = digits[:, pos:pos + width]
            pos += width
            symbols = rule[symbols, choice].reshape(idx.size, width * self.s)
        return symbols, labels

    def one_hot(self, tokens) -> torch.Tensor:
        """Flattened one-hot encoding ``(n, s**L * v)`` (float32; position-major) of ``tokens``."""
        t = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        return torch.nn.functional.one_hot(t, self.v).reshape(t.shape[0], -1).float()

    def parse(self, tokens) -> np.ndarray:
        """Labels recovered from inputs ``(n, s**L)`` by applying the rules bottom-up; ``-1`` for a string
        that is not in the language (some ``s``-tuple is no production of any symbol)."""
        sym = np.array(tokens, dtype=np.int64, copy=True)
        if sym.ndim != 2 or sym.shape[1] != self.input_length:
            raise ValueError(f"tokens must have shape (n, {self.input_length}), got {sym.shape}.")
        valid = np.ones(sym.shape[0], dtype=bool)
        for rule in reversed(self.rules):
            n_parent = rule.shape[0]
            parent = np.full(self.v**self.s, -1, dtype=np.int64)  # tuple code -> parent symbol
            codes = rule @ (self.v ** np.arange(self.s - 1, -1, -1))  # (n_parent, m)
            parent[codes.reshape(-1)] = np.repeat(np.arange(n_parent), self.m)
            tup = sym.reshape(sym.shape[0], -1, self.s)
            sym = parent[tup @ (self.v ** np.arange(self.s - 1, -1, -1))]
            valid &= (sym >= 0).all(axis=1)
            sym = np.where(sym < 0, 0, sym)
        return np.where(valid, sym[:, 0], -1)


def sample_rhm(L: int = 3, n_c: int = 8, m: int = 4, s: int = 2, v: int = 8, *, seed: int = 0) -> RHM:
    """Sample the rules of an RHM (defaults: the paper's ``L=3, n_c=8, m=4, s=2, v=8``; ``P_max = 131072``).

    Raises
    ------
    ValueError
        A parameter is not a positive integer (``s >= 2``), or ``m * n_c`` or ``m * v`` exceeds the ``v**s``
        possible tuples (a non-ambiguous grammar is then impossible; the message names the fix).
    """
    L, n_c, m, v = (_check_int(k, x, 1) for k, x in (("L", L), ("n_c", n_c), ("m", m), ("v", v)))
    s = _check_int("s", s, 2)
    seed = _check_int("seed", seed, 0)
    n_tuples = v**s
    for name, n_sym in (("n_c", n_c), ("v", v)):
        if name == "v" and L == 1:
            continue
        if m * n_sym > n_tuples:
            raise ValueError(f"m * {name} = {m * n_sym} exceeds the v**s = {n_tuples} possible tuples, so the rules "
                             f"cannot be non-ambiguous; lower m or {name}, or raise v or s.")
    rng = np.random.default_rng(seed)
    place = v ** np.arange(s - 1, -1, -1)
    rules = []
    for level in range(L):
        n_sym = n_c if level == 0 else v
        codes = rng.choice(n_tuples, size=m * n_sym, replace=False)
        rules.append(((codes[:, None] // place) % v).reshape(n_sym, m, s).astype(np.int64))
    return RHM(L=L, n_c=n_c, m=m, s=s, v=v, rules=tuple(rules), seed=seed)


def make_rhm(n_train: int, n_test: int, *, L: int = 3, n_c: int = 8, m: int = 4, s: int = 2, v: int = 8,
             seed: int = 0) -> Dataset:
    """RHM classification data: one-hot inputs ``(n, s**L * v)`` and class labels, train and test disjoint.

    ``seed`` seeds the rules (:func:`sample_rhm`) and the draw of the data (the ``n_test`` test indices first,
    then ``n_train`` training indices from the rest, without repetition).  ``info`` holds the :class:`RHM`
    (``info["rhm"]``), ``P_max`` and the drawn indices.

    Raises
    ------
    ValueError
        ``n_train + n_test`` exceeds ``P_max`` (the message gives ``P_max``), or a size is not a positive int.
    """
    n_train, n_test = _check_int("n_train", n_train, 1), _check_int("n_test", n_test, 1)
    rhm = sample_rhm(L, n_c, m, s, v, seed=seed)
    P = rhm.n_samples
    if n_train + n_test > P:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {P} data this RHM generates; "
                         f"lower n_train or n_test.")
    rng = np.random.default_rng([seed, 1])
    chosen = rng.choice(P, size=n_test + n_train, replace=False)  # distinct indices
    test_idx, train_idx = chosen[:n_test], chosen[n_test:]
    xtr, ytr = rhm.tokens(train_idx)
    xte, yte = rhm.tokens(test_idx)
    return Dataset(x_train=rhm.one_hot(xtr), y_train=torch.from_numpy(ytr), x_test=rhm.one_hot(xte),
                   y_test=torch.from_numpy(yte), num_classes=n_c, name="rhm",
                   info={"rhm": rhm, "P_max": P, "train_index": train_idx, "test_index": test_idx,
                         "L": L, "n_c": n_c, "m": m, "s": s, "v": v, "seed": seed})
