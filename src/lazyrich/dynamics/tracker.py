"""A tracker that records the learning dynamics of any training loop at scheduled steps.

Call ``tracker.step(step)`` after each optimizer step (and once with ``step=0`` before training); it acts only at
the scheduled steps and, at each, records into the run directory (see :mod:`lazyrich.dynamics.store`):

* the eNTK on the fixed probe set (``lazyrich.ntk.empirical_ntk``), float32 on disk, optionally per parameter;
* train/test loss and accuracy (when evaluation data are given);
* parameter distance to initialization (total and per parameter) and RD per parameter (Luo et al., eq. (16));
* activation patterns of ReLU-like units on the probe set and their Hamming distance to initialization
  (Kunin et al., "Get rich quick", Experimental Details);
* conserved quantities: per-neuron ``delta_k`` for two-layer nets and the layer balance between consecutive
  Linear layers (Kunin et al.).
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from lazyrich.ntk import empirical_ntk, kernel_distance

from . import metrics as M
from .store import RunStore, RunStoreError, _atomic_npy, _atomic_torch, atomic_write_bytes, step_file

__all__ = ["Tracker", "Schedule", "parse_schedule", "ActivationRecorder", "compute_loss", "accuracy", "as_xy"]


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------


class Schedule:
    """A set of steps: every ``k`` (plus 0), log-spaced, or explicit.

    Use :func:`parse_schedule` to build one. ``step in schedule`` tests membership; ``spec`` is the JSON form.
    """

    def __init__(self, every: Optional[int] = None, steps: Optional[Sequence[int]] = None, spec: Any = None):
        self.every = every
        self.steps = None if steps is None else frozenset(int(s) for s in steps)
        self.spec = spec

    def __contains__(self, step: int) -> bool:
        step = int(step)
        if step < 0:
            return False
        if self.every is not None:
            return step % self.every == 0
        return step in self.steps

    def beyond(self, t: int) -> List[int]:
        """Scheduled steps ``> t`` in increasing order (empty for an every-``k`` schedule, which has no end)."""
        if self.every is not None:
            return []
        return sorted(s for s in self.steps if s > t)

    def up_to(self, t: int) -> List[int]:
        """Scheduled steps ``<= t`` in increasing order."""
        if self.every is not None:
            return list(range(0, int(t) + 1, self.every))
        return sorted(s for s in self.steps if s <= t)

    def __repr__(self) -> str:
        return f"Schedule({self.spec!r})"


def parse_schedule(schedule) -> Schedule:
    """Parse a schedule spec.

    * ``int k >= 1``: steps ``0, k, 2k, ...``;
    * ``{"log": num, "max": T}``: step 0 and ``num`` log-spaced steps from 1 to ``T`` (``round(geomspace)``,
      duplicates removed, so possibly fewer than ``num``); an optional ``"every": k`` adds every ``k``-th step;
    * a list/tuple/set of non-negative ints: exactly those steps;
    * a :class:`Schedule`: returned as is.
    """
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, bool):
        raise TypeError("schedule must be an int, a {'log': num, 'max': T} dict or a list of steps, not a bool.")
    if isinstance(schedule, (int, np.integer)):
        if schedule < 1:
            raise ValueError(f"schedule={schedule}: an every-k schedule needs k >= 1.")
        return Schedule(every=int(schedule), spec=int(schedule))
    if isinstance(schedule, Mapping):
        unknown = set(schedule) - {"log", "max", "every"}
        if unknown or "log" not in schedule or "max" not in schedule:
            raise ValueError(
                f"A dict schedule must look like {{'log': num, 'max': T}} (optional 'every': k); got keys {sorted(schedule)}."
            )
        num, T = int(schedule["log"]), int(schedule["max"])
        if num < 1 or T < 1:
            raise ValueError(f"schedule {dict(schedule)}: 'log' and 'max' must be >= 1.")
        steps = {0} | set(int(round(v)) for v in np.geomspace(1, T, num))
        if "every" in schedule:
            k = int(schedule["every"])
            if k < 1:
                raise ValueError("schedule 'every' must be >= 1.")
            steps |= set(range(0, T + 1, k))
        spec = {k: int(v) for k, v in schedule.items()}
        return Schedule(steps=sorted(steps), spec=spec)
    if isinstance(schedule, (list, tuple, set, frozenset, np.ndarray, range)):
        steps = [int(s) for s in schedule]
        if any(s < 0 for s in steps):
            raise ValueError("schedule steps must be >= 0.")
        return Schedule(steps=steps, spec=sorted(set(steps)))
    raise TypeError(
        f"schedule must be an int k (every k steps), a {{'log': num, 'max': T}} dict or a list of steps, "
        f"got {type(schedule).__name__}."
    )


# --------------------------------------------------------------------------------------------
# losses (shared with lazyrich.dynamics.train)
# --------------------------------------------------------------------------------------------

LOSSES = ("cross_entropy", "mse")


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    return loss


def _targets_like(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if not y.is_floating_point():  # class labels -> one-hot
        if out.dim() != 2:
            raise ValueError(f"MSE with integer labels needs outputs (n, classes), got {tuple(out.shape)}.")
        _check_labels(y, out.shape[1])
        return F.one_hot(y.long(), out.shape[1]).to(out.dtype)
    y = y.to(out.dtype)
    if y.numel() != out.numel():
        raise ValueError(f"Targets with shape {tuple(y.shape)} do not match outputs {tuple(out.shape)}.")
    return y.reshape(out.shape)


def _check_labels(y: torch.Tensor, classes: int) -> None:
    """Integer labels must be ``(n,)`` and lie in ``[0, classes)`` (one class per model output)."""
    if y.dim() != 1:
        raise ValueError(
            f"Integer class labels must have shape (n,), got {tuple(y.shape)}; flatten them (e.g. y.reshape(-1))."
        )
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= classes:
        raise ValueError(
            f"Labels must lie in [0, {classes}) for a model with {classes} outputs, but the data hold labels "
            f"{lo}..{hi}; relabel the classes as 0..{classes - 1} or give the model {max(hi + 1, classes)} outputs."
        )


def compute_loss(out: torch.Tensor, y: torch.Tensor, loss: str, reduction: str = "mean") -> torch.Tensor:
    """``"cross_entropy"``: softmax cross-entropy on integer labels. ``"mse"``: ``0.5 ||f(x) - y||^2`` per sample
    (sum over outputs; integer labels become one-hot targets). ``reduction`` "mean" or "sum" over samples.

    Integer labels outside ``[0, number of outputs)`` raise ``ValueError`` (not torch's ``IndexError``)."""
    if loss == "cross_entropy":
        if y.is_floating_point():
            raise ValueError("cross_entropy needs integer class labels; use loss='mse' for float targets.")
        out2 = out.reshape(out.shape[0], -1)
        _check_labels(y, out2.shape[1])
        return F.cross_entropy(out2, y.long(), reduction=reduction)
    t = _targets_like(out, y)
    per = 0.5 * (out - t).pow(2).reshape(out.shape[0], -1).sum(1)
    return per.mean() if reduction == "mean" else per.sum()


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correct argmax predictions for integer labels; ``nan`` for float (regression) targets."""
    if y.is_floating_point():
        return float("nan")
    out2 = out.reshape(out.shape[0], -1)
    if out2.shape[1] == 1:
        return float("nan")
    return float((out2.argmax(1) == y.to(out2.device)).double().mean())


def as_xy(data, split: str = "train") -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` from a tuple or from a ``lazyrich.data.Dataset`` (its ``split`` part)."""
    if data is None or data is False:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, f"x_{split}") and hasattr(data, f"y_{split}"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    else:
        raise TypeError(f"Evaluation data must be a (x, y) tuple or a lazyrich.data.Dataset, got {type(data).__name__}.")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("Evaluation data must hold torch tensors.")
    if x.dim() == 0 or y.dim() == 0:
        raise ValueError("x and y need a leading sample axis (n, ...); add one with x.unsqueeze(0).")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}.")
    for name, t in (("inputs x", x), ("targets y", y)):
        if t.is_floating_point() or t.is_complex():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise ValueError(
                    f"The {split} {name} hold {bad} NaN or infinite values (of {t.numel()}); "
                    "remove or impute them before training or evaluating."
                )
    return x, y


# --------------------------------------------------------------------------------------------
# activation patterns
# --------------------------------------------------------------------------------------------

_RELU_LIKE = {
    F.relu,
    torch.relu,
    torch.relu_,
    torch.Tensor.relu,
    torch.Tensor.relu_,
    F.leaky_relu,
    F.relu6,
    F.prelu,
    torch.prelu,
}


class _ReluMode(TorchFunctionMode):
    def __init__(self, recorder: "ActivationRecorder"):
        super().__init__()
        self.rec = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_LIKE and args and isinstance(args[0], torch.Tensor):
            self.rec._capture(args[0])  # before the call: in-place ReLUs overwrite their input
        return func(*args, **kwargs)


class ActivationRecorder:
    """Binarized pre-activations (``z > 0``) of every ReLU-like call during a forward pass.

    Catches ``nn.ReLU``/``nn.LeakyReLU``/``nn.PReLU``/``nn.ReLU6`` modules *and* functional calls
    (``torch.relu``, ``F.relu``, ``Tensor.relu``, ``F.leaky_relu`` ...) through a ``TorchFunctionMode``, so models
    that call ``torch.relu`` in ``forward`` (e.g. ResNets) are covered. Each call is an *activation site*, named
    after the innermost module being run (``"<module>#k"`` for its k-th call within one forward, k >= 1).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._stack: List[str] = []
        self._counts: Dict[str, int] = {}
        self.sites: List[str] = []
        self.masks: List[torch.Tensor] = []

    def _capture(self, z: torch.Tensor) -> None:
        base = self._stack[-1] if self._stack else "model"
        k = self._counts.get(base, 0)
        self._counts[base] = k + 1
        self.sites.append(base if k == 0 else f"{base}#{k}")
        self.masks.append((z.detach() > 0).reshape(z.shape[0], -1).cpu())

    def run(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[str], List[torch.Tensor]]:
        """Forward ``x``; returns ``(output, site names, bool masks (n, units) per site)``."""
        self._counts, self.sites, self.masks = {}, [], []
        handles = []
        def push(label):
            def hook(mod, inp):
                self._stack.append(label)  # returns None: the input is left unchanged

            return hook

        def pop(mod, inp, out):
            if self._stack:
                self._stack.pop()  # must return None, or the hook would replace the output

        for name, m in self.model.named_modules():
            handles.append(m.register_forward_pre_hook(push(name or "model")))
            handles.append(m.register_forward_hook(pop))
        try:
            with _ReluMode(self):
                out = self.model(x)
        finally:
            for h in handles:
                h.remove()
            self._stack = []
        return out, list(self.sites), list(self.masks)


def _pack(masks: Sequence[torch.Tensor]) -> List[np.ndarray]:
    return [np.packbits(m.numpy().reshape(-1)) for m in masks]


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _hamming_packed(now: Sequence[np.ndarray], init: Sequence[np.ndarray], sizes: Sequence[int]) -> Tuple[float, List[float]]:
    """Hamming distance on bit-packed masks; same definition as :func:`lazyrich.dynamics.metrics.hamming_distance`."""
    if len(now) != len(init):
        raise ValueError(
            f"The model now has {len(now)} ReLU-like activation sites but had {len(init)} at initialization; "
            "the architecture must not change during tracking."
        )
    flips, units, per = 0, 0, []
    for a, b, n in zip(now, init, sizes):
        if a.shape != b.shape:
            raise ValueError("An activation site changed its number of units since initialization.")
        f = int(_POPCOUNT[np.bitwise_xor(a, b)].sum())
        flips += f
        units += n
        per.append(f / n if n else float("nan"))
    return (flips / units if units else float("nan")), per


# --------------------------------------------------------------------------------------------
# the tracker
# --------------------------------------------------------------------------------------------


def _sha1(t: torch.Tensor) -> str:
    a = t.detach().cpu().contiguous()
    if a.dtype == torch.bfloat16:
        a = a.float()
    return hashlib.sha1(a.numpy().tobytes()).hexdigest()


def resolve_layer_lrs(model: nn.Module, layer_lrs: Optional[Mapping[str, float]]) -> Optional[Dict[str, float]]:
    """Map ``{parameter or module name: multiplier}`` to ``{trainable parameter name: multiplier}``.

    A key matches a parameter name exactly or as a module prefix (``"0"`` covers ``"0.weight"`` and ``"0.bias"``).
    For a ``lazyrich.ntk.linearize`` model, the original model's names are accepted too.
    """
    if layer_lrs is None:
        return None
    if not isinstance(layer_lrs, Mapping):
        raise TypeError("layer_lrs must be a dict {parameter or module name: learning-rate multiplier}.")
    params = [n for n, p in model.named_parameters() if p.requires_grad]
    alias = {n: n for n in params}
    if hasattr(model, "_names") and hasattr(model, "theta"):  # LinearizedModel
        for orig in getattr(model, "_names"):
            alias[orig] = "theta." + orig.replace(".", "__")
    out: Dict[str, float] = {}
    for key, mult in layer_lrs.items():
        v = float(mult)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"layer_lrs[{key!r}] = {mult} must be a finite number >= 0.")
        hits = [alias[a] for a in alias if a == key or a.startswith(str(key) + ".")]
        if not hits:
            raise ValueError(f"layer_lrs names {key!r}, which matches no trainable parameter; valid names: {params}.")
        for h in hits:
            out[h] = v
    return out


class Tracker:
    """Record kernel, losses, distances, activation patterns and conserved quantities at scheduled steps.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained (its current parameters are ``theta_0`` unless the run directory already holds
        the tracker's initial state from an earlier, interrupted run).
    probe_x, probe_y : torch.Tensor
        The fixed probe set (``probe_size`` points of it, drawn with ``seed``, if given). ``probe_y`` (optional)
        is stored for kernel-target alignment.
    schedule : int, dict or list
        See :func:`parse_schedule`.
    run_dir, store
        Where to record: a :class:`RunStore`, or a directory (a store is created with a config describing the
        tracker).
    outputs : {"trace", "full", "diagonal"} or int
        Kernel over outputs, passed to :func:`lazyrich.ntk.empirical_ntk`.
    per_layer : bool
        Also store one kernel per trainable parameter tensor.
    train_data, test_data : (x, y) tuple or Dataset, None or False
        Evaluation sets for loss/accuracy. ``None``: ``lazyrich.dynamics.train`` fills them with its data set;
        ``False``: not recorded.
    loss : {"cross_entropy", "mse"}
    ntk_method : str
        ``method`` of :func:`empirical_ntk`.
    seed : int
        Seeds the probe subsample.
    probe_size : int, optional
        Use a seeded random subset of ``probe_x`` of this size.
    layer_lrs : dict, optional
        Per-parameter learning-rate multipliers: weights of ``delta_k`` and the balances, and the ``lr_scales``
        of the eNTK (the NTK of gradient flow with layer-specific learning rates, Kunin et al.). ``train`` sets
        it from its own ``layer_lrs``.
    record_kernel, record_activations, record_conserved : bool
        Switch parts off.
    record_patterns : bool
        Also store the binarized activation patterns of every recorded step as
        ``activations/step_XXXXXXXX.npz`` (one bit-packed ``uint8`` array per site, ``numpy.unpackbits(a)[:n]``
        reshaped to ``(n_probe, units)`` recovers the ``z > 0`` mask; ``sites`` and ``sizes`` arrays name them).
    eval_batch_size, ntk_batch_size : int
        Chunk sizes for evaluation and the eNTK.
    """

    def __init__(
        self,
        model: nn.Module,
        probe_x: torch.Tensor,
        probe_y: Optional[torch.Tensor] = None,
        *,
        schedule,
        run_dir: Union[str, Path, None] = None,
        store: Optional[RunStore] = None,
        outputs: Union[str, int] = "trace",
        per_layer: bool = False,
        train_data=None,
        test_data=None,
        loss: str = "cross_entropy",
        ntk_method: str = "auto",
        seed: int = 0,
        probe_size: Optional[int] = None,
        layer_lrs: Optional[Mapping[str, float]] = None,
        record_kernel: bool = True,
        record_activations: bool = True,
        record_conserved: bool = True,
        record_patterns: bool = False,
        eval_batch_size: int = 1024,
        ntk_batch_size: Optional[int] = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if not isinstance(probe_x, torch.Tensor) or probe_x.dim() == 0 or probe_x.shape[0] == 0:
            raise ValueError("probe_x must be a non-empty tensor (n, *input_shape).")
        if probe_y is not None:
            if not isinstance(probe_y, torch.Tensor) or probe_y.shape[0] != probe_x.shape[0]:
                raise ValueError("probe_y must be a tensor with one entry per probe point.")
        if probe_size is not None:
            if not (1 <= int(probe_size) <= probe_x.shape[0]):
                raise ValueError(f"probe_size={probe_size} must be in [1, {probe_x.shape[0]}].")
            g = torch.Generator().manual_seed(int(seed))
            idx = torch.randperm(probe_x.shape[0], generator=g)[: int(probe_size)].sort().values
            probe_x = probe_x[idx]
            probe_y = None if probe_y is None else probe_y[idx]
        if (probe_x.is_floating_point() or probe_x.is_complex()) and not bool(torch.isfinite(probe_x).all()):
            raise ValueError("probe_x holds NaN or infinite values; pick probe points from clean data.")
        self.model = model
        self.probe_x = probe_x.detach()
        self.probe_y = None if probe_y is None else probe_y.detach()
        self.schedule = parse_schedule(schedule)
        self.outputs = outputs
        self.per_layer = bool(per_layer)
        self.loss = _check_loss(loss)
        self.ntk_method = ntk_method
        self.seed = int(seed)
        self.train_data = train_data
        self.test_data = test_data
        for split, data in (("train", train_data), ("test", test_data)):  # validate early
            xy = as_xy(data, split)
            if xy is not None and tuple(xy[0].shape[1:]) != tuple(self.probe_x.shape[1:]):
                raise ValueError(
                    f"The probe points have shape {tuple(self.probe_x.shape[1:])} but the {split} inputs have "
                    f"{tuple(xy[0].shape[1:])}; draw probe_x from the same inputs the model is trained on."
                )
        self.record_kernel = bool(record_kernel)
        self.record_activations = bool(record_activations)
        self.record_conserved = bool(record_conserved)
        self.record_patterns = bool(record_patterns)
        if isinstance(eval_batch_size, bool) or not isinstance(eval_batch_size, (int, np.integer)) or eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be a positive int, got {eval_batch_size!r}.")
        self.eval_batch_size = int(eval_batch_size)
        self.ntk_batch_size = ntk_batch_size
        self.layer_lrs = resolve_layer_lrs(model, layer_lrs)

        if store is None and run_dir is None:
            raise ValueError("Tracker needs run_dir=... or store=... to record into.")
        self._check_probe_fits_model()
        if store is not None and run_dir is not None and Path(run_dir).resolve() != store.path.resolve():
            raise ValueError("Pass either run_dir or store, not two different locations.")
        if store is None:
            cfg = {
                "experiment": "tracker",
                "tracker": {
                    "schedule": self.schedule.spec,
                    "outputs": outputs,
                    "per_layer": self.per_layer,
                    "loss": self.loss,
                    "ntk_method": str(ntk_method),
                    "n_probe": int(self.probe_x.shape[0]),
                    "probe_sha1": _sha1(self.probe_x),
                },
            }
            store = RunStore(run_dir, cfg, seed=self.seed)
        self.store = store
        self._save_probe()
        self._init_state()
        self._K0: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ setup
    def _check_probe_fits_model(self) -> None:
        """One eval-mode forward of two probe points, so a probe of the wrong shape or dtype fails here, clearly."""
        x = self.probe_x[:2].to(self._device())
        try:
            with self._eval_mode(), torch.no_grad():
                self.model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"The model cannot take the probe points (shape {tuple(self.probe_x.shape[1:])}, "
                f"{self.probe_x.dtype}): {first}; give probe_x the per-sample shape and dtype of the training inputs."
            ) from e

    def _save_probe(self) -> None:
        d = self.store.path / "probe"
        px = self.probe_x.cpu().numpy()
        fx = d / "x.npy"
        if fx.exists():
            try:
                old = np.load(fx)
            except Exception:
                raise RunStoreError(f"{fx} is corrupt; delete it or use a new run directory.") from None
            if old.shape != px.shape or not np.array_equal(old, px):
                raise RunStoreError(
                    f"{self.store.path} was recorded on a different probe set; use the same probe (seed, size) "
                    "to resume, or choose a new run directory."
                )
        else:
            _atomic_npy(fx, px)
            if self.probe_y is not None:
                _atomic_npy(d / "y.npy", self.probe_y.cpu().numpy())

    def _params(self) -> Dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def _init_state(self) -> None:
        """theta_0, initial activation patterns and delta_k(0): loaded from ``tracker_init.pt`` if present."""
        path = self.store.path / "tracker_init.pt"
        params = self._params()
        if path.exists():
            try:
                st = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:
                raise RunStoreError(f"{path} is corrupt; delete the run directory or choose a new one.") from None
            if set(st["theta0"]) != set(params):
                raise RunStoreError(
                    f"{self.store.path} tracks a model with other parameters ({sorted(st['theta0'])[:5]}...); "
                    "use the same model to resume, or choose a new run directory."
                )
            dev = next(iter(params.values())).device
            self.theta0 = {n: t.to(dev) for n, t in st["theta0"].items()}
            self.sites = st["sites"]
            self.patterns0 = [t.numpy() for t in st["patterns0"]]
            self.pattern_sizes = st["pattern_sizes"]
        else:
            self.theta0 = {n: p.detach().clone() for n, p in params.items()}
            self.sites, self.patterns0, self.pattern_sizes = [], [], []
            if self.record_activations:
                with self._eval_mode(), torch.no_grad():
                    sites, masks = self._patterns()
                self.sites = sites
                self.patterns0 = _pack(masks)
                self.pattern_sizes = [int(m.numel()) for m in masks]
            st = {
                "theta0": {n: t.detach().cpu() for n, t in self.theta0.items()},
                "sites": self.sites,
                "patterns0": [torch.from_numpy(a) for a in self.patterns0],
                "pattern_sizes": self.pattern_sizes,
            }
            _atomic_torch(path, st)
        self.structure = M.two_layer_structure(self.model) if self.record_conserved else None
        self.pairs = M.linear_pairs(self.model) if self.record_conserved else []
        self.delta0 = M.two_layer_deltas(self.theta0, self.structure, self.layer_lrs) if self.structure else None

    def set_layer_lrs(self, layer_lrs: Optional[Mapping[str, float]]) -> None:
        """Set the learning-rate multipliers (used by ``train``); recomputes ``delta_k(0)``."""
        self.layer_lrs = resolve_layer_lrs(self.model, layer_lrs)
        if self.structure:
            self.delta0 = M.two_layer_deltas(self.theta0, self.structure, self.layer_lrs)

    class _EvalMode:
        def __init__(self, model):
            self.model = model

        def __enter__(self):
            self.flags = [(m, m.training) for m in self.model.modules()]
            self.model.eval()

        def __exit__(self, *exc):
            for m, t in self.flags:
                m.training = t
            return False

    def _eval_mode(self):
        return Tracker._EvalMode(self.model)

    def _device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def _patterns(self) -> Tuple[List[str], List[torch.Tensor]]:
        rec = ActivationRecorder(self.model)
        x = self.probe_x.to(self._device())
        sites: List[str] = []
        masks: List[List[torch.Tensor]] = []
        for s in range(0, x.shape[0], self.eval_batch_size):
            _, names, ms = rec.run(x[s : s + self.eval_batch_size])
            if not sites:
                sites, masks = names, [[m] for m in ms]
            else:
                for lst, m in zip(masks, ms):
                    lst.append(m)
        return sites, [torch.cat(lst, 0) for lst in masks]

    # ------------------------------------------------------------------ public
    def should_record(self, step: int) -> bool:
        """True if ``step`` is scheduled and not yet recorded in the run directory."""
        return int(step) in self.schedule and int(step) not in self.store.completed_steps()

    def step(self, step: int) -> bool:
        """Record everything if ``step`` is scheduled (and not recorded yet); return whether it acted."""
        if not self.should_record(step):
            return False
        self.record(int(step))
        return True

    def _evaluate(self, data, split) -> Tuple[float, float]:
        xy = as_xy(data, split)
        if xy is None:
            return float("nan"), float("nan")
        x, y = xy
        dev = self._device()
        tot, correct, n = 0.0, 0.0, x.shape[0]
        with torch.no_grad():
            for s in range(0, n, self.eval_batch_size):
                xb, yb = x[s : s + self.eval_batch_size].to(dev), y[s : s + self.eval_batch_size].to(dev)
                out = self.model(xb)
                tot += float(compute_loss(out, yb, self.loss, reduction="sum"))
                a = accuracy(out, yb)
                correct += a * xb.shape[0]
        return tot / n, correct / n

    def _kernel(self):
        return empirical_ntk(
            self.model,
            self.probe_x.to(self._device()),
            outputs=self.outputs,
            method=self.ntk_method,
            per_layer=self.per_layer,
            lr_scales=self.layer_lrs,
            batch_size=self.ntk_batch_size,
        )

    def _reference_kernel(self) -> Optional[np.ndarray]:
        if self._K0 is None:
            steps = self.store.kernel_steps()
            if steps:
                self._K0 = np.load(self.store.path / "kernels" / "total" / f"{step_file(steps[0])}.npy")
        return self._K0

    def record(self, step: int) -> Dict[str, Any]:
        """Record all quantities at ``step`` unconditionally; returns the metrics row."""
        row: Dict[str, Any] = {"step": int(step)}
        with self._eval_mode():
            if self.train_data is not None and self.train_data is not False:
                row["train_loss"], row["train_acc"] = self._evaluate(self.train_data, "train")
            if self.test_data is not None and self.test_data is not False:
                row["test_loss"], row["test_acc"] = self._evaluate(self.test_data, "test")
            if self.record_kernel:
                K = self._kernel()
                if self.per_layer:
                    total = None
                    for name, Kl in K.items():
                        self.store.save_kernel(step, Kl, layer=name)
                        total = Kl.clone() if total is None else total + Kl
                    K = total
                Kn = K.detach().to("cpu", torch.float32).numpy()
                self.store.save_kernel(step, Kn)
                row["kernel_norm"] = float(np.linalg.norm(Kn.astype(np.float64)))
                K0 = self._reference_kernel()
                # clipped at 0: 1 - cos can be -1e-16 by round-off for identical kernels
                row["kernel_dist_init"] = max(0.0, kernel_distance(K0, Kn)) if K0 is not None else float("nan")
            if self.record_activations and self.sites:
                with torch.no_grad():
                    sites, masks = self._patterns()
                packed = _pack(masks)
                total, per = _hamming_packed(packed, self.patterns0, self.pattern_sizes)
                if self.record_patterns:
                    buf = io.BytesIO()
                    np.savez(buf, sites=np.array(sites), sizes=np.array(self.pattern_sizes, dtype=np.int64),
                             n_probe=np.int64(self.probe_x.shape[0]),
                             **{f"site_{i}": a for i, a in enumerate(packed)})
                    atomic_write_bytes(self.store.path / "activations" / f"{step_file(step)}.npz", buf.getvalue())
                row["hamming"] = total
                for name, h in zip(self.sites, per):
                    row[f"hamming/{name}"] = h
        params = self._params()
        dist, per = M.param_distances(params, self.theta0)
        rd = M.relative_distances(params, self.theta0)
        norm0 = math.sqrt(sum(float((t.double() ** 2).sum()) for t in self.theta0.values()))
        row["param_dist"] = dist
        row["rd"] = dist / norm0 if norm0 > 0 else float("nan")
        for n in params:
            row[f"param_dist/{n}"] = per[n]
        for n in params:
            row[f"rd/{n}"] = rd[n]
        if self.structure is not None:
            delta = M.two_layer_deltas(params, self.structure, self.layer_lrs)
            _atomic_npy(self.store.path / "conserved" / "delta" / f"{step_file(step)}.npy", delta)
            row["delta/mean"] = float(delta.mean())
            row["delta/min"] = float(delta.min())
            row["delta/max"] = float(delta.max())
            row["delta/drift"] = float(np.abs(delta - self.delta0).max())
        for name, v in M.layer_balances(self.model, self.pairs, self.layer_lrs).items():
            row[f"balance/{name}"] = v
        self.store.append_metrics(row)  # last: marks the step as complete
        return row
