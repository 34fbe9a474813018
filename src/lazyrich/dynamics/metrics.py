"""Pure quantities recorded along a training run (no I/O, no global state).

* parameter distance to initialization and the relative distance RD
  (Luo, Xu, Ma, Zhang, "Phase diagram for two-layer ReLU neural networks at infinite-width limit", eq. (16));
* Hamming distance between binarized activation patterns
  (Kunin et al., "Get rich quick", Experimental Details, LeNet-5 experiment);
* conserved quantities ``delta_k = eta_w ||a_k||^2 - eta_a ||w_k||^2`` of two-layer nets and the layer balance
  between consecutive Linear layers (Kunin et al., Sec. 3 / 4 and Appendix on wide linear networks);
* kernel distances from a Gram matrix of kernels (Zhou et al., "On the cone effect", eq. (4)), kernel velocity
  (eq. (5)), classical MDS of the kernel trajectory, kernel-target alignment and effective rank.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    "param_distances",
    "relative_distances",
    "hamming_distance",
    "two_layer_structure",
    "two_layer_deltas",
    "linear_pairs",
    "layer_balances",
    "gram_to_distance",
    "classical_mds",
    "velocity_phase_split",
    "kernel_target_alignment",
    "effective_rank",
]


# --------------------------------------------------------------------------------------------
# parameter distances
# --------------------------------------------------------------------------------------------


def param_distances(
    current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor]
) -> Tuple[float, Dict[str, float]]:
    """Euclidean distance ``||theta_t - theta_0||_2`` in total and per parameter tensor (float64).

    Parameters
    ----------
    current, initial : mapping name -> tensor
        Same keys and shapes.

    Returns
    -------
    total : float
        ``sqrt(sum_p ||theta_p(t) - theta_p(0)||_F^2)``.
    per_param : dict name -> float
    """
    if set(current) != set(initial):
        raise ValueError(
            f"current and initial parameters have different names ({sorted(set(current) ^ set(initial))}); "
            "compare states of the same model."
        )
    per = {}
    for n, p in current.items():
        q = initial[n]
        if p.shape != q.shape:
            raise ValueError(f"Parameter '{n}' has shape {tuple(p.shape)} now but {tuple(q.shape)} at init.")
        per[n] = float(torch.linalg.vector_norm((p.detach().double() - q.detach().double().to(p.device)).reshape(-1)))
    total = math.sqrt(sum(v * v for v in per.values()))
    return total, per


def relative_distances(
    current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor]
) -> Dict[str, float]:
    """Relative distance ``RD(theta_p(t)) = ||theta_p(t) - theta_p(0)||_F / ||theta_p(0)||_F`` per tensor.

    Luo et al., eq. (16) (there for the input weights ``theta_w`` of a two-layer net; here for every parameter
    tensor, so the ``rd/<name of the input weights>`` entry is exactly eq. (16)). The ``||.||_2`` of the paper
    is the Euclidean norm of the flattened parameter vector, i.e. the Frobenius norm. A tensor that is zero at
    initialization (e.g. a zero-initialized bias) has no relative distance: its entry is ``nan``.
    """
    _, per = param_distances(current, initial)
    out = {}
    for n, d in per.items():
        nrm = float(torch.linalg.vector_norm(initial[n].detach().double().reshape(-1)))
        out[n] = d / nrm if nrm > 0 else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# activation patterns
# --------------------------------------------------------------------------------------------


def hamming_distance(patterns: Sequence[torch.Tensor], initial: Sequence[torch.Tensor]) -> Tuple[float, List[float]]:
    """Fraction of (unit, probe point) pairs whose activation state differs from initialization.

    Kunin et al., "Get rich quick", Experimental Details (LeNet-5): "we binarize the hidden activation with 1
    representing an active neuron. We evaluate Hamming distance over all the binarized hidden activations
    normalized by the total number of the activations." A *unit* is one entry of a ReLU-like layer's
    pre-activation (one neuron, or one channel x position of a convolution); it is active when its
    pre-activation is ``> 0``. The total is over all units of all layers and all probe points:
    ``sum_l #flipped_l / sum_l #units_l``.

    Parameters
    ----------
    patterns, initial : sequence of bool tensors
        One tensor per activation site (same order and shapes).

    Returns
    -------
    total : float
    per_site : list of float
    """
    if len(patterns) != len(initial):
        raise ValueError(
            f"The model now has {len(patterns)} ReLU-like activation sites but had {len(initial)} at initialization; "
            "the architecture must not change during tracking."
        )
    flips, units, per = 0, 0, []
    for i, (p, q) in enumerate(zip(patterns, initial)):
        if p.shape != q.shape:
            raise ValueError(f"Activation site {i} has shape {tuple(p.shape)} now but {tuple(q.shape)} at init.")
        f = int((p != q).sum())
        n = p.numel()
        flips += f
        units += n
        per.append(f / n if n else float("nan"))
    return (flips / units if units else float("nan")), per


# --------------------------------------------------------------------------------------------
# conserved quantities
# --------------------------------------------------------------------------------------------

_POS_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Flatten)


def two_layer_structure(model: nn.Module) -> Optional[dict]:
    """Detect a two-layer net ``f(x) = a^T sigma(W x [+ b])`` whose per-neuron ``delta_k`` is conserved.

    Recognized forms (all trainable parameters must belong to them):

    * two ``nn.Linear`` layers ``W = L1.weight (h, d)``, optional ``L1.bias (h,)``, ``A = L2.weight (c, h)``,
      optional ``L2.bias`` (``L1.out_features == L2.in_features``), and only positively homogeneous
      activations (ReLU, LeakyReLU, PReLU without trainable slope, Identity) or containers/Flatten as the
      other modules;
    * a module with exactly two trainable parameters named ``w`` ``(m, d)`` and ``a`` ``(m,)``/``(m, c)``
      (Luo et al.'s two-layer net, ``lazyrich.models.two_layer``), whose submodules are positively homogeneous
      activations only. A module whose ``forward`` applies a non-homogeneous function without a submodule
      (e.g. ``torch.tanh``) cannot be detected from its structure: only use this with ReLU-like nets.

    Returns
    -------
    dict or None
        ``{"w": name, "b": name or None, "a": name, "a_axis": axis of a indexing neurons}`` or None.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # every other submodule must be a container or a positively homogeneous activation without trainable slope
    for n, m in model.named_modules():
        if m is model or isinstance(m, nn.Linear) or isinstance(m, _CONTAINERS):
            continue
        if isinstance(m, _POS_HOMOGENEOUS) and not any(p.requires_grad for p in m.parameters()):
            continue
        return None
    if set(params) == {"w", "a"}:
        w, a = params["w"], params["a"]
        if w.dim() == 2 and a.dim() in (1, 2) and a.shape[0] == w.shape[0]:
            return {"w": "w", "b": None, "a": "a", "a_axis": 0}
        return None
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if len(linears) != 2:
        return None
    (n1, l1), (n2, l2) = linears
    if l1.out_features != l2.in_features:
        return None
    names = {f"{n1}.weight", f"{n2}.weight"}
    if l1.bias is not None and l1.bias.requires_grad:
        names.add(f"{n1}.bias")
    if l2.bias is not None and l2.bias.requires_grad:
        names.add(f"{n2}.bias")
    if set(params) != names or not l1.weight.requires_grad or not l2.weight.requires_grad:
        return None
    b = f"{n1}.bias" if f"{n1}.bias" in names else None
    return {"w": f"{n1}.weight", "b": b, "a": f"{n2}.weight", "a_axis": 1}


def two_layer_deltas(
    params: Mapping[str, torch.Tensor], structure: Mapping, lr_scales: Optional[Mapping[str, float]] = None
) -> np.ndarray:
    """Per-neuron conserved quantity ``delta_k = eta_w ||a_k||^2 - eta_a ||w_k||^2`` (float64, shape ``(h,)``).

    Kunin et al., "Get rich quick", two-layer (piecewise) linear networks: ``delta_k = eta_w a_k^2 -
    eta_a ||w_k||^2`` is constant under gradient flow for ``f(x) = sum_k a_k sigma(w_k^T x)`` with a positively
    homogeneous ``sigma`` (rescaling symmetry ``a_k -> c a_k``, ``w_k -> w_k / c``). ``a_k`` is the vector of
    outgoing weights of neuron ``k`` (``||a_k||^2`` for several outputs, as in the paper's multi-output
    appendix). A first-layer bias ``b_k`` belongs to the incoming weights; with its own learning rate
    ``eta_b`` the conserved quantity is ``eta_w ||a_k||^2 - eta_a ||w_k||^2 - eta_a (eta_w / eta_b) b_k^2``
    (reduces to ``||w_k||^2 + b_k^2`` when ``eta_b = eta_w``). Learning rates are the per-parameter multipliers
    ``lr_scales`` (default 1); only their ratios matter up to a common factor.
    """
    s = dict(lr_scales or {})
    w = params[structure["w"]].detach().double()
    a = params[structure["a"]].detach().double()
    eta_w = float(s.get(structure["w"], 1.0))
    eta_a = float(s.get(structure["a"], 1.0))
    if structure["a_axis"] == 1:  # nn.Linear weight (c, h): neuron k is column k
        a_sq = (a**2).sum(0)
    else:
        a_sq = (a**2).reshape(a.shape[0], -1).sum(1)
    w_sq = (w**2).sum(1)
    delta = eta_w * a_sq - eta_a * w_sq
    if structure.get("b"):
        b = params[structure["b"]].detach().double()
        eta_b = float(s.get(structure["b"], 1.0))
        if eta_b == 0:
            return (delta * float("nan")).cpu().numpy()
        delta = delta - eta_a * (eta_w / eta_b) * b**2
    return delta.cpu().numpy()


def linear_pairs(model: nn.Module) -> List[Tuple[str, str]]:
    """Consecutive ``nn.Linear`` layers (registration order) with ``out_features(l) == in_features(l+1)``.

    Returns module-name pairs; used by :func:`layer_balances`.
    """
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]
    out = []
    for (n1, l1), (n2, l2) in zip(linears[:-1], linears[1:]):
        if l1.out_features == l2.in_features:
            out.append((n1, n2))
    return out


def layer_balances(
    model: nn.Module, pairs: Sequence[Tuple[str, str]], lr_scales: Optional[Mapping[str, float]] = None
) -> Dict[str, float]:
    """Layer balance ``eta_l ||W_{l+1}||_F^2 - eta_{l+1} (||W_l||_F^2 + ||b_l||^2)`` per consecutive pair.

    Kunin et al. (deep linear networks and their conserved ``eta_l W_{l+1}^T W_{l+1} - eta_{l+1} W_l W_l^T``):
    the trace of the conserved matrix is the balance ``||W_{l+1}||_F^2 - ||W_l||_F^2`` of the issue (equal
    learning rates). For ReLU-like nets the per-neuron version holds with the bias of layer ``l`` counted
    among the incoming weights of its neurons, so ``||b_l||^2`` is included (exactly conserved under gradient
    flow when the activation between the layers is positively homogeneous; not under weight decay).
    ``eta`` are the weight multipliers from ``lr_scales`` (default 1). Keys are ``"<l>-><l+1>"``.
    """
    s = dict(lr_scales or {})
    mods = dict(model.named_modules())
    out = {}
    for n1, n2 in pairs:
        l1, l2 = mods[n1], mods[n2]
        e1 = float(s.get(f"{n1}.weight", 1.0))
        e2 = float(s.get(f"{n2}.weight", 1.0))
        w1 = float((l1.weight.detach().double() ** 2).sum())
        if l1.bias is not None:
            w1 += float((l1.bias.detach().double() ** 2).sum())
        w2 = float((l2.weight.detach().double() ** 2).sum())
        out[f"{n1}->{n2}"] = e1 * w2 - e2 * w1
    return out


# --------------------------------------------------------------------------------------------
# kernel geometry
# --------------------------------------------------------------------------------------------


def gram_to_distance(G: np.ndarray) -> np.ndarray:
    """Kernel distance matrix ``S_ij = 1 - G_ij / sqrt(G_ii G_jj)`` from the Gram ``G_ij = <K_i, K_j>_F``.

    Zhou et al., "On the cone effect", eq. (4). Diagonal set to exactly 0; values clipped to ``[0, 2]``.
    """
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be a square matrix, got shape {G.shape}.")
    d = np.sqrt(np.clip(np.diag(G), 0, None))
    if np.any(d == 0):
        raise ValueError("A stored kernel is identically zero, so its kernel distance is undefined.")
    S = 1.0 - G / np.outer(d, d)
    S = np.clip(0.5 * (S + S.T), 0.0, 2.0)
    np.fill_diagonal(S, 0.0)
    return S


def classical_mds(S: np.ndarray, dim: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS of the kernel trajectory from the kernel-distance matrix ``S``.

    Uses the distances ``D_ij = sqrt(2 S_ij)``: for normalized kernels ``K/||K||_F`` one has
    ``||K_i/||K_i|| - K_j/||K_j|| ||_F^2 = 2 - 2 cos_ij = 2 S_ij``, so ``D`` is an exact Euclidean (chordal)
    distance and classical MDS is the PCA of the normalized kernels (no negative eigenvalues up to
    round-off). Using ``S`` itself as the distance would not be Euclidean in general. Axis signs are fixed so
    that the last point minus the first point is non-negative on each axis.

    Returns
    -------
    ndarray ``(T, dim)``; row ``i`` is kernel ``i`` (row 0 the first stored, i.e. initial, kernel).
    """
    S = np.asarray(S, dtype=np.float64)
    T = S.shape[0]
    D2 = 2.0 * S
    J = np.eye(T) - np.full((T, T), 1.0 / T)
    B = -0.5 * J @ D2 @ J
    w, V = np.linalg.eigh(0.5 * (B + B.T))
    order = np.argsort(w)[::-1][:dim]
    X = np.zeros((T, dim))
    for j, idx in enumerate(order):
        lam = max(w[idx], 0.0)
        X[:, j] = V[:, idx] * math.sqrt(lam)
    for j in range(dim):
        if X[-1, j] - X[0, j] < 0:
            X[:, j] = -X[:, j]
    return X


def _running_median(v: np.ndarray, window: int) -> np.ndarray:
    h = window // 2
    return np.array([np.median(v[max(0, i - h) : i + h + 1]) for i in range(len(v))])


def velocity_phase_split(steps: np.ndarray, velocity: np.ndarray, *, ratio: float = 0.1, window: int = 3) -> dict:
    """End of the fast kernel phase from the kernel velocity (Zhou et al. eq. (5); Fort et al. two phases).

    Method ("velocity_threshold"):

    1. smooth ``v`` by a running median over ``window`` checkpoints (robust to single SGD spikes);
    2. ``v_peak`` = maximum of the smoothed velocity; ``v_plateau`` = median of the smoothed velocity over the
       last third of the checkpoints;
    3. threshold ``v_thr = v_plateau + ratio * (v_peak - v_plateau)``;
    4. the split is the first checkpoint ``t_i`` at or after the peak from which the smoothed velocity stays
       ``<= v_thr`` for all later checkpoints.

    ``steps[i]`` is the start of the interval whose velocity is ``velocity[i]``.

    Returns
    -------
    dict with ``step``, ``index``, ``method``, ``threshold``, ``v_peak``, ``v_plateau``, ``ratio``.
    """
    steps = np.asarray(steps)
    v = np.asarray(velocity, dtype=np.float64)
    if len(v) < 3:
        raise ValueError(
            f"The phase split needs at least 3 kernel-velocity values (4 stored kernels), got {len(v)}; "
            "record the kernel at more steps."
        )
    if not (0 < ratio < 1):
        raise ValueError(f"ratio must be in (0, 1), got {ratio}.")
    sm = _running_median(v, window)
    ipeak = int(np.argmax(sm))
    v_peak = float(sm[ipeak])
    v_plateau = float(np.median(sm[-max(1, len(sm) // 3) :]))
    thr = v_plateau + ratio * (v_peak - v_plateau)
    above = np.nonzero(sm > thr)[0]
    idx = ipeak if len(above) == 0 else int(above[-1]) + 1
    idx = min(max(idx, ipeak), len(sm) - 1)
    return {
        "step": int(steps[idx]),
        "index": idx,
        "method": "velocity_threshold",
        "threshold": float(thr),
        "v_peak": v_peak,
        "v_plateau": v_plateau,
        "ratio": float(ratio),
    }


def _target_tensor(y: np.ndarray, kernel_shape: Tuple[int, ...]) -> np.ndarray:
    n = kernel_shape[0]
    y = np.asarray(y)
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} entries but the kernel is over {n} probe points.")
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim != 1:
            raise ValueError("Integer labels must be a vector (n,).")
        c = int(y.max()) + 1
        if len(kernel_shape) >= 3:
            c = max(c, kernel_shape[2])
        Y = np.zeros((n, c))
        Y[np.arange(n), y] = 1.0
    else:
        Y = y.reshape(n, -1).astype(np.float64)
    if len(kernel_shape) == 2:
        return Y @ Y.T
    c = kernel_shape[2]
    if Y.shape[1] != c:
        raise ValueError(f"Targets have {Y.shape[1]} outputs but the kernel has {c}.")
    if len(kernel_shape) == 3:  # (n, n, c): Theta_kk
        return np.einsum("ia,ja->ija", Y, Y)
    return np.einsum("ia,jb->ijab", Y, Y)


def kernel_target_alignment(K: np.ndarray, y: np.ndarray, *, centered: bool = False) -> float:
    """Kernel-target alignment ``A = <K, Y Y^T>_F / (||K||_F ||Y Y^T||_F)`` (Cristianini et al. 2002).

    ``Y`` is the one-hot label matrix for integer labels, the target matrix for float targets. For
    ``(n, n, c, c)`` kernels the target is ``Y_ia Y_jb``; for ``(n, n, c)`` kernels ``Y_ia Y_ja``.
    ``centered=True`` centers both over the samples first (``H K H`` with ``H = I - 11^T/n``, Cortes et al.
    2012; trace kernels only).
    """
    K = np.asarray(K, dtype=np.float64)
    Tt = _target_tensor(y, K.shape)
    if centered:
        if K.ndim != 2:
            raise ValueError("centered alignment is implemented for (n, n) trace kernels only.")
        n = K.shape[0]
        H = np.eye(n) - 1.0 / n
        K = H @ K @ H
        Tt = H @ Tt @ H
    nk, nt = np.linalg.norm(K), np.linalg.norm(Tt)
    if nk == 0 or nt == 0:
        return float("nan")
    return float(np.vdot(K, Tt) / (nk * nt))


def effective_rank(K: np.ndarray) -> float:
    """Effective rank ``exp(H(p))``, ``p_i = lambda_i / sum_j lambda_j`` (Roy & Vetterli 2007).

    Eigenvalues of the symmetric kernel, negatives (round-off) clipped to 0. ``(n, n, c, c)`` kernels are
    reshaped to ``(n c, n c)``; ``(n, n, c)`` kernels are summed over ``c`` (the trace kernel).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.ndim == 3:
        K = K.sum(-1)
    elif K.ndim == 4:
        n, _, c, _ = K.shape
        K = K.transpose(0, 2, 1, 3).reshape(n * c, n * c)
    lam = np.clip(np.linalg.eigvalsh(0.5 * (K + K.T)), 0, None)
    s = lam.sum()
    if s <= 0:
        return float("nan")
    p = lam[lam > 0] / s
    return float(np.exp(-(p * np.log(p)).sum()))
