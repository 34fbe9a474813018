"""Grids of a sweep: parsing ``key=v1,v2,...`` axes, the ``seed`` axis, the cells and their hashes.

A grid is an ordered mapping ``field name -> tuple of values`` of an experiment's typed config; its cells
are the Cartesian product (first axis slowest), each cell's config is ``replace(base, **cell)`` checked by
the protocol (:func:`lazyrich.experiments.protocol.check_config`).  A cell is keyed by :func:`config_hash`
of its fully resolved config: SHA-256 of the sorted JSON, so the same config always lands in the same
directory whatever the grid it came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from lazyrich.experiments.protocol import check_config, check_type, config_to_dict, parse_value

__all__ = ["parse_axis", "build_grid", "seed_values", "cells", "config_hash"]


def _split_values(raw: str) -> List[str]:
    """Split ``raw`` on commas outside brackets: ``1,2`` -> ``["1", "2"]``; ``[1,2],[3]`` -> ``["[1,2]", "[3]"]``."""
    out, depth, cur = [], 0, ""
    for ch in raw:
        if ch in "[(":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def _fields(config: Any) -> Dict[str, Any]:
    return typing.get_type_hints(type(config))


def parse_axis(item: str, config: Any, *, experiment: str = "this") -> Tuple[str, Tuple[Any, ...]]:
    """``"key=v1,v2,..."`` -> ``(key, (v1, v2, ...))`` parsed with the type of ``config``'s field ``key``.

    Tuple-typed fields take bracketed values: ``widths=[10,20],[30]``.  Raises ValueError (one sentence
    naming the fix) for a missing ``=``, an unknown key, no values, or a value of the wrong type.
    """
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"grid axis {item!r} is not of the form key=v1,v2,...; write e.g. --grid alpha=1,3,10.")
    key, _, raw = item.partition("=")
    key = key.strip()
    values = _split_values(raw)
    return key, _typed_values(key, values, config, experiment=experiment, parse=True)


def _typed_values(key: str, values: Sequence[Any], config: Any, *, experiment: str, parse: bool) -> Tuple[Any, ...]:
    hints = _fields(config)
    if key not in hints:
        raise ValueError(f"unknown grid key {key!r} for the {experiment} experiment; valid keys: {', '.join(hints)}.")
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"grid axis {key} must be a list of values, got {values!r}; write e.g. {{{key!r}: [1, 2]}}.")
    if len(values) == 0:
        raise ValueError(f"grid axis {key} has no values; give at least one, e.g. --grid {key}=1,2.")
    tp = hints[key]
    out = []
    for v in values:
        if parse and isinstance(v, str):
            v = parse_value(key, v, tp)
        elif typing.get_origin(tp) is tuple and isinstance(v, list):
            v = tuple(v)
        try:
            check_type(key, v, tp)
        except TypeError as exc:
            raise ValueError(f"grid axis {exc}") from None
        out.append(v)
    if len(set(map(repr, out))) != len(out):
        raise ValueError(f"grid axis {key} repeats a value ({', '.join(map(repr, out))}); list each value once.")
    return tuple(out)


def seed_values(seeds: Union[None, int, str, Sequence[int]]) -> Optional[Tuple[int, ...]]:
    """``--seeds N`` -> ``(0, ..., N-1)``; ``"3,7,11"`` or ``[3, 7, 11]`` -> ``(3, 7, 11)``; ``None`` -> ``None``."""
    if seeds is None:
        return None
    if isinstance(seeds, str):
        parts = [p.strip() for p in seeds.split(",") if p.strip()]
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"--seeds expects a count N or a list like 3,7,11, got {seeds!r}.") from None
        if len(parts) == 1 and "," not in seeds:
            seeds = vals[0]
        else:
            seeds = vals
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be a count or a list of ints, got {seeds!r}.")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"--seeds {seeds} gives no seeds; pass a count >= 1 or a list like 3,7,11.")
        return tuple(range(seeds))
    vals = list(seeds)
    if not vals or any(isinstance(s, bool) or not isinstance(s, int) for s in vals):
        raise ValueError(f"seeds must be a count or a non-empty list of ints, got {seeds!r}.")
    if len(set(vals)) != len(vals):
        raise ValueError(f"seeds {vals} repeat a value; list each seed once.")
    return tuple(vals)


def build_grid(config: Any, grid: Union[None, Mapping[str, Sequence[Any]], Sequence[str]] = None, *,
               seeds: Union[None, int, str, Sequence[int]] = None,
               preset_grid: Optional[Mapping[str, Sequence[Any]]] = None,
               preset_seeds: Optional[Sequence[int]] = None, fixed: Sequence[str] = (),
               experiment: str = "this") -> Dict[str, Tuple[Any, ...]]:
    """The ordered grid of a sweep.

    Starts from the preset's grid (and its ``seeds``), drops the axes whose key was fixed by a
    ``key=value`` override (``fixed``), replaces or appends the axes given in ``grid`` (``["key=v1,v2"]``
    strings or a mapping of typed values) and sets the ``seed`` axis from ``seeds`` (a count or a list),
    which goes last.  Raises ValueError naming the fix for an unknown key, a wrong type or an empty axis.
    """
    axes: Dict[str, Tuple[Any, ...]] = {}
    for key, vals in (preset_grid or {}).items():
        if key not in fixed:
            axes[key] = _typed_values(key, list(vals), config, experiment=experiment, parse=False)
    if preset_seeds is not None and "seed" not in fixed:
        axes["seed"] = _typed_values("seed", list(preset_seeds), config, experiment=experiment, parse=False)
    if grid is not None:
        items = grid.items() if isinstance(grid, Mapping) else [parse_axis(g, config, experiment=experiment)
                                                               for g in ([grid] if isinstance(grid, str) else grid)]
        for key, vals in items:
            axes[key] = _typed_values(key, vals, config, experiment=experiment, parse=True)
    sv = seed_values(seeds)
    if sv is not None:
        if "seed" not in _fields(config):
            raise ValueError(f"the {experiment} experiment has no seed field, so --seeds does not apply; drop it.")
        axes.pop("seed", None)
        axes["seed"] = sv
    elif "seed" in axes:
        axes["seed"] = axes.pop("seed")
    return axes


def cells(config: Any, axes: Mapping[str, Tuple[Any, ...]]) -> List[Tuple[Dict[str, Any], Any]]:
    """``[(params, config), ...]`` over the Cartesian product of ``axes`` (first axis slowest), each config
    checked (type checks and the config's own ``validated()``, whose ValueError names the cell)."""
    keys = list(axes)
    out = []
    for combo in itertools.product(*(axes[k] for k in keys)):
        params = dict(zip(keys, combo))
        try:
            cfg = check_config(dataclasses.replace(config, **params))
        except (ValueError, TypeError) as exc:
            where = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise ValueError(f"grid cell {where}: {exc}") from None
        out.append((params, cfg))
    return out


def config_hash(config: Any, experiment: str) -> str:
    """First 16 hex digits of SHA-256 of the config's sorted JSON (with the experiment name)."""
    d = config_to_dict(config, experiment)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
