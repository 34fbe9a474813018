"""The empirical neural tangent kernel (eNTK) of any ``torch.nn.Module``.

``Theta(x, x') = sum_p eta_p J_p(x) J_p(x')^T`` with ``J_p(x) = d f(x) / d theta_p`` over every
trainable parameter tensor ``p`` (``requires_grad=True``); ``eta_p = 1`` unless ``lr_scales`` says
otherwise (Kunin et al., "Get rich quick", NTK with per-layer learning rates).

The driver, :func:`empirical_ntk`, in order (each step's module):

1. check the model, inputs, ``lr_scales`` and ``batch_size`` (:mod:`.input_checks`);
2. plan which parameters a structured rule covers, the rest by autograd (:mod:`.plan`, :mod:`.rules`);
3. one gradient-free forward pass of one sample: the output count and the memory estimate, then one
   two-sample pass to check that samples do not interact (:mod:`.memory`, :mod:`.input_checks`);
4. ``method="ntk_vp"``: NTK-vector products (:mod:`.vector_products`), done;
5. choose the chunk size (:mod:`.memory`) and, per chunk, the kernel factors (:class:`_Engine`: capture
   hooks :mod:`.capture`, backward-pass shortcuts :mod:`.shortcuts`, rule factors :mod:`.factors`,
   self-checked autograd Jacobians for the rest :mod:`.jacobians`);
6. contract factor pairs into blocks and place them into the kernel (:mod:`.blocks`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import torch
import torch.nn as nn

from .blocks import _accumulate, _finish, _make_choose, _merge_explicit, _one_block, _place
from .capture import _Capture, _per_channel
from .factors import Explicit, contract, exactly_symmetric
from .input_checks import (
    check_batch_size,
    check_inputs,
    check_lr_scales,
    check_model,
    check_samples_independent,
    forward_flat,
    trainable_parameters,
)
from .jacobians import per_sample_jacobian
from .memory import _GiB, _auto_batch_size, _bytes_per_sample, _fits_cache, _probe_sample, available_memory
from .methods import NTKMethod, parse_outputs
from .plan import _accumulate_edge_counts, _make_plan, _Plan
from .shortcuts import _batchnorm_fusions, _mlp_head
from .vector_products import forward_ad_unsupported, ntk_vp

__all__ = ["empirical_ntk", "available_memory", "trainable_parameters"]


def _output_selector(c: int, logit: Optional[int]) -> List[int]:
    return list(range(c)) if logit is None else [logit]


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
                        out = forward_flat(model, x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)
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
    params = check_model(model)
    batch_size = check_batch_size(batch_size)
    mode, logit = parse_outputs(outputs)
    try:
        method = NTKMethod(method)
    except ValueError:
        raise ValueError(
            f"method={method!r} is not one of {[m.value for m in NTKMethod]}."
        ) from None
    first = next(iter(params.values()))
    dtype, device = first.dtype, first.device
    x1, x2 = check_inputs(x1, x2, dtype, device)
    scales = check_lr_scales(lr_scales, params)
    sym = x2 is None
    n1 = x1.shape[0]
    n2 = n1 if sym else x2.shape[0]

    use_rules = method in (NTKMethod.STRUCTURED, NTKMethod.AUTO)
    plan = _make_plan(model, params, use_rules=use_rules)
    out0, layer_calls = _probe_sample(model, plan, x1, dtype)  # also what the memory estimate needs
    check_samples_independent(model, x1, out0, x2)
    c = out0.shape[1]
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
        batch_size = _auto_batch_size(n1 if sym else n1 + n2, max(n1, n2), work, all_factors, largest, budget, out_bytes)
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
