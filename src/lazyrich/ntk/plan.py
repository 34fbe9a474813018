"""The plan of the eNTK engine: which trainable parameters a structured rule covers and which go
to the autograd fallback, and the autograd-graph edge counts the engine verifies it against (a
parameter must be used exactly once per recorded call of its layer, see :mod:`lazyrich.ntk.rules`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch.nn as nn

from .rules import get_rule


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
