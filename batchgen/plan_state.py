"""The plan over a state in flat memory (issue 18): `plan` of a 1,000,000-job state
without a dict of a million states or a list of a million sends.

`build_plan` prices each job of the manifest with the state's verdict on it (to submit,
done, in flight...) and what the run's queue reserves for it. Here the jobs are counted
by (price shape, plan state) instead: the shape of job i is `Jobs.shapes.order[i]` (one
byte per job, from the load), and a state row's `idx` is its job's place in the
manifest. The queue (`Window.rest`, `budget.need` for each send, as `session._sends`) is
walked once, summing what each shape reserves and applying `budget.admit`'s rule as it
goes; the rows are walked once, counting. `build_plan` then gets one sample job per
(shape, state) with its count: the same lines, buckets and totals as job by job.

Deliberately not here: the rule (budget.py), the figures' layout (planning.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from batchgen import budget
from batchgen.jobs import Job, JobState
from batchgen.planning import bucket, build_plan
from batchgen.scheduler.window import Window

if TYPE_CHECKING:
    from batchgen.manifest import Manifest
    from batchgen.manifest_stream import Shapes
    from batchgen.planning import Plan
    from batchgen.state_store import StateStore


class Queue:
    """The run's queue over a state, summed by price shape, and the budget's verdict."""

    def __init__(self, shapes: Shapes, max_credits: int | None, spent: int) -> None:
        self.shapes = shapes
        self.max_credits = max_credits
        #: credits the queue reserves, by shape
        self.need = [0] * len(shapes.kinds)
        #: jobs with a send that are not a pending job's own first create (to submit,
        #: whatever their row's state says): few
        self.also: set[str] = set()
        self._total = spent
        self._held = False
        self._admitted = 0
        self._last: str | None = None
        self._straddles = False

    def walk(self, store: StateStore) -> None:
        learned = store.learned(active_only=True)
        for row, family in Window(store).rest():
            job = row.parent or row.job_id
            pending = row.state is JobState.PENDING
            n = budget.need(row, learned, 1 + len(family) if pending else 1)
            self.need[self.shapes.order[row.idx]] += n
            if row.parent or not pending:
                self.also.add(job)
            self._admit(job, n)

    def _admit(self, job: str, n: int) -> None:
        """`budget.admit` one send at a time; a job's sends are consecutive (manifest
        order: a job's later videos share its index), so distinct jobs are counted by
        change of id, and one whose later send is held back is not counted."""
        if not self._held and budget.fits(self.max_credits, self._total, n):
            self._total += max(0, n)
            if job != self._last:
                self._admitted += 1
                self._last = job
        elif not self._held:
            self._held = True
            self._straddles = job == self._last

    @property
    def within(self) -> int:
        """To-submit jobs the budget lets a run send (`planning._within` with sends)."""
        return self._admitted - self._straddles


def plan_over(manifest: Manifest, store: StateStore, spent: int
              ) -> tuple[Plan, dict[str, int]] | None:
    """The plan and the charges so far, streamed; None without price shapes (more than
    256 kinds), where the caller plans job by job."""
    shapes = getattr(manifest.jobs, "shapes", None)
    if shapes is None or len(shapes.order) != len(manifest.jobs):
        return None
    queue = Queue(shapes, manifest.budget.max_credits, spent)
    queue.walk(store)
    counts: Counter[tuple[int, str]] = Counter()
    charged = {"jobs": 0, "estimated": 0, "deducted": 0, "differs": 0}
    for job_id, idx, parent, stored, estimated, video, audio, prior in store.plan_fields():
        parts = [c for c in (video, audio) if c is not None]  # JobRow.credits_deducted
        if prior:
            parts.append(prior)
        if parts:  # report.charges, streamed
            deducted = sum(parts)
            charged["jobs"] += 1
            charged["estimated"] += estimated
            charged["deducted"] += deducted
            charged["differs"] += deducted != estimated
        if not parent:
            state = "to_submit" if job_id in queue.also else bucket(stored)
            counts[(shapes.order[idx], state)] += 1
    jobs: list[tuple[Job, int]] = []
    states: dict[str, str] = {}
    sends: list[tuple[str, int]] = []
    for (kind, state), n in sorted(counts.items()):
        job = replace(shapes.sample(kind), id=f"{kind}:{state}")
        jobs.append((job, n))
        states[job.id] = state
        if state == "to_submit":
            sends.append((job.id, queue.need[kind]))
    within = queue.within if manifest.budget.max_credits is not None else None
    return build_plan(manifest, states, spent_credits=spent, sends=sends, jobs=jobs,
                      admitted=within), charged
