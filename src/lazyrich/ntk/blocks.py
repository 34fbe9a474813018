"""Kernel blocks of the eNTK engine: the factor-form choice, grouping of factors, contraction of
one block (layer by layer), accumulation and placement of blocks into the kernel."""

from __future__ import annotations

import math
from typing import Dict

import torch

from .factors import Explicit, SplitExplicit, contract, exactly_symmetric


def _make_choose(n1: int, n2: int, mode: str, c_sel: int):
    """Pick the cheaper weight factor form for a linear-type layer (flop model per block)."""

    def choose(da: int, dg: int, L: int, c: int) -> str:
        cc = c * c if mode == "full" else c
        had = n1 * n2 * L * L * (da + cc * dg)
        exp = n1 * n2 * cc * da * dg + (n1 + n2) * c * L * da * dg
        return "explicit" if exp < had else "hadamard"

    return choose


_SMALL = 8192  # explicit factors with at most this many parameters are concatenated into one


def _is_small(f) -> bool:
    if isinstance(f, SplitExplicit):
        return f.parts[0].shape[2] <= _SMALL
    return isinstance(f, Explicit) and f.J.shape[2] <= _SMALL


def _merge_explicit(factors: Dict[str, object], scales: Dict[str, float]) -> list:
    """Group factors for the total kernel: ``[(factor, scale), ...]``.

    Small explicit factors (biases, norm layers; ``P <= _SMALL``) are concatenated into one, so
    they cost one matrix product; large ones are contracted separately (no copy).
    """
    expl, rest = [], []
    for n, f in factors.items():
        s = scales[n]
        if s == 0:
            continue
        if _is_small(f):
            if isinstance(f, SplitExplicit):
                f = f.joined()  # the same parameter may come split in one chunk and whole in another
            expl.append(f.J if s == 1.0 else f.J * math.sqrt(s))
        else:
            rest.append((f, s))
    if len({J.shape[1] for J in expl}) > 1:  # a virtual single output (trace mode): sum_k, p = sum_(k p)
        expl = [J.reshape(J.shape[0], 1, -1) for J in expl]
    out = [(Explicit(torch.cat(expl, dim=2)), 1.0)] if expl else []
    return out + rest


def _one_block(eng, x1, x2, kmode: str, scales, per_layer: bool):
    """The whole kernel as one block, contracted layer by layer: each factor is contracted as
    soon as its layer's rule has built it and then dropped, so only one layer's factors (and the
    small ones, merged at the end) are alive at a time. Returns ``({name: block}, {name: exact})``
    with the single key ``None`` unless ``per_layer``."""
    sym = x2 is None
    it2 = None if sym else eng.iter_factors(x2)
    blocks, exact, small1, small2 = {}, {}, {}, {}

    def add(key, fa, fb, s):
        blk = contract(fa, fb, kmode, sym=sym)
        blocks[key] = _accumulate([(1.0, blocks[key]), (s, blk)] if key in blocks else [(s, blk)])
        exact[key] = exact.get(key, True) and exactly_symmetric(fa, kmode)

    for name, f1 in eng.iter_factors(x1):
        name2, f2 = (name, f1) if sym else next(it2)
        if name2 != name:  # pragma: no cover - both passes walk the same plan
            raise RuntimeError(f"internal error: factors of '{name}' and '{name2}' out of step.")
        if not per_layer and _is_small(f1):  # merged into one product below
            small1[name], small2[name] = f1, f2
            continue
        key = name if per_layer else None
        if not per_layer and scales[name] == 0:
            continue
        add(key, f1, f2, scales[name])
        del f1, f2
    if small1:
        merged1 = _merge_explicit(small1, scales)
        merged2 = merged1 if sym else _merge_explicit(small2, scales)  # x2 = x1: concatenate once
        for (fa, s), (fb, _) in zip(merged1, merged2):
            add(None, fa, fb, s)
    return blocks, exact


def _accumulate(scaled_blocks):
    """``sum_i s_i B_i`` in place into the first block (no temporaries); None if empty."""
    acc = None
    for s, blk in scaled_blocks:
        if acc is None:
            acc = blk if s == 1.0 else blk.mul_(s)  # blocks are fresh tensors: safe to scale in place
        elif s == 1.0:
            acc.add_(blk)
        else:
            acc.add_(blk, alpha=s)
    return acc


def _place(K: torch.Tensor, blk: torch.Tensor, kmode: str, rows, cols, sym: bool, exact: bool = False) -> None:
    """Store a kernel block (full mode: in the ``(n1, c, n2, c)`` layout of :func:`contract`).

    With ``x2 = x1`` the block is also mirrored across the diagonal; a diagonal block that is not
    bitwise symmetric by construction (``exact``) is stored as ``(B + B^T) / 2``.
    """
    (s1, e1), (s2, e2) = rows, cols
    if kmode == "full":
        direct, mirrored = blk.permute(0, 2, 1, 3), blk.permute(2, 0, 3, 1)  # K[i,j,k,l], K[j,i,l,k]
    else:
        direct, mirrored = blk, blk.transpose(0, 1)
    if sym and (s1, e1) == (s2, e2):
        if exact:
            K[s1:e1, s1:e1] = direct
        else:
            torch.add(direct, mirrored, out=K[s1:e1, s1:e1]).mul_(0.5)
        return
    K[s1:e1, s2:e2] = direct
    if sym:
        K[s2:e2, s1:e1] = mirrored


def _finish(K, single: bool):
    """With a single output, ``(n1, n2)`` kernels; applied to each value of a per-layer dict."""
    if isinstance(K, dict):
        return {n: _finish(v, single) for n, v in K.items()}
    if single and K.dim() > 2:
        K = K.reshape(K.shape[0], K.shape[1])
    return K
