"""Modular arithmetic data for grokking (Power et al. 2022; the setup of teddykoker/grokking used by
Kunin et al., *Get rich quick*, appendix "Experimental Details", "Grokking").

Each example is the token sequence ``[x, op, y, eq]`` with ``x, y`` residues mod ``p`` (tokens ``0..p-1``),
``eq = p`` and ``op = p + 1`` (as in teddykoker/grokking; the vocabulary has ``p + 2`` tokens); the label is
``x ∘ y mod p``.
For ``x/y`` (the default of teddykoker/grokking) ``y`` runs over ``1..p-1`` and ``x/y = x * y^(p-2) mod p``
(Fermat; ``p`` must be prime); for ``x+y``, ``x-y`` and ``x*y`` both run over ``0..p-1``.  (The stored
teddykoker/grokking ``train.py`` labels its "division" data ``x * y mod p`` with ``y != 0``; ``x/y`` here is
Power et al.'s division ``x * y^(-1)``, the same task with the second operand relabelled ``y -> y^(-1)``.)
"""

from __future__ import annotations

from typing import Tuple

import torch

__all__ = ["MODULAR_OPERATIONS", "modular_pairs", "modular_split"]

MODULAR_OPERATIONS: Tuple[str, ...] = ("x/y", "x+y", "x-y", "x*y")


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % k for k in range(2, int(p ** 0.5) + 1))


def modular_pairs(p: int, operation: str = "x/y") -> Tuple[torch.Tensor, torch.Tensor]:
    """All equations of ``operation`` mod ``p``: tokens ``(N, 4)`` int64 ``[x, p+1, y, p]`` and labels ``(N,)``.

    ``N = p (p - 1)`` for ``x/y`` and ``p^2`` otherwise; rows are ordered by ``x`` then ``y``.
    """
    if isinstance(p, bool) or not isinstance(p, int) or not _is_prime(p):
        raise ValueError(f"p must be a prime integer (e.g. 97), got {p!r}.")
    if operation not in MODULAR_OPERATIONS:
        raise ValueError(f"operation {operation!r} is not supported; use one of {', '.join(MODULAR_OPERATIONS)}.")
    xs = torch.arange(p)
    ys = torch.arange(1, p) if operation == "x/y" else torch.arange(p)
    x, y = torch.cartesian_prod(xs, ys).unbind(1)
    if operation == "x/y":
        inv = torch.tensor([pow(int(v), p - 2, p) for v in range(p)])
        label = (x * inv[y]) % p
    elif operation == "x+y":
        label = (x + y) % p
    elif operation == "x-y":
        label = (x - y) % p
    else:
        label = (x * y) % p
    tokens = torch.stack([x, torch.full_like(x, p + 1), y, torch.full_like(x, p)], dim=1)
    return tokens.long(), label.long()


def modular_split(p: int, operation: str = "x/y", train_fraction: float = 0.5, seed: int = 0):
    """Seeded random split of :func:`modular_pairs` into ``(x_train, y_train, x_val, y_val)``.

    ``n_train = floor(train_fraction * N)`` (as ``int(frac * len)`` in teddykoker/grokking); the
    permutation comes from a ``torch.Generator`` seeded with ``seed``.
    """
    if not (isinstance(train_fraction, (int, float)) and 0 < train_fraction < 1):
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction!r}.")
    tokens, labels = modular_pairs(p, operation)
    n = tokens.shape[0]
    n_train = int(train_fraction * n)
    if n_train < 1 or n_train >= n:
        raise ValueError(f"train_fraction={train_fraction} leaves an empty split of the {n} equations; choose a value nearer 0.5.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    tr, va = perm[:n_train], perm[n_train:]
    return tokens[tr], labels[tr], tokens[va], labels[va]
