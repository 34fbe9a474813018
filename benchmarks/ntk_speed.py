"""eNTK speed: every method of lazyrich.empirical_ntk vs torch.func Jacobian contraction and vs
one forward+backward pass, all measured in the same run.

    python benchmarks/ntk_speed.py                 # all workloads, float32, 2 threads
    python benchmarks/ntk_speed.py --only W1 W4    # a subset
    python benchmarks/ntk_speed.py --skip-baseline # omit the slow torch.func baseline

Workloads (random data, float32): W1 MLP 784-1024-10 n=256 (trace, full); W2 LeNet-5 on 1x28x28
n=256 (trace, full); W3 ResNet-20 (16/32/64, BatchNorm eval) on 3x32x32 n=64 (trace);
W4 MLP 40-4096-1 n=1024 (trace). Times are medians of repeated runs after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.func import functional_call, jacrev, vmap

from lazyrich import models
from lazyrich.ntk import empirical_ntk


def timeit(fn, min_repeats=3, budget_s=3.0, max_repeats=15):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if times[-1] > 20:  # very slow: one timed run is enough
            break
    return statistics.median(times)


def torch_func_baseline(model, x, mode):
    """The torch.func tutorial recipe: per-sample Jacobians by vmap(jacrev), then einsum."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(fnet_single), (None, 0))(params, x)
    jac = [j.flatten(2) for j in jac.values()]
    if mode == "full":
        return sum(torch.einsum("Naf,Mbf->NMab", j, j) for j in jac)
    return sum(torch.einsum("Naf,Maf->NM", j, j) for j in jac)


def forward_backward(model, x):
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.float().pow(2).sum().backward()


def workloads():
    g = torch.Generator().manual_seed(0)
    return {
        "W1": (lambda: models.mlp([784, 1024, 10], seed=0), torch.randn(256, 784, generator=g), ("trace", "full")),
        "W2": (lambda: models.lenet5(seed=0), torch.randn(256, 1, 28, 28, generator=g), ("trace", "full")),
        "W3": (lambda: models.resnet20(seed=0), torch.randn(64, 3, 32, 32, generator=g), ("trace",)),
        "W4": (lambda: models.mlp([40, 4096, 1], seed=0), torch.randn(1024, 40, generator=g), ("trace",)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--methods",
        nargs="*",
        default=["auto", "structured"],
        help="methods to time (add 'jacobian' and 'ntk_vp' for the slow ones; 'jacobian' is the same "
        "algorithm as the torch.func baseline)",
    )
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, device={dev}")
    rows = []
    for name, (factory, x, modes) in workloads().items():
        if args.only and name not in args.only:
            continue
        model = factory().to(dev).eval()
        x = x.to(dev)

        def fb():
            forward_backward(model, x)
            sync()

        t_fb = timeit(fb)
        for mode in modes:
            res = {}
            for meth in args.methods:
                def run(meth=meth):
                    empirical_ntk(model, x, outputs=mode, method=meth)
                    sync()

                res[meth] = timeit(run)
            t_base = None
            if not args.skip_baseline:
                def base():
                    torch_func_baseline(model, x, mode)
                    sync()

                t_base = timeit(base, min_repeats=1, budget_s=0)
                # same numbers: check our kernel against the baseline once
                K = empirical_ntk(model, x, outputs=mode)
                B = torch_func_baseline(model, x, mode)
                err = ((K - B).abs().max() / B.abs().max()).item()
            else:
                err = float("nan")
            for meth, t in res.items():
                rows.append((name, mode, meth, t, t_base, t_fb, err))
                ratio_base = f"{t_base / t:8.1f}x" if t_base else "     n/a"
                print(
                    f"{name} {mode:5s} {meth:10s} {t:8.4f} s | torch.func {t_base if t_base else float('nan'):8.3f} s "
                    f"-> speed-up {ratio_base} | = {t / t_fb:6.1f} fwd+bwd ({t_fb:.4f} s) | rel.err vs baseline {err:.1e}",
                    flush=True,
                )
    print()
    print("| workload | outputs | method | time (s) | torch.func (s) | speed-up vs torch.func | in fwd+bwd passes |")
    print("|---|---|---|---|---|---|---|")
    for name, mode, meth, t, tb, tfb, _ in rows:
        sp = f"{tb / t:.1f}x" if tb else "n/a"
        tbs = f"{tb:.3f}" if tb else "n/a"
        print(f"| {name} | {mode} | {meth} | {t:.4f} | {tbs} | {sp} | {t / tfb:.1f} |")


if __name__ == "__main__":
    main()
