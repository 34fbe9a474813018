"""``train``: the training loop of the experiments (GD/SGD/momentum/Adam, schedules, resumable).

Step convention: ``theta(s)`` are the parameters after ``s`` optimizer updates. The loss row ``step = s`` is the
minibatch loss at ``theta(s)`` on the batch of step ``s`` (before update ``s + 1``); ``tracker.step(t)`` and the
checkpoint of step ``t`` see ``theta(t)``.

Data order is a pure function of ``(seed, step)``: epoch ``e`` uses the permutation ``torch.randperm(n,
generator=torch.Generator().manual_seed(h(seed, e)))`` (``h`` from ``numpy.random.SeedSequence([seed, e])``),
split into ``n // batch_size`` equal batches (the remainder is dropped). Hence a resumed run, or a linearized
model continued from the checkpoint at step ``t`` with ``start_step=t`` (the cone paper's switching
experiment), sees exactly the batches of the uninterrupted run.
"""

from __future__ import annotations

import math
import random
import sys
import warnings
from typing import Callable, Dict, Mapping, Optional, Union

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .store import RunStore
from .tracker import _check_loss, as_xy, compute_loss, parse_schedule, resolve_layer_lrs

__all__ = ["train", "data_order_seed", "lr_factor"]

OPTIMIZERS = ("sgd", "momentum", "adam")


def data_order_seed(seed: int, epoch: int) -> int:
    """Seed of the data permutation of ``epoch`` (stable across platforms)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0] & (2**63 - 1))


def lr_factor(schedule, step: int, steps: int) -> float:
    """Learning-rate multiplier at ``step`` of ``steps``.

    ``None``: 1. ``"cosine"``: ``0.5 (1 + cos(pi step / steps))``. ``"step"``: ``0.1`` after 50 % and
    ``0.01`` after 75 % of the steps. ``"linear"``: ``1 - step / steps``. A callable ``f(step) -> factor``.
    """
    if schedule is None:
        return 1.0
    if callable(schedule):
        v = float(schedule(step))
    elif schedule == "cosine":
        v = 0.5 * (1.0 + math.cos(math.pi * step / steps))
    elif schedule == "step":
        v = 1.0 if step < 0.5 * steps else (0.1 if step < 0.75 * steps else 0.01)
    elif schedule == "linear":
        v = 1.0 - step / steps
    else:
        raise ValueError(f"lr_schedule must be None, 'cosine', 'step', 'linear' or a callable, got {schedule!r}.")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"lr_schedule gave the factor {v} at step {step}; factors must be finite and >= 0.")
    return v


def _rng_state(devices) -> dict:
    np_state = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if devices:
        st["cuda"] = [torch.cuda.get_rng_state(d) for d in devices]
    return st


def _set_rng_state(st: dict, devices) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if devices and "cuda" in st:
        for d, s in zip(devices, st["cuda"]):
            torch.cuda.set_rng_state(s, d)


def _make_optimizer(model, optimizer, lr, momentum, weight_decay, mults):
    groups = []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        m = 1.0 if mults is None else mults.get(n, 1.0)
        groups.append({"params": [p], "lr": lr * m, "base_lr": lr * m, "name": n})
    if not groups:
        raise ValueError("The model has no trainable parameters; nothing to train.")
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.0, weight_decay=weight_decay)
    if optimizer == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)


def _progress(total, initial, enabled):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    disable = (not enabled) or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return tqdm(total=total, initial=initial, desc="train", disable=disable, dynamic_ncols=True)


def train(
    model: nn.Module,
    data,
    *,
    steps: int,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: Optional[int] = None,
    loss: str = "cross_entropy",
    lr_schedule: Union[None, str, Callable[[int], float]] = None,
    layer_lrs: Optional[Mapping[str, float]] = None,
    seed: int = 0,
    tracker=None,
    store: Optional[RunStore] = None,
    start_step: int = 0,
    checkpoint_steps=None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train ``model`` on ``data`` for ``steps`` total optimizer steps; resumable and deterministic.

    Parameters
    ----------
    model : torch.nn.Module
        Any module, e.g. ``lazyrich.ntk.linearize(model)``. Its train/eval mode is left as the caller set it.
    data : lazyrich.data.Dataset or (x, y)
        Training set (``x_train``/``y_train`` of a Dataset); moved to the model's device.
    steps : int
        Total number of optimizer steps ``T`` (absolute; training runs from ``start_step`` to ``T``).
    lr : float
        Base learning rate.
    optimizer : {"sgd", "momentum", "adam"}
        Plain (S)GD, SGD with heavy-ball ``momentum``, or Adam. ``weight_decay`` is the optimizer's L2 term.
    batch_size : int, optional
        ``None`` (or ``>= n``): full-batch gradient descent. Otherwise seeded minibatches (module docstring).
    loss : {"cross_entropy", "mse"}
        See :func:`lazyrich.dynamics.tracker.compute_loss` (MSE is ``0.5 ||f - y||^2`` averaged over samples).
    lr_schedule : None, "cosine", "step", "linear" or callable(step) -> factor
        Multiplies every learning rate at step ``s`` (a function of the absolute step and ``steps``).
    layer_lrs : dict, optional
        ``{parameter or module name: multiplier}``; learning rate of a parameter is ``lr * multiplier``.
    seed : int
        Seeds the data order and the torch RNG used inside the loop (dropout). The caller's global torch RNG
        state is restored on return.
    tracker : Tracker, optional
        ``tracker.step(t)`` is called at ``start_step`` and after each update. Its ``train_data``/``test_data``
        left as ``None`` become ``data``'s train/test splits; its ``layer_lrs`` are set to ``layer_lrs``.
    store : RunStore, optional
        Where checkpoints go (default: the tracker's store). If it holds a checkpoint at a step ``>= start_step``,
        training resumes from the latest one (model, optimizer, RNG states, loss history).
    start_step : int
        Step of the given model state (e.g. the switch point ``t``); data order and schedule continue from it.
    checkpoint_steps : int, dict or list, optional
        Schedule of checkpoints (:func:`lazyrich.dynamics.tracker.parse_schedule`); default the tracker's schedule,
        or every ``max(1, steps // 10)`` steps without a tracker. The final step is always checkpointed.
    progress : bool
        tqdm progress bar (only on a terminal).

    Returns
    -------
    pandas.DataFrame
        Columns ``step``, ``loss`` (minibatch loss at ``theta(step)``), ``lr`` (base lr times schedule factor),
        for all steps ``start_step .. steps-1`` (including those restored from a checkpoint).

    Raises
    ------
    FloatingPointError
        When the loss becomes NaN or infinite.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    for name, v in (("steps", steps), ("start_step", start_step), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}.")
    if start_step > steps:
        raise ValueError(f"start_step={start_step} is beyond steps={steps}; steps is the absolute final step.")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}.")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}.")
    for name, v in (("weight_decay", weight_decay), ("momentum", momentum)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}.")
    if weight_decay < 0 or not (0 <= momentum < 1 + 1e-12):
        raise ValueError("weight_decay must be >= 0 and momentum in [0, 1).")
    _check_loss(loss)
    lr_factor(lr_schedule, 0, max(steps, 1))  # validate early
    x, y = as_xy(data, "train")
    n = x.shape[0]
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be None (full batch) or a positive int, got {batch_size!r}.")
    full_batch = batch_size is None or int(batch_size) >= n
    bs = n if full_batch else int(batch_size)
    per_epoch = max(1, n // bs)

    mults = resolve_layer_lrs(model, layer_lrs)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The model has no trainable parameters; nothing to train.")
    device = params[0].device
    x, y = x.to(device), y.to(device)
    dtypes = {p.dtype for p in params if p.is_floating_point()}
    if x.is_floating_point() and len(dtypes) == 1 and x.dtype not in dtypes:
        (pd_,) = dtypes
        raise ValueError(
            f"The training inputs are {x.dtype} but the model's parameters are {pd_}; convert one to the other "
            f"(e.g. x.to({pd_}) or model.to({x.dtype}))."
        )

    if tracker is not None:
        if tuple(tracker.probe_x.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(
                f"The tracker's probe points have shape {tuple(tracker.probe_x.shape[1:])} but the training inputs "
                f"have {tuple(x.shape[1:])}; draw the probe set from the training inputs."
            )
        if tracker.train_data is None:
            tracker.train_data = (x, y)
        if tracker.test_data is None and hasattr(data, "x_test"):
            tracker.test_data = (data.x_test, data.y_test)
        if layer_lrs is not None:
            tracker.set_layer_lrs(layer_lrs)
        if store is None:
            store = tracker.store
        elif store.path.resolve() != tracker.store.path.resolve():
            raise ValueError("store and tracker.store point to different run directories; pass one of them.")
    if checkpoint_steps is not None:
        ckpt = parse_schedule(checkpoint_steps)
    elif tracker is not None:
        ckpt = tracker.schedule
    else:
        ckpt = parse_schedule(max(1, steps // 10))
    for what, sched in (("Tracker schedule", None if tracker is None else tracker.schedule),
                        ("checkpoint_steps", None if checkpoint_steps is None else ckpt)):
        late = [] if sched is None else sched.beyond(steps)
        if late:
            shown = ", ".join(map(str, late[:5])) + (f", ... ({len(late)} steps)" if len(late) > 5 else "")
            warnings.warn(
                f"{what} steps {shown} lie beyond the run's length steps={steps} and will never be recorded; "
                f"raise steps or drop those steps from the schedule.",
                UserWarning,
                stacklevel=2,
            )

    opt = _make_optimizer(model, optimizer, float(lr), float(momentum), float(weight_decay), mults)
    cuda_devs = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []

    hist_step, hist_loss, hist_lr = [], [], []
    s0 = int(start_step)
    resumed_state = None
    if store is not None:
        latest = store.latest_checkpoint()
        if latest is not None and latest[0] >= s0:
            if latest[0] > steps:
                raise ValueError(
                    f"{store.path} holds a checkpoint at step {latest[0]} > steps={steps}; use the original steps "
                    "or a new run directory."
                )
            s0, resumed_state = latest
            try:
                model.load_state_dict(resumed_state["model"])
                opt.load_state_dict(resumed_state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as e:
                raise ValueError(
                    f"The checkpoint at step {s0} in {store.path} does not fit this model/optimizer ({e}); "
                    "use the original model and optimizer settings or a new run directory."
                ) from None
            h = resumed_state.get("extra", {}).get("loss_history")
            if h is not None and len(h):
                keep = h[:, 0] >= start_step
                hist_step = [int(v) for v in h[keep, 0].tolist()]
                hist_loss = h[keep, 1].tolist()
                hist_lr = h[keep, 2].tolist()

    def checkpoint(t):
        if store is None:
            return
        hist = torch.tensor([hist_step, hist_loss, hist_lr], dtype=torch.float64).T.reshape(-1, 3)
        store.save_checkpoint(
            t,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": _rng_state(cuda_devs),
                "extra": {"loss_history": hist, "seed": int(seed), "steps": int(steps)},
            },
        )

    perm_cache: Dict[int, torch.Tensor] = {}

    def batch(s):
        if full_batch:
            return x, y
        e, b = divmod(s, per_epoch)
        if e not in perm_cache:
            perm_cache.clear()
            g = torch.Generator().manual_seed(data_order_seed(seed, e))
            perm_cache[e] = torch.randperm(n, generator=g).to(device)
        idx = perm_cache[e][b * bs : (b + 1) * bs]
        return x[idx], y[idx]

    with torch.random.fork_rng(devices=cuda_devs):
        if resumed_state is not None:
            _set_rng_state(resumed_state["rng"], cuda_devs)
        else:
            torch.manual_seed(data_order_seed(seed, 2**32))  # loop RNG (dropout); distinct from every epoch seed
        if tracker is not None:
            tracker.step(s0)
        if store is not None and (s0 in ckpt or s0 == steps) and s0 not in store.checkpoint_steps():
            checkpoint(s0)
        bar = _progress(steps, s0, progress)
        try:
            every = max(1, (steps - s0) // 200)
            for s in range(s0, steps):
                f = lr_factor(lr_schedule, s, steps)
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * f
                xb, yb = batch(s)
                opt.zero_grad(set_to_none=True)
                L = compute_loss(model(xb), yb, loss)
                lv = float(L.detach())
                if not math.isfinite(lv):
                    raise FloatingPointError(
                        f"Training loss became {'NaN' if math.isnan(lv) else 'infinite'} at step {s}; "
                        f"lower the learning rate (lr={lr})."
                    )
                L.backward()
                opt.step()
                hist_step.append(s)
                hist_loss.append(lv)
                hist_lr.append(float(lr) * f)
                t = s + 1
                if tracker is not None:
                    tracker.step(t)
                if store is not None and (t in ckpt or t == steps):
                    checkpoint(t)
                if bar is not None:
                    bar.update(1)
                    if (t - s0) % every == 0:
                        bar.set_postfix(loss=f"{lv:.4g}", refresh=False)
        finally:
            if bar is not None:
                bar.close()
    return pd.DataFrame({"step": pd.Series(hist_step, dtype="int64"), "loss": hist_loss, "lr": hist_lr})
