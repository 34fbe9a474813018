"""Cost of the lazyrich Tracker relative to untracked training, measured in the same run.

Setup (defaults): LeNet-5 (``lazyrich.models.lenet5``, ReLU + max pooling) on synthetic 1x28x28 images with 10
classes (labels from a random linear teacher; timing does not depend on the data), SGD with momentum 0.9,
batch size 512 (the batch size of Kunin et al.'s LeNet-5 experiment, where Hamming and kernel distances are
tracked), ``--steps`` steps. The tracked arm records every 100 steps (and at step 0): the eNTK (trace over the
10 logits) on 512 probe points stored as float32, train/test loss and accuracy on ``--eval-size`` points each,
activation patterns + Hamming distance on the probe set, parameter distances / RD, layer balances, and writes a
checkpoint at each recorded step. The untracked arm runs the same ``train`` call with no tracker and no store.

Arms alternate (untracked, tracked, untracked, tracked, ...) ``--repeats`` times; the minimum wall time of each
arm is used (least disturbed by other processes). Overhead = (tracked - untracked) / untracked. Because wall
times on a shared machine are noisy, the time spent inside ``Tracker.record`` is also measured directly and
reported per recording and as a steady-state fraction of ``--every`` untracked steps.

    python benchmarks/tracker_overhead.py [--steps 300] [--batch-size 512] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from lazyrich.dynamics import RunStore, Tracker, train

try:
    from lazyrich.models import lenet5
except ImportError:  # pragma: no cover - fallback if the model zoo is unavailable
    lenet5 = None


def _lenet5(seed: int) -> torch.nn.Module:
    if lenet5 is not None:
        return lenet5(seed=seed)
    nn = torch.nn
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    teacher = torch.randn(784, 10, generator=g)
    y = (x.reshape(n, -1) @ teacher).argmax(1)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--probe", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--eval-size", type=int, default=1000)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    x, y = _data(args.n_train + args.eval_size, 0)
    xtr, ytr = x[: args.n_train], y[: args.n_train]
    xte, yte = x[args.n_train :], y[args.n_train :]
    probe = torch.randperm(args.n_train, generator=torch.Generator().manual_seed(1))[: args.probe]
    kw = dict(steps=args.steps, lr=args.lr, optimizer="momentum", batch_size=args.batch_size, seed=0, progress=False)

    def untracked() -> float:
        model = _lenet5(0)
        t0 = time.perf_counter()
        train(model, (xtr, ytr), **kw)
        return time.perf_counter() - t0

    def tracked() -> tuple:
        model = _lenet5(0)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            store = RunStore(d, {"experiment": "tracker_overhead", **{k: str(v) for k, v in vars(args).items()}}, seed=0)
            tr = Tracker(
                model, xtr[probe], ytr[probe], schedule=args.every, store=store,
                train_data=(xtr[: args.eval_size], ytr[: args.eval_size]), test_data=(xte, yte),
            )
            rec_time = [0.0]
            inner = tr.record

            def timed(step):
                t = time.perf_counter()
                out = inner(step)
                rec_time[0] += time.perf_counter() - t
                return out

            tr.record = timed
            train(model, (xtr, ytr), tracker=tr, **kw)
            total = time.perf_counter() - t0
            n_rec = len(store.completed_steps())
        return total, rec_time[0], n_rec

    untracked()  # warm-up (allocator, thread pools, first-call overheads)
    t_un, t_tr, t_rec, n_rec = [], [], [], 0
    for _ in range(args.repeats):
        t_un.append(untracked())
        tot, rec, n_rec = tracked()
        t_tr.append(tot)
        t_rec.append(rec)
    base, full = min(t_un), min(t_tr)
    rec = t_rec[t_tr.index(full)]
    print(f"LeNet-5, {args.steps} steps, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"{args.probe} probe points every {args.every} steps ({n_rec} recordings incl. step 0)")
    print(f"untracked training   : {base:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in t_un)})")
    print(f"tracked training     : {full:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in t_tr)})")
    print(f"  of which recording : {rec:8.2f} s   ({rec / max(n_rec, 1):.2f} s per recording)")
    print(f"overhead             : {100 * (full - base) / base:8.1f} %   (goal <= 15 %)")
    print(f"recording / untracked: {100 * rec / base:8.1f} %")
    per_interval = base * args.every / args.steps
    print(f"steady state         : {100 * rec / max(n_rec, 1) / per_interval:8.1f} %   "
          f"(one recording per {args.every} untracked steps; excludes the extra step-0 recording)")


if __name__ == "__main__":
    main()
