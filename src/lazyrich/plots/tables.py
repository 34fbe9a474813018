"""Reading an experiment's tables for the figures: one run directory, a sweep directory, or a DataFrame."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import pandas as pd

__all__ = ["read_table"]


def read_table(source: Union[str, Path, pd.DataFrame], name: str = "results.csv",
               experiment: Optional[str] = None) -> pd.DataFrame:
    """A DataFrame as is; else ``source/name`` when it exists (a run directory's own table, or a sweep
    directory's aggregated one, never also its cells' copies); else every ``name`` under ``source``,
    concatenated.  ``experiment`` names the experiment in the error raised when there is none."""
    if isinstance(source, pd.DataFrame):
        return source
    top = Path(source) / name
    paths = [top] if top.is_file() else sorted(Path(source).rglob(name))
    if not paths:
        how = f"`lazyrich run {experiment}`" if experiment else "an experiment (e.g. `lazyrich run rhm`)"
        raise FileNotFoundError(f"no {name} under {source}; run {how} into it first.")
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
