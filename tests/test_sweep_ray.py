"""Sweeps on a real local Ray cluster (``ray.init(num_cpus=2)``, no mocks).

Oracles: the same sweep on the local executor (tables equal, cell hashes included); the call counts of the
toy experiment (a rerun on Ray skips finished cells); the error sentence for an unreachable address.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest

import sweep_toy
from lazyrich.experiments import registry
from lazyrich.sweep import run_sweep

ray = pytest.importorskip("ray", reason="Ray is the optional extra lazyrich[ray]; `make test` installs it")


@pytest.fixture(scope="module")
def cluster():
    registry.register(sweep_toy.EXPERIMENT)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    registry._REGISTRY.pop(sweep_toy.NAME, None)


def _runs(out: Path) -> dict:
    return {p.parent.name: len(p.read_text().splitlines()) for p in sorted((out / "cells").glob("*/runs.txt"))}


def test_ray_gives_the_local_table_and_skips_finished_cells(cluster, tmp_path):
    kw = dict(overrides=["rows=3"], grid=["x=0.5,2"], seeds="3,7", progress=False)
    on_ray = run_sweep("sweep-toy", "quick", out=tmp_path / "ray", executor="ray", workers=2, **kw)
    local = run_sweep("sweep-toy", "quick", out=tmp_path / "local", executor="local", workers=2, **kw)
    assert on_ray.ok and on_ray.n_run == 4 and len(on_ray.table) == 4 * 3
    a, b = pd.read_csv(tmp_path / "ray" / "results.csv"), pd.read_csv(tmp_path / "local" / "results.csv")
    pd.testing.assert_frame_equal(a, b)
    assert sorted(a.seed.unique()) == [3, 7]
    again = run_sweep("sweep-toy", "quick", out=tmp_path / "ray", executor="ray", **kw)
    assert again.n_run == 0 and again.n_skipped == 4
    assert set(_runs(tmp_path / "ray").values()) == {1}
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ray" / "results.csv"), a)


def test_a_failing_cell_on_ray_is_recorded(cluster, tmp_path):
    res = run_sweep("sweep-toy", "quick", [], grid={"fail": [False, True]}, out=tmp_path / "f", executor="ray",
                    progress=False)
    assert not res.ok and len(res.failures) == 1 and res.failures.fail.tolist() == [True]
    assert "fails on purpose" in res.failures.error[0]
    assert len(res.table) == 3 and not res.table.fail.any()


def test_unreachable_address_is_one_sentence_and_leaves_no_directory(cluster, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=rf"no Ray cluster answers at 127.0.0.1:{port} .*start one with "
                                              r"`ray start --head` there, or drop --address"):
        run_sweep("sweep-toy", "quick", [], grid={"x": [1.0]}, out=tmp_path / "x", executor="ray",
                  address=f"127.0.0.1:{port}", progress=False)
    with pytest.raises(ValueError, match="not of the form host:port"):
        run_sweep("sweep-toy", "quick", [], grid={"x": [1.0]}, out=tmp_path / "x", executor="ray",
                  address="nowhere", progress=False)
    assert not (tmp_path / "x").exists()
