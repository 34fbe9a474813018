"""The empirical neural tangent kernel (eNTK) of any ``torch.nn.Module``.

``Theta(x, x') = sum_p eta_p J_p(x) J_p(x')^T`` with ``J_p(x) = d f(x) / d theta_p`` over every
trainable parameter tensor ``p`` (``requires_grad=True``); ``eta_p = 1`` unless ``lr_scales`` says
otherwise (Kunin et al., "Get rich quick", NTK with per-layer learning rates).
"""

from __future__ import annotations

import math
import os
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import torch
import torch.nn as nn

from .factors import Explicit, SplitExplicit, contract, exactly_symmetric
from .jacobians import per_sample_jacobian
from .methods import NTKMethod, parse_outputs
from .rules import LinearRule, get_rule
from .vector_products import forward_ad_unsupported, ntk_vp

__all__ = ["empirical_ntk", "available_memory", "trainable_parameters"]

_GiB = 1024**3
_WORKING_SET = _GiB
# Largest estimated working set for computing the kernel as one chunk, layer by layer (no factor
# cache, one GEMM per layer over all samples): W3 of benchmarks/ntk_speed.py, ~1.2 GB.
_STREAM_SET = 2 * _GiB


def available_memory(device: torch.device | None = None) -> int:
    """Bytes the engine may use: half of free GPU memory, or half of the host's available RAM.

    Override with the environment variable ``LAZYRICH_MEMORY_BUDGET_GB``.
    """
    env = os.environ.get("LAZYRICH_MEMORY_BUDGET_GB")
    if env:
        return int(float(env) * _GiB)
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 8 * _GiB


def trainable_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    """``{name: parameter}`` of the parameters with ``requires_grad=True`` (tied ones once)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _check_model(model: nn.Module) -> Dict[str, nn.Parameter]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    params = trainable_parameters(model)
    if not params:
        raise ValueError(
            "The model has no trainable parameters (requires_grad=True), so its eNTK is zero; "
            "unfreeze at least one parameter."
        )
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            raise ValueError(
                f"BatchNorm layer '{name}' uses batch statistics, which couple the samples and make the "
                "eNTK ill-defined; call model.eval() first (and keep track_running_stats=True)."
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise ValueError(
                f"Dropout layer '{name}' is active, which makes the eNTK random; call model.eval() first."
            )
    return params


def _check_inputs(x1, x2, dtype, device):
    def conv(x, name):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError(f"{name} is empty; pass at least one sample along the first (batch) axis.")
        if x.is_floating_point():
            if x.numel() and not torch.isfinite(torch.stack(torch.aminmax(x))).all():  # NaN propagates: one pass
                raise ValueError(f"{name} contains NaN or inf; clean the inputs first.")
            x = x.to(device=device, dtype=dtype)
        else:
            x = x.to(device=device)
        return x

    x1 = conv(x1, "x1")
    if x2 is not None:
        x2 = conv(x2, "x2")
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"x1 and x2 have different per-sample shapes {tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}; "
                "both must be (n, *feature_shape) for the same model input."
            )
        if x2.is_floating_point() != x1.is_floating_point():
            raise ValueError("x1 and x2 must both be floating point or both be integer tensors.")
    return x1, x2


def _check_lr_scales(lr_scales, params) -> Dict[str, float]:
    if lr_scales is None:
        return {n: 1.0 for n in params}
    if not isinstance(lr_scales, Mapping):
        raise TypeError("lr_scales must be a dict {parameter name: learning-rate scale}.")
    unknown = [k for k in lr_scales if k not in params]
    if unknown:
        raise ValueError(
            f"lr_scales names {unknown} that are not trainable parameters of the model; "
            f"valid names are {list(params)}."
        )
    out = {}
    for n in params:
        v = float(lr_scales.get(n, 1.0))
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"lr_scales['{n}'] = {v} must be a finite number >= 0.")
        out[n] = v
    return out


# --------------------------------------------------------------------------------------------
# plan: which parameters go through which rule
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    rule_modules: Dict[str, tuple] = field(default_factory=dict)  # module name -> (module, rule, [local names])
    fallback: List[str] = field(default_factory=list)  # full parameter names
    full_name: Dict[tuple, str] = field(default_factory=dict)  # (module name, local) -> full name


def _make_plan(model: nn.Module, params: Dict[str, nn.Parameter], use_rules: bool) -> _Plan:
    plan = _Plan()
    by_id = {id(p): n for n, p in params.items()}
    covered = set()
    if use_rules:
        for mname, m in model.named_modules():
            rule = get_rule(m)
            if rule is None:
                continue
            local = []
            for pname, p in m.named_parameters(recurse=False):
                if id(p) in by_id and pname in rule.param_names and by_id[id(p)] not in covered:
                    local.append(pname)
            # every direct trainable parameter of a ruled module must be understood by the rule
            direct = [pn for pn, p in m.named_parameters(recurse=False) if id(p) in by_id]
            if not local or set(direct) - set(local):
                continue
            plan.rule_modules[mname] = (m, rule, local)
            for pname in local:
                full = by_id[id(getattr(m, pname))]
                plan.full_name[(mname, pname)] = full
                covered.add(full)
    plan.fallback = [n for n in params if n not in covered]
    return plan


def _in_degrees(root) -> Dict[object, int]:
    """Number of autograd edges into every node of the graph below ``root`` (``root`` not counted)."""
    counts: Dict[object, int] = {}
    seen = set()
    stack = [root]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        for nxt, _ in fn.next_functions:
            if nxt is not None:
                counts[nxt] = counts.get(nxt, 0) + 1
                stack.append(nxt)
    return counts


def _accumulate_edge_counts(counts: Dict[object, int]) -> Dict[int, int]:
    """Edges into each parameter's AccumulateGrad node, by ``id(param)``, from :func:`_in_degrees`."""
    out: Dict[int, int] = {}
    for fn, k in counts.items():
        var = getattr(fn, "variable", None)
        if var is not None:
            out[id(var)] = out.get(id(var), 0) + k
    return out


# --------------------------------------------------------------------------------------------
# factors of one chunk
# --------------------------------------------------------------------------------------------


def _output_selector(c: int, logit: Optional[int]) -> List[int]:
    return list(range(c)) if logit is None else [logit]


def _forward_flat(model, x):
    out = model(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"The model returned {type(out).__name__}; empirical_ntk needs a model whose forward returns one tensor "
            "of shape (n, ...) (wrap it to select the output)."
        )
    if out.dim() == 0 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"The model output has shape {tuple(out.shape)} but the input batch has {x.shape[0]} samples; "
            "the output's first axis must be the batch axis."
        )
    return out.reshape(out.shape[0], -1)


def _batched_backward(out, inputs, ks):
    """Per-output gradients of ``sum_i out[i, k]`` w.r.t. ``inputs`` for each ``k`` in ``ks``.

    Returns, per input, the list over ``ks`` of gradients shaped like the input (zeros where
    unused): one backward pass per output; rules stack them only where they need to. (A ``vmap``-batched backward,
    ``is_grads_batched=True``, was measured slower on CNNs: convolution and BatchNorm backward
    fall back to a per-output loop under vmap and the results are then concatenated.)
    """
    per_k = []
    for r, k in enumerate(ks):
        last = r == len(ks) - 1
        per_k.append(list(torch.autograd.grad(out[:, k].sum(), inputs, retain_graph=not last, allow_unused=True)))
    return [[g[j] if g[j] is not None else torch.zeros_like(inp) for g in per_k] for j, inp in enumerate(inputs)]


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


@dataclass
class _Engine:
    model: nn.Module
    params: Dict[str, nn.Parameter]
    plan: _Plan
    ks: List[int]
    choose: object
    fold: Dict[str, bool] = field(default_factory=dict)  # module name -> fold bias into weight
    plan_checked: bool = False
    strict: bool = False  # method="structured": a parameter without a usable rule is an error
    channels_last: bool = False  # run image batches in channels-last layout (see _use_channels_last)
    trace: bool = False  # only the trace kernel is wanted (enables _mlp_head)
    fold_batchnorm: bool = True  # backward through layer + eval BatchNorm in one step (see _Capture)

    def factors(self, x: torch.Tensor) -> Dict[str, object]:
        """Kernel factors of every trainable parameter for the chunk ``x``."""
        return dict(self.iter_factors(x))

    def iter_factors(self, x: torch.Tensor):
        """Yield ``(parameter name, factor)`` for the chunk ``x``, layer by layer. A layer's output
        gradients and records are released once its factors exist, so a consumer that contracts
        and drops each factor holds one layer's factor at a time."""
        model, plan = self.model, self.plan
        if plan.rule_modules:
            with torch.enable_grad():
                with _Capture(plan, fold=self.fold_batchnorm) as cap:
                    try:
                        out = _forward_flat(model, x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)
                    except RuntimeError:
                        if not self.channels_last:
                            raise
                        out = None  # e.g. a .view() the model does on its activations: run it as given
                if out is None:
                    self.channels_last = False
                    yield from self.iter_factors(x)
                    return
                if not self.plan_checked:
                    self._verify_plan(out, cap)
                    if not plan.rule_modules:
                        yield from self.iter_factors(x)
                        return
                    if any(k[0] in plan.rule_modules and v[0] not in plan.rule_modules for k, v in cap.folded.items()):
                        # a folded BatchNorm moved to the fallback (its parameters are used elsewhere
                        # too): its output gradient, which the layer's derives from, is not computed
                        self.fold_batchnorm = False
                        yield from self.iter_factors(x)
                        return
                # inputs modified in place after being recorded: record clones instead
                for mname, vs in cap.versions.items():
                    if any(t._version != v for t, v in vs):
                        raise RuntimeError(
                            f"The input of layer '{mname}' is modified in place later in the forward pass; "
                            "use out-of-place operations (e.g. nn.ReLU(inplace=False)) before it or method='jacobian'."
                        )
                names = list(plan.rule_modules)
                ncalls = {mn: len(cap.probes[mn]) for mn in names}
                keys = [(mn, j) for mn in names for j in range(ncalls[mn])]
                fused = _batchnorm_fusions(plan, cap, out)
                virtual = _mlp_head(plan, cap, out, self.ks) if self.trace and len(self.ks) > 1 else {}
                cap.made.clear()
                cap.nodes.clear()
                cap.degrees = None  # (holds the graph's nodes)
                diff = [key for key in keys if key not in fused and key not in virtual]
                probes = [cap.probes[mn][j] for mn, j in diff]
                grads = dict(zip(diff, _batched_backward(out, probes, self.ks))) if probes else {}
                del out, probes, cap.probes
                # each layer's gradients are released once their last user (the layer itself, or a
                # layer feeding a BatchNorm, which derives its own from them) has built its factors
                need = {key: 1 for key in diff}
                # folded layers whose output is also used elsewhere: their probes have the other
                # uses' gradients; the BatchNorm path is added back
                # (a folded layer moved to the fallback needs nothing; a folded BatchNorm moved there
                # made the forward rerun unfolded, above)
                extra = {key: v for key, v in cap.folded.items() if key not in fused and key[0] in plan.rule_modules}
                for bn, j, _ in list(fused.values()) + list(extra.values()):
                    need[(bn, j)] += 1

            def take(key):
                need[key] -= 1
                return grads.pop(key) if need[key] == 0 else grads[key]

            for mname in names:
                m, rule, local = plan.rule_modules[mname]
                own = [(mname, j) for j in range(ncalls[mname])]
                g, scales = [], []
                for key in own:
                    if key in fused:  # d/d(layer output) = d/d(BatchNorm output) * gamma / sqrt(var + eps)
                        bn, j, scale = fused[key]
                        gl = take((bn, j))
                        if not rule.accepts_grad_scales:
                            gl, scale = [gk * _per_channel(scale, gk) for gk in gl], None
                        g.append(gl)
                        scales.append(scale)
                    elif key in virtual:  # one virtual output (trace mode, see _mlp_head)
                        g.append(virtual.pop(key))
                        scales.append(None)
                    elif key in extra:
                        bn, j, scale = extra[key]
                        g.append([a + b * _per_channel(scale, b) for a, b in zip(take(key), take((bn, j)))])
                        scales.append(None)
                    else:
                        g.append(take(key))
                        scales.append(None)
                recs = cap.records.pop(mname)
                if not own:  # module not used with gradients: zero contribution
                    for ln in local:
                        numel = getattr(m, ln).numel()
                        yield plan.full_name[(mname, ln)], Explicit(
                            x.new_zeros((x.shape[0], len(self.ks), numel), dtype=self._dtype())
                        )
                    continue
                kw = {"grad_scales": scales} if rule.accepts_grad_scales else {}
                facs = rule.factors(m, recs, g, local, self.choose, fold_bias=self.fold.get(mname, False), **kw)
                del g, recs, scales
                for ln in list(facs):
                    yield plan.full_name[(mname, ln)], facs.pop(ln)
            del cap
        if plan.fallback:
            chunk = max(1, x.shape[0])
            jac = per_sample_jacobian(model, x, plan.fallback, self.ks, chunk)
            for n in list(jac):
                yield n, Explicit(jac.pop(n))

    def _dtype(self):
        return next(iter(self.params.values())).dtype

    def _verify_plan(self, out, cap: _Capture) -> None:
        """Move to the fallback every ruled parameter used other than once per recorded call."""
        counts = _accumulate_edge_counts(cap.in_degrees(out))
        bad = []
        for mname, (m, rule, local) in self.plan.rule_modules.items():
            calls = len(cap.probes[mname])
            for ln in local:
                if counts.get(id(getattr(m, ln)), 0) != calls:
                    bad.append(mname)
                    break
            else:
                if calls and any(r.shape[0] != out.shape[0] for r in cap.records[mname]):
                    bad.append(mname)  # not batch-first
        for mname in bad:
            m, rule, local = self.plan.rule_modules.pop(mname)
            for ln in local:
                self.plan.fallback.append(self.plan.full_name[(mname, ln)])
        order = list(self.params)
        self.plan.fallback.sort(key=order.index)
        self.plan_checked = True
        if self.strict:
            self.raise_if_fallback()

    def raise_if_fallback(self) -> None:
        if self.plan.fallback:
            raise ValueError(
                f"No structured rule covers parameters {self.plan.fallback} (no rule for the layer, or the parameter "
                "is used outside its layer); use method='auto' to compute them by autograd or register a rule with "
                "lazyrich.ntk.register_rule."
            )


_CHANNELS_LAST = True
_FOLD_BATCHNORM = True  # see _Capture


def _use_channels_last(plan: _Plan, x: torch.Tensor) -> bool:
    """Whether to feed a batch of images to the model in channels-last layout: on CPU, for a
    model with a ruled ``nn.Conv2d``. oneDNN's backward convolutions with few channels ran up
    to 4x faster in channels-last (ResNet-20's 16-channel stage), and the conv rule makes its
    per-sample gradients from channels-last gradients without copies. The values are the same
    (up to summation order); a model whose forward fails on channels-last input (e.g. a
    ``.view()`` of its activations) runs with the input as given."""
    return (
        _CHANNELS_LAST
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.is_floating_point()
        and any(isinstance(m, nn.Conv2d) for m, _, _ in plan.rule_modules.values())
    )


def _probe_sample(model, plan: _Plan, x1) -> tuple:
    """One gradient-free forward pass of the first sample: ``(c, layers)`` -- the number of
    outputs and, per ruled layer call, what :func:`_bytes_per_sample` needs."""
    layers = []
    handles = []
    for mname, (m, rule, local) in plan.rule_modules.items():
        def hook(mod, inputs, output, rule=rule, local=local):
            if not isinstance(output, torch.Tensor):
                return
            rec = rule.record(mod, inputs[0])
            dims = None
            if "weight" in local and rule.can_fold_bias and not isinstance(mod, nn.Embedding):
                dims = rule.weight_dims(mod, inputs[0], output)
            layers.append((mod, rule, local, output[0].numel(), rec[0].numel() * rec.element_size(), dims))

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            c = _forward_flat(model, x1[:1]).shape[1]
    finally:
        for h in handles:
            h.remove()
    return c, layers


def _bytes_per_sample(layers, plan: _Plan, params, c: int, itemsize: int, choose) -> tuple:
    """Upper estimates of the memory per sample from :func:`_probe_sample`'s layer calls:
    ``(work, factors, largest)``.

    ``work``: ``c`` copies of every ruled layer's output (the per-output gradients; ``2 c`` where
    the rule also stacks them, :meth:`~lazyrich.ntk.rules.Rule.stacks_gradients`) and its
    records. ``factors``: all kernel factors -- ``c`` copies of every parameter whose factor is
    explicit (``choose`` decides for linear-type weights; norm-layer and fallback parameters are
    always explicit), the inputs of Hadamard factors. ``largest``: the largest single layer's factors.
    """
    work, per_layer = 0, []
    for mod, rule, local, out_numel, rec_bytes, dims in layers:
        fac, explicit = 0, False
        for ln in local:
            if isinstance(mod, nn.Embedding):
                continue
            if ln == "weight" and dims is not None:
                da, dg, L = dims
                explicit = choose(da, dg, L, c) == "explicit"
                if not explicit:
                    fac += L * (da + 1) * itemsize  # Hadamard inputs (patches)
                    continue
            fac += c * getattr(mod, ln).numel() * itemsize
        copies = 2 if rule.stacks_gradients(explicit) else 1
        work += copies * c * out_numel * itemsize + rec_bytes
        per_layer.append(fac)
    per_layer.append(c * sum(params[p].numel() for p in plan.fallback) * itemsize)
    return max(1, work), sum(per_layer), max(per_layer)


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


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: Optional[torch.Tensor] = None,
    *,
    outputs="trace",
    method="auto",
    per_layer: bool = False,
    lr_scales: Optional[Mapping[str, float]] = None,
    batch_size: Optional[int] = None,
):
    """Empirical neural tangent kernel ``Theta(x1, x2) = sum_p eta_p J_p(x1) J_p(x2)^T``.

    Parameters
    ----------
    model : torch.nn.Module
        Any model mapping a batch ``(n, *feature_shape)`` to outputs ``(n, ...)``; outputs are
        flattened per sample to ``c`` logits. Samples must not interact (BatchNorm in eval mode,
        dropout off); layers must see batch-first tensors. Only parameters with
        ``requires_grad=True`` count.
    x1, x2 : torch.Tensor
        Inputs ``(n1, *feature_shape)`` and ``(n2, *feature_shape)``; ``x2=None`` means
        ``x2 = x1`` (and the symmetry is exploited). Floating inputs are cast to the parameters'
        dtype; integer inputs (token ids) are passed unchanged.
    outputs : {"trace", "full", "diagonal"} or int
        ``"trace"`` -> ``(n1, n2)`` kernel ``sum_k Theta_kk`` (a *sum* over logits, not a mean);
        ``"full"`` -> ``(n1, n2, c, c)``; ``"diagonal"`` -> ``(n1, n2, c)`` (``Theta_kk``); an
        int ``k`` -> ``(n1, n2)`` kernel of logit ``k``. With a single output every mode returns
        ``(n1, n2)``.
    method : {"auto", "structured", "jacobian", "ntk_vp"} or NTKMethod
        Algorithm; all give the same numbers. See :class:`lazyrich.ntk.NTKMethod`. Every
        ``torch.func`` (vmap) result is self-checked once per model and input shape against
        plain ``torch.autograd.grad``; where a batching rule is wrong (e.g. through
        ``nn.PReLU``) a ``RuntimeWarning`` names the layers and per-sample autograd is used.
    per_layer : bool
        If True return ``{parameter name: kernel}`` (every trainable parameter, in
        ``model.named_parameters()`` order); the values sum to the total kernel.
    lr_scales : dict, optional
        ``{parameter name: eta_p}``; each parameter's contribution is multiplied by ``eta_p``
        (default 1), the NTK of gradient flow with per-parameter learning rates.
    batch_size : int, optional
        Samples per chunk. By default all samples form one chunk when the per-layer working set
        (every layer's output gradients, plus the largest layer's factors) is estimated below
        2 GiB: each layer's factors are then contracted as soon as they exist and dropped.
        Otherwise chunks are chosen so that the factors stay within the memory budget
        (:func:`available_memory`), and peak memory is bounded by the output kernel plus the
        factors of the cached chunks.

    Returns
    -------
    torch.Tensor or dict of torch.Tensor
    """
    params = _check_model(model)
    mode, logit = parse_outputs(outputs)
    try:
        method = NTKMethod(method)
    except ValueError:
        raise ValueError(
            f"method={method!r} is not one of {[m.value for m in NTKMethod]}."
        ) from None
    first = next(iter(params.values()))
    dtype, device = first.dtype, first.device
    x1, x2 = _check_inputs(x1, x2, dtype, device)
    scales = _check_lr_scales(lr_scales, params)
    sym = x2 is None
    n1 = x1.shape[0]
    n2 = n1 if sym else x2.shape[0]

    use_rules = method in (NTKMethod.STRUCTURED, NTKMethod.AUTO)
    plan = _make_plan(model, params, use_rules=use_rules)
    c, layer_calls = _probe_sample(model, plan, x1)  # also what the memory estimate needs
    if logit is not None and not (-c <= logit < c):
        raise ValueError(f"outputs={logit} is out of range for a model with {c} outputs.")
    if logit is not None:
        logit %= c
    ks = _output_selector(c, logit)
    single = len(ks) == 1
    kmode = "trace" if (single or mode == "logit") else mode
    c_sel = len(ks)

    itemsize = torch.empty((), dtype=dtype).element_size()
    per_entry = {"trace": 1, "diagonal": c_sel, "full": c_sel * c_sel}[kmode]
    n_kernels = (len(params) + 1) if per_layer else 1
    out_bytes = n1 * n2 * per_entry * itemsize * n_kernels
    budget = available_memory(device)
    if out_bytes > budget:
        raise MemoryError(
            f"The requested kernel needs {out_bytes / _GiB:.1f} GiB but only {budget / _GiB:.1f} GiB are available; "
            "use outputs='trace' or an int logit, fewer probe points, per_layer=False, "
            "or set LAZYRICH_MEMORY_BUDGET_GB if more memory is really free."
        )

    if method is NTKMethod.NTK_VP:
        try:
            return _finish(ntk_vp(model, x1, x2, params, scales, ks, kmode, per_layer), single)
        except NotImplementedError as err:
            if not forward_ad_unsupported(err):
                raise
            warnings.warn(
                f"method='ntk_vp' needs forward-mode AD, which torch does not implement for an operator of "
                f"{type(model).__name__} ({str(err).splitlines()[0]}); computing with method='jacobian' instead "
                "(the same kernel, more memory: lower batch_size if it does not fit).",
                RuntimeWarning,
                stacklevel=2,
            )
            method = NTKMethod.JACOBIAN  # the plan (every parameter by autograd) is the same

    choose = _make_choose(n1, n2, kmode, c_sel)
    eng = _Engine(model, params, plan, ks, choose, fold_batchnorm=_FOLD_BATCHNORM)
    eng.channels_last = _use_channels_last(plan, x1)
    eng.trace = kmode == "trace"
    if not per_layer:  # fold biases into their weight's factor where the scales agree
        for mname, (m, rule, local) in plan.rule_modules.items():
            if rule.can_fold_bias and "weight" in local and "bias" in local:
                sw = scales[plan.full_name[(mname, "weight")]]
                sb = scales[plan.full_name[(mname, "bias")]]
                eng.fold[mname] = sw == sb

    # chunk size from a gradient-free one-sample estimate of the working memory
    if batch_size is None:
        work, all_factors, largest = _bytes_per_sample(layer_calls, plan, params, c_sel, itemsize, choose)
        factor_budget = max(budget - out_bytes, budget // 8)
        if (n1 if sym else n1 + n2) * (work + largest) <= min(factor_budget, _STREAM_SET):
            batch_size = max(n1, n2)  # one chunk, contracted layer by layer (see _one_block)
        else:
            per_sample = work + all_factors
            # factors of two chunks and one chunk's records/gradients live at once, plus temporaries
            batch_size = int(max(1, factor_budget // (3 * per_sample)))
            # Keep a chunk's working set near 1 GiB (at least 16 samples): smaller tensors are
            # recycled by the allocator instead of being freshly mapped (and page-faulted) on every
            # chunk, which measured 30-40% faster on ResNet-20 (benchmarks/ntk_speed.py, W3).
            batch_size = min(batch_size, max(16, _WORKING_SET // per_sample))
    batch_size = max(1, int(batch_size))
    n_max = max(n1, n2)
    if batch_size < n_max:  # balanced chunks: no small trailing chunk
        n_chunks = -(-n_max // batch_size)
        batch_size = -(-n_max // n_chunks)
    if method is NTKMethod.STRUCTURED:
        eng.strict = True
        eng.raise_if_fallback()

    names = list(params)
    out_shape = {"trace": (n1, n2), "diagonal": (n1, n2, c_sel), "full": (n1, n2, c_sel, c_sel)}[kmode]
    if per_layer:
        K = {n: torch.zeros(out_shape, dtype=dtype, device=device) for n in names}
    else:
        K = torch.zeros(out_shape, dtype=dtype, device=device)

    chunks1 = [(s, min(s + batch_size, n1)) for s in range(0, n1, batch_size)]
    chunks2 = chunks1 if sym else [(s, min(s + batch_size, n2)) for s in range(0, n2, batch_size)]

    if len(chunks1) == 1 and len(chunks2) == 1:
        blocks, exact = _one_block(eng, x1, x2, kmode, scales, per_layer)
        for name, blk in blocks.items():
            _place(K[name] if per_layer else K, blk, kmode, (0, n1), (0, n2), sym, exact[name])
        return _finish(K, single)

    def groups_of(f):
        if per_layer:
            return [(n, [(f[n], scales[n])]) for n in names]
        return [(None, _merge_explicit(f, scales))]

    cache2: Dict[int, dict] = {}
    keep2 = len(chunks2) > 1
    for a, (s1, e1) in enumerate(chunks1):
        # with x2 = x1 a chunk cached as a column block is reused as a row block
        g1 = cache2.pop(a) if (sym and a in cache2) else groups_of(eng.factors(x1[s1:e1]))
        for b, (s2, e2) in enumerate(chunks2):
            if sym and b < a:
                continue
            exact = {}
            if sym and b == a:
                blocks = {name: _accumulate((s, contract(f, f, kmode, sym=True)) for f, s in lst) for name, lst in g1}
                exact = {name: all(exactly_symmetric(f, kmode) for f, _ in lst) for name, lst in g1}
            else:
                if b in cache2:
                    g2 = cache2[b]
                else:
                    f2 = eng.factors((x1 if sym else x2)[s2:e2])
                    g2 = groups_of(f2)
                    if keep2 and _fits_cache(g2, budget, out_bytes, len(chunks2)):
                        cache2[b] = g2
                blocks = {}
                for (name, lst1), (_, lst2) in zip(g1, g2):
                    blocks[name] = _accumulate((s, contract(fa, fb, kmode)) for (fa, s), (fb, _) in zip(lst1, lst2))
            for name, blk in blocks.items():
                target = K[name] if per_layer else K
                if blk is None:  # empty group (all scales zero)
                    continue
                _place(target, blk, kmode, (s1, e1), (s2, e2), sym, exact.get(name, False))
    return _finish(K, single)


def _one_block(eng: _Engine, x1, x2, kmode: str, scales, per_layer: bool):
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


def _fits_cache(groups, budget, out_bytes, n_chunks) -> bool:
    size = 0
    for _, lst in groups:
        for f, _ in lst:
            size += f.nbytes()
    return size * n_chunks < max(0, budget - out_bytes) // 2


def _finish(K, single: bool):
    """With a single output, ``(n1, n2)`` kernels; applied to each value of a per-layer dict."""
    if isinstance(K, dict):
        return {n: _finish(v, single) for n, v in K.items()}
    if single and K.dim() > 2:
        K = K.reshape(K.shape[0], K.shape[1])
    return K
