"""Adaptive polling: when to ask the API again about the tasks in flight.

Owns the poll schedule and what it learns: how long tasks of each kind take. Durations are
measured on the API's own clock where a finished record carries it (`update_time -
create_time`, milliseconds, akool-api.md E3) and bounded by our own answers otherwise: a
"not yet" at age a says the task takes more than a, a "done" at age b says at most b. A late
poll therefore widens an interval instead of being read as a slow task, and the schedule
cannot confirm its own lateness.

Pure: no clock, no I/O. The runner passes `now` in and reports every answer, so the
schedule is tested without a server (tests/test_polling.py). Deliberately not here: which
ids share a request (the runner fills requests), HTTP, the store.

Each task in flight is in one of three regimes:

* **discovery** - nothing of its kind (nor, pooled, of its step) has finished yet: ask
  again after half as long as the task has run so far (at least `probe`, at most
  `poll_interval`), so its age grows by half between questions. One request covers every
  task in flight, so the early probes are cheap; the first completion of a kind is seen at
  most half its duration, and at most `poll_interval`, late;
* **learned** - the durations of its kind are known: no task is asked about on its own;
  the next request leaves when the completions we have not seen yet have, in expectation,
  waited `threshold` typical durations in total (summed over the tasks in flight, given
  that each one was still running at its last answer). Short tasks are thus found within a
  few percent of their end, long ones cost a request or two per wave, and a random stream
  of completions is polled about as often as it brings news. Once no job waits for a slot
  (`draining`) a late answer delays no next task but the last one delays the end of the
  run, so each task's lateness weighs `slots / in flight` times more;
* **overdue** - the task has run longer than any task of its kind did: ask again after a
  tenth of its age (at least 1 % of the typical duration, at most `poll_interval`).

A kind with no duration of its own is timed by its step's pool (other resolutions, lengths
or models) while it keeps probing as in discovery, since the pool may be slower than it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from batchgen.polling_durations import Durations, points
from batchgen.polling_durations import api_duration as api_duration

#: what tasks are learnt by: (step, resolution, video_length, model); the first element,
#: the step ("video" or "add_audio"), is the pool a kind falls back to while it has no data
Kind = tuple[Hashable, ...]

#: first question about a task of an unknown kind, in seconds (never above poll_interval/4)
PROBE = 0.25
#: expected unseen lateness, in typical durations, that justifies one results request
THRESHOLD = 0.06
#: while nothing is known, a task is asked again after this fraction of its age
DISCOVERY = 0.5
#: an overdue task is asked again after this fraction of its age
OVERDUE = 0.1
#: durations remembered per kind (and per pooled step)
WINDOW = 128
#: the shortest wait between questions, in typical durations and absolute seconds
FINE = 0.01
FINE_MIN = 0.01


@dataclass(slots=True)
class _Task:
    """What the schedule knows about one task in flight."""

    kind: Kind
    #: our clock when the API accepted it, or when we began tracking it (not `timed`)
    start: float
    #: `start` is the acceptance; False for tasks found in flight on resume (age unknown)
    timed: bool
    #: when it was last answered (or `start`)
    asked: float
    #: its age at the latest "not yet": the duration is longer than this
    lower: float = 0.0
    #: not asked about before this time (its last question found no answer)
    hold: float = 0.0


class PollClock:
    """The poll schedule of one run: told every answer, asked when to poll next.

    `base` is the manifest's `poll_interval`: the longest wait between two questions about
    a task whose duration cannot be predicted yet. `cap` bounds waits after errors.
    """

    def __init__(self, base: float, cap: float | None = None, *, batch: int = 50,
                 slots: int = 1, probe: float = PROBE, threshold: float = THRESHOLD) -> None:
        self.base = base
        self.slots = max(1, slots)
        self.cap = cap if cap is not None else max(30.0, base * 4)
        self.batch = max(1, batch)
        self.probe = max(1e-3, min(probe, base / 4))
        self.threshold = threshold
        self._tasks: dict[str, _Task] = {}
        self._samples: dict[Hashable, deque[tuple[float, float]]] = {}
        self._tables: dict[Hashable, Durations | None] = {}

    # -- what the runner reports -------------------------------------------------------

    def track(self, task_id: str, kind: Kind, now: float, *, timed: bool = True) -> None:
        """A task is in flight: accepted at `now`, or (`timed=False`) found on resume."""
        self._tasks[task_id] = _Task(kind, start=now, timed=timed, asked=now)

    def not_yet(self, task_id: str, now: float) -> None:
        """The API answered that the task is still queueing or processing."""
        task = self._tasks.get(task_id)
        if task is not None:
            task.asked = now
            task.lower = max(task.lower, now - task.start)
            task.hold = 0.0

    def unanswered(self, task_id: str, now: float) -> None:
        """The task was asked about but not listed: ask again later, as if unknown."""
        task = self._tasks.get(task_id)
        if task is not None:
            task.asked = now
            task.hold = now + self._discovery_wait(now - task.start)

    def defer(self, task_id: str, until: float) -> None:
        """The API could not be asked (errors after retries): not before `until`."""
        task = self._tasks.get(task_id)
        if task is not None:
            task.hold = until

    def forget(self, task_id: str) -> None:
        """The task left flight without a duration worth learning (failed, gone, abandoned)."""
        self._tasks.pop(task_id, None)

    def finished(self, task_id: str, now: float, created_ms: object = None,
                 updated_ms: object = None) -> tuple[float, float] | None:
        """The API answered that the task is done; learn its duration.

        Returns the (lower, upper) bounds learnt, equal when the API's timestamps gave the
        duration, or None when nothing could be learnt (a task found in flight on resume
        whose answer carries no usable timestamps).
        """
        task = self._tasks.pop(task_id, None)
        if task is None:
            return None
        upper = now - task.start if task.timed else math.inf
        lower = task.lower
        exact = api_duration(created_ms, updated_ms)
        # our clock starts when the create's answer arrives, after the API's: its figure may
        # exceed ours by the create's latency, never fall below a "not yet" we were given
        if exact is not None and lower - (0.01 + 0.01 * lower) <= exact \
                <= upper + max(1.0, 0.1 * upper):
            sample = (exact, exact)
        elif task.timed:
            sample = (lower, upper)
        else:
            return None
        for key in (task.kind, task.kind[0]):
            self._samples.setdefault(key, deque(maxlen=WINDOW)).append(sample)
            self._tables.pop(key, None)
        return sample

    # -- what the runner asks ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tasks)

    def typical(self, kind: Kind) -> float | None:
        """The median duration learnt for `kind` (or its step, pooled), if any."""
        table = self._table(kind)[0]
        return None if table is None else table.typical

    def next_round(self, now: float, *, draining: bool = False) -> float | None:
        """When to send the next results request; None with nothing in flight.

        `draining`: no job waits for a slot any more. A completion seen late then delays
        no next task, but the last one delays the end of the run: with n of `slots` tasks
        left, each one's lateness weighs `slots / n` times as much as while slots refill.
        """
        if not self._tasks:
            return None
        soonest = math.inf
        learned: list[tuple[_Task, Durations]] = []
        for task in self._tasks.values():
            when, table = self._own_time(task, now)
            soonest = min(soonest, when)
            if table is not None:
                learned.append((task, table))
        if learned:
            weight = self.slots / len(self._tasks) if draining else 1.0
            soonest = min(soonest, self._round_time(learned, now, max(1.0, weight)))
        return max(now, soonest)

    def order(self, now: float) -> tuple[list[str], int]:
        """Every task in flight, the most urgent first, and how many of them are due: their
        answer may have changed by `now`. The others are worth asking about only when a
        request has room for them (a missing answer from them is no verdict)."""
        keyed = []
        for task_id, task in self._tasks.items():
            when, table = self._own_time(task, now)
            if table is not None:
                when = min(when, task.start + table.earliest(task.lower))
            keyed.append((when, task_id))
        keyed.sort()
        return [task_id for _, task_id in keyed], sum(1 for when, _ in keyed if when <= now)

    # -- arithmetic --------------------------------------------------------------------

    def _table(self, kind: Kind) -> tuple[Durations | None, bool]:
        """The durations to time `kind` by, and whether they are its own (not pooled)."""
        for key, own in ((kind, True), (kind[0], False)):
            if key not in self._tables:
                samples = self._samples.get(key)
                self._tables[key] = Durations(points(samples)) if samples else None
            table = self._tables[key]
            if table is not None:
                return table, own
        return None, False

    def _discovery_wait(self, age: float) -> float:
        return min(max(DISCOVERY * age, self.probe), self.base)

    def _own_time(self, task: _Task, now: float) -> tuple[float, Durations | None]:
        """When this task needs a question on its own (inf if it does not), and the table
        that times it in the learned regime (None if it is not in that regime)."""
        if task.hold > now:
            return task.hold, None
        if task.hold:
            return task.hold, None  # its hold is over: ask now
        table, own = self._table(task.kind) if task.timed else (None, False)
        discovery = task.asked + self._discovery_wait(task.asked - task.start)
        if table is None:
            return discovery, None
        if table.above(task.lower) == 0:
            fine = max(FINE_MIN, FINE * table.typical)
            wait = min(max(OVERDUE * (task.asked - task.start), fine), self.base)
            return task.asked + wait, None
        # a pooled figure may belong to slower kinds: keep discovering until its own is known
        return (math.inf if own else discovery), table

    def _round_time(self, learned: list[tuple[_Task, Durations]], now: float,
                    weight: float) -> float:
        """The earliest time at which the expected unseen lateness, times `weight`, reaches
        the threshold (per request the round needs), found by bisection: the sum grows
        with time."""
        need = self.threshold * math.ceil(len(learned) / self.batch) / weight

        def unseen(t: float) -> float:
            return sum(table.late(task.lower, t - task.start) / table.typical
                       for task, table in learned)

        if unseen(now) >= need:
            return now
        hi = max(task.start + table.points[-1] + need * table.typical
                 for task, table in learned)
        lo = now
        for _ in range(40):
            mid = (lo + hi) / 2
            if unseen(mid) >= need:
                hi = mid
            else:
                lo = mid
            if hi - lo < 1e-4:
                break
        return hi
