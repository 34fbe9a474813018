"""Sweeps on the local executor (real spawned processes, real files, a real ``kill -9``).

The cells run ``tests/sweep_toy.py`` (a tiny test-only experiment that counts its calls in ``runs.txt`` and
writes its results table non-atomically, row by row).  Oracles: each cell's own ``results.csv`` and the
grid values it was given (aggregation); the call counts (skipping); an uninterrupted sweep of the same grid
(kill -9 and resume); the expected error sentences (bad input).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import sweep_toy
from lazyrich import cli
from lazyrich.experiments import registry
from lazyrich.sweep import SweepError, mean_ci, plan_sweep, run_sweep
from lazyrich.sweep.cells import DONE, ERROR, file_sha256

TESTS = str(Path(__file__).parent)
SRC = str(Path(sweep_toy.__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def toy():
    registry.register(sweep_toy.EXPERIMENT)
    yield
    registry._REGISTRY.pop(sweep_toy.NAME, None)


def _runs(out: Path) -> dict:
    """Number of times each cell's run() was called, by cell hash."""
    return {p.parent.name: len(p.read_text().splitlines()) for p in sorted((out / "cells").glob("*/runs.txt"))}


def test_aggregated_table_done_markers_and_skipped_rerun(tmp_path):
    out = tmp_path / "s"
    res = run_sweep("sweep-toy", "quick", ["rows=2"], grid=["x=1,2.5,4"], seeds=2, out=out, workers=2, progress=False)
    assert res.ok and res.n_cells == 6 and res.n_run == 6 and res.n_skipped == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == ["x", "seed", "step", "y", "cell"]
    assert len(table) == 6 * 2
    assert list(table.drop_duplicates(["x", "seed"])[["x", "seed"]].itertuples(index=False, name=None)) == [
        (1.0, 0), (1.0, 1), (2.5, 0), (2.5, 1), (4.0, 0), (4.0, 1)]
    man = json.loads((out / "sweep.json").read_text())
    assert man["grid"] == {"x": [1.0, 2.5, 4.0], "seed": [0, 1]}
    for c in man["cells"]:
        cell = out / "cells" / c["hash"]
        own = pd.read_csv(cell / "results.csv")
        done = json.loads((cell / DONE).read_text())
        assert done["sha256"] == file_sha256(cell / "results.csv") and done["rows"] == 2
        mine = table[table.cell == c["hash"]].reset_index(drop=True)
        assert (mine.x == c["params"]["x"]).all() and (mine.seed == c["params"]["seed"]).all()
        pd.testing.assert_frame_equal(mine[["step", "y"]], own[["step", "y"]])
        assert json.loads((cell / "config.json").read_text())["x"] == c["params"]["x"]
    assert _runs(out) == {c["hash"]: 1 for c in man["cells"]}
    pd.testing.assert_frame_equal(res.table, table, check_dtype=False)

    again = run_sweep("sweep-toy", "quick", ["rows=2"], grid=["x=1,2.5,4"], seeds=2, out=out, workers=2,
                      progress=False)
    assert again.n_run == 0 and again.n_skipped == 6
    assert _runs(out) == {c["hash"]: 1 for c in man["cells"]}
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), table)

    # a results file changed after its cell finished fails the checksum: that cell alone is redone
    victim = out / "cells" / man["cells"][0]["hash"]
    (victim / "results.csv").write_text("step,y,x\n0,999,1\n")
    third = run_sweep("sweep-toy", "quick", ["rows=2"], grid=["x=1,2.5,4"], seeds=2, out=out, workers=1,
                      progress=False)
    assert third.n_run == 1 and _runs(out)[victim.name] == 2
    assert (victim / "results.csv.incomplete").read_text().endswith("0,999,1\n")
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), table)


def test_mean_ci_is_the_t_interval():
    from scipy import stats

    df = pd.DataFrame({"x": [1, 1, 1, 2, 2], "seed": [0, 1, 2, 0, 1], "y": [1.0, 2.0, 4.0, 5.0, 5.0],
                       "cell": list("abcde")})
    s = mean_ci(df, "y")
    assert list(s.columns) == ["x", "y_mean", "y_lo", "y_hi", "n"]
    half = stats.t.ppf(0.975, 2) * pd.Series([1.0, 2.0, 4.0]).std() / 3 ** 0.5
    assert s.y_mean[0] == pytest.approx(7 / 3) and s.y_hi[0] - s.y_mean[0] == pytest.approx(half, rel=1e-12)
    assert s.y_lo[1] == s.y_hi[1] == 5.0 and s.n.tolist() == [3, 2]
    with pytest.raises(ValueError, match="no column"):
        mean_ci(df, "z")


def test_a_failing_cell_is_recorded_and_the_others_finish(tmp_path, capsys):
    out = tmp_path / "f"
    rc = cli.main(["sweep", "sweep-toy", "--grid", "x=1,2", "--grid", "fail=false,true", "--workers", "2",
                   "--out", str(out), "--no-progress"])
    assert rc == 1
    assert "2 of 4 cells failed" in capsys.readouterr().err
    fails = pd.read_csv(out / "failures.csv")
    assert len(fails) == 2 and fails.fail.all()  # both x values with fail=true
    assert fails.error.str.contains("RuntimeError: toy cell x=.* fails on purpose").all()
    for h in fails.cell:
        assert "fails on purpose" in (out / "cells" / h / ERROR).read_text()
        assert not (out / "cells" / h / DONE).exists()
    table = pd.read_csv(out / "results.csv")
    assert sorted(table.x.unique()) == [1.0, 2.0] and not table.fail.any() and len(table) == 2 * 3


def test_preset_grid_runs_through_lazyrich_run(tmp_path):
    out = tmp_path / "g"
    assert cli.main(["run", "sweep-toy", "--preset", "grid", "rows=2", "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns[:2]) == ["x", "seed"] and len(table) == 2 * 2 * 2
    # fixing every grid key runs one plain run directory
    one = tmp_path / "one"
    assert cli.main(["run", "sweep-toy", "--preset", "grid", "x=2", "seed=1", "--out", str(one), "--no-progress"]) == 0
    assert (one / "results.csv").exists() and not (one / "sweep.json").exists()
    # fixing one key keeps the other axis
    assert plan_sweep("sweep-toy", "grid", ["x=2"]).grid == {"seed": (0, 1)}
    assert plan_sweep("sweep-toy", "grid", [], ["x=3,4"], 3).grid == {"x": (3.0, 4.0), "seed": (0, 1, 2)}


_BAD = [
    (["--grid", "nope=1,2"], r"unknown grid key 'nope' for the sweep-toy experiment; valid keys: x, seed"),
    (["--grid", "x=1,abc"], r"x expects a number, got 'abc'"),
    (["--grid", "x="], r"grid axis x has no values; give at least one, e.g. --grid x=1,2"),
    (["--grid", "x"], r"not of the form key=v1,v2"),
    (["--grid", "x=1,1"], r"repeats a value"),
    ([], r"empty grid; add --grid key=v1,v2 or --seeds N"),
    (["--seeds", "0"], r"--seeds 0 gives no seeds"),
    (["--grid", "rows=1,0"], r"grid cell rows=0: rows must be >= 1"),
    (["--grid", "x=1,2", "--executor", "slurm"], r"invalid choice"),
    (["--grid", "x=1,2", "nope=3"], r"unknown config key 'nope'"),
]


@pytest.mark.parametrize("args, message", _BAD, ids=[" ".join(a) or "no-grid" for a, _ in _BAD])
def test_bad_sweep_arguments_exit_2_with_one_sentence(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["sweep", "sweep-toy", *args, "--out", str(tmp_path / "x"), "--no-progress"])
    assert info.value.code == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def test_a_sweep_dir_of_another_sweep_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "s"
    assert run_sweep("sweep-toy", "quick", [], grid={"x": [1.0, 2.0]}, out=out, workers=1, progress=False).ok
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    cases = [
        (dict(grid={"x": [1.0, 3.0]}), r"holds a sweep over another grid \(--grid x=1.0,2.0\); rerun with that grid"),
        (dict(grid={"x": [1.0, 2.0]}, overrides=["rows=5"]), r"holds a sweep with another config \(keys \['rows'\]"),
        (dict(grid={"seed": [0, 1]}, experiment="lenet-rebalance"), "holds a sweep of the sweep-toy experiment, not lenet-rebalance"),
    ]
    for kw, msg in cases:
        kw.setdefault("experiment", "sweep-toy")
        with pytest.raises(SweepError, match=msg):
            run_sweep(kw.pop("experiment"), "quick", kw.pop("overrides", []), out=out, workers=1, progress=False, **kw)
    rc = cli.main(["sweep", "sweep-toy", "--grid", "x=5,6", "--out", str(out), "--no-progress"])
    assert rc == 1 and "another grid" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="not empty and holds no sweep.json"):
        run_sweep("sweep-toy", "quick", [], grid={"x": [1.0]}, out=plain, progress=False)
    assert (plain / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="--address applies to the ray executor"):
        run_sweep("sweep-toy", "quick", [], grid={"x": [1.0]}, out=tmp_path / "a", address="1.2.3.4:6379")


def _children(pid: int) -> list:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


_DRIVER = ("import sys; sys.path.insert(0, {tests!r}); import sweep_toy; "
           "from lazyrich.experiments import registry; registry.register(sweep_toy.EXPERIMENT); "
           "from lazyrich.cli import main; raise SystemExit(main(sys.argv[1:]))")


def test_kill_9_then_rerun_redoes_only_the_cell_in_flight(tmp_path):
    args = ["sweep", "sweep-toy", "rows=4", "sleep=0.25", "--grid", "x=1,2,3", "--workers", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _DRIVER.format(tests=TESTS)]
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + args + ["--out", str(out)], env=env)
    # wait until one cell is finished and the next one has written part of its results table
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and victim is None:
        time.sleep(0.05)
        for cell in (out / "cells").glob("*") if (out / "cells").exists() else []:
            res = cell / "results.csv"
            if not (cell / DONE).exists() and res.exists() and res.read_text().count("\n") >= 2:
                if any((c / DONE).exists() for c in (out / "cells").iterdir()):
                    victim = cell
    assert victim is not None, "the sweep never reached a half-written cell"
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workers, "the sweep had no worker process"
    t = time.time()
    while any(_alive(w) for w in workers) and time.time() - t < 20:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "a worker outlived the killed sweep"
    assert not (victim / DONE).exists()
    finished_before = {c.name for c in (out / "cells").iterdir() if (c / DONE).exists()}
    assert finished_before and victim.name not in finished_before

    assert subprocess.run(cmd + args + ["--out", str(out)], env=env).returncode == 0
    runs = _runs(out)
    assert runs[victim.name] == 2 and all(runs[h] == 1 for h in finished_before)
    assert (victim / "results.csv.incomplete").exists()
    ref = tmp_path / "ref"
    assert subprocess.run(cmd + args + ["--workers", "3", "--out", str(ref)], env=env).returncode == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), pd.read_csv(ref / "results.csv"))


def test_report_of_a_sweep_dir_draws_the_declared_figures(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["sweep", "sweep-toy", "--grid", "x=1,2", "--workers", "1", "--out", str(out), "--no-progress",
                     "--report"]) == 0
    png = out / "figures" / "fig_sweep_toy.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    page = (out / "report.html").read_text()
    import base64
    import re

    tags = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(t) for t in tags] == [png.read_bytes()]
    assert "y versus step, one line per x" in page and "2 cells; 0 failed" in page
    # a foreign directory is refused in one sentence
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sweep.json").write_text("{}")
    assert cli.main(["report", str(tmp_path / "empty")]) == 1
    assert "holds neither config.json nor sweep.json" in capsys.readouterr().err
