"""Step schedules: which steps the :class:`~lazyrich.dynamics.Tracker` records and ``train`` checkpoints."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["Schedule", "parse_schedule", "log_spaced_steps"]


class Schedule:
    """A set of steps: every ``k`` (plus 0), log-spaced, or explicit.

    Use :func:`parse_schedule` to build one. ``step in schedule`` tests membership; ``spec`` is the JSON form.
    """

    def __init__(self, every: Optional[int] = None, steps: Optional[Sequence[int]] = None, spec: Any = None):
        self.every = every
        self.steps = None if steps is None else frozenset(int(s) for s in steps)
        self.spec = spec

    def __contains__(self, step: int) -> bool:
        step = int(step)
        if step < 0:
            return False
        if self.every is not None:
            return step % self.every == 0
        return step in self.steps

    def beyond(self, t: int) -> List[int]:
        """Scheduled steps ``> t`` in increasing order (empty for an every-``k`` schedule, which has no end)."""
        if self.every is not None:
            return []
        return sorted(s for s in self.steps if s > t)

    def up_to(self, t: int) -> List[int]:
        """Scheduled steps ``<= t`` in increasing order."""
        if self.every is not None:
            return list(range(0, int(t) + 1, self.every))
        return sorted(s for s in self.steps if s <= t)

    def __repr__(self) -> str:
        return f"Schedule({self.spec!r})"


def log_spaced_steps(T: int, num: int) -> list:
    """Step 0, step ``T`` and ``num`` log-spaced steps from 1 to ``T`` (``round(geomspace)``, duplicates
    removed, so possibly fewer than ``num + 2``), sorted: the record steps of the experiments."""
    return sorted({0, int(T)} | {int(round(v)) for v in np.geomspace(1, T, num)})


def parse_schedule(schedule) -> Schedule:
    """Parse a schedule spec.

    * ``int k >= 1``: steps ``0, k, 2k, ...``;
    * ``{"log": num, "max": T}``: step 0 and ``num`` log-spaced steps from 1 to ``T`` (``round(geomspace)``,
      duplicates removed, so possibly fewer than ``num``); an optional ``"every": k`` adds every ``k``-th step;
    * a list/tuple/set of non-negative ints: exactly those steps;
    * a :class:`Schedule`: returned as is.
    """
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, bool):
        raise TypeError("schedule must be an int, a {'log': num, 'max': T} dict or a list of steps, not a bool.")
    if isinstance(schedule, (int, np.integer)):
        if schedule < 1:
            raise ValueError(f"schedule={schedule}: an every-k schedule needs k >= 1.")
        return Schedule(every=int(schedule), spec=int(schedule))
    if isinstance(schedule, Mapping):
        unknown = set(schedule) - {"log", "max", "every"}
        if unknown or "log" not in schedule or "max" not in schedule:
            raise ValueError(
                f"A dict schedule must look like {{'log': num, 'max': T}} (optional 'every': k); got keys {sorted(schedule)}."
            )
        num, T = int(schedule["log"]), int(schedule["max"])
        if num < 1 or T < 1:
            raise ValueError(f"schedule {dict(schedule)}: 'log' and 'max' must be >= 1.")
        steps = set(log_spaced_steps(T, num))
        if "every" in schedule:
            k = int(schedule["every"])
            if k < 1:
                raise ValueError("schedule 'every' must be >= 1.")
            steps |= set(range(0, T + 1, k))
        spec = {k: int(v) for k, v in schedule.items()}
        return Schedule(steps=sorted(steps), spec=spec)
    if isinstance(schedule, (list, tuple, set, frozenset, np.ndarray, range)):
        steps = [int(s) for s in schedule]
        if any(s < 0 for s in steps):
            raise ValueError("schedule steps must be >= 0.")
        return Schedule(steps=steps, spec=sorted(set(steps)))
    raise TypeError(
        f"schedule must be an int k (every k steps), a {{'log': num, 'max': T}} dict or a list of steps, "
        f"got {type(schedule).__name__}."
    )
