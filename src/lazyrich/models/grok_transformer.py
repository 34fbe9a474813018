"""The causal transformer of teddykoker/grokking (the code base of Kunin et al., *Get rich quick*,
"Experimental Details", "Grokking"; they use one layer instead of its default two), with the paper's two knobs.

Architecture (as in that code's ``train.py``): token embedding ``nn.Embedding(vocab, d)`` plus a learned
positional embedding ``nn.Embedding(seq_len, d)`` (``seq_len = 5``, of which the 4 input positions are used);
``num_layers`` blocks ``x = LN1(x); x = x + Attn(x); x = x + MLP(LN2(x))`` (causal multi-head
self-attention, MLP ``d -> 4d -> d`` with GELU); a final ``LayerNorm`` and a bias-free ``Linear(d, vocab)``;
the logits are read at the last position.  torch's default initialization (``Embedding`` ~ N(0, 1)).

Knobs (Kunin et al., grokking paragraph of "Experimental Details"):

* ``alpha``: the token and positional embedding weights are divided by ``alpha`` after initialization
  ("the same balancedness parameter alpha as in the CNN gabor experiments"; ``alpha > 1`` is the
  small-embedding, upstream side).  The embeddings enter a LayerNorm first, so the function at
  initialization barely changes (only through LayerNorm's ``eps``); what changes is how fast the embeddings
  learn relative to their size.
* ``tau``: the logits are multiplied by ``tau`` (the experiment divides the learning rate by ``tau**2``, as
  in Kumar et al. 2023; see :func:`lazyrich.experiments.grokking.make_optimizer`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GrokTransformer", "grok_transformer"]


class _Block(nn.Module):
    """``x = LN1(x); x = x + Attn(x, causal); x = x + MLP(LN2(x))`` on ``(L, n, d)`` (sequence first)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.ln_2 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        mask = torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        x = self.ln_1(x)
        a, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
        x = x + a
        return x + self.mlp(self.ln_2(x))


class GrokTransformer(nn.Module):
    """See the module docstring.  Input ``(n, L)`` int64 tokens, output ``(n, vocab)`` logits (times ``tau``)."""

    def __init__(self, vocab: int, seq_len: int = 5, d_model: int = 128, heads: int = 4, num_layers: int = 1,
                 alpha: float = 1.0, tau: float = 1.0) -> None:
        super().__init__()
        for v, name in [(vocab, "vocab"), (seq_len, "seq_len"), (d_model, "d_model"), (heads, "heads"),
                        (num_layers, "num_layers")]:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads}.")
        for v, name in [(alpha, "alpha"), (tau, "tau")]:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}.")
        self.alpha, self.tau = float(alpha), float(tau)
        self.token_embeddings = nn.Embedding(vocab, d_model)
        self.position_embeddings = nn.Embedding(seq_len, d_model)
        with torch.no_grad():
            self.token_embeddings.weight.div_(self.alpha)
            self.position_embeddings.weight.div_(self.alpha)
        self.layers = nn.ModuleList([_Block(d_model, heads) for _ in range(num_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dtype != torch.long or tokens.dim() != 2:
            raise TypeError(f"GrokTransformer takes (n, L) int64 token ids, got {tuple(tokens.shape)} {tokens.dtype}.")
        L = tokens.shape[1]
        if L > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {L} exceeds seq_len={self.position_embeddings.num_embeddings}.")
        h = self.token_embeddings(tokens.t())                                  # (L, n, d)
        h = h + self.position_embeddings(torch.arange(L, device=tokens.device)).unsqueeze(1)
        for layer in self.layers:
            h = layer(h)
        return self.tau * self.head(self.ln_f(h[-1]))


def grok_transformer(vocab: int, seq_len: int = 5, d_model: int = 128, heads: int = 4, num_layers: int = 1,
                     alpha: float = 1.0, tau: float = 1.0, *, seed: int = 0) -> GrokTransformer:
    """A :class:`GrokTransformer` initialized under ``torch.manual_seed(seed)`` (the global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return GrokTransformer(vocab, seq_len, d_model, heads, num_layers, alpha, tau)
