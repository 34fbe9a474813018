"""``python -m lazyrich.demo`` (``make demo``): the cone-effect experiment end to end in one to two minutes.

Runs the ``quick`` preset of :mod:`lazyrich.experiments.cone` (an MLP on locally generated MNIST-1D) into
``./runs/cone-quick`` -- resumable: rerunning continues or, when finished, only redraws -- then writes the
figures and the self-contained ``report.html``, and prints its location and the headline numbers: the kernel
distance ``S(0, T)`` (Zhou et al. eq. 4), the end of the fast kernel phase, the drop of the kernel velocity
(eq. 5) and the test accuracies of the switching experiment (Fig. 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; ``--out DIR`` changes the run directory, extra ``key=value`` items override the config."""
    p = argparse.ArgumentParser(prog="python -m lazyrich.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/cone-quick", help="run directory (default: runs/cone-quick)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (changes the run)")
    args = p.parse_args(list(argv) if argv is not None else None)

    from lazyrich.dynamics import RunStoreError, load_run
    from lazyrich.experiments.cone import preset, run
    from lazyrich.plots import headline_numbers, report

    try:
        config = preset("quick").with_overrides(args.overrides)
    except (ValueError, TypeError) as exc:
        p.error(str(exc))
    out = Path(args.out)
    print(f"lazyrich demo: cone-effect experiment, preset 'quick' -> {out}")
    print(f"  data {config.dataset}, model {config.model} {list(config.hidden)}, {config.optimizer} lr={config.lr}, "
          f"batch {config.batch_size}, T={config.steps} steps, eNTK on {config.n_probe} probe points")
    t0 = time.perf_counter()
    try:
        path = run(config, out, progress=not args.no_progress)
        html = report(path)
    except RunStoreError as exc:
        print(f"lazyrich demo: error: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    h = headline_numbers(load_run(path))
    print(f"\nfinished in {wall:.1f} s")
    print(f"report: {Path(html).resolve()}")
    print(f"  S(theta(0), theta(T={h['T']})) = {h['S_0T']:.4f}   (kernel distance, eq. 4)")
    print(f"  end of the fast kernel phase: step {h['phase_split_step']}   ({h['phase_split_method']})")
    if h.get("velocity_drop"):
        print(f"  kernel velocity: peak {h['v_peak']:.2e} -> late {h['v_late']:.2e}   "
              f"(drop x{h['velocity_drop']:.0f})")
    print(f"  standard training: test accuracy {h['test_acc']:.3f}")
    if h.get("switch_test_acc"):
        print("  switching std->lin (Fig. 2), test accuracy at T:")
        for t, a in h["switch_test_acc"].items():
            label = "fully linearized" if t == 0 else f"switch at t={t}"
            print(f"    {label:>22}: {a:.3f}")
        print(f"    {'standard only':>22}: {h['standard_test_acc']:.3f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
