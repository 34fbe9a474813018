"""Algorithm choice and output conventions of the eNTK engine."""

from __future__ import annotations

import enum
from typing import Union

__all__ = ["NTKMethod", "Outputs", "parse_outputs"]


class NTKMethod(str, enum.Enum):
    """How :func:`lazyrich.empirical_ntk` computes the kernel.

    All methods return the same numbers (up to floating-point rounding); they differ only in
    speed and memory. Let ``n`` be the number of samples, ``c`` the number of outputs, ``P`` the
    number of trainable parameters and ``F``/``B`` the cost of one forward/backward pass.

    ``STRUCTURED``
        Per-layer rules (:mod:`lazyrich.ntk.rules`). One forward pass records every layer's
        inputs ``A``; one batched backward pass over the ``c`` outputs records the gradients
        ``G`` with respect to every layer's output. Each layer's kernel block is then either the
        Hadamard form ``(A1 A2^T) * (G1 G2^T)`` (summed over positions) or the contraction of
        explicit per-sample gradients ``J1 J2^T``, whichever is cheaper for that layer. Cost about
        ``F + c B`` plus one or two matrix products per layer; memory ``O(n (|A| + c |G|))``.
        Fastest by far on MLPs, CNNs and transformers. Raises if a parameter has no rule.
    ``JACOBIAN``
        ``torch.func.vmap(torch.func.jacrev(...))`` per-sample Jacobians, contracted as
        ``J1 J2^T``. Works for any model ``torch.func`` can transform. Cost ``n c B`` plus
        ``n^2 c P``; memory ``O(n c P)`` (chunked by ``batch_size``).
    ``NTK_VP``
        NTK-vector products: for each column ``(j, l)`` a vector-Jacobian product gives
        ``J2[j, l]``, and a Jacobian-vector product over ``x1`` gives the column ``J1 J2[j, l]^T``.
        Never materialises a Jacobian: memory ``O(P + n1 c)`` per column batch, cost about
        ``n2 c (B + F(n1))``. Slowest; use it when ``c P`` per sample does not fit in memory.
    ``AUTO``
        ``STRUCTURED`` where a rule exists, ``JACOBIAN`` for every other parameter (for example
        the fused projection of ``nn.MultiheadAttention`` or a weight tied across modules).
        No parameter is ever skipped. The default.

    Self-checks of the autograd paths. ``torch.func.vmap`` batches through per-operator rules
    that can be wrong without raising (through ``nn.PReLU`` it returns wrong Jacobians when the
    batch size equals the number of outputs). So no batched result is trusted because it did not
    raise: for each (model, parameters, outputs, per-sample shape, batch size, dtype, device) the
    first batched result of ``JACOBIAN`` (and of the ``AUTO`` fallback) is compared, at its first
    and last sample, with plain ``torch.autograd.grad`` Jacobians, and the first kernel column of
    ``NTK_VP`` likewise (:mod:`lazyrich.ntk.jacobians`, :mod:`lazyrich.ntk.vector_products`).
    On disagreement a ``RuntimeWarning`` names the layers and the kernel is computed from
    per-sample autograd (correct, slower); the verdict is cached per model, so the check costs
    ``2 c`` one-sample backward passes once. ``STRUCTURED`` rules are exact formulas, tested
    against brute-force autograd in ``tests/``. ``NTK_VP`` on a model with an operator that has
    no forward-mode AD (``torch.nn.utils.parametrizations.weight_norm``) warns and computes the
    kernel with ``JACOBIAN``.
    """

    STRUCTURED = "structured"
    JACOBIAN = "jacobian"
    NTK_VP = "ntk_vp"
    AUTO = "auto"


Outputs = Union[str, int]


def parse_outputs(outputs: Outputs) -> tuple[str, int | None]:
    """Normalise the ``outputs`` argument to ``(mode, logit)``.

    ``"trace"`` -> ``("trace", None)``; ``"full"``; ``"diagonal"``; an int ``k`` ->
    ``("logit", k)``.
    """
    if isinstance(outputs, bool):
        raise TypeError("outputs must be 'trace', 'full', 'diagonal' or an int logit index, not a bool.")
    if isinstance(outputs, int):
        return "logit", int(outputs)
    if isinstance(outputs, str):
        key = outputs.lower()
        if key in ("trace", "full", "diagonal"):
            return key, None
    raise ValueError(
        f"outputs={outputs!r} is not understood; use 'trace', 'full', 'diagonal' or an int logit index."
    )
