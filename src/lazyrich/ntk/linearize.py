"""Linearized models ``f_lin(x; theta) = f(x; theta0) + J(theta0) (theta - theta0)``."""

from __future__ import annotations

import copy
from typing import Dict

import torch
import torch.nn as nn

from ._functional import no_fused_fastpaths
from .model_checks import check_eval_mode

__all__ = ["linearize", "LinearizedModel"]


class LinearizedModel(nn.Module):
    """First-order Taylor expansion of a model around ``theta0`` (Lee et al. 2019).

    ``forward(x) = f(x; theta0) + J(x; theta0) (theta - theta0)``, evaluated with one
    forward-mode Jacobian-vector product (``torch.func.jvp``). The trainable parameters
    ``theta`` are ordinary ``nn.Parameter``\\ s initialised at ``theta0`` (same names as in the
    original model, with dots replaced by ``__``), so any torch optimizer trains the linearized
    model; gradients flow through the jvp (reverse-over-forward). Parameters with
    ``requires_grad=False`` and buffers stay frozen at their ``theta0`` values.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self._names:
            raise ValueError("linearize needs a model with at least one trainable parameter.")
        self._base = copy.deepcopy(model)
        # theta0 and frozen parameters become buffers of the copy: they follow .to() and
        # state_dict(), but parameters() yields only the trainable theta.
        for m in self._base.modules():
            for pname, p in list(m._parameters.items()):
                if p is not None:
                    del m._parameters[pname]
                    m.register_buffer(pname, p.detach())
        state = dict(self._base.named_buffers(remove_duplicate=False))
        self.theta = nn.ParameterDict(
            {n.replace(".", "__"): nn.Parameter(state[n].clone()) for n in self._names}
        )

    def theta0(self) -> Dict[str, torch.Tensor]:
        state = dict(self._base.named_buffers(remove_duplicate=False))
        return {n: state[n] for n in self._names}

    def current(self) -> Dict[str, torch.Tensor]:
        return {n: self.theta[n.replace(".", "__")] for n in self._names}

    def forward(self, x):
        from torch.func import functional_call, jvp

        state = dict(self._base.named_buffers(remove_duplicate=False))
        theta0 = {n: state[n] for n in self._names}
        cur = self.current()
        tangent = {n: cur[n] - theta0[n] for n in self._names}

        def f(sub):
            p = dict(state)
            p.update(sub)
            return functional_call(self._base, p, (x,))

        with no_fused_fastpaths():
            out, dout = jvp(f, (theta0,), (tangent,))
        return out + dout


def linearize(model: nn.Module) -> LinearizedModel:
    """Return ``f(x; theta0) + J(theta0)(theta - theta0)`` as a trainable ``nn.Module``.

    Used by the cone-effect paper's switching experiment (Zhou et al., Sec. 4: standard training
    until ``t``, then linearized training to ``T``). The model is deep-copied: later changes to
    ``model`` do not move ``theta0``. Put BatchNorm/Dropout models in eval mode first (the
    linearization is taken of the eval-mode function).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"linearize expects a torch.nn.Module, got {type(model).__name__}.")
    check_eval_mode(model, "the linearization")
    return LinearizedModel(model)
