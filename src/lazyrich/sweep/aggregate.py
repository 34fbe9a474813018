"""The aggregated table of a sweep and summaries over seeds.

:func:`aggregate`: one row per finished cell and per row of its results file, the grid keys (``seed``
included) as the first columns and the cell's hash as the last (``cell``); cells not verified finished are
left out.  :func:`mean_ci`: mean and a two-sided t-interval (``scipy.stats.t``) over seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd

__all__ = ["read_results", "aggregate", "mean_ci"]


def read_results(path: Path) -> pd.DataFrame:
    """A results file (``.csv`` or ``.parquet``) as a DataFrame."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def aggregate(cells: Sequence[Dict[str, Any]], keys: Sequence[str], results_file: str) -> pd.DataFrame:
    """Concatenate the results of finished cells.

    ``cells``: dicts with ``params`` (grid values), ``hash``, ``cell_dir`` and ``finished`` (bool), in grid
    order.  A results column of the same name as a grid key is replaced by the cell's grid value.
    """
    frames: List[pd.DataFrame] = []
    for c in cells:
        if not c.get("finished"):
            continue
        df = read_results(Path(c["cell_dir"]) / results_file)
        df = df.drop(columns=[k for k in keys if k in df.columns] + (["cell"] if "cell" in df.columns else []))
        for i, k in enumerate(keys):
            df.insert(i, k, [c["params"][k]] * len(df) if len(df) else pd.Series(dtype=object))
        df["cell"] = c["hash"]
        frames.append(df)
    if not frames:
        return pd.DataFrame({k: pd.Series(dtype=object) for k in [*keys, "cell"]})
    return pd.concat(frames, ignore_index=True)


def mean_ci(table: pd.DataFrame, values: Union[str, Sequence[str]], by: Optional[Sequence[str]] = None, *,
            over: str = "seed", level: float = 0.95) -> pd.DataFrame:
    """Mean and ``level`` t-interval of ``values`` over ``over`` (default ``seed``) within groups ``by``.

    ``by`` defaults to every column except ``over``, ``cell`` and ``values``.  Returns one row per group with
    columns ``by``, then for each value ``v``: ``v_mean``, ``v_lo``, ``v_hi`` (``mean -/+ t_{(1+level)/2, n-1}
    s / sqrt(n)``, NaN when n < 2) and ``n``.
    """
    from scipy import stats

    values = [values] if isinstance(values, str) else list(values)
    missing = [v for v in values + ([over] if over else []) if v not in table.columns]
    if missing:
        raise ValueError(f"the table has no column(s) {missing}; pass columns of the aggregated results.csv.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}; e.g. level=0.95.")
    if by is None:
        by = [c for c in table.columns if c not in {*values, over, "cell"}]
    rows = []
    groups = table.groupby(list(by), sort=False, dropna=False) if by else [((), table)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: Dict[str, Any] = dict(zip(by, key))
        for v in values:
            x = g[v].to_numpy(dtype=float)
            x = x[np.isfinite(x)]
            n = len(x)
            m = float(x.mean()) if n else float("nan")
            if n >= 2:
                half = float(stats.t.ppf((1 + level) / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
            else:
                half = float("nan")
            row.update({f"{v}_mean": m, f"{v}_lo": m - half, f"{v}_hi": m + half})
        row["n"] = int(len(g))
        rows.append(row)
    return pd.DataFrame(rows)
