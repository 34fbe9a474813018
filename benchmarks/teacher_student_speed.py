"""Batched teacher–student training: C cells trained together vs the same cells one after another.

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/teacher_student_speed.py [--cells 64] [--steps 300]``

Each cell is one (tau, delta) student of :mod:`lazyrich.experiments.teacher_student` (same teacher, data and
base student per seed; lr 5e-3/tau^2, float64). Three ways, the same numbers (checked, printed):

* batched: all cells in one :func:`lazyrich.dynamics.train_two_layer_batched` call (cell axis first);
* one after another through the same function (C = 1 per call);
* one after another as a plain ``nn.Module`` + ``torch.optim.SGD`` loop (what one would write per cell).

Problem sizes: ``quick`` (d=20, h=50, n=200: the quick preset) and ``fig1a`` (d=2, h=50, n=20: Kunin Fig. 1a).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lazyrich.dynamics import train_two_layer_batched
from lazyrich.experiments.teacher_student import TeacherStudentConfig, _problem
from lazyrich.models.teacher_student import scale_student


def cells(C, d, n):
    cfg = TeacherStudentConfig(d=d, n_train=n, n_test=1, n_probe=min(n, 200))
    x, y, _, _, w, a = _problem(cfg, 0)
    k = int(np.ceil(np.sqrt(C)))
    grid = [(tau, delta) for tau in np.geomspace(0.1, 2, k) for delta in np.linspace(-1, 1, k)][:C]
    W, A = map(torch.stack, zip(*[scale_student(w, a, t, dl) for t, dl in grid]))
    lr = torch.tensor([5e-3 / t ** 2 for t, _ in grid], dtype=torch.float64)
    return x, y, W, A, lr


def plain_loop(x, y, w, a, lr, steps):
    class S(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.a = torch.nn.Parameter(w.clone()), torch.nn.Parameter(a.clone())

        def forward(self, x):
            return torch.relu(x @ self.w.T) @ self.a

    m = S()
    opt = torch.optim.SGD(m.parameters(), lr=float(lr))
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((m(x) - y) ** 2).mean()).backward()
        opt.step()
    return m.w.detach(), m.a.detach()


def bench(name, C, d, n, steps):
    x, y, W, A, lr = cells(C, d, n)
    t0 = time.perf_counter()
    res = train_two_layer_batched(W, A, x, y, lr=lr, loss_tol=0.0, max_steps=steps)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    seq = [train_two_layer_batched(W[c:c + 1], A[c:c + 1], x, y, lr=lr[c:c + 1], loss_tol=0.0, max_steps=steps)
           for c in range(C)]
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = [plain_loop(x, y, W[c], A[c], lr[c], steps) for c in range(C)]
    t_plain = time.perf_counter() - t0
    d_seq = max(float((res.w[c] - s.w[0]).abs().max()) for c, s in enumerate(seq))
    d_plain = max(float((res.w[c] - p[0]).abs().max()) for c, p in enumerate(plain))
    print(f"{name}: {C} cells, d={d}, h={W.shape[1]}, n={n}, {steps} steps | batched {t_batched:.2f} s | "
          f"one by one (same function) {t_seq:.2f} s ({t_seq / t_batched:.1f}x) | plain nn.Module loop {t_plain:.2f} s "
          f"({t_plain / t_batched:.1f}x) | max |w diff| {d_seq:.1e} (same fn), {d_plain:.1e} (plain)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bench("fig1a", args.cells, 2, 20, args.steps)
    bench("quick", args.cells, 20, 200, args.steps)
