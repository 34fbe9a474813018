"""``report(run_dir)``: PNG figures plus one self-contained HTML page for a recorded run.

The page ``run_dir/report.html`` embeds every figure as a base64 ``data:image/png`` URI (no external files, no
scripts), followed by the key numbers (:func:`headline_numbers`), the switching table and the run's config and
environment records.  Figures are written to ``run_dir/figures/*.png`` (see :mod:`lazyrich.plots.figures`).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from lazyrich.plots.figures import FIGURES, save_figures

__all__ = ["headline_numbers", "format_headline", "report", "experiment_report", "figure_function"]


def _finite(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def headline_numbers(run) -> Dict[str, Any]:
    """Key numbers of a run (a :class:`lazyrich.dynamics.Run`).

    Returns
    -------
    dict
        ``T`` (last recorded step); ``S_0T`` = ``S(theta(0), theta(T))`` (eq. 4) from the kernel-distance
        matrix; ``phase_split_step`` / ``phase_split_method``; ``v_peak`` (largest kernel velocity, eq. 5,
        between consecutive recorded kernels), ``v_late`` (median velocity over the last third of the
        intervals) and ``velocity_drop`` = ``v_peak / v_late``; final ``train_loss``, ``train_acc``,
        ``test_loss``, ``test_acc``; and, when ``switching.csv`` exists, ``switch_test_acc`` /
        ``switch_test_loss`` (``{t: value}`` for every switch point, ``t = 0`` being fully linearized
        training), ``standard_test_acc`` / ``standard_test_loss`` and ``linearized_test_acc`` /
        ``linearized_test_loss``.  Missing quantities are ``None``.
    """
    out: Dict[str, Any] = {}
    steps = np.asarray(run.kernel_steps)
    out["T"] = int(steps[-1]) if len(steps) else None
    out["n_kernels"] = int(len(steps))
    if len(steps) >= 2:
        D = np.asarray(run.kernel_distance_matrix())
        out["S_0T"] = float(D[0, -1])
    else:
        out["S_0T"] = None
    try:
        ps = run.phase_split()
        out["phase_split_step"] = int(ps["step"])
        out["phase_split_method"] = str(ps.get("method", ""))
    except Exception:
        out["phase_split_step"] = None
        out["phase_split_method"] = None
    try:
        vel = run.kernel_velocity()
        v = vel["velocity"].to_numpy(dtype=float)
    except Exception:
        v = np.array([])
    if len(v) >= 3:
        out["v_peak"] = float(np.max(v))
        out["v_late"] = float(np.median(v[-max(1, len(v) // 3):]))
        out["velocity_drop"] = out["v_peak"] / out["v_late"] if out["v_late"] > 0 else None
    else:
        out["v_peak"] = out["v_late"] = out["velocity_drop"] = None
    m = run.metrics
    last = m.iloc[-1] if m is not None and len(m) else None
    for col in ("train_loss", "train_acc", "test_loss", "test_acc", "param_dist", "hamming"):
        out[col] = _finite(last[col]) if last is not None and col in m.columns else None
    sw = run.switching()
    if sw is not None and len(sw):
        kind = sw["kind"] if "kind" in sw.columns else None
        std = sw[kind == "standard"] if kind is not None else sw.iloc[0:0]
        lin = sw[kind != "standard"] if kind is not None else sw
        lin = lin.sort_values("switch_step")
        out["switch_test_acc"] = {int(t): float(a) for t, a in zip(lin["switch_step"], lin["test_acc"])}
        out["switch_test_loss"] = {int(t): float(a) for t, a in zip(lin["switch_step"], lin["test_loss"])}
        out["standard_test_acc"] = float(std["test_acc"].iloc[0]) if len(std) else None
        out["standard_test_loss"] = float(std["test_loss"].iloc[0]) if len(std) else None
        out["linearized_test_acc"] = out["switch_test_acc"].get(0)
        out["linearized_test_loss"] = out["switch_test_loss"].get(0)
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def format_headline(h: Dict[str, Any]) -> List[str]:
    """Human-readable lines for the numbers of :func:`headline_numbers`."""
    lines = [
        f"kernel distance S(0, T={h.get('T')}) = {_fmt(h.get('S_0T'))}",
        f"end of the fast kernel phase: step {_fmt(h.get('phase_split_step'))} ({h.get('phase_split_method') or 'n/a'})",
        f"kernel velocity: peak {_fmt(h.get('v_peak'))}, late {_fmt(h.get('v_late'))}, "
        f"drop x{_fmt(h.get('velocity_drop'), 3)}",
        f"standard training: test acc {_fmt(h.get('test_acc'))}, test loss {_fmt(h.get('test_loss'))}",
    ]
    if "switch_test_acc" in h:
        pairs = ", ".join(f"t={t}: {a:.3f}" for t, a in h["switch_test_acc"].items())
        lines.append(f"switching std->lin, test acc at T: {pairs}; standard only: {_fmt(h.get('standard_test_acc'))}")
    return lines


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}td,th{border:1px solid #ddd;padding:3px 9px;text-align:left;
vertical-align:top}th{background:#f4f4f4}figure{margin:1.2em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444;margin-top:.3em}code{background:#f4f4f4;padding:0 3px}.muted{color:#777}
"""


def _table(rows: List[tuple], header: Optional[tuple] = None) -> str:
    parts = ["<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _value(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return _fmt(v) if isinstance(v, float) else str(v)


def _experiment_figures(path: Path, exp: str, fig_dir: Path) -> Dict[str, tuple]:
    """The figures a registered experiment declares (``EXPERIMENT.figures``), drawn from its run directory:
    ``{name: (png path, caption)}``; a figure whose data are missing is skipped."""
    import lazyrich.plots as plots
    from lazyrich.experiments import registry
    from lazyrich.plots.figures import save_figure

    if exp not in registry.names() or not (path / "results.csv").exists():
        return {}  # cone-style runs draw from the stored kernels through FIGURES instead
    out = {}
    for name in registry.get(exp).figures:
        fn = getattr(plots, name, None)
        if fn is None or name in FIGURES:
            continue
        try:
            fig = fn(path)
        except (FileNotFoundError, ValueError, KeyError):
            continue
        out[name] = (save_figure(fig, fig_dir / f"{name}.png"), (fn.__doc__ or name).strip().splitlines()[0])
    return out


def regime_summary(path) -> Optional[str]:
    """One line counting the ``regime`` verdicts (:func:`lazyrich.dynamics.classify_regime`) of a run's
    results table (``results.csv``, or the registered experiment's ``results_file``, e.g. cone's
    ``switching.csv``), or None when it has no regime column."""
    from lazyrich.experiments import registry

    path = Path(path)
    meta = None if (path / "sweep.json").exists() else _read_json(path / "config.json")
    exp = meta.get("experiment") if meta else None
    f = path / (registry.get(exp).results_file if exp in registry.names() else "results.csv")
    if not f.exists():
        return None
    import pandas as pd

    df = pd.read_csv(f)
    if "regime" not in df.columns:
        return None
    keys = [c for c in ("tau", "delta", "seed", "alpha", "activation", "d") if c in df.columns]
    per_run = df.drop_duplicates(keys)["regime"] if keys else df["regime"].iloc[:1]
    counts = per_run.value_counts()
    return "regime verdicts (classify_regime): " + ", ".join(f"{k} × {v}" for k, v in counts.items())


def report(run_dir, *, title: Optional[str] = None) -> Path:
    """Write ``run_dir/figures/*.png`` and the self-contained page ``run_dir/report.html``; return its path.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by :class:`lazyrich.dynamics.RunStore` (e.g. by
        :func:`lazyrich.experiments.cone.run`).
    title : str, optional
        Page title (default: the experiment name and run directory).
    """
    from lazyrich.dynamics import load_run
    from lazyrich.dynamics.store import atomic_write_bytes

    run = load_run(run_dir)
    path = Path(run.path)
    fig_dir = path / "figures"
    figs = save_figures(run, fig_dir)
    h = headline_numbers(run)
    cfg = run.config if isinstance(run.config, dict) else {}
    env = run.env if isinstance(getattr(run, "env", None), dict) else {}
    exp = cfg.get("experiment", "run")
    title = title or f"lazyrich {exp} run: {path.name}"

    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class='muted'>Run directory <code>{html.escape(str(path.resolve()))}</code>; "
            f"created {html.escape(str(env.get('created', '?')))}.</p>"]
    if exp == "cone":
        body.append(
            "<p>Reproduction of Zhou, Yang, Ren, Sugiyama, Yan, <i>On the cone effect in the learning dynamics</i>: "
            "the empirical NTK H(θ(t)) on a fixed probe set is recorded during standard training; S is the kernel "
            "distance of eq. (4), v the kernel velocity of eq. (5). Phase I: the kernel moves fast; phase II: it "
            "keeps moving but within a narrow cone. The switching experiment continues training from step t with "
            "the linearized model.</p>")
    body.append("<h2>Key numbers</h2>")
    rows = [(line,) for line in format_headline(h)]
    verdicts = regime_summary(path)
    if verdicts:
        rows.insert(0, (verdicts,))
    body.append(_table(rows))
    key_rows = [(k, _value(v)) for k, v in h.items() if not isinstance(v, dict)]
    body.append("<details><summary>all key numbers</summary>" + _table(key_rows, ("quantity", "value")) + "</details>")

    body.append("<h2>Figures</h2>")
    for name, fpath in figs.items():
        data = base64.b64encode(Path(fpath).read_bytes()).decode("ascii")
        cap = FIGURES[name][1]
        body.append(f"<figure id='{html.escape(name)}'><img alt='{html.escape(name)}' "
                    f"src=\"data:image/png;base64,{data}\">"
                    f"<figcaption><b>{html.escape(name)}.png</b> — {html.escape(cap)}</figcaption></figure>")
    for name, (fpath, cap) in _experiment_figures(path, exp, fig_dir).items():
        data = base64.b64encode(Path(fpath).read_bytes()).decode("ascii")
        body.append(f"<figure id='{html.escape(name)}'><img alt='{html.escape(name)}' "
                    f"src=\"data:image/png;base64,{data}\">"
                    f"<figcaption><b>{html.escape(name)}.png</b> — {html.escape(cap)}</figcaption></figure>")
    missing = [n for n in FIGURES if n not in figs]
    if missing:
        body.append(f"<p class='muted'>Not drawn (data missing): {html.escape(', '.join(missing))}.</p>")

    sw = run.switching()
    if sw is not None and len(sw):
        body.append("<h2>Switching experiment (switching.csv)</h2>")
        cols = list(sw.columns)
        body.append(_table([tuple(_value(v) if isinstance(v, float) else v for v in r)
                            for r in sw.itertuples(index=False)], tuple(cols)))

    body.append("<h2>Configuration (config.json)</h2>")
    body.append(_table([(k, _value(v)) for k, v in cfg.items()], ("key", "value")))
    body.append("<h2>Environment (env.json)</h2>")
    body.append(_table([(k, _value(v)) for k, v in env.items()], ("key", "value")))
    m = run.metrics
    if m is not None and len(m):
        body.append("<h2>Files</h2>")
        body.append(f"<p>metrics.csv: {len(m)} rows × {len(m.columns)} columns; "
                    f"{h.get('n_kernels', 0)} stored kernels under kernels/; figures under figures/.</p>")

    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    out = path / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


# ------------------------------------------------------------------------------------------------ any experiment


def _read_json(path: Path) -> Optional[dict]:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def figure_function(experiment, name: str):
    """The figure function ``name`` declared by ``experiment``: ``"module:function"``, a function of
    :mod:`lazyrich.plots`, or one defined next to the experiment's ``run`` (ValueError otherwise)."""
    import importlib
    import sys

    import lazyrich.plots as plots

    if ":" in name:
        mod, _, attr = name.partition(":")
        fn = getattr(importlib.import_module(mod), attr, None)
    else:
        fn = getattr(plots, name, None) or getattr(sys.modules.get(experiment.run.__module__), name, None)
    if not callable(fn):
        raise ValueError(f"the {experiment.name} experiment declares figure {name!r}, which is no function of "
                         "lazyrich.plots nor of its own module; fix its EXPERIMENT.figures.")
    return fn


def experiment_report(path, *, title: Optional[str] = None) -> Path:
    """Figures and ``report.html`` for a sweep directory (a run directory goes to :func:`report`).

    The experiment is read from ``sweep.json`` and looked up in the registry; each of its declared
    ``figures`` (resolved by :func:`figure_function`) is called with the sweep directory, whose
    ``results.csv`` is the aggregated table, and saved to ``figures/<name>.png``.  A figure that cannot be
    drawn from it is listed with its reason, not raised.  The page embeds the figures and lists the grid,
    the failures of the latest run and the base config.
    """
    from lazyrich.dynamics.store import atomic_write_bytes
    from lazyrich.experiments import registry
    from lazyrich.plots.figures import save_figure

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"'{path}' does not exist; pass a directory written by `lazyrich run` or "
                                "`lazyrich sweep`.")
    sweep = _read_json(path / "sweep.json")
    is_sweep = sweep is not None and sweep.get("format") == "lazyrich-sweep"
    meta = sweep if is_sweep else _read_json(path / "config.json")
    if meta is None or "experiment" not in meta:
        raise FileNotFoundError(f"'{path}' holds neither config.json nor sweep.json, so it is not a lazyrich run or sweep; "
                                "pass a directory written by "
                                "`lazyrich run` or `lazyrich sweep`.")
    if not is_sweep:
        return report(path, title=title)
    exp = registry.get(meta["experiment"])
    fig_dir = path / "figures"
    drawn, skipped = {}, []
    for name in exp.figures:
        try:
            fig = figure_function(exp, name)(path)
        except Exception as exc:  # a figure that does not apply to this directory is reported, not raised
            skipped.append((name, f"{type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        if fig is None:
            skipped.append((name, "no data"))
            continue
        drawn[name] = save_figure(fig, fig_dir / f"{name}.png")
    kind = "sweep" if is_sweep else "run"
    title = title or f"lazyrich {exp.name} {kind}: {path.name}"
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(exp.description)}</p>",
            f"<p class='muted'>Directory <code>{html.escape(str(path.resolve()))}</code>.</p>"]
    if is_sweep:
        body.append("<h2>Grid</h2>")
        body.append(_table([(k, ", ".join(map(str, v))) for k, v in sweep.get("grid", {}).items()], ("key", "values")))
        n = len(sweep.get("cells", []))
        res = path / "results.csv"
        fails = path / "failures.csv"
        import pandas as pd

        n_fail = len(pd.read_csv(fails)) if fails.exists() else 0
        n_rows = len(pd.read_csv(res)) if res.exists() else 0
        body.append(f"<p>{n} cells; {n_fail} failed in the latest run; results.csv: {n_rows} rows.</p>")
        if n_fail:
            f = pd.read_csv(fails)
            body.append(_table([tuple(r) for r in f.itertuples(index=False)], tuple(f.columns)))
    body.append("<h2>Figures</h2>")
    for name, fpath in drawn.items():
        data = base64.b64encode(Path(fpath).read_bytes()).decode("ascii")
        fn = figure_function(exp, name)
        cap = (fn.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        body.append(f"<figure id='{html.escape(name)}'><img alt='{html.escape(name)}' "
                    f"src=\"data:image/png;base64,{data}\"><figcaption><b>{html.escape(name)}.png</b> — "
                    f"{html.escape(cap)}</figcaption></figure>")
    if skipped:
        body.append("<p class='muted'>Not drawn: " + html.escape("; ".join(f"{n} ({why})" for n, why in skipped))
                    + ".</p>")
    if not exp.figures:
        body.append("<p class='muted'>This experiment declares no figures.</p>")
    cfg = meta.get("base_config", meta) if is_sweep else meta
    body.append("<h2>Configuration</h2>")
    body.append(_table([(k, _value(v)) for k, v in cfg.items()], ("key", "value")))
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    out = path / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
