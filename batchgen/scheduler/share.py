"""A run that shares its manifest with other runners (``--state postgresql://...``).

With a shared state (pgshare.py) the store, not this process, decides what is sent:
`claim` asks it for up to `free` creates under the concurrency limit across all runners
and the budget over everything they hold, and the rows it returns replace this run's
view of them. `keep_lease` renews the runner's lease and adopts the work of runners that
died (tasks in flight are polled, finished videos fetched: both safe to repeat); when the
lease is lost (or the state cannot be reached), the run stops sending and ends with
that error (`ClaimLost`, `StateUnavailable`). `waiting` tells the
submitter whether to stay: while any job can still be claimed, or is held by a runner
that may yet die, a runner does not leave. Claims, renewals and adoptions are awaited:
the store makes them off the event loop (`offload`, pgloop.py), so the polls and
downloads of this runner go on while a claim waits its turn behind other runners'.

Deliberately not here: the claim itself (pgshare.py), sending (submit.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchgen.errors import BatchgenError
from batchgen.jobs import JobRow, JobState
from batchgen.scheduler.state import EventKind, JobEvent, RunState

if TYPE_CHECKING:
    from batchgen.claims import Claim
    from batchgen.scheduler.fetch import Fetch
    from batchgen.scheduler.poll import Poll
    from batchgen.state_store import SharedState


class Sharing:
    """This run's side of a shared state: claims, the lease, adoption."""

    def __init__(self, store: SharedState, state: RunState) -> None:
        self._store = store
        #: the store's calls that are awaited (made in a thread of their own)
        self._off = store.offload()
        self._state = state
        #: what the last claim saw (None before the first)
        self.last: Claim | None = None
        #: why the run must end (the lease was lost), raised by the runner at the end
        self.fatal: BaseException | None = None
        self._held: set[str] = set()  #: jobs already reported as held back

    @property
    def retry_every(self) -> float:
        """Seconds between claims while other runners hold the slots or the work."""
        return min(1.0, max(0.05, self._state.settings.poll_interval))

    async def claim(self, free: int, limit: int) -> list[tuple[str, bool]]:
        """Up to `free` creates, claimed in the store; the rows it wrote join the view."""
        state = self._state
        got = await self._off.claim(free, limit, state.settings.max_credits,
                                    state.ports.now_iso())
        self.last = got
        for row in got.rows.values():
            state.rows[row.job_id] = row
        for job_id, audio in got.sends:
            row = state.rows[job_id]
            state.commit(job_id, row.committed_credits if audio else
                         row.credits_prior + row.credits_lost + got.needs[job_id])
        if got.blocked is not None and got.blocked[0] not in self._held:
            job_id, need = got.blocked
            self._held.add(job_id)
            state.ports.emit(JobEvent(
                EventKind.BUDGET, job_id, f"held back: needs {need} credits; all runners "
                f"together hold {got.committed} of the budget; the jobs after it wait too"))
        return list(got.sends)

    def waiting(self) -> bool:
        """Stay: a job may still be claimed, or another runner holds unfinished work."""
        last = self.last
        return last is None or last.claimable or last.elsewhere > 0

    def blocked(self) -> tuple[int, int]:
        """Jobs the budget holds back across all runners, and the credits they need."""
        last = self.last
        return (0, 0) if last is None else (last.blocked_jobs, last.blocked_need)

    async def keep_lease(self, poll: Poll, fetch: Fetch) -> None:
        """Renew the lease every third of it and adopt orphaned work, until cancelled."""
        state = self._state
        try:
            await self.adopt(poll, fetch)
            while True:
                await state.ports.sleep(self._store.lease / 3)
                await self._off.heartbeat()
                await self.adopt(poll, fetch)
        except BatchgenError as exc:  # ClaimLost, StateUnavailable, a damaged state...
            # a lease that cannot be renewed must not end silently: the run stops
            # sending at once, and the runner raises it when the workers have ended
            self.fatal = exc
            state.stop()

    async def adopt(self, poll: Poll, fetch: Fetch) -> None:
        """Take over tasks in flight and videos to fetch that no live runner holds."""
        state = self._state
        rows: list[JobRow] = await self._off.adopt()
        now = state.ports.clock()
        for row in rows:
            state.rows[row.job_id] = row
            state.commit(row.job_id, row.committed_credits)
            if row.state is JobState.READY:
                fetch.stale.add(row.job_id)
                state.handoffs.ready.put_nowait(row.job_id)
                continue
            audio = row.state is JobState.AUDIO_RUNNING
            task_id = row.audio_task_id if audio else row.task_id
            if task_id:
                poll.track(task_id, row, audio, now, timed=False)
        if rows:
            state.ports.emit(JobEvent(EventKind.NOTICE, "", f"adopted {len(rows)} job(s) "
                                      "left by a runner that stopped"))
            state.wake.notify()
