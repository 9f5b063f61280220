"""What the poll schedule learns: task durations, as sorted points with prefix sums.

Owns `Durations` (one kind's durations: the typical one, and the expected time a task
has been finished by a given age, given that it was still running at an earlier one),
`points` (exact durations and intervals learnt from our own answers, as points) and
`api_duration` (a duration on the API's own clock, from a finished record's
timestamps). Pure; the schedule itself is polling.py's `PollClock`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from itertools import accumulate

#: an interval (lower, upper] learnt without timestamps counts as this many even points
INTERVAL_POINTS = 4


class Durations:
    """The durations of one kind, sorted, with prefix sums.

    `late(lower, x)` is the expected time a task has been finished by age `x`, given that it
    was still running at age `lower`: E[(x - d)+ | d > lower], O(log n).
    """

    def __init__(self, points: list[float]) -> None:
        self.points = sorted(points)
        self.prefix = list(accumulate(self.points, initial=0.0))
        self.typical = max(self.points[len(self.points) // 2], 1e-3)

    def above(self, lower: float) -> int:
        return len(self.points) - bisect_right(self.points, lower)

    def earliest(self, lower: float) -> float:
        """The shortest known duration longer than `lower` (call only if `above` > 0)."""
        return self.points[bisect_right(self.points, lower)]

    def late(self, lower: float, x: float) -> float:
        i = bisect_right(self.points, lower)
        n_above = len(self.points) - i
        if n_above == 0 or x <= lower:
            return 0.0
        j = bisect_right(self.points, x)
        return (x * (j - i) - (self.prefix[j] - self.prefix[i])) / n_above


def api_duration(created_ms: object, updated_ms: object) -> float | None:
    """Seconds from `create_time` to `update_time` (ms), or None when they make no sense."""
    if isinstance(created_ms, bool) or isinstance(updated_ms, bool):
        return None
    if not isinstance(created_ms, int | float) or not isinstance(updated_ms, int | float):
        return None
    seconds = (updated_ms - created_ms) / 1000
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 1e6:
        return None
    return seconds


def points(samples: deque[tuple[float, float]]) -> list[float]:
    """Durations as points: an exact one as itself, an interval as even points inside it."""
    out: list[float] = []
    for lower, upper in samples:
        if upper - lower <= 1e-9:
            out.append(lower)
        else:
            width = (upper - lower) / INTERVAL_POINTS
            out.extend(lower + (k + 0.5) * width for k in range(INTERVAL_POINTS))
    return out
