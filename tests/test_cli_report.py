"""Tests of the command line (lazyrich.cli), the figures/HTML report (lazyrich.plots) and the demo.

Oracles: the PNGs embedded in report.html must be byte-identical to the files in figures/ and decode as PNG
images; the headline kernel distance S(0, T) must equal eq. (4) recomputed with numpy in float64 from the two
stored kernel files (tolerance 1e-6); the kernel-velocity numbers must equal those recomputed from the stored
kernels.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lazyrich import cli, demo
from lazyrich.dynamics import load_run
from lazyrich.plots import FIGURES, headline_numbers

TINY = [
    "n_train=400", "n_test=200", "hidden=32,32", "steps=60", "lr=0.2", "batch_size=50", "n_probe=32",
    "record_every=20", "record_log=5", "switch_points=0,20,40", "taus=20,40", "dts=20,40", "eval_batch_size=500",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = cli.main(["run", "cone", "--preset", "quick", *TINY, "--out", str(out), "--no-progress", "--report"])
    assert rc == 0
    return out


def _s(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return 1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def test_figures_exist_and_are_png(cli_run):
    figs = sorted((cli_run / "figures").glob("*.png"))
    assert {p.stem for p in figs} == set(FIGURES)
    import matplotlib.image as mpimg

    for p in figs:
        raw = p.read_bytes()
        assert raw.startswith(PNG_MAGIC), p.name
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
        assert img[..., :3].std() > 0.01  # not a blank canvas


def test_report_html_embeds_figures(cli_run):
    html = (cli_run / "report.html").read_text(encoding="utf-8")
    tags = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    files = {p.stem: p.read_bytes() for p in (cli_run / "figures").glob("*.png")}
    assert len(tags) == len(files) == len(FIGURES)
    decoded = [base64.b64decode(t, validate=True) for t in tags]
    assert all(d.startswith(PNG_MAGIC) for d in decoded)
    assert sorted(decoded) == sorted(files.values())  # byte-identical to figures/*.png
    # self-contained: no external resources, no scripts
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "<script" not in html
    # key numbers, config and env tables are there
    for needle in ("Key numbers", "Configuration (config.json)", "Environment (env.json)", "switch_points",
                   "Fig. 1a analogue", "Fig. 2 analogue", "kernel distance S(0, T=60)"):
        assert needle in html, needle


def test_headline_numbers_against_stored_kernels(cli_run):
    run = load_run(cli_run)
    h = headline_numbers(run)
    idx = pd.read_csv(cli_run / "kernels" / "index.csv")
    K0 = np.load(cli_run / idx["file"].iloc[0])
    KT = np.load(cli_run / idx["file"].iloc[-1])
    assert h["T"] == 60 and idx["step"].iloc[-1] == 60
    assert h["S_0T"] == pytest.approx(_s(K0, KT), abs=1e-6)
    assert 0.0 < h["S_0T"] < 1.0
    steps = idx["step"].to_numpy()
    v = np.array([_s(np.load(cli_run / idx["file"].iloc[i]), np.load(cli_run / idx["file"].iloc[i + 1]))
                  / (steps[i + 1] - steps[i]) for i in range(len(steps) - 1)])
    assert h["v_peak"] == pytest.approx(v.max(), rel=1e-4)
    assert h["v_late"] == pytest.approx(np.median(v[-max(1, len(v) // 3):]), rel=1e-4)
    sw = pd.read_csv(cli_run / "switching.csv")
    assert h["linearized_test_acc"] == pytest.approx(sw["test_acc"].iloc[0])
    assert h["standard_test_acc"] == pytest.approx(sw[sw["kind"] == "standard"]["test_acc"].iloc[0])
    assert set(h["switch_test_acc"]) == {0, 20, 40}
    assert h["phase_split_step"] in set(steps.tolist())


def test_cli_rejects_unknown_key_and_bad_values(tmp_path, capsys):
    out = tmp_path / "never"
    for item, msg in (("bogus=1", "unknown config key 'bogus'"), ("steps=abc", "steps expects an integer"),
                      ("--frobnicate", "unrecognized arguments")):
        with pytest.raises(SystemExit) as e:
            cli.main(["run", "cone", "--preset", "quick", item, "--out", str(out)])
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "cone", "--preset", "nope"])
    assert e.value.code == 2
    assert not out.exists()


def test_cli_unknown_experiment_or_preset_names_the_choices(capsys):
    for argv, msg in ((["run", "nope"], "unknown experiment 'nope'; choose one of cone"),
                      (["run", "cone", "--preset", "nope"], "unknown preset 'nope' for the cone experiment"),
                      (["run", "nope", "--help"], "unknown experiment 'nope'")):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert msg in capsys.readouterr().err


def test_cli_list_and_experiment_help_read_the_registry(capsys):
    from lazyrich.experiments import registry

    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in registry.names():
        exp = registry.get(name)
        assert f"{name}: {exp.description}" in out
        for pname, p in exp.presets.items():
            assert pname in out and p.description in out
    assert cli.main(["run", "cone", "--help"]) == 0
    out = capsys.readouterr().out
    assert "steps (int, default 3000):" in out and "switch_points" in out


def test_cli_show_config_applies_overrides(capsys):
    assert cli.main(["run", "cone", "--preset", "quick", "steps=4000", "hidden=7", "lr=0.05", "--show-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["steps"] == 4000 and cfg["hidden"] == [7] and cfg["lr"] == 0.05 and cfg["experiment"] == "cone"


def test_cli_runtime_errors_are_one_line(tmp_path, capsys):
    rc = cli.main(["run", "cone", "--preset", "paper", "--out", str(tmp_path / "p"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "data_dir=" in err and err.count("error:") == 1
    rc = cli.main(["report", str(tmp_path / "missing")])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("hi")
    rc = cli.main(["report", str(tmp_path / "foreign")])
    assert rc == 1 and "not a lazyrich run" in capsys.readouterr().err


def test_demo_resumes_and_reports(cli_run, capsys):
    """The demo on a finished run directory resumes (nothing recomputed) and prints the headline numbers."""
    before = (cli_run / "switching.csv").read_bytes()
    assert demo.main(["--out", str(cli_run), "--no-progress", *TINY]) == 0
    out = capsys.readouterr().out
    assert (cli_run / "switching.csv").read_bytes() == before
    assert "report.html" in out and "S(theta(0), theta(T=60))" in out
    assert "fully linearized" in out and "standard only" in out and "end of the fast kernel phase" in out


def test_python_m_lazyrich_entry_point():
    r = subprocess.run([sys.executable, "-m", "lazyrich", "run", "cone", "--preset", "quick", "steps=7777",
                        "--show-config"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 7777
