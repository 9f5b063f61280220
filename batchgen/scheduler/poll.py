"""Polling: one loop that asks `resultsByIds` about every task in flight and turns each
answer into the job's transitions (through `RunState.apply`, the one write path).

`PollClock` (polling.py) says when: probing early and backing off while nothing is
known, then timed by the durations the API reports. This worker owns the tasks in flight
(`flights`), asks about the due ones `poll_batch` ids per request (filling each request
up with tasks due soon), and hands done videos on (`RunState.handoffs`). A task
missing again and again, for minutes, is taken to be gone; one older than `max_task_age`
is left for the next run. Deliberately not here: what a charge means (budget.py), sending
(submit.py), downloading (fetch.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchgen.client import AkoolClient, TaskRecord, TaskStatus
from batchgen.errors import FatalApiError, RetryableApiError
from batchgen.jobs import JobRow, JobState
from batchgen.polling import PollClock
from batchgen.scheduler.state import MISSING_LIMIT, MISSING_MIN_AGE, EventKind, JobEvent, RunState
from batchgen.transitions import Charged, Event, TaskDone, TaskFailed, TaskLost


def poll_kind(row: JobRow, audio: bool) -> tuple[Any, ...]:
    """What PollClock learns durations by; the step comes first (its pooled fallback)."""
    req = row.request
    if audio:
        return ("add_audio", req.get("resolution"), req.get("video_length"))
    return ("video", req.get("resolution"), req.get("video_length"), req.get("model_name"))


@dataclass(slots=True)
class Flight:
    """A task in flight at the API, as the poller tracks it."""

    job_id: str
    audio: bool
    sent: float
    missing: int = 0


class Poll:
    """The poller: `track` a task when a create is accepted, `run` the loop."""

    def __init__(self, client: AkoolClient, state: RunState) -> None:
        self._client = client
        self._state = state
        settings = state.settings
        #: when to ask about what (polling.py)
        self.schedule = PollClock(settings.poll_interval, batch=settings.poll_batch,
                                  slots=settings.concurrency)
        #: task id -> the task in flight at the API
        self.flights: dict[str, Flight] = {}

    def track(self, task_id: str, row: JobRow, audio: bool, now: float, *,
              timed: bool = True) -> None:
        """Poll a task from now on (`timed=False`: its age is unknown, as after a restart)."""
        self.flights[task_id] = Flight(row.job_id, audio, sent=now)
        self.schedule.track(task_id, poll_kind(row, audio), now, timed=timed)

    async def run(self, draining: Callable[[], bool]) -> None:
        """Poll until nothing is in flight and nothing more will be sent. `draining()`:
        nothing is left to send, so only the last completion delays the run."""
        state = self._state
        try:
            while True:
                token = state.wake.token()
                if not self.flights:
                    if state.handoffs.submitting_done:
                        return
                    await state.wake.wait(token, None)
                    continue
                now = state.ports.clock()
                soonest = self.schedule.next_round(now, draining=draining())
                if soonest is None:
                    soonest = now
                if soonest > now:
                    await state.wake.wait(token, soonest - now)
                    continue
                await self._round(now)
        finally:
            # no more videos will become ready
            state.handoffs.close_ready(state.settings.download_workers)

    async def _round(self, now: float) -> None:
        """Ask about every due task, filling each request up with tasks due soon."""
        batch_size = max(1, self._state.settings.poll_batch)
        by_due, n_due = self.schedule.order(now)
        due = set(by_due[:n_due])
        n_requests = max(1, -(-n_due // batch_size))
        ids = by_due[: n_requests * batch_size]
        chunks = [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
        answers = await asyncio.gather(*(self.results(c) for c in chunks),
                                       return_exceptions=True)
        changes: list[tuple[str, Event]] = []
        emit = self._state.ports.emit
        after = self._state.ports.clock()
        for chunk, records in zip(chunks, answers, strict=True):
            if isinstance(records, RetryableApiError):
                # the API stayed unreachable through every retry: the tasks are still
                # there, so ask again later rather than give up on paid work
                for task_id in chunk:
                    self.schedule.defer(task_id, after + self.schedule.cap)
                emit(JobEvent(EventKind.NOTICE, "", f"results unavailable: {records}"))
                continue
            if isinstance(records, FatalApiError):
                # an answer we cannot use for this chunk (say, one id the API rejects):
                # count it as a miss for the due tasks, so one bad id cannot stop the run
                emit(JobEvent(EventKind.NOTICE, "", f"results refused: {records}"))
                records = []
            elif isinstance(records, BaseException):
                raise records
            seen = {r.task_id: r for r in records}
            for task_id in chunk:
                flight = self.flights.get(task_id)
                if flight is None:
                    continue
                record = seen.get(task_id)
                if record is None and task_id not in due:
                    continue  # rode along in a request it was not due for: no verdict
                changes += self._observe(task_id, flight, record, after)
        if changes:
            state = self._state
            for (_, event), row in zip(changes, state.apply(changes), strict=True):
                if isinstance(event, Charged):
                    state.commit(row.job_id, row.committed_credits)
                elif isinstance(event, TaskDone) and row.state is JobState.READY:
                    state.handoffs.ready.put_nowait(row.job_id)
            state.wake.notify()

    async def results(self, ids: list[str]) -> list[TaskRecord]:
        """One `resultsByIds` request, with the run's retries (the downloaders use it too,
        to refresh an expired URL)."""
        ports = self._state.ports
        return await self._state.settings.retry.run(
            lambda: self._client.results(ids), sleep=ports.sleep, clock=ports.clock,
            rng=ports.rng,
            on_retry=lambda n, e, w: ports.emit(JobEvent(EventKind.RETRY, "", str(e))))

    def _observe(self, task_id: str, flight: Flight, record: TaskRecord | None,
                 now: float) -> list[tuple[str, Event]]:
        """Fold one answer about one task into its flight; return the job's transitions."""
        job_id = flight.job_id
        state = self._state
        ports = state.ports
        if record is None:
            flight.missing += 1
            # the API may list a new task late; only a task missing again and again, for
            # minutes, is taken to be gone
            if flight.missing < MISSING_LIMIT or now - flight.sent < MISSING_MIN_AGE:
                self.schedule.unanswered(task_id, now)
                return []
            del self.flights[task_id]
            self.schedule.forget(task_id)
            error = f"task {task_id} is no longer known to the API"
            ports.emit(JobEvent(EventKind.FAILED, job_id, error))
            return [(job_id, TaskLost(error))]
        flight.missing = 0
        events: list[Event] = []
        row = state.rows[job_id]
        credits = state.charge(row, record, flight.audio)
        if credits is not None and (row.credits_audio if flight.audio
                                    else row.credits_video) != credits:
            events.append(Charged(credits, flight.audio))
        note = state.charge_note(row, record, flight.audio)
        if note is not None:
            events.append(note)
        if record.status is TaskStatus.DONE:
            del self.flights[task_id]
            # timed by the API's clock when the record says when it finished; else only
            # bounded (after the last "not yet", before now): our lateness is not its length
            self.schedule.finished(task_id, now, record.create_time, record.update_time)
            ports.emit(JobEvent(EventKind.TASK_DONE, job_id, task_id))
            if not flight.audio and row.request.get("add_audio"):
                state.handoffs.audio_due.append(job_id)
            # finished_at: the report's timeline (a URL expires 7 days on)
            events.append(TaskDone(task_id, record.video_url, flight.audio, ports.now_iso()))
        elif record.status is TaskStatus.FAILED:
            del self.flights[task_id]
            self.schedule.forget(task_id)
            step = "add-audio task" if flight.audio else "task"
            msg = record.reason or "check the image URL, prompt and options"
            error = f"{step} {task_id} failed at the API (status {record.status:d}): {msg}"
            # an add-audio step is marked so that --retry-failed repeats only it
            events.append(TaskFailed(error, flight.audio, ports.now_iso()))
            ports.emit(JobEvent(EventKind.FAILED, job_id, error))
        elif now - flight.sent > state.settings.max_task_age:
            # stuck at the API: stop polling so the run can end; the job stays in flight
            # in the state and the next run picks it up again
            del self.flights[task_id]
            self.schedule.forget(task_id)
            state.outcome.abandoned += 1
            ports.emit(JobEvent(EventKind.NOTICE, job_id,
                               f"task {task_id} still {record.status.name.lower()} after "
                               f"{state.settings.max_task_age:.0f}s; left for the next run"))
        else:
            self.schedule.not_yet(task_id, now)
        return [(job_id, e) for e in events]
