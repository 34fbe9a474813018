"""A tiny test-only experiment for the sweep tests (importable by spawned workers and Ray tasks).

``run`` appends one line to ``runs.txt`` in its run directory each time it is called (so tests count how
often a cell ran), raises for ``fail=True``, then writes ``results.csv`` row by row *without* an atomic
write, sleeping ``sleep`` seconds before each row -- a cell killed meanwhile leaves a half-written file.
Each row is a seeded function of the config: ``y = x * step + N(0, 1)`` draws of ``default_rng(seed)``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lazyrich.experiments.protocol import Experiment, Preset

NAME = "sweep-toy"


@dataclass(frozen=True)
class ToyConfig:
    """Toy config.

    Attributes
    ----------
    x : float
        Slope.
    seed : int
        Seed of the noise.
    rows : int
        Rows of the results table.
    fail : bool
        Raise instead of writing results.
    sleep : float
        Seconds slept before each row.
    label : str
        A string field (for grid type tests).
    """

    x: float = 1.0
    seed: int = 0
    rows: int = 3
    fail: bool = False
    sleep: float = 0.0
    label: str = "a"

    def validated(self) -> "ToyConfig":
        if self.rows < 1:
            raise ValueError(f"rows must be >= 1, got {self.rows}.")
        return self


def run(config: ToyConfig, out_dir, *, progress: bool = False, threads=None) -> Path:
    from lazyrich.dynamics import RunStore

    store = RunStore(out_dir, {**asdict(config), "experiment": NAME}, seed=config.seed)
    with open(store.path / "runs.txt", "a") as fh:
        fh.write(f"{config.x} {config.seed}\n")
    if config.fail:
        raise RuntimeError(f"toy cell x={config.x} fails on purpose")
    rng = np.random.default_rng(config.seed)
    with open(store.path / "results.csv", "w") as fh:
        fh.write("step,y,x\n")
        fh.flush()
        for step in range(config.rows):
            time.sleep(config.sleep)
            fh.write(f"{step},{config.x * step + rng.normal():.17g},{config.x}\n")
            fh.flush()
    return store.path


EXPERIMENT = Experiment(
    name=NAME,
    description="test-only toy experiment",
    config_class=ToyConfig,
    presets={"quick": Preset("three rows", ToyConfig),
             "grid": Preset("a preset with a grid over x and two seeds", ToyConfig, grid={"x": (1.0, 2.0)},
                            seeds=(0, 1))},
    run=run,
    figures=("fig_sweep_toy",),
)


def fig_sweep_toy(source):
    """y versus step, one line per x (a figure for the report tests)."""
    import pandas as pd
    from matplotlib.figure import Figure

    df = pd.read_csv(Path(source) / "results.csv")
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    for x, g in df.groupby("x"):
        ax.plot(g.step, g.y, label=f"x={x}")
    ax.legend()
    return fig
