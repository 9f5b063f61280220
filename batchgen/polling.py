"""Adaptive polling: when to ask the API again about a task in flight.

Pure arithmetic over the durations observed in this run; no clock, no I/O (the runner
passes ages in). Owned here so that the schedule can be tested without a server, as
`retry.py` owns retry arithmetic.
"""

from __future__ import annotations

from collections import deque


class PollClock:
    """When to ask again about a task: pure arithmetic over observed durations.

    Before any task finished: `base` (the manifest's poll_interval), growing ×1.5 per
    unchanged answer up to `cap`, but never more than a quarter of the task's age. Once
    durations are known: wait until 90 % of the typical (20th-percentile) duration, then
    poll every twentieth of it (at least 50 ms), again growing while nothing changes. One
    request carries up to `poll_batch` ids, so polling early costs one request per round
    for all tasks, not one per task.
    """

    def __init__(self, base: float, cap: float | None = None) -> None:
        self.base = base
        self.cap = cap if cap is not None else max(30.0, base * 4)
        self._durations: dict[bool, deque[float]] = {False: deque(maxlen=64),
                                                      True: deque(maxlen=64)}

    def observe(self, audio: bool, duration: float) -> None:
        self._durations[audio].append(duration)

    def typical(self, audio: bool) -> float | None:
        seen = self._durations[audio]
        if len(seen) < 2:
            return None
        ordered = sorted(seen)
        return ordered[len(ordered) // 5]

    def next_delay(self, audio: bool, age: float, polls: int) -> float:
        expected = self.typical(audio)
        if expected is None:
            # back off, but never wait more than a quarter of the task's age: a first wave
            # of 30 s tasks is seen done within ~25 % of its end, not at 40 s
            delay = min(self.base * (1.5 ** polls), self.cap)
            return min(delay, max(self.base, age * 0.25)) if age > 0 else delay
        fine = min(max(expected * 0.05, 0.05), self.base)
        quiet_until = expected * 0.9
        if age < quiet_until:
            return max(quiet_until - age, fine)
        late = max(0, int((age - quiet_until) / max(fine, 1e-3)) // 4)
        return min(fine * (1.5 ** late), self.cap)
