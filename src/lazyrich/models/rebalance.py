"""Rebalancing a network's first and last layers, and the per-neuron balance it changes.

Kunin et al., *Get rich quick* ("Unbalanced initializations in practice", Fig. 5, and "Experimental
Details"): "divide the first layer weights by alpha and multiply the last layer weights by alpha at
initialization, which keeps the network functionally the same at initialization".

Which parameters are scaled, and when the function is unchanged
---------------------------------------------------------------
:func:`rebalance` multiplies, in place,

* the first layer's weight **and bias** by ``1/alpha``;
* the weight of every layer strictly between the first and the last **bias only** by ``1/alpha``
  (its weight is untouched);
* the last layer's weight by ``alpha`` (its bias is untouched).

Why: after the first layer every pre-activation is ``z/alpha``.  If every map between the first and the
last layer is *positively homogeneous of degree one* -- ReLU, leaky ReLU, identity, max- or average pooling,
flatten, bias-free linear/conv maps -- it commutes with multiplication by ``1/alpha > 0``, except for the
additive constants: a bias ``b`` added to ``z/alpha`` must become ``b/alpha`` so that
``W (z/alpha) + b/alpha = (W z + b)/alpha``.  The last layer's input is then ``h/alpha``, and ``alpha * W_L``
restores ``W_L h``; its bias is added after that product and stays.  So, with biases treated this way, the
network function is exactly unchanged (up to float rounding).

Where the network between is **not** positively homogeneous the function changes:

* ``tanh``, ``sigmoid``, ``gelu``, ``softplus``, ``silu``: ``tanh(z/alpha) != tanh(z)/alpha``.  For
  ``alpha > 1`` the hidden pre-activations shrink towards the near-linear part of the activation; for
  ``alpha < 1`` they grow towards saturation.  The output at initialization differs.
* normalization layers (BatchNorm, LayerNorm, GroupNorm) between the two layers divide the ``1/alpha``
  out again (``BN(z/alpha) = BN(z)`` up to ``eps``), so the output is multiplied by ``alpha``; residual
  additions of an unscaled input (the raw image) break homogeneity too.

Balance (the conserved quantity)
--------------------------------
Under gradient flow on a network with a positively homogeneous activation, for every hidden unit ``i``
between two consecutive layers ``k`` and ``k+1`` the quantity

``delta_i = ||a_i||^2 - ||w_i||^2 - b_i^2``

is conserved (Kunin et al., ``delta = eta_w a^2 - eta_a ||w||^2`` with equal learning rates, generalized
per neuron; Du, Hu & Lee 2018), where ``w_i, b_i`` are the unit's incoming weights and bias (row ``i`` of
``W_k``) and ``a_i`` its outgoing weights (column ``i`` of ``W_{k+1}``).  ``delta_i > 0`` is *upstream*
(the first layer small relative to the next, faster learning in the earlier layer), ``< 0`` *downstream*.
:func:`rebalance` with ``alpha > 1`` therefore makes the first junction more upstream
(``delta = ||a||^2 - (||w||^2 + b^2)/alpha^2``) and the last junction more upstream
(``delta = alpha^2 ||a||^2 - ||w||^2 - b^2/alpha^2``, the bias term only where that layer lies between); ``alpha < 1`` makes both downstream.

For a **convolutional** layer the unit is an output *channel*: the rescaling symmetry ``w -> c w,
a -> a/c`` acts on a whole filter because its weights are shared over positions, so ``w_i`` is the whole
filter of channel ``i`` (all input channels and kernel taps, plus its bias) and ``a_i`` is everything that
reads channel ``i`` in the next layer: the slice ``W_{k+1}[:, i]`` of a conv, or -- after flatten -- the
columns of a linear layer that belong to channel ``i`` (``i*s .. (i+1)*s - 1`` for ``s`` spatial
positions, PyTorch's channel-major flatten order).  :func:`layer_balance` computes exactly these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["rebalance", "trainable_layers", "layer_balance"]

#: Module types counted as "layers" (weights that a first/last-layer rescaling can address).
LAYER_TYPES: tuple[type, ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
)


def trainable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every trainable linear/conv/embedding layer, in registration order.

    A layer is a module of :data:`LAYER_TYPES` whose ``weight`` requires grad.  Normalization layers
    (BatchNorm, LayerNorm, ...) are never counted.  For ``nn.Sequential`` and the zoo's models the
    registration order is the data-flow order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, LAYER_TYPES) and getattr(mod, "weight", None) is not None and mod.weight.requires_grad:
            out.append((name, mod))
    return out


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise TypeError(f"alpha must be a positive finite number such as 3.0, got {alpha!r}.")
    a = float(alpha)
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"alpha must be a positive finite number (alpha=1 leaves the model unchanged), got {alpha!r}.")
    return a


def _resolve(model: nn.Module, first, last) -> tuple[list[str], str, list[tuple[str, nn.Module]]]:
    layers = trainable_layers(model)
    modules = dict(model.named_modules())
    names = [n for n, _ in layers]
    if first is None or last is None:
        if len(layers) < 2:
            raise ValueError(
                f"rebalance needs a model with at least two trainable linear/conv layers, found {len(layers)}; "
                "pass a deeper model or name the layers with first=... and last=...."
            )
    if first is None:
        first_names = [names[0]]
    elif isinstance(first, str):
        first_names = [first]
    elif isinstance(first, Sequence) and first and all(isinstance(f, str) for f in first):
        first_names = list(first)
    else:
        raise TypeError(f"first must be a layer name, a list of layer names or None, got {first!r}.")
    if last is None:
        last = names[-1]
    elif not isinstance(last, str):
        raise TypeError(f"last must be a layer name or None, got {last!r}.")
    for n in first_names + [last]:
        if n not in modules or n == "":
            avail = ", ".join(names) if names else "(none)"
            raise ValueError(f"no layer named {n!r} in the model; name one of its layers: {avail}.")
        w = getattr(modules[n], "weight", None)
        if not isinstance(w, torch.Tensor):
            raise ValueError(f"layer {n!r} has no weight parameter to rescale; name a linear/conv/embedding layer.")
    if last in first_names:
        raise ValueError(f"first and last are the same layer {last!r}; name two different layers.")
    return first_names, last, layers


def rebalance(model: nn.Module, alpha: float, first=None, last=None, *, scale_biases: bool = True) -> nn.Module:
    """Divide the first layer by ``alpha`` and multiply the last layer's weight by ``alpha`` (in place).

    Kunin et al., "Experimental Details" (Fig. 5): ``alpha > 1`` is an *upstream* initialization (first
    layer small relative to the last, ``delta > 0``), ``alpha < 1`` a downstream one, ``alpha = 1`` leaves
    the model as it is.  See the module docstring for which biases are scaled and why the function is
    unchanged exactly when the network between the two layers is positively homogeneous (ReLU, max-pooling,
    no normalization); with ``tanh`` etc. the function changes.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place.
    alpha : float
        Positive and finite.
    first : str or list of str, optional
        Name(s) of the first layer(s) as in ``model.named_modules()`` (e.g. ``"conv1"`` or, for a
        transformer, ``["tok_emb", "pos_emb"]``: each is divided by ``alpha``).  Default: the first
        trainable linear/conv/embedding layer (:func:`trainable_layers`).
    last : str, optional
        Name of the last layer.  Default: the last trainable layer.
    scale_biases : bool
        Divide the biases of the first layer and of every layer between (registration order) by ``alpha``
        (needed for the function to be unchanged).  ``False`` scales weights only.

    Returns
    -------
    torch.nn.Module
        The same ``model``, for chaining.
    """
    a = _check_alpha(alpha)
    first_names, last, layers = _resolve(model, first, last)
    modules = dict(model.named_modules())
    names = [n for n, _ in layers]
    with torch.no_grad():
        for n in first_names:
            m = modules[n]
            m.weight.div_(a)
            if scale_biases and getattr(m, "bias", None) is not None:
                m.bias.div_(a)
        modules[last].weight.mul_(a)
        if scale_biases and all(n in names for n in first_names + [last]):
            lo = max(names.index(n) for n in first_names)
            hi = names.index(last)
            for n in names[lo + 1:hi]:
                b = getattr(modules[n], "bias", None)
                if b is not None:
                    b.div_(a)
    return model


def _units_in(mod: nn.Module) -> tuple[int, torch.Tensor]:
    """(number of output units, squared norm of each unit's incoming weights + bias)."""
    w = mod.weight.detach().double()
    if isinstance(mod, nn.Embedding):
        raise ValueError("layer_balance is defined for linear/conv chains; an embedding is not a unit layer.")
    if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        w = w.transpose(0, 1)
    sq = w.reshape(w.shape[0], -1).pow(2).sum(1)
    b = getattr(mod, "bias", None)
    if b is not None:
        sq = sq + b.detach().double().pow(2)
    return int(w.shape[0]), sq


def _units_out(mod: nn.Module, n_units: int, prev: str, name: str) -> torch.Tensor:
    """Squared norm of what ``mod`` reads from each of the ``n_units`` units of the layer before."""
    w = mod.weight.detach().double()
    if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        w = w.transpose(0, 1)
    fan_in = w.shape[1]
    if fan_in == n_units:
        cols = w.transpose(0, 1).reshape(n_units, -1)
    elif isinstance(mod, nn.Linear) and fan_in % n_units == 0:  # flatten of (C, *spatial), channel-major
        cols = w.reshape(w.shape[0], n_units, fan_in // n_units).transpose(0, 1).reshape(n_units, -1)
    else:
        raise ValueError(
            f"layer {name!r} reads {fan_in} inputs but layer {prev!r} has {n_units} units, so they are not a "
            "feed-forward chain; compute the balance of a Sequential-like model (or of a sub-module that is one)."
        )
    return cols.pow(2).sum(1)


def layer_balance(model: nn.Module) -> pd.DataFrame:
    """Per-unit balance ``delta_i = ||a_i||^2 - ||w_i||^2 - b_i^2`` at every junction of consecutive layers.

    Kunin et al.'s conserved quantity ``delta = a^2 - ||w||^2`` (equal learning rates) per hidden neuron,
    or per output channel for a conv layer (see the module docstring).  The layers are those of
    :func:`trainable_layers` in registration order, which must form a feed-forward chain (a ValueError
    names the junction otherwise).

    Returns
    -------
    pandas.DataFrame
        One row per hidden unit with columns ``junction`` (0-based), ``layer`` (the unit's layer),
        ``next_layer``, ``unit``, ``in_norm2`` (``||w_i||^2 + b_i^2``), ``out_norm2`` (``||a_i||^2``) and
        ``delta``.  ``df.groupby("layer")["delta"].mean()`` gives one number per layer.
    """
    layers = trainable_layers(model)
    if len(layers) < 2:
        raise ValueError(f"layer_balance needs at least two trainable linear/conv layers, found {len(layers)}; pass a deeper model.")
    rows = []
    for j, ((name, mod), (nxt, nmod)) in enumerate(zip(layers[:-1], layers[1:])):
        n, sq_in = _units_in(mod)
        sq_out = _units_out(nmod, n, name, nxt)
        d = (sq_out - sq_in).numpy()
        rows.append(pd.DataFrame({"junction": j, "layer": name, "next_layer": nxt, "unit": np.arange(n),
                                  "in_norm2": sq_in.numpy(), "out_norm2": sq_out.numpy(), "delta": d}))
    return pd.concat(rows, ignore_index=True)
