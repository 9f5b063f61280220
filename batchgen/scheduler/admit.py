"""Admission: which jobs may start new spending next, under the one budget rule.

The queue holds, in manifest order, the jobs whose next create starts new spending (a
job's video, or an add-audio step repeated by --retry-failed/--resubmit-unknown); it is
`budget.queue`'s, so `plan` counts exactly what a run sends. `take` admits from its head
while `budget.fits` says so; the first job that does not fit stalls the queue (the
ledger's `stalled`) until room frees, and every job after it waits too. A run reads the
queue from the store a page at a time (`feed`, scheduler/window.py: the same admissions
in the same order), so only the admissions due soon are in memory. When pre-flight
is on (preflight.py's `Gate`), a job is admitted only once its assets are cleared; one
with a definitively bad asset fails before anything is sent or reserved.

Synchronous on purpose: the submitter journals what `take` returns before it awaits
anything, so two claims can never both spend the same credits. Deliberately not here:
sending (submit.py), the rule itself (budget.py).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from batchgen import budget
from batchgen.jobs import JobRow, JobState
from batchgen.scheduler.state import EventKind, JobEvent, RunState
from batchgen.transitions import CreateRefused

if TYPE_CHECKING:
    from batchgen.preflight import Gate
    from batchgen.scheduler.window import Window


class Admissions:
    """The admission queue of one run; `take` the next jobs that fit."""

    def __init__(self, state: RunState, gate: Gate | None = None) -> None:
        self._state = state
        #: jobs whose next create starts new spending, in manifest order (the head of
        #: the queue: the rest is read from the store as these go, `feed`)
        self.pending: deque[str] = deque()
        self._window: Window | None = None
        self._held: set[str] = set()  #: jobs already reported as held back
        #: pre-flight (preflight.py): a job's first create waits for its assets' verdict
        self._gate = gate
        if gate is not None:
            gate.listen(state.wake.notify)

    def feed(self, window: Window) -> None:
        """Read the rest of the queue from the store, a page whenever the head runs dry."""
        self._window = window

    def more(self) -> bool:
        """A job waits in the queue (reading the next page from the store if need be)."""
        window = self._window
        if not self.pending and window is not None and not window.exhausted:
            for row, family in window.read():
                self._state.admit(row, family)
                self.pending.append(row.job_id)
        return bool(self.pending)

    def need(self, row: JobRow) -> int:
        """Credits to reserve before sending the job's next create (`budget.need`)."""
        family = len(self._state.family(row.job_id)) if row.state is JobState.PENDING else 1
        return budget.need(row, self._state.ledger.learned, family)

    def ready(self) -> bool:
        """An admission could be taken now (or waits only for a slot or a verdict)."""
        return not self._state.ledger.stalled and self.more()

    def blocked(self) -> tuple[int, int]:
        """Jobs left because of the budget, and the credits they would need: the head did
        not fit, so under the rule every admission after it waits too."""
        state = self._state
        if not (state.ledger.stalled and self.more()):
            return 0, 0
        jobs, need = len(self.pending), sum(self.need(state.rows[j]) for j in self.pending)
        if self._window is not None:  # the admissions not read yet wait too
            for row, family in self._window.rest():
                size = 1 + len(family) if row.state is JobState.PENDING else 1
                jobs += 1
                need += budget.need(row, state.ledger.learned, size)
        return jobs, need

    def take(self, free: int, reserved: int = 0) -> list[str]:
        """Up to `free` jobs from the head that fit the budget beside `reserved` credits
        (taken from the queue: the caller journals them before it awaits anything)."""
        state, ledger = self._state, self._state.ledger
        taken: list[str] = []
        cap = state.settings.max_credits
        while len(taken) < free and not ledger.stalled:
            if not self._screen_head() or not self.more():
                break
            job_id = self.pending[0]
            need = self.need(state.rows[job_id])
            if not budget.fits(cap, ledger.total + reserved, need):
                ledger.stalled = True
                self._hold_back(job_id, need)
                break
            self.pending.popleft()
            taken.append(job_id)
            reserved += need
        return taken

    def put_back(self, job_id: str) -> None:
        """A create that made nothing: the job is first in line again."""
        self.pending.appendleft(job_id)

    def _screen_head(self) -> bool:
        """Pre-flight at the head of the queue: fail jobs whose asset is definitively bad
        (before anything is sent or reserved); False while the head's verdict is due."""
        while self._gate is not None and self.more():
            job_id = self.pending[0]
            if self._state.rows[job_id].state is not JobState.PENDING:
                return True  # an add-audio step: its video was checked before it was paid
            verdict = self._gate.verdict(job_id)
            if verdict is None:
                return False
            if verdict.ok:
                return True
            self.pending.popleft()
            self._state.fail(job_id, CreateRefused(verdict.error))
        return True

    def _hold_back(self, job_id: str, need: int) -> None:
        """Tell (once per job) that the head of the queue waits for room in the budget."""
        if job_id in self._held:
            return
        self._held.add(job_id)
        cap = self._state.settings.max_credits
        left = None if cap is None else cap - self._state.ledger.total
        self._state.ports.emit(JobEvent(
            EventKind.BUDGET, job_id, f"held back: needs {need} credits, {left} left of the "
            "budget; the jobs after it wait too (the budget keeps manifest order)"))
