"""Command line: ``lazyrich run cone --preset quick|paper [key=value ...] --out DIR`` and ``lazyrich report RUN_DIR``.

Examples
--------
::

    lazyrich run cone --preset quick --out runs/cone-quick
    lazyrich run cone --preset paper data_dir=~/data/cifar10 --out runs/cone-resnet20
    lazyrich run cone --preset quick steps=1000 lr=0.1 switch_points=0,100,500 --out runs/try
    lazyrich report runs/cone-quick
    lazyrich check runs/cone-quick                      # verify every file's checksum; exit 1 if damaged
    lazyrich run cone --preset quick --show-config      # print the resolved config and exit

Rerunning the same ``run`` command on the same ``--out`` directory resumes it.  Configuration keys are the fields
of :class:`lazyrich.experiments.cone.ConeConfig`; an unknown key or a value of the wrong type is rejected.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``lazyrich`` command."""
    p = argparse.ArgumentParser(
        prog="lazyrich",
        description="Measure, explain and reproduce the learning dynamics of neural networks (lazy vs rich, eNTK).",
    )
    sub = p.add_subparsers(dest="command", metavar="{run,sweep,list,report,check}")
    sub.required = True

    r = sub.add_parser("run", help="run (or resume) an experiment into a run directory",
                       description="Run or resume an experiment. Rerunning the same command resumes it.")
    r.add_argument("experiment", help="experiment name (see `lazyrich list`; `lazyrich run NAME --help` lists its config keys)")
    r.add_argument("--preset", default="quick", help="configuration preset (default: quick; see `lazyrich list`)")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=500 lr=0.1")
    r.add_argument("--out", default=None, help="run directory (default: runs/<experiment>-<preset>)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: 1 for the MLP models, torch's default otherwise)")
    r.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    r.add_argument("--report", action="store_true", help="write the figures and report.html afterwards")
    r.add_argument("--show-config", action="store_true", help="print the resolved config as JSON and exit")
    r.add_argument("--workers", type=int, default=None,
                   help="processes for a preset with a grid (default: one per core)")

    s = sub.add_parser("sweep", help="run (or resume) a grid of configs on a local pool or a Ray cluster",
                       description="Run or resume a sweep: one run directory per grid cell, keyed by its config "
                                   "hash; rerunning the same command skips finished cells.")
    s.add_argument("experiment", help="experiment name (see `lazyrich list`)")
    s.add_argument("--preset", default="quick", help="configuration preset (default: quick); its own grid is used too")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides applied to every cell")
    s.add_argument("--grid", action="append", default=[], metavar="key=v1,v2,...",
                   help="a grid axis (repeat for more; tuple fields take [1,2],[3])")
    s.add_argument("--seeds", default=None, metavar="N|s1,s2,...",
                   help="a seed axis: N gives seeds 0..N-1, or a list such as 3,7,11")
    s.add_argument("--executor", default="local", choices=("local", "ray"), help="where cells run (default: local)")
    s.add_argument("--address", default=None, help="Ray cluster address host:port (default: start a local one)")
    s.add_argument("--workers", type=int, default=None, help="parallel cells (default: one per core)")
    s.add_argument("--out", default=None, help="sweep directory (default: runs/<experiment>-<preset>-sweep)")
    s.add_argument("--device", default=None, help="torch device passed to every cell")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--report", action="store_true", help="draw the sweep's figures afterwards")

    sub.add_parser("list", help="list every experiment with its presets",
                   description="List every registered experiment with its presets and a one-line description of each.")

    rp = sub.add_parser("report", help="write figures/*.png and report.html for a run or sweep directory")
    rp.add_argument("run_dir", help="a run directory written by `lazyrich run` or a sweep directory of `lazyrich sweep`")

    ck = sub.add_parser("check", help="verify a run directory against its manifest and list damaged files",
                        description="Verify every file of a run directory (presence, size, SHA-256, complete rows, "
                                    "no NaN in kernels). Exit status 0 if intact, 1 if damaged.")
    ck.add_argument("run_dir", help="a run directory written by `lazyrich run`")
    return p


def _resolve_config(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from lazyrich.experiments import registry

    try:
        return registry.get(args.experiment).config(args.preset, args.overrides)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))


def _list() -> str:
    """The text of ``lazyrich list``: each experiment, its description, its presets with theirs."""
    from lazyrich.experiments import registry

    lines = []
    for name in registry.names():
        exp = registry.get(name)
        lines.append(f"{name}: {exp.description}")
        for pname, p in exp.presets.items():
            grid = f" [grid: {', '.join(p.grid)}]" if p.grid else ""
            lines.append(f"  --preset {pname:<16} {p.description}{grid}")
    return "\n".join(lines)


def _experiment_help(name: str) -> str:
    """The text of ``lazyrich run NAME --help``: the experiment's config fields, defaults and meaning."""
    from lazyrich.experiments import field_help, registry

    exp = registry.get(name)
    lines = [f"usage: lazyrich run {name} [--preset {{{','.join(exp.presets)}}}] [key=value ...] [--out DIR]",
             "", exp.description, "", "config keys (key=value; defaults of the config class):"]
    for field, tp, default, meaning in field_help(exp.config_class):
        lines.append(f"  {field} ({tp}, default {default!r}): {meaning}")
    lines += ["", "options: --preset P, --out DIR, --no-progress, --threads N, --device D, --report, --show-config"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``lazyrich`` command (``python -m lazyrich`` too); returns the exit status.

    Bad arguments (unknown command, preset or config key, badly typed value) exit with status 2 and a
    one-line message from argparse; errors while running (e.g. a missing data directory or a run directory
    holding another config) print ``lazyrich: error: ...`` and return 1.
    """
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    if len(argv) >= 2 and argv[0] == "run" and not argv[1].startswith("-") and {"-h", "--help"} & set(argv):
        try:
            print(_experiment_help(argv[1]))
        except ValueError as exc:
            parser.error(str(exc))
        return 0
    # argparse cannot take positionals (the overrides) after an option such as --preset in one nargs="*"
    # slot, so leftover key=value items are collected here and anything else is rejected.
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if args.command not in ("run", "sweep") or e.startswith("-") or "=" not in e]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.command in ("run", "sweep"):
        args.overrides = list(args.overrides) + list(extra)
    from lazyrich.dynamics import RunStoreError
    from lazyrich.sweep import SweepError

    try:
        if args.command == "sweep":
            return _sweep(args, parser, grid=args.grid, seeds=args.seeds, executor=args.executor,
                          address=args.address)
        if args.command == "run":
            config = _resolve_config(args, parser)
            if args.show_config:
                from lazyrich.experiments.protocol import config_to_dict

                print(json.dumps(config_to_dict(config, args.experiment), indent=2))
                return 0
            if _preset_grid_left(args):
                return _sweep(args, parser)
            from lazyrich.experiments import registry

            run = registry.get(args.experiment).run
            out = Path(args.out) if args.out else Path("runs") / f"{args.experiment}-{args.preset}"
            print(f"lazyrich: running {args.experiment} ({args.preset}) into {out}", file=sys.stderr)
            path = run(config, out, **_run_kwargs(run, progress=not args.no_progress, threads=args.threads,
                                                  device=args.device))
            print(f"lazyrich: run directory {path}")
            if args.report:
                _report(path)
            return 0
        if args.command == "list":
            print(_list())
            return 0
        if args.command == "report":
            _report(Path(args.run_dir))
            return 0
        if args.command == "check":
            return _check(Path(args.run_dir))
    except (RunStoreError, SweepError, ConnectionError, ImportError, FileNotFoundError, ValueError, TypeError,
            FloatingPointError, MemoryError) as exc:
        print(f"lazyrich: error: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2  # pragma: no cover


def _run_kwargs(run, **kwargs):
    """The keyword arguments ``run`` accepts (``run(config, out_dir)`` is all the protocol requires); one it
    lacks but that was given (not None) is an error naming it."""
    import inspect

    params = inspect.signature(run).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    unknown = [k for k, v in kwargs.items() if k not in params and v is not None and k != "progress"]
    if unknown:
        raise ValueError(f"this experiment's run() takes no {', '.join(unknown)}; drop --{unknown[0]}.")
    return {k: v for k, v in kwargs.items() if k in params}


def _preset_grid_left(args: argparse.Namespace) -> bool:
    """Whether ``lazyrich run NAME --preset P key=value ...`` leaves grid axes of the preset unfixed."""
    from lazyrich.experiments import registry

    p = registry.get(args.experiment).presets[args.preset]
    fixed = {o.partition("=")[0].strip() for o in args.overrides}
    axes = list(p.grid or ()) + (["seed"] if p.seeds else [])
    return any(k not in fixed for k in axes)


def _sweep(args: argparse.Namespace, parser: argparse.ArgumentParser, *, grid=(), seeds=None, executor="local",
           address=None) -> int:
    """``lazyrich sweep`` (and ``lazyrich run`` of a preset with a grid): 0 when every cell finished, else 1."""
    from lazyrich.sweep import plan_sweep, run_sweep

    try:
        plan = plan_sweep(args.experiment, args.preset, args.overrides, grid or None, seeds)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    out = Path(args.out) if args.out else Path("runs") / f"{args.experiment}-{args.preset}" \
        f"{'-sweep' if args.command == 'sweep' else ''}"
    axes = ", ".join(f"{k} ({len(v)})" for k, v in plan.grid.items())
    print(f"lazyrich: sweep of {args.experiment} ({args.preset}) over {axes}: {len(plan.cells)} cells into {out}",
          file=sys.stderr)
    run_kwargs = {k: v for k, v in (("device", args.device), ("threads", getattr(args, "threads", None)))
                  if v is not None}
    res = run_sweep(args.experiment, args.preset, args.overrides, grid or None, seeds, out=out, executor=executor,
                    workers=args.workers, address=address, progress=not args.no_progress, run_kwargs=run_kwargs)
    print(f"lazyrich: sweep directory {res.out} ({len(res.table)} rows in results.csv)")
    if args.report:
        _report(res.out)
    if not res.ok:
        print(f"lazyrich: error: {len(res.failures)} of {res.n_cells} cells failed; see {res.out / 'failures.csv'} "
              "(tracebacks in each cell's error.txt) and rerun the same command to retry them.", file=sys.stderr)
        return 1
    return 0


def _report(run_dir: Path) -> Path:
    from lazyrich.dynamics import load_run
    from lazyrich.plots import experiment_report, format_headline, headline_numbers, report

    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory '{run_dir}' does not exist; pass a directory written by `lazyrich run`.")
    if (Path(run_dir) / "sweep.json").exists():  # a sweep directory: the figures its experiment declares
        out = experiment_report(run_dir)
        print(f"lazyrich: report written to {out}")
        return out
    from lazyrich.plots.report import regime_summary

    out = report(run_dir)
    verdicts = regime_summary(run_dir)
    if verdicts:
        print(f"  {verdicts}")
    for line in format_headline(headline_numbers(load_run(run_dir))):
        print(f"  {line}")
    print(f"lazyrich: report written to {out}")
    return out


def _check(run_dir: Path) -> int:
    """``lazyrich check RUN_DIR``: print what is damaged; 0 if intact, 1 if damaged."""
    from lazyrich.dynamics import RunStoreError
    from lazyrich.dynamics.manifest import check_run

    if not run_dir.is_dir() or not (run_dir / "config.json").exists():
        raise RunStoreError(f"{run_dir} is not a run directory (no config.json); pass a directory written by `lazyrich run`.")
    res = check_run(run_dir, checksums=True)
    n_sum = res.n_files - len(res.unrecorded)
    how = ("sizes and completeness only: no manifest (legacy run)" if res.legacy else
           f"{n_sum} checked against their SHA-256" + (f", {len(res.unrecorded)} for completeness only" if res.unrecorded else ""))
    if res.legacy:
        print(f"lazyrich check: {run_dir} has no manifest (written by an older lazyrich); checking sizes, headers, "
              "zip CRCs and NaN only")
    for d in res.damaged:
        print(f"  damaged: {d.path} {d.reason}")
    if res.set_aside:
        print(f"  set aside earlier (kept, not used): {', '.join(res.set_aside)}")
    if not res.legacy and res.unrecorded:
        names = ", ".join(res.unrecorded[:5]) + (f", ... ({len(res.unrecorded) - 5} more)" if len(res.unrecorded) > 5 else "")
        print(f"  not in the manifest (checked for completeness only): {names}")
    if res.unreadable_records:
        print(f"  manifest.jsonl: {res.unreadable_records} line(s) cut short by an interruption were ignored")
    if res.ok:
        print(f"lazyrich check: {run_dir}: intact ({res.n_files} files, {how})")
        return 0
    print(f"lazyrich check: {run_dir}: {len(res.damaged)} of {res.n_files} files damaged ({how}); rerun the same "
          "`lazyrich run` command on this directory to set them aside and recompute them")
    return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
