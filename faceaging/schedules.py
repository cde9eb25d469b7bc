"""Age-group schedules: the one place that maps ages to groups.

A schedule is an ordered list of inclusive, non-overlapping ``[lo, hi]`` age
ranges. Gaps are allowed (ages in a gap belong to no group and are dropped by
the input pipeline). The last range may be open-ended with ``hi = None``. In a
config a schedule is a name (``'utk14'``) or a string of ranges such as
``'0-19,20-39,40+'``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

MAX_AGE = 130  # Upper bound for open-ended ranges and lookup tables.

NAMED_SCHEDULES: dict[str, tuple[tuple[int, int | None], ...]] = {
    # The original project's 14 groups.
    "utk14": ((0, 5), (6, 10), (11, 15), (16, 20), (21, 25), (26, 30), (31, 40),
              (41, 50), (51, 60), (61, 70), (71, 80), (81, 90), (91, 100), (101, None)),
    # CAAE (CVPR 2017): 10 groups.
    "caae10": ((0, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, 40), (41, 50),
               (51, 60), (61, 70), (71, None)),
    # LATS (ECCV 2020): 6 classes with gaps between them.
    "lats6": ((0, 2), (3, 6), (7, 9), (15, 19), (30, 39), (50, 69)),
    # IPCGAN (CVPR 2018): 5 groups.
    "ipcgan5": ((11, 20), (21, 30), (31, 40), (41, 50), (51, None)),
}


class ScheduleError(ValueError):
    """A schedule is malformed."""


@dataclasses.dataclass(frozen=True)
class AgeSchedule:
    """Validated age ranges with vectorised age -> group lookup."""

    ranges: tuple[tuple[int, int], ...]
    name: str = "custom"

    @property
    def num_groups(self) -> int:
        return len(self.ranges)

    @property
    def labels(self) -> tuple[str, ...]:
        """Human-readable labels for plots, e.g. ``'31-40'`` or ``'101+'``."""
        return tuple(f"{lo}+" if hi >= MAX_AGE else f"{lo}-{hi}" for lo, hi in self.ranges)

    @property
    def lookup_table(self) -> np.ndarray:
        """``table[age]`` is the group of ``age``, or -1 where no group covers it."""
        table = np.full(MAX_AGE + 1, -1, dtype=np.int32)
        for group, (lo, hi) in enumerate(self.ranges):
            table[lo:hi + 1] = group
        return table

    def group_of(self, ages) -> np.ndarray:
        """Group index per age (-1 for ages no group covers)."""
        ages = np.asarray(ages)
        if np.any(ages < 0):
            raise ValueError(f"ages must be non-negative, got min {ages.min()}")
        return self.lookup_table[np.minimum(ages, MAX_AGE)]

    def representative_age(self, group: int) -> int:
        """A typical age of ``group``: its midpoint (its lower end + 5 if open)."""
        lo, hi = self.ranges[group]
        return lo + 5 if hi >= MAX_AGE else (lo + hi) // 2


def _validate(ranges: Sequence[Sequence[int | None]], name: str) -> tuple[tuple[int, int], ...]:
    if len(ranges) == 0:
        raise ScheduleError(f"schedule {name!r} is empty: expected at least one [lo, hi] range")
    parsed = []
    for i, item in enumerate(ranges):
        if len(item) != 2:
            raise ScheduleError(f"schedule {name!r} range #{i} is {item!r}: expected [lo, hi]")
        lo, hi = item
        hi = MAX_AGE if hi is None else hi
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (lo, hi)):
            raise ScheduleError(f"schedule {name!r} range #{i} {item!r}: bounds must be integers")
        if lo < 0:
            raise ScheduleError(f"schedule {name!r} range #{i} {item!r}: ages must be non-negative")
        if hi < lo:
            raise ScheduleError(f"schedule {name!r} range #{i} {item!r}: empty range (hi < lo)")
        if hi > MAX_AGE:
            raise ScheduleError(f"schedule {name!r} range #{i} {item!r}: ages above {MAX_AGE} are not supported")
        parsed.append((int(lo), int(hi)))
    for i, ((lo0, hi0), (lo1, hi1)) in enumerate(zip(parsed, parsed[1:])):
        if lo1 <= lo0:
            raise ScheduleError(f"schedule {name!r} is unsorted: range #{i + 1} {[lo1, hi1]} starts "
                                f"before range #{i} {[lo0, hi0]}; list ranges in increasing age")
        if lo1 <= hi0:
            raise ScheduleError(f"schedule {name!r}: ranges #{i} {[lo0, hi0]} and #{i + 1} "
                                f"{[lo1, hi1]} overlap")
    return tuple(parsed)


def _parse_ranges(spec: str) -> list:
    """``'0-19,20-39,40+'`` -> ``[[0, 19], [20, 39], [40, None]]``."""
    ranges = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if part.endswith("+"):
                ranges.append([int(part[:-1]), None])
            else:
                lo, hi = part.split("-")
                ranges.append([int(lo), int(hi)])
        except ValueError:
            raise ScheduleError(
                f"schedule {spec!r}: cannot read range {part!r}; expected a name in "
                f"{sorted(NAMED_SCHEDULES)} or ranges like '0-19,20-39,40+'") from None
    return ranges


def get_schedule(spec) -> AgeSchedule:
    """A schedule from a name (``'utk14'``), a string (``'0-19,20-39,40+'``) or [lo, hi] pairs."""
    if isinstance(spec, AgeSchedule):
        return spec
    if isinstance(spec, str):
        if spec in NAMED_SCHEDULES:
            return AgeSchedule(_validate(NAMED_SCHEDULES[spec], spec), name=spec)
        return AgeSchedule(_validate(_parse_ranges(spec), spec), name=spec)
    return AgeSchedule(_validate(list(spec), "custom"))
