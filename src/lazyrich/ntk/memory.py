"""Memory budgeting of the eNTK engine: the memory it may use, a gradient-free one-sample
estimate of the working set per sample, the chunk size, and whether factors may be cached."""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from .input_checks import explained_forward, forward_flat
from .plan import _Plan


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


def _probe_sample(model, plan: _Plan, x1, dtype) -> tuple:
    """One gradient-free forward pass of the first sample: ``(out, layers)`` -- its ``(1, c)``
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
        with torch.no_grad(), explained_forward(x1, dtype):
            out0 = forward_flat(model, x1[:1])
    finally:
        for h in handles:
            h.remove()
    return out0, layers


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


def _auto_batch_size(n_pass: int, n_max: int, work: int, all_factors: int, largest: int, budget: int, out_bytes: int) -> int:
    """Samples per chunk from :func:`_bytes_per_sample`'s estimates: all ``n_max`` samples (one
    chunk, contracted layer by layer) when the ``n_pass`` samples of one pass fit the stream set,
    else chunks whose factors stay within the budget."""
    factor_budget = max(budget - out_bytes, budget // 8)
    if n_pass * (work + largest) <= min(factor_budget, _STREAM_SET):
        return n_max  # one chunk, contracted layer by layer (see blocks._one_block)
    per_sample = work + all_factors
    # factors of two chunks and one chunk's records/gradients live at once, plus temporaries
    batch_size = int(max(1, factor_budget // (3 * per_sample)))
    # Keep a chunk's working set near 1 GiB (at least 16 samples): smaller tensors are
    # recycled by the allocator instead of being freshly mapped (and page-faulted) on every
    # chunk, which measured 30-40% faster on ResNet-20 (benchmarks/ntk_speed.py, W3).
    return min(batch_size, max(16, _WORKING_SET // per_sample))


def _fits_cache(groups, budget, out_bytes, n_chunks) -> bool:
    size = 0
    for _, lst in groups:
        for f, _ in lst:
            size += f.nbytes()
    return size * n_chunks < max(0, budget - out_bytes) // 2
