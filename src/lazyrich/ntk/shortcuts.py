"""Shortcuts of the eNTK engine's backward passes, both read off the autograd graph of one forward
pass: a layer whose output feeds only an eval BatchNorm derives its output gradients from the
BatchNorm's, and an MLP head ``Linear(phi(Linear(...)))`` needs one virtual output (trace mode)."""

from __future__ import annotations

from typing import Dict, List

import torch

from .capture import _Capture
from .plan import _Plan
from .rules import LinearRule


def _batchnorm_fusions(plan: _Plan, cap: _Capture, out: torch.Tensor) -> Dict[tuple, tuple]:
    """Ruled layer calls whose output feeds only a layer with a
    :meth:`~lazyrich.ntk.rules.Rule.input_gradient_scale` (an eval-mode BatchNorm):
    ``{(layer, call): (batchnorm, call, scale)}``.

    Such a layer's output gradient is the BatchNorm's output gradient times the per-channel
    ``scale = gamma / sqrt(running_var + eps)``, so it is derived instead of computed and kept
    for every output: conv -> BN networks keep half the gradients. "Only" is checked on the
    autograd graph (one edge into the output's node).
    """
    fused = {}
    for bn, (m, rule, _) in plan.rule_modules.items():
        scale = rule.input_gradient_scale(m)
        if scale is None:
            continue
        for j, (inp, version) in enumerate(cap.versions[bn]):
            hit = cap.returned_by(inp, version)
            if hit is None or hit[0] == bn or inp.grad_fn is None:
                continue  # not a layer's output as it returned it (a view, or modified in place)
            if hit[0] not in plan.rule_modules:
                continue  # moved to the fallback by _verify_plan
            if cap.in_degrees(out).get(inp.grad_fn, 0) != 1:
                continue  # the layer output is used elsewhere too
            fused[hit] = (bn, j, scale.to(inp.dtype))
    # a BatchNorm whose own output gradient is derived cannot serve as a source; where a folded
    # layer (see _Capture) needs that BatchNorm's gradient, the BatchNorm computes its own
    targets = {(bn, j) for bn, j, _ in cap.folded.values()}
    fused = {key: v for key, v in fused.items() if key not in targets}
    return {key: v for key, v in fused.items() if (v[0], v[1]) not in fused}


# autograd nodes of elementwise functions of one tensor (see _mlp_head)
_ELEMENTWISE = {
    "ReluBackward0", "ReluBackward1", "TanhBackward0", "SigmoidBackward0", "GeluBackward0", "SiluBackward0",
    "SoftplusBackward0", "EluBackward0", "LeakyReluBackward0",
}


def _mlp_head(plan: _Plan, cap: "_Capture", out: torch.Tensor, ks: List[int]) -> Dict[tuple, list]:
    """Trace-mode shortcut for a model ending in ``Linear(phi(Linear_L(...)))`` with ``phi``
    elementwise: ``{(L, 0): [G']}`` with one virtual output gradient for ``L``, else ``{}``.

    The gradient of logit ``k`` w.r.t. ``L``'s output is ``phi'(h) * W[k]`` (``W`` the last
    layer's weight), so ``sum_k <G_k(x_i), G_k(x_j)> = <G'(x_i), G'(x_j)>`` with ``G' = phi'(h) *
    sqrt(sum_k W[k]^2)``; a linear layer's weight and bias kernels depend on ``G_k`` only through
    these sums (``(A A^T) * (G G^T)``). ``phi'(h)`` comes from one backward pass through ``phi``
    alone instead of one pass per output. "Only" is checked on the autograd graph: ``L``'s
    output feeds only ``phi``, whose output feeds only the last layer, whose output is the model's.
    """
    top = out.grad_fn
    while top is not None and type(top).__name__ in ("ViewBackward0", "ReshapeAliasBackward0"):
        top = top.next_functions[0][0]  # (n, c) -> (n, c) reshapes, checked below
    if top is None:
        return {}
    # (layers moved to the fallback by _verify_plan after this forward pass are not candidates)
    by_node = {nodes[0]: mn for mn, nodes in cap.nodes.items() if len(nodes) == 1 and mn in plan.rule_modules}
    last = by_node.get(top)
    if last is None or not isinstance(plan.rule_modules[last][1], LinearRule):
        return {}
    t_in = cap.versions[last][0][0]
    phi = t_in.grad_fn
    if t_in.dim() != 2 or plan.rule_modules[last][0].out_features != out.shape[1]:
        return {}  # the model output is the last layer's output, sample by sample
    if phi is None or type(phi).__name__ not in _ELEMENTWISE:
        return {}
    layer = by_node.get(phi.next_functions[0][0])
    if layer is None or layer == last or not isinstance(plan.rule_modules[layer][1], LinearRule):
        return {}
    degrees = cap.in_degrees(out)  # (the nodes above top are reshapes: the same counts below it)
    if degrees.get(phi, 0) != 1 or degrees.get(phi.next_functions[0][0], 0) != 1:
        return {}
    (dphi,) = torch.autograd.grad(t_in, cap.probes[layer][0], torch.ones_like(t_in), retain_graph=True)
    w = plan.rule_modules[last][0].weight.detach()[ks]
    return {(layer, 0): [dphi * w.pow(2).sum(0).sqrt()]}
