"""Capture hooks of the eNTK engine: record every ruled layer's inputs and insert zero probes at
its outputs (the gradient w.r.t. a probe is the gradient w.r.t. the layer output), optionally
backpropagating through a layer and the eval BatchNorm after it in one step."""

from __future__ import annotations

import weakref
from typing import Dict, Optional

import torch

from .plan import _in_degrees, _Plan


def _per_channel(scale: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``scale`` (one value per channel) shaped to multiply ``t``'s channel axis 1."""
    return scale.view((1, -1) + (1,) * (t.dim() - 2))


class _FoldedBackward(torch.autograd.Function):
    """``value + probe`` whose backward passes the output gradient ``g`` to ``probe`` and
    ``input_grad(g)`` to ``x`` -- one step through a layer and the eval BatchNorm after it
    (``value``), with the BatchNorm's scale folded into the layer's weight (see :class:`_Capture`).
    ``edges`` (the layer's output, the BatchNorm's parameters) get no gradient; they keep the
    autograd graph's edges that :meth:`_Engine._verify_plan` and :func:`_batchnorm_fusions` count."""

    @staticmethod
    def forward(ctx, value, probe, x, input_grad, *edges):
        ctx.input_grad = input_grad
        ctx.n_edges = len(edges)
        return value + probe

    @staticmethod
    def backward(ctx, g):
        gx = ctx.input_grad(g) if ctx.needs_input_grad[2] else None
        return (None, g, gx, None) + (None,) * ctx.n_edges


class _Capture:
    """Forward hooks that record layer inputs and insert zero 'probe' tensors at layer outputs.

    ``y = layer(x) + probe`` with ``probe = 0``: the gradient w.r.t. ``probe`` is the gradient
    w.r.t. the layer output, and it stays correct even if later code modifies ``y`` in place.

    With ``fold=True``, an eval BatchNorm whose input is what a ruled layer call just returned
    (a convolution or linear layer, :meth:`~lazyrich.ntk.rules.Rule.scaled_input_gradient`)
    returns its output through :class:`_FoldedBackward`: the backward passes skip the
    BatchNorm's backward and the layer's backward takes the BatchNorm's output gradient with
    ``gamma / sqrt(var + eps)`` folded into its weight. The layer's own probe then receives only
    the gradient of its other uses: ``folded`` maps ``(layer, call)`` to ``(BatchNorm, call,
    scale)`` so the engine adds the BatchNorm path back (or derives it all, when the layer
    output feeds only the BatchNorm, see :func:`_batchnorm_fusions`). Forward values are the
    model's own. (W3 of benchmarks/ntk_speed.py: the 10 backward passes took 0.72 s against
    0.95 s.)
    """

    def __init__(self, plan: _Plan, fold: bool = False):
        self.plan = plan
        self.fold = fold
        self.records: Dict[str, list] = {}
        self.probes: Dict[str, list] = {}
        self.versions: Dict[str, list] = {}
        self.nodes: Dict[str, list] = {}  # the autograd node of each call's "output + probe"
        # id(what a call returned) -> (layer, call, weak reference, version when returned)
        self.made: Dict[int, tuple] = {}
        self.folded: Dict[tuple, tuple] = {}  # (layer, call) -> (BatchNorm, call, scale)
        self.degrees: Optional[Dict[object, int]] = None  # see in_degrees
        self.handles = []

    def in_degrees(self, out: torch.Tensor) -> Dict[object, int]:
        """:func:`_in_degrees` of the graph below the model output ``out``, walked once per
        forward pass (plan check, BatchNorm fusions and the MLP-head shortcut all read it)."""
        if self.degrees is None:
            self.degrees = _in_degrees(out.grad_fn)
        return self.degrees

    def returned_by(self, t: torch.Tensor, version: int) -> Optional[tuple]:
        """``(layer, call)`` if ``t`` is what a ruled layer call returned and still had the tensor
        version ``version`` (not modified in place since), else ``None``."""
        hit = self.made.get(id(t))
        if hit is None or hit[2]() is not t or hit[3] != version:
            return None
        return hit[0], hit[1]

    def _fold(self, bn, mod, rule, inp, output, probe):
        """``_FoldedBackward`` output for the BatchNorm call ``bn`` with input ``inp``, or ``None``."""
        hit = self.returned_by(inp, inp._version)
        if hit is None or hit in self.folded:
            return None  # not a ruled layer's output as returned (a view, modified in place), or folded already
        src, j = hit
        scale = rule.input_gradient_scale(mod)
        if scale is None:
            return None
        scale = scale.to(inp.dtype)
        src_mod, src_rule, _ = self.plan.rule_modules[src]
        x = self.versions[src][j][0]
        input_grad = src_rule.scaled_input_gradient(src_mod, x, scale)
        if input_grad is None:
            return None
        edges = [inp] + [getattr(mod, ln) for ln in self.plan.rule_modules[bn][2]]
        self.folded[(src, j)] = (bn, len(self.probes[bn]), scale)
        return _FoldedBackward.apply(output.detach(), probe, x, input_grad, *edges)

    def __enter__(self):
        for mname, (m, rule, _) in self.plan.rule_modules.items():
            self.records[mname], self.probes[mname], self.versions[mname] = [], [], []
            self.nodes[mname] = []

            def hook(mod, inputs, output, mname=mname, rule=rule):
                if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor):
                    return None
                inp = inputs[0]
                with torch.no_grad():
                    rec = rule.record(mod, inp)
                self.records[mname].append(rec)
                self.versions[mname].append((inp, inp._version))
                # a broadcast zero: no activation-sized allocation; autograd returns the full
                # gradient w.r.t. this (non-leaf) view
                probe = output.new_zeros((), requires_grad=True).expand(output.shape)
                result = self._fold(mname, mod, rule, inp, output, probe) if self.fold else None
                if result is None:
                    result = output + probe
                self.probes[mname].append(probe)
                self.nodes[mname].append(result.grad_fn)
                # (a weak reference: not kept alive by this record)
                self.made[id(result)] = (mname, len(self.probes[mname]) - 1, weakref.ref(result), result._version)
                return result

            self.handles.append(m.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False
