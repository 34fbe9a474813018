"""Kernel factors: what one parameter contributes to the eNTK of a chunk of samples, and how
two chunks' factors contract into a kernel block.

Axes conventions (used throughout :mod:`lazyrich.ntk`):

* ``n`` samples of a chunk, ``c`` outputs (logits), ``P`` parameters of one tensor;
* ``g`` groups (convolutions), ``L`` positions (sequence positions, conv output pixels, or
  several calls of a shared module), ``da`` layer-input features, ``dg`` layer-output features.

A parameter's per-sample Jacobian is ``J[i, k, :] = d f_k(x_i) / d theta``. Its kernel block is
``sum_p J1[i, k, p] J2[j, l, p]``. Two exact representations are used:

``Explicit(J)``
    ``J`` of shape ``(n, c, P)``.
``Hadamard(A, G)``
    For a weight that acts linearly on its input at ``L`` positions, ``J[i, k] = sum_l G[i, k, l]
    A[i, l]^T`` (an outer product per position), so ``J1 J2^T = sum_{l, l'} (A1 A2^T) * (G1 G2^T)``.
    ``A`` has shape ``(n, g, L, da)`` and ``G`` shape ``(n, c, g, L, dg)``. When ``L = 1`` this
    costs ``n1 n2 (da + c dg)`` instead of ``n1 n2 c da dg``.
``IndexHadamard(idx, G)``
    Embedding tables: ``A`` is the one-hot encoding of ``idx`` (``-1`` marks positions that
    receive no gradient), represented by the indices themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Explicit", "SplitExplicit", "Hadamard", "IndexHadamard", "contract", "exactly_symmetric", "gram"]


_GRAM_SPLIT = 256  # below this many rows a symmetric Gram matrix is one product
_GRAM_SHORT = 1024  # ... and below twice as many if the rows are at most this long


def gram(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``a @ b.T``; with ``b=None`` the symmetric ``a @ a.T``, computed block-triangularly.

    For ``n >= 256`` (``n >= 512`` for rows of at most 1024 entries) only the upper block triangle
    is multiplied (recursively: 3 of 4 blocks, then 3 of 4 of each diagonal block, ...), the lower
    one is mirrored; the result is always exactly (bitwise) symmetric. Smaller ones are one
    product: with two threads, the blocks' smaller products ran slower than the flops they save
    (and MKL's one product beat splitting the columns into panels).
    """
    if b is not None:
        return a @ b.T
    n = a.shape[0]
    if n < _GRAM_SPLIT or (n < 2 * _GRAM_SPLIT and a.shape[1] <= _GRAM_SHORT):
        upper = torch.triu(a @ a.T)  # BLAS does not promise a bitwise symmetric a @ a.T
        return upper + upper.triu(1).T
    h = n // 2
    out = a.new_empty(n, n)
    out[:h, :h] = gram(a[:h], None)
    out[h:, h:] = gram(a[h:], None)
    upper = a[:h] @ a[h:].T
    out[:h, h:] = upper
    out[h:, :h] = upper.T
    return out


@dataclass
class Explicit:
    """Per-sample Jacobian ``J`` of shape ``(n, c, P)``."""

    J: torch.Tensor

    def nbytes(self) -> int:
        return self.J.numel() * self.J.element_size()


@dataclass
class SplitExplicit:
    """An explicit factor stored in parts along the logit axis: ``J = cat(parts, dim=1)``.

    Keeps every tensor small enough to be recycled by the allocator (large allocations are
    freshly mapped and page-faulted on every call). The trace contraction uses the parts as they
    are; the other modes join them.
    """

    parts: list

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parts)

    def joined(self) -> Explicit:
        return Explicit(torch.cat(self.parts, dim=1))


@dataclass
class Hadamard:
    """Layer inputs ``A`` ``(n, g, L, da)`` and output gradients ``G`` ``(n, c, g, L, dg)``."""

    A: torch.Tensor
    G: torch.Tensor

    def nbytes(self) -> int:
        return (self.A.numel() + self.G.numel()) * self.G.element_size()

    def gram_a(self, other: "Hadamard", grp: int, sym: bool) -> torch.Tensor:
        a1 = self.A[:, grp]
        n1, L1, da = a1.shape
        a2 = other.A[:, grp]
        n2, L2, _ = a2.shape
        ka = gram(a1.reshape(n1 * L1, da), None if sym else a2.reshape(n2 * L2, da))
        return ka.view(n1, L1, n2, L2)

    def to_explicit(self) -> Explicit:
        """``J[i, k, (g, o, a)] = sum_l G[i, k, g, l, o] A[i, g, l, a]``."""
        n, c, g, L, dg = self.G.shape
        da = self.A.shape[-1]
        if L == 1:
            J = self.G[:, :, :, 0, :, None] * self.A[:, None, :, 0, None, :]
            return Explicit(J.reshape(n, c, g * dg * da))
        # one batched matmul over (sample, group): (c*dg, L) @ (L, da)
        Gp = self.G.permute(0, 2, 1, 4, 3).reshape(n * g, c * dg, L)
        J = torch.bmm(Gp, self.A.reshape(n * g, L, da)).view(n, g, c, dg, da)
        if g > 1:
            J = J.permute(0, 2, 1, 3, 4)
        return Explicit(J.reshape(n, c, g * dg * da))


@dataclass
class IndexHadamard(Hadamard):
    """Embedding factor: ``A`` holds integer indices ``(n, 1, L)`` (``-1``: no gradient)."""

    def gram_a(self, other: "Hadamard", grp: int, sym: bool) -> torch.Tensor:
        i1 = self.A[:, 0]
        i2 = other.A[:, 0]
        eq = (i1.reshape(-1, 1) == i2.reshape(1, -1)) & (i1.reshape(-1, 1) >= 0)
        return eq.to(self.G.dtype).view(i1.shape[0], i1.shape[1], i2.shape[0], i2.shape[1])

    def nbytes(self) -> int:
        return self.A.numel() * 8 + self.G.numel() * self.G.element_size()

    def to_explicit(self) -> Explicit:  # pragma: no cover - never chosen (vocabulary-sized)
        raise NotImplementedError


def _contract_explicit(J1: torch.Tensor, J2: torch.Tensor | None, mode: str) -> torch.Tensor:
    n1, c, P = J1.shape
    sym = J2 is None
    n2 = n1 if sym else J2.shape[0]
    if mode == "trace" or c == 1:
        K = gram(J1.reshape(n1, c * P), None if sym else J2.reshape(n2, c * P))
        if mode == "full":
            return K[:, None, :, None]
        if mode == "diagonal":
            return K[:, :, None]
        return K
    if mode == "full":
        K = gram(J1.reshape(n1 * c, P), None if sym else J2.reshape(n2 * c, P))
        return K.view(n1, c, n2, c)
    # diagonal
    a = J1.transpose(0, 1)
    b = a if sym else J2.transpose(0, 1)
    return torch.bmm(a, b.transpose(1, 2)).permute(1, 2, 0)


def _contract_hadamard(f1: Hadamard, f2: Hadamard, mode: str, sym: bool) -> torch.Tensor:
    n1, c, g, L1, dg = f1.G.shape
    n2, L2 = f2.G.shape[0], f2.G.shape[3]
    out = None
    for grp in range(g):
        ka = f1.gram_a(f2, grp, sym)  # (n1, L1, n2, L2)
        g1 = f1.G[:, :, grp]  # (n1, c, L1, dg)
        g2 = f2.G[:, :, grp]
        if L1 == 1 and L2 == 1:
            ka2 = ka[:, 0, :, 0]
            a1 = g1[:, :, 0]  # (n1, c, dg), sample-major: contiguous after a backward pass
            a2 = a1 if sym else g2[:, :, 0]
            if mode == "trace" or c == 1:
                kg = gram(a1.reshape(n1, c * dg), None if sym else a2.reshape(n2, c * dg))
                blk = ka2 * kg
                if mode == "full":
                    blk = blk[:, None, :, None]
                elif mode == "diagonal":
                    blk = blk[:, :, None]
            elif mode == "full":
                kg = gram(a1.reshape(n1 * c, dg), None if sym else a2.reshape(n2 * c, dg))
                blk = kg.view(n1, c, n2, c).mul_(ka2[:, None, :, None])
            else:
                r1 = a1.transpose(0, 1)
                r2 = r1 if sym else a2.transpose(0, 1)
                blk = ka2[:, :, None] * torch.bmm(r1, r2.transpose(1, 2)).permute(1, 2, 0)
        else:
            if mode == "trace" or c == 1:
                a = g1.permute(0, 2, 1, 3).reshape(n1 * L1, c * dg)
                b = None if sym else g2.permute(0, 2, 1, 3).reshape(n2 * L2, c * dg)
                kg = gram(a, b).view(n1, L1, n2, L2)
                blk = (ka * kg).sum(dim=(1, 3))
                if mode == "full":
                    blk = blk[:, None, :, None]
                elif mode == "diagonal":
                    blk = blk[:, :, None]
            elif mode == "full":
                a = g1.permute(0, 2, 1, 3).reshape(n1 * L1 * c, dg)
                b = None if sym else g2.permute(0, 2, 1, 3).reshape(n2 * L2 * c, dg)
                kg = gram(a, b).view(n1, L1, c, n2, L2, c)
                blk = torch.einsum("iajb,iakjbl->ikjl", ka, kg)
            else:
                a = g1.permute(1, 0, 2, 3).reshape(c, n1 * L1, dg)
                b = a if sym else g2.permute(1, 0, 2, 3).reshape(c, n2 * L2, dg)
                kg = torch.bmm(a, b.transpose(1, 2)).view(c, n1, L1, n2, L2)
                blk = torch.einsum("iajb,kiajb->ijk", ka, kg)
        out = blk if out is None else out + blk
    return out


def _joined(f) -> Explicit:
    return f.joined() if isinstance(f, SplitExplicit) else f


def _logit_spans(f):
    """``[(first logit, end logit, J part)]`` of an explicit factor."""
    parts = f.parts if isinstance(f, SplitExplicit) else [f.J]
    out, k = [], 0
    for p in parts:
        out.append((k, k + p.shape[1], p))
        k += p.shape[1]
    return out


def exactly_symmetric(f, mode: str) -> bool:
    """Whether ``contract(f, f, mode, sym=True)`` is bitwise symmetric by construction (products
    of exactly symmetric Gram matrices); otherwise the engine symmetrizes the block."""
    if mode == "diagonal":
        return False
    if isinstance(f, (Explicit, SplitExplicit)):
        return True
    return f.A.shape[2] == 1 and f.G.shape[3] == 1  # Hadamard with one position: ka * kg


def contract(f1, f2, mode: str, sym: bool = False) -> torch.Tensor:
    """Kernel block between two chunks' factors of the same parameter.

    ``mode`` is ``"trace"`` -> ``(n1, n2)``, ``"full"`` -> ``(n1, c, n2, c)`` (logit axes next to
    their sample axes: the layout of the ``(n1 c) x (n2 c)`` Gram matrix; the engine permutes it
    to ``(n1, n2, c, c)`` once, when it stores the block) or ``"diagonal"``
    -> ``(n1, n2, c)``. ``sym=True`` means ``f2`` is ``f1`` (same chunk): only the symmetric
    product is formed.
    """
    if isinstance(f1, SplitExplicit) or isinstance(f2, SplitExplicit):
        if mode != "trace":
            j1 = _joined(f1)
            return _contract_explicit(j1.J, None if sym else _joined(f2).J, mode)
        K = None
        for a0, a1, p1 in _logit_spans(f1):
            pairs = [(p1, None)] if sym else [
                (p1[:, max(a0, b0) - a0 : min(a1, b1) - a0], p2[:, max(a0, b0) - b0 : min(a1, b1) - b0])
                for b0, b1, p2 in _logit_spans(f2)
                if max(a0, b0) < min(a1, b1)
            ]  # logit ranges of the two chunks' parts may differ: contract their overlaps
            for q1, q2 in pairs:
                blk = _contract_explicit(q1, q2, mode)
                K = blk if K is None else K.add_(blk)
        return K
    if isinstance(f1, Explicit):
        return _contract_explicit(f1.J, None if sym else f2.J, mode)
    return _contract_hadamard(f1, f1 if sym else f2, mode, sym)
