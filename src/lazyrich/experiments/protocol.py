"""The experiment protocol: what an experiment module declares, and the shared typed-config machinery.

How to write an experiment (``src/lazyrich/experiments/<name>.py``)
-------------------------------------------------------------------
1. A **typed config**: a frozen ``@dataclass`` whose fields have plain annotations (``int``, ``float``,
   ``bool``, ``str``, ``Optional[...]`` of these, ``Tuple[T, ...]``) and defaults.  Document every field in
   a numpydoc ``Attributes`` section of the class docstring (``name : type`` then an indented line of
   meaning): :func:`field_help` reads it for ``lazyrich run NAME --help``.  Put cross-field checks in an
   optional method ``validated(self) -> Self`` that raises ``ValueError`` naming the fix; types are checked
   here (:func:`check_config`), not by the experiment.
2. **Presets**: a dict ``name -> Preset(description, factory, grid=None)``.  ``factory()`` returns the
   config; ``description`` is one line (``lazyrich list`` prints it).  A preset may carry a default
   **grid**: ``grid={"gamma": (0.5, 1.0, 1.5), "gamma_prime": (-0.5, 0.0, 0.5)}`` (field name -> values; the
   cells are the Cartesian product, each cell = ``replace(factory(), **cell)``).  ``lazyrich run NAME
   --preset P`` of a preset with a grid runs that grid through the sweep layer and writes the aggregated
   table; ``seeds=`` on the preset (a tuple of ints) adds a ``seed`` axis the same way.
3. ``run(config, out_dir) -> Path``: write ``results.csv`` (one row per result; plain columns) and whatever
   arrays it needs into the run directory ``out_dir`` (use :class:`lazyrich.dynamics.RunStore` for
   config.json/env.json and atomic writes), return the run directory; resuming the same config on the same
   directory must continue, not restart.  No plotting code in the experiment module.
4. ``figures``: names of functions in :mod:`lazyrich.plots` that take a run (or sweep) directory and draw
   one figure; ``lazyrich report`` calls them.
5. Declare ``EXPERIMENT = Experiment(name=..., description=..., config_class=..., presets=..., run=...,
   figures=...)`` at module level and add the module to :data:`lazyrich.experiments.registry.MODULES`.

Everything generic -- ``key=value`` overrides (:func:`apply_overrides`), type checks, unknown-key errors,
JSON round trip (:func:`config_to_dict` / :func:`config_from_dict`), field help -- lives here, so the CLI and
the sweep layer contain no per-experiment code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "Experiment",
    "Preset",
    "parse_value",
    "check_type",
    "check_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "field_help",
    "torch_threads",
]


@dataclass(frozen=True)
class Preset:
    """A named starting config of an experiment.

    Attributes
    ----------
    description : str
        One line shown by ``lazyrich list``.
    factory : callable
        ``factory() -> config`` (a fresh config object).
    grid : dict, optional
        Field name -> tuple of values; a preset with a grid is a sweep over their Cartesian product.
    seeds : tuple of int, optional
        A ``seed`` axis added to the grid (the config must have a ``seed`` field).
    """

    description: str
    factory: Callable[[], Any]
    grid: Optional[Mapping[str, Tuple[Any, ...]]] = None
    seeds: Optional[Tuple[int, ...]] = None


@dataclass(frozen=True)
class Experiment:
    """One experiment as the registry, the CLI, the sweep layer and ``lazyrich report`` see it."""

    name: str
    description: str
    config_class: type
    presets: Mapping[str, Preset]
    run: Callable[..., Path]
    figures: Tuple[str, ...] = ()
    results_file: str = "results.csv"

    def preset(self, name: str) -> Any:
        """The checked config of preset ``name`` (ValueError naming the valid presets otherwise)."""
        self._check_preset_name(name)
        return check_config(self.presets[name].factory())

    def config(self, preset: str, overrides: Sequence[str] = ()) -> Any:
        """Preset ``preset`` with ``key=value`` overrides applied, then checked (so a preset that needs a
        field, e.g. ``data_dir=``, is valid once the override gives it)."""
        self._check_preset_name(preset)
        return apply_overrides(self.presets[preset].factory(), overrides, experiment=self.name)

    def _check_preset_name(self, name: str) -> None:
        if not isinstance(name, str) or name not in self.presets:
            raise ValueError(f"unknown preset {name!r} for the {self.name} experiment; choose one of "
                             f"{', '.join(self.presets)}.")


# ------------------------------------------------------------------------------------------------ typing


def parse_value(key: str, raw: str, tp: Any) -> Any:
    """Parse the string ``raw`` of an override into a value of type ``tp``.

    ``int``/``float``; ``bool`` from ``true/false/1/0/yes/no/on/off``; ``None`` from ``none``/``null``
    where the type is ``Optional``; tuples from ``1,2,3`` or ``[1, 2, 3]`` (empty value: empty tuple).
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        if raw.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return parse_value(key, raw, inner)
    if origin is tuple:
        s = raw.strip()
        if s.startswith(("[", "(")) and s.endswith(("]", ")")):
            s = s[1:-1]
        parts = [p.strip() for p in s.split(",") if p.strip()]
        return tuple(parse_value(key, p, args[0]) for p in parts)
    if tp is bool:
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key} expects true or false, got {raw!r}.")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{key} expects an integer, got {raw!r}.") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{key} expects a number, got {raw!r}.") from None
    if tp is str:
        if not raw:
            raise ValueError(f"{key} expects a non-empty string.")
        return raw
    raise TypeError(f"cannot parse a value for {key} of type {tp}.")  # pragma: no cover


def check_type(key: str, value: Any, tp: Any) -> None:
    """Raise TypeError unless ``value`` has type ``tp`` (ints are accepted for floats, bools are not ints)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return
        check_type(key, value, [a for a in args if a is not type(None)][0])
        return
    if origin is tuple:
        if not isinstance(value, tuple):
            raise TypeError(f"{key} must be a tuple, got {type(value).__name__}.")
        for v in value:
            check_type(key, v, args[0])
        return
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[tp](value)
    if not ok:
        raise TypeError(f"{key} must be {tp.__name__}, got {value!r}.")


def check_config(config: Any) -> Any:
    """Check every field's type, then the config's own ``validated()`` if it has one; return the config."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        check_type(f.name, getattr(config, f.name), hints[f.name])
    validated = getattr(config, "validated", None)
    return validated() if callable(validated) else config


def apply_overrides(config: Any, overrides: Sequence[str], *, experiment: str = "this") -> Any:
    """``config`` with ``["key=value", ...]`` applied: parsed by field type, unknown keys rejected, checked."""
    if isinstance(overrides, str):
        overrides = [overrides]
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    changes: Dict[str, Any] = {}
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value; write e.g. steps=500.")
        key, _, raw = item.partition("=")
        key = key.strip()
        if key not in names:
            raise ValueError(f"unknown config key {key!r} for the {experiment} experiment; valid keys: {', '.join(names)}.")
        changes[key] = parse_value(key, raw.strip(), hints[key])
    return check_config(dataclasses.replace(config, **changes))


def config_to_dict(config: Any, experiment: Optional[str] = None) -> Dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists), with ``"experiment"`` first when given."""
    d: Dict[str, Any] = {} if experiment is None else {"experiment": experiment}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        d[f.name] = list(v) if isinstance(v, tuple) else v
    return d


def config_from_dict(cls: type, d: Mapping[str, Any]) -> Any:
    """Inverse of :func:`config_to_dict` (keys that are not fields, e.g. ``experiment``, are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    return check_config(cls(**kw))


def field_help(cls: type) -> List[Tuple[str, str, Any, str]]:
    """``[(name, type, default, meaning), ...]`` of a config class, the meaning read from the numpydoc
    ``Attributes`` section of its docstring (first line of each entry; empty when undocumented)."""
    doc = cls.__doc__ or ""
    meaning: Dict[str, str] = {}
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*(\w+)\s*:\s*\S", line)
        if m and i + 1 < len(lines):
            nxt = lines[i + 1].strip()
            meaning.setdefault(m.group(1), nxt)
    default = cls()
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        tname = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
        out.append((f.name, tname, getattr(default, f.name), meaning.get(f.name, "")))
    return out


@contextlib.contextmanager
def torch_threads(threads: Optional[int]):
    """Run the ``with`` block with ``threads`` torch intra-op threads (``None``: leave torch's setting) and
    restore the previous number afterwards, also on error -- the preamble of every experiment's ``run``."""
    import torch

    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)
