"""eNTK of LeNet-5 on a 10 000-point probe set: peak memory and time, and a spot check.

    python benchmarks/ntk_memory.py [--n 10000] [--threads 2]

Prints the peak resident memory of the process (``ru_maxrss``), the wall time, the kernel size,
and the maximum relative difference of a 64x64 corner against ``method="jacobian"``.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from lazyrich import models
from lazyrich.ntk import empirical_ntk


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = models.lenet5(seed=0).eval()
    x = torch.randn(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    K = empirical_ntk(model, x, outputs="trace")
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    ref = empirical_ntk(model, x[:64], outputs="trace", method="jacobian")
    err = ((K[:64, :64] - ref).abs().max() / ref.abs().max()).item()
    print(f"LeNet-5 eNTK trace, n={args.n}: kernel {tuple(K.shape)} ({K.numel() * 4 / 2**30:.2f} GiB), "
          f"{dt:.1f} s, peak RSS {peak:.2f} GiB (before: {rss0:.2f} GiB), "
          f"corner vs method='jacobian': rel. err {err:.1e}")


if __name__ == "__main__":
    main()
