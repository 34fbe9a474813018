"""Registry of per-layer structured eNTK rules.

A rule turns what one layer saw during a forward pass (its inputs, one record per call) and the
per-sample gradients of every output with respect to the layer's output (one tensor per call)
into kernel factors (:mod:`lazyrich.ntk.factors`) for the layer's own parameters.

Rules are looked up by the *exact* module type: a subclass may override ``forward`` and use its
parameters differently, so it goes to the autograd fallback unless a rule is registered for it
with :func:`register_rule`. The engine also checks, on the autograd graph, that each parameter is
used exactly once per recorded call; a parameter used anywhere else (a weight tied across modules,
a module whose ``forward`` is bypassed as ``nn.MultiheadAttention`` does with ``out_proj``) goes
to the fallback. No parameter is ever skipped.

Conventions: every layer input and output is batch-first, ``(n, ...)``; the output gradients of
one call are a list over the ``c`` outputs of tensors shaped like the layer output ``(n, ...)``;
rules stack them sample-major ``(n, c, ...)`` where they need to, and may consume them one output
at a time to avoid the copy.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

from .factors import Explicit, Hadamard, IndexHadamard, SplitExplicit

# Largest single tensor of a factor. glibc serves bigger allocations by mmap, which page-faults on
# every call (~0.4 ms per MB measured); smaller ones are recycled from the heap.
_PART_BYTES = 24 * 1024**2

__all__ = ["Rule", "register_rule", "get_rule", "registered_types", "Choice"]

# Choice(da, dg, L, c) -> "hadamard" | "explicit": which weight factor form is cheaper.
Choice = Callable[[int, int, int, int], str]


class Rule:
    """Base class of a per-layer rule.

    Subclasses define :attr:`param_names` (the module's own parameters they cover),
    :meth:`record` (called in a forward hook under ``torch.no_grad``; returns what must be kept
    of the inputs) and :meth:`factors`.
    """

    param_names: Sequence[str] = ()

    def applies(self, module: nn.Module) -> bool:
        """Whether the rule can handle this configured instance (else: autograd fallback)."""
        return True

    def record(self, module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
        return inp.detach()

    def factors(
        self,
        module: nn.Module,
        records: List[torch.Tensor],
        grads: List[torch.Tensor],
        wanted: Sequence[str],
        choose: Choice,
        fold_bias: bool = False,
    ) -> Dict[str, object]:
        """``{local parameter name: factor}``. With ``fold_bias=True`` (only passed to rules with
        :attr:`can_fold_bias`, when weight and bias have the same learning-rate scale and only the
        total kernel is wanted) the bias may be folded into the weight factor by appending a
        constant-one input feature, ``(A A^T + 1) * (G G^T)``; the bias then has no entry.

        Rules with :attr:`accepts_grad_scales` also take ``grad_scales``: per call ``None`` or a
        per-channel ``s`` (channel axis 1 of the layer output); that call's true output
        gradients are then ``s * grads`` (a layer feeding an eval BatchNorm gets the BatchNorm's
        gradients, see :meth:`input_gradient_scale`, and scales them where that is cheapest).
        The engine passes other rules the scaled gradients."""
        raise NotImplementedError

    can_fold_bias = False

    def stacks_gradients(self, explicit: bool) -> bool:
        """Whether :meth:`factors` copies all per-output gradients of a call into one stacked
        ``(n, c, ...)`` tensor (``explicit``: the weight factor is explicit). Only used by the
        engine's memory estimate."""
        return True

    accepts_grad_scales = False

    def input_gradient_scale(self, module: nn.Module):
        """Per-channel ``s`` (channel axis 1) with ``d/d(input) = s * d/d(output)`` when the
        layer is a fixed per-channel affine map of its input, else ``None``. The engine then
        derives the output gradients of a layer feeding only this one instead of computing them."""
        return None

    def scaled_input_gradient(self, module: nn.Module, inp: torch.Tensor, scale: torch.Tensor):
        """A function ``g -> d/d(inp) <g, s * module(inp)>`` (``s`` the per-channel ``scale``,
        channel axis 1 of the output) computed by folding ``s`` into the weight, or ``None``
        where the rule has none. The engine uses it to pass gradients through a layer and the
        eval BatchNorm after it in one step (see ``engine._Capture``)."""
        return None

    def weight_dims(self, module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> tuple:
        """``(da, dg, L)`` of the weight factor of a rule with :attr:`can_fold_bias` for one call
        with input ``inp`` and output ``out`` (inputs per position, outputs per position, positions)."""
        raise NotImplementedError


_REGISTRY: Dict[Type[nn.Module], Rule] = {}


def register_rule(module_type: Type[nn.Module], rule: Rule) -> None:
    """Register ``rule`` for modules whose type is exactly ``module_type``."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError("register_rule expects an nn.Module subclass as module_type.")
    if not isinstance(rule, Rule):
        raise TypeError("register_rule expects a lazyrich.ntk.rules.Rule instance.")
    _REGISTRY[module_type] = rule


def get_rule(module: nn.Module) -> Rule | None:
    """The rule for this module (exact type match), or ``None`` if it has none or cannot apply."""
    rule = _REGISTRY.get(type(module))
    if rule is None or not rule.applies(module):
        return None
    return rule


def registered_types() -> list[type]:
    return list(_REGISTRY)


def _cat(ts: List[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat`` without the copy when there is a single tensor (one call of the layer)."""
    return ts[0] if len(ts) == 1 else torch.cat(ts, dim=dim)


def _stack(gl) -> torch.Tensor:
    """Per-output gradient list ``[(n, ...)] * c`` -> sample-major ``(n, c, ...)``."""
    return torch.stack(list(gl), dim=1)


def _grads_to_ncl(gl, channel_last: bool) -> torch.Tensor:
    """Per-output list of ``(n, ..., d)`` -> ``(n, c, L, d)`` for channel-last layers."""
    g = _stack(gl)
    n, c = g.shape[:2]
    d = g.shape[-1]
    return g.reshape(n, c, -1, d)


def _sum_over_calls(grads, per_output, records=None) -> torch.Tensor:
    """``(n, c, P)``: ``per_output(g_k, record)`` (an ``(n, P)`` tensor) stacked over the outputs
    ``k`` of a call and summed over the calls. Gradients are consumed one output at a time, with
    no stacked copy."""
    J = None
    for i, gl in enumerate(grads):
        rec = None if records is None else records[i]
        j = torch.stack([per_output(gk, rec) for gk in gl], 1)
        J = j if J is None else J + j
    return J


def _bias_from_positions(G: torch.Tensor) -> Explicit:
    """G: (n, c, L, d) -> Explicit((n, c, d)) summing positions."""
    return Explicit(G.sum(dim=2))


class LinearRule(Rule):
    """``nn.Linear``: ``y = x W^T + b`` at every leading position.

    Weight: ``J_W[i, k] = sum_l g_{ikl} a_{il}^T`` (Hadamard form ``(A A^T) * (G G^T)``, or the
    explicit outer products when that is cheaper). Bias: ``J_b[i, k] = sum_l g_{ikl}``.
    A module called several times contributes the sum over calls: the calls are stacked as extra
    positions, which keeps every cross-call term.
    """

    param_names = ("weight", "bias")
    can_fold_bias = True

    def weight_dims(self, module, inp, out):
        return module.in_features, module.out_features, out[0].numel() // module.out_features

    def scaled_input_gradient(self, module, inp, scale):
        if inp.dim() != 2:
            return None  # (n, L, features): the BatchNorm's channel axis is not the feature axis
        w = module.weight.detach() * scale[:, None]
        return lambda g: g @ w

    def factors(self, module, records, grads, wanted, choose, fold_bias=False):
        din = module.in_features
        n = records[0].shape[0]
        A = _cat([r.reshape(n, -1, din) for r in records], 1)  # (n, L, da)
        G = _cat([_grads_to_ncl(g, True) for g in grads], 2)  # (n, c, L, dg)
        out = {}
        if fold_bias and "weight" in wanted and "bias" in wanted:
            A = torch.cat([A, A.new_ones(A.shape[:-1] + (1,))], dim=-1)
            wanted = ("weight",)
        if "weight" in wanted:
            fac = Hadamard(A[:, None], G[:, :, None])
            if choose(A.shape[-1], G.shape[-1], A.shape[1], G.shape[1]) == "explicit":
                fac = fac.to_explicit()
            out["weight"] = fac
        if "bias" in wanted:
            out["bias"] = _bias_from_positions(G)
        return out


class ConvRule(Rule):
    """``nn.Conv1d`` / ``nn.Conv2d`` with any stride, padding (incl. ``'same'`` and non-zero
    padding modes), dilation and groups.

    The convolution is a linear layer applied to unfolded input patches at every output pixel:
    ``A`` = patches ``(n, g, P, C_in/g * prod(k))``, ``G`` = output gradients
    ``(n, c, g, P, C_out/g)``; the weight factor is ``Hadamard(A, G)`` or the explicit per-sample
    gradient ``J_i = G_i^T A_i``, the bias factor sums ``G`` over pixels.

    The record is the layer input itself (no copy). The explicit factor is built a few samples
    at a time (patches, stacked gradients, one batched matmul), so the unfolded patches -- 9x the
    input for a 3x3 kernel -- never exist for the whole chunk and stay in cache.
    """

    param_names = ("weight", "bias")
    can_fold_bias = True
    _SUB_BYTES = 16 * 1024**2  # working set of one sub-batch of the explicit factor (4 MB measured slower)

    def __init__(self, dim: int):
        self.dim = dim

    def _kernel_2d(self, module):
        ks, st, dl = tuple(module.kernel_size), tuple(module.stride), tuple(module.dilation)
        if self.dim == 1:
            ks, st, dl = (1,) + ks, (1,) + st, (1,) + dl
        return ks, st, dl

    def stacks_gradients(self, explicit):
        return not explicit  # the explicit factor stacks one sub-batch at a time

    def _patches(self, module, x: torch.Tensor, ones: bool) -> torch.Tensor:
        """Unfolded patches ``(b, g, da, P)`` of the input ``x`` (the layout of ``F.unfold``, with
        ``da = C_in/g * prod(k)`` ordered like the weight), plus a row of ones if ``ones``."""
        pad = module._reversed_padding_repeated_twice
        if any(pad):
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            x = F.pad(x, pad, mode=mode)
        if self.dim == 1:
            x = x.unsqueeze(2)
        ks, st, dl = self._kernel_2d(module)
        win = x.unfold(2, dl[0] * (ks[0] - 1) + 1, st[0]).unfold(3, dl[1] * (ks[1] - 1) + 1, st[1])
        win = win[..., :: dl[0], :: dl[1]]  # (b, C, Ho, Wo, kh, kw), a strided view
        b, C, Ho, Wo = win.shape[:4]
        g = module.groups
        da = C // g * ks[0] * ks[1]
        out = x.new_empty(b, g, da + int(ones), Ho * Wo)
        dst = out[:, :, :da].view(b, g, C // g, ks[0], ks[1], Ho, Wo)
        dst.copy_(win.reshape(b, g, C // g, Ho, Wo, ks[0], ks[1]).permute(0, 1, 2, 5, 6, 3, 4))
        if ones:
            out[:, :, da] = 1
        return out

    def _patches_cl(self, module, x: torch.Tensor, ones: bool) -> torch.Tensor:
        """Patches ``(b, P, da)`` of a channels-last input, ``da`` ordered ``(kh, kw, C_in)``
        (plus a one if ``ones``): copied along the contiguous channel axis. (The order of ``da``
        differs from :meth:`_patches`; a kernel only needs it to be the same for every chunk.)"""
        ks, st, dl = self._kernel_2d(module)
        left, right, top, bottom = module._reversed_padding_repeated_twice
        xh = x.permute(0, 2, 3, 1)  # (b, H, W, C), contiguous
        if left or right or top or bottom:
            b, H, W, C = xh.shape
            xp = xh.new_zeros(b, H + top + bottom, W + left + right, C)
            xp[:, top : top + H, left : left + W] = xh
            xh = xp
        win = xh.unfold(1, dl[0] * (ks[0] - 1) + 1, st[0]).unfold(2, dl[1] * (ks[1] - 1) + 1, st[1])
        win = win[..., :: dl[0], :: dl[1]]  # (b, Ho, Wo, C, kh, kw)
        b, Ho, Wo, C = win.shape[:4]
        da = C * ks[0] * ks[1]
        out = x.new_empty(b, Ho * Wo, da + int(ones))
        out[:, :, :da].unflatten(2, (ks[0], ks[1], C)).unflatten(1, (Ho, Wo)).copy_(win.permute(0, 1, 2, 4, 5, 3))
        if ones:
            out[:, :, da] = 1
        return out

    def _channels_last(self, module, rec: torch.Tensor) -> bool:
        """Whether the explicit factor is made from channels-last patches and gradients."""
        return (
            self.dim == 2
            and module.groups == 1
            and module.padding_mode == "zeros"
            and rec.dim() == 4
            and rec.shape[1] > 1
            and rec.is_contiguous(memory_format=torch.channels_last)
        )

    def scaled_input_gradient(self, module, inp, scale):
        rev = module._reversed_padding_repeated_twice
        if module.padding_mode != "zeros" or list(rev[::2]) != list(rev[1::2]):
            return None  # padded by F.pad before the convolution (asymmetric 'same', other modes)
        w = module.weight.detach()
        w = w * scale.view((-1,) + (1,) * (w.dim() - 1))  # output channels on axis 0, also with groups
        args = (None, module.stride, tuple(rev[::2][::-1]), module.dilation, False, (0,) * self.dim, module.groups)

        def grad(g):
            return torch.ops.aten.convolution_backward(g, inp, w, *args, (True, False, False))[0]

        return grad

    def weight_dims(self, module, inp, out) -> tuple:
        ks, _, _ = self._kernel_2d(module)
        g = module.groups
        return module.in_channels // g * ks[0] * ks[1], module.out_channels // g, out[0, 0].numel()

    accepts_grad_scales = True

    def factors(self, module, records, grads, wanted, choose, fold_bias=False, grad_scales=None):
        g = module.groups
        n = records[0].shape[0]
        c = len(grads[0])
        cout = module.out_channels
        dg = cout // g
        scales = grad_scales or [None] * len(records)
        out = {}
        fold = fold_bias and "weight" in wanted and "bias" in wanted
        if "bias" in wanted and not fold:

            def bias_k(gk, sc):
                jb = gk.reshape(n, cout, -1).sum(2)
                return jb if sc is None else jb * sc

            out["bias"] = Explicit(_sum_over_calls(grads, bias_k, scales))
        if "weight" not in wanted:
            return out
        da = self.weight_dims(module, records[0], grads[0][0])[0]
        L = sum(gl[0][0, 0].numel() for gl in grads)
        if choose(da + int(fold), dg, L, c) == "hadamard":
            A = _cat([self._patches(module, r, fold).transpose(2, 3) for r in records], 2)  # (n, g, L, da)
            Gs = []
            for gl, sc in zip(grads, scales):
                Gc = _stack(gl).reshape(n, c, g, dg, -1)
                if sc is not None:
                    Gc = Gc.mul_(sc.view(g, dg, 1))  # our own stacked copy
                Gs.append(Gc.transpose(3, 4))
            out["weight"] = Hadamard(A, _cat(Gs, 3))  # G: (n, c, g, L, dg)
            return out
        da1 = da + int(fold)
        item = records[0].element_size()
        # channels-last records (the engine feeds images so, see engine._use_channels_last): the
        # patches are copied along the contiguous channel axis and each output's gradient is
        # multiplied into its own part, with no stacking (the patch order differs between the
        # two layouts; every chunk of a call takes the same one)
        cl = all(self._channels_last(module, r) for r in records)
        # logits per part: one with channels-last, else every part of J stays below _PART_BYTES
        # (see factors.SplitExplicit)
        per = 1 if cl else max(1, min(c, _PART_BYTES // max(1, n * g * dg * da1 * item)))
        spans = [(k, min(c, k + per)) for k in range(0, c, per)]
        parts = [records[0].new_empty(n, k1 - k0, g, dg, da1) for k0, k1 in spans]
        per_sample = max(1, (g * da1 + c * cout) * L * item)
        sb = max(1, min(n, self._SUB_BYTES // per_sample))
        for s in range(0, n, sb):
            e = min(n, s + sb)
            b = e - s
            for call, (rec, gl, sc) in enumerate(zip(records, grads, scales)):
                if cl:
                    At = self._patches_cl(module, rec[s:e], fold)  # (b, P, da1)
                else:
                    At = self._patches(module, rec[s:e], fold).view(b * g, da1, -1).transpose(1, 2)
                # a gradient scale goes on the smaller of the gradients and the product (both
                # fresh); a later call's product is accumulated, so its gradients are scaled
                scale_out = sc is not None and call == 0 and da1 <= At.shape[1]
                if cl:
                    for gk, J in zip(gl, parts):
                        src = gk[s:e].permute(0, 2, 3, 1).reshape(b, -1, cout)  # (b, P, cout), a view
                        if sc is not None and not scale_out:
                            src = src * sc
                        dst = J[s:e].view(b, dg, da1)
                        if call == 0:
                            torch.bmm(src.transpose(1, 2), At, out=dst)
                            if scale_out:
                                dst.mul_(sc.view(dg, 1))
                        else:
                            dst.baddbmm_(src.transpose(1, 2), At)
                    continue
                for (k0, k1), J in zip(spans, parts):
                    ck = k1 - k0
                    Gs = torch.stack([gk[s:e].reshape(b, cout, -1) for gk in gl[k0:k1]], 1)  # (b, ck, cout, P)
                    if sc is not None and not scale_out:
                        Gs.view(b, ck, g, dg, -1).mul_(sc.view(g, dg, 1))
                    if g == 1:
                        dst = J[s:e].view(b, ck * dg, da1)
                        if call == 0:
                            torch.bmm(Gs.view(b, ck * dg, -1), At, out=dst)
                        else:
                            dst.baddbmm_(Gs.view(b, ck * dg, -1), At)
                    else:
                        Gm = Gs.view(b, ck, g, dg, -1).transpose(1, 2).reshape(b * g, ck * dg, -1)
                        prod = torch.bmm(Gm, At).view(b, g, ck, dg, da1).transpose(1, 2)
                        if call == 0:
                            J[s:e] = prod
                        else:
                            J[s:e] += prod
                    if scale_out:
                        J[s:e].mul_(sc.view(g, dg, 1))
        flat = [J.view(n, J.shape[1], g * dg * da1) for J in parts]
        out["weight"] = Explicit(flat[0]) if len(flat) == 1 else SplitExplicit(flat)
        return out


class EmbeddingRule(Rule):
    """``nn.Embedding``: the row ``idx`` receives the output gradient at each position.

    ``K_ij = sum_{l, l'} [idx_il == idx_jl'] <g_il, g_jl'>`` (``padding_idx`` rows get no
    gradient). ``scale_grad_by_freq`` couples positions through token counts and is left to the
    autograd fallback.
    """

    param_names = ("weight",)

    def applies(self, module):
        return not module.scale_grad_by_freq

    def record(self, module, inp):
        idx = inp.detach().long().reshape(inp.shape[0], -1).clone()
        if module.padding_idx is not None:
            idx[idx == module.padding_idx] = -1
        return idx

    def factors(self, module, records, grads, wanted, choose, fold_bias=False):
        idx = _cat(records, 1)  # (n, L)
        G = _cat([_grads_to_ncl(g, True) for g in grads], 2)
        return {"weight": IndexHadamard(idx[:, None], G[:, :, None])}


class _AffineNormRule(Rule):
    """Shared logic of normalisation layers ``y = xhat * w + b`` (per feature/channel)."""

    param_names = ("weight", "bias")

    def normalized(self, module, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def record(self, module, inp):
        return self.normalized(module, inp.detach())

    def stacks_gradients(self, explicit):
        return False  # consumed one output at a time

    def _collapse(self, module, t: torch.Tensor) -> torch.Tensor:
        """(n, c, *shape) -> (n, c, P): sum over the positions sharing one affine parameter."""
        raise NotImplementedError

    def factors(self, module, records, grads, wanted, choose, fold_bias=False):
        out = {}

        def collapse(t):  # (n, *shape) -> (n, P)
            return self._collapse(module, t.unsqueeze(1))[:, 0]

        if "weight" in wanted:
            out["weight"] = Explicit(_sum_over_calls(grads, lambda gk, xh: collapse(gk * xh), records))
        if "bias" in wanted:
            out["bias"] = Explicit(_sum_over_calls(grads, lambda gk, _: collapse(gk)))
        return out


class LayerNormRule(_AffineNormRule):
    """``nn.LayerNorm``: ``J_w = sum_positions xhat * g``, ``J_b = sum_positions g``."""

    def normalized(self, module, x):
        return F.layer_norm(x, module.normalized_shape, eps=module.eps)

    def _collapse(self, module, t):
        n, c = t.shape[:2]
        P = 1
        for s in module.normalized_shape:
            P *= s
        return t.reshape(n, c, -1, P).sum(2)


class GroupNormRule(_AffineNormRule):
    """``nn.GroupNorm``: per-channel affine after group normalisation."""

    def normalized(self, module, x):
        return F.group_norm(x, module.num_groups, eps=module.eps)

    def _collapse(self, module, t):
        n, c, C = t.shape[:3]
        return t.reshape(n, c, C, -1).sum(3)


class BatchNormEvalRule(GroupNormRule):
    """``nn.BatchNorm1d/2d/3d`` in eval mode (running statistics): a per-channel affine map.

    Training-mode BatchNorm couples samples through batch statistics; the engine refuses it.
    """

    def applies(self, module):
        return module.running_mean is not None and not module.training

    def input_gradient_scale(self, module):
        if module.training:
            return None
        inv = torch.rsqrt(module.running_var.detach() + module.eps)  # y = gamma (x - mu) / sigma + beta
        return inv if module.weight is None else module.weight.detach() * inv

    def normalized(self, module, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)


class PReLURule(Rule):
    """``nn.PReLU``: ``y = max(x, 0) + a * min(x, 0)`` elementwise, with one slope ``a`` per
    channel (axis 1 of a batch-first input; ``num_parameters = C``) or one for all
    (``num_parameters = 1``). ``d y / d a_ch = min(x, 0)``, so the slope's per-sample gradient
    is ``J[i, k, ch] = sum_{non-channel positions} g_k * min(x, 0)`` (the input derivative,
    ``x > 0 ? 1 : a``, is autograd's, through the engine's probes)."""

    param_names = ("weight",)

    def record(self, module, inp):
        return inp.detach().clamp(max=0)

    def stacks_gradients(self, explicit):
        return False  # consumed one output at a time

    def factors(self, module, records, grads, wanted, choose, fold_bias=False):
        P = module.weight.numel()

        def per_output(gk, neg):  # (n, ...) -> (n, P)
            t = gk * neg
            if P == 1:
                return t.reshape(t.shape[0], -1).sum(1, keepdim=True)
            return t.reshape(t.shape[0], P, -1).sum(2)  # (torch's prelu needs C = P channels on axis 1)

        return {"weight": Explicit(_sum_over_calls(grads, per_output, records))} if "weight" in wanted else {}


register_rule(nn.Linear, LinearRule())
register_rule(nn.Conv1d, ConvRule(1))
register_rule(nn.Conv2d, ConvRule(2))
register_rule(nn.Embedding, EmbeddingRule())
register_rule(nn.LayerNorm, LayerNormRule())
register_rule(nn.GroupNorm, GroupNormRule())
register_rule(nn.PReLU, PReLURule())
for _bn in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_rule(_bn, BatchNormEvalRule())
