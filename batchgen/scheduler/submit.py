"""Submission: one loop that keeps `concurrency` tasks in flight at the API, spending
each credit once and never sending a job twice.

A slot frees when a task is done or failed (the poller) and the next create goes out at
once. Add-audio steps of admitted jobs go first (their credits are reserved); then
admissions, in manifest order, under the one budget rule (admit.py, budget.py). Before a
create leaves, its job is journaled `submitting` (durably) and its estimate reserved in
the same synchronous step, so racing submissions cannot overshoot together. A create whose
request may have left and whose answer was lost is `unknown`, never resent; one that
provably made nothing goes back to the queue. On a stop, creates on the wire get their
grace (`grace`), then are cancelled (`cancel`): one not yet sent is journaled unsent, one
sent stays `submitting` and resumes as `unknown`.

Deliberately not here: which job may spend next (admit.py), what an accepted create
records (accept.py), polling (poll.py), the wire (client/), retry arithmetic (retry.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from batchgen.client import AkoolClient, TaskRecord
from batchgen.errors import (
    AccountBusy,
    ApiError,
    CredentialsError,
    FatalApiError,
    InsufficientCredits,
    OutcomeUnknown,
    RetryableApiError,
)
from batchgen.jobs import JobState
from batchgen.scheduler.accept import accepted
from batchgen.scheduler.admit import Admissions
from batchgen.scheduler.poll import Poll
from batchgen.scheduler.sending import Requests, SentMark
from batchgen.scheduler.state import EventKind, JobEvent, RunState
from batchgen.transitions import AnswerLost, Claimed, CreateRefused, Unsent

if TYPE_CHECKING:
    from batchgen.preflight import Gate
    from batchgen.scheduler.share import Sharing


class Submit:
    """The submitter: its admission queue, the creates on the wire, and `run`, the loop."""

    def __init__(self, client: AkoolClient, state: RunState, poll: Poll,
                 gate: Gate | None = None,
                 sign: Callable[[str], Awaitable[str]] | None = None,
                 sharing: Sharing | None = None) -> None:
        #: what each create sends (s3:// URLs presigned just before it leaves)
        self._requests = Requests(client, state, sign)
        self._state = state
        #: the poller, told about every accepted task (and how many are in flight)
        self._poll = poll
        #: jobs whose next create starts new spending, and the budget rule over them
        self.admissions = Admissions(state, gate)
        #: creates on the wire (or waiting to try again)
        self.creating: set[asyncio.Task[None]] = set()
        #: the most tasks in flight at once; lowered when the API says the account is busy
        self._limit = state.settings.concurrency
        #: what a create raised that ends the run (rejected credentials)
        self.fatal: BaseException | None = None
        #: a state shared with other runners (share.py): the store claims, not `admissions`
        self._sharing = sharing
        #: pre-flight, asked by each create itself when the store claims (`_cleared`)
        self._gate = gate

    def draining(self) -> bool:
        """Nothing is left to send in this run (the poller then times only completions)."""
        if self._sharing is not None:
            return self._state.halted() or not self._sharing.waiting()
        due = self._state.handoffs.audio_due
        return self._state.halted() or not (due or self.admissions.more())

    def blocked(self) -> tuple[int, int]:
        """Jobs the budget holds back, and the credits they would need."""
        if self._sharing is not None:
            return self._sharing.blocked()
        return self.admissions.blocked()

    async def run(self) -> None:
        """Send creates as slots free, until stopped or nothing more can be sent."""
        state = self._state
        try:
            while not state.stopping.is_set():
                token = state.wake.token()
                free = self._limit - len(self._poll.flights) - len(self.creating)
                if free > 0 and not state.halted() and not state.handoffs.behind(state.ready_limit):
                    if self._sharing is None:
                        batch = self._claim(free)
                    else:
                        batch = self._unless_stopped(await self._sharing.claim(free,
                                                                               self._limit))
                    if batch:
                        self._launch(batch)
                        continue
                timeout = None
                if self._sharing is None:
                    nothing_to_send = state.halted() or not (
                        self.admissions.ready() or state.handoffs.audio_due)
                else:  # other runners free slots and may die: claim again in a while
                    nothing_to_send = state.halted() or not self._sharing.waiting()
                    timeout = None if state.halted() else self._sharing.retry_every
                # could a job still become submittable without us doing anything?
                if nothing_to_send and not (self._poll.flights or self.creating):
                    return
                await state.wake.wait(token, timeout)
        finally:
            state.handoffs.submitting_done = True
            state.wake.notify()

    def _claim(self, free: int) -> list[tuple[str, bool]]:
        """Pick up to `free` creates to send and journal them, all in one durable write.

        Add-audio steps of admitted jobs go first (their credits are reserved). Then
        admissions, in order, under the one budget rule (admit.py): the first that does
        not fit stops them all until room frees. Nothing awaits between the budget check
        and the journal, so two claims can never both spend the same credits.
        """
        state = self._state
        batch: list[tuple[str, bool]] = []
        while state.handoffs.audio_due and len(batch) < free:
            batch.append((state.handoffs.audio_due.popleft(), True))
        batch += [(j, state.rows[j].state is JobState.AUDIO_PENDING)
                  for j in self.admissions.take(free - len(batch))]
        if not batch:
            return batch
        now = state.ports.now_iso()
        needs = {j: self.admissions.need(state.rows[j]) for j, _ in batch}
        claimed_rows = state.apply([(j, Claimed(now, audio)) for j, audio in batch],
                                   durable=True)
        for (job_id, audio), row in zip(batch, claimed_rows, strict=True):
            # the job now holds what it held before plus what this create reserved (for a
            # video: the whole family at the learned price, its add-audio step included)
            state.commit(job_id, row.committed_credits if audio else
                         row.credits_prior + row.credits_lost + needs[job_id])
        return batch

    def _unless_stopped(self, batch: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
        """A shared claim's creates, or none when the run stopped while the claim was
        made (it is awaited): those go back to their queue unsent, durably. Stopped means
        halted (credit, outage) or told to stop (SIGINT/SIGTERM): a create launched after
        Ctrl-C would be cut off by the grace period, unknown, and paid again."""
        state = self._state
        if not batch or not (state.halted() or state.stopping.is_set()):
            return batch
        rows = state.apply([(job_id, Unsent(audio)) for job_id, audio in batch],
                           durable=True)
        for (job_id, audio), row in zip(batch, rows, strict=True):
            if not audio:
                state.commit(job_id, row.committed_credits)
        return []

    def _launch(self, batch: list[tuple[str, bool]]) -> None:
        for job_id, audio in batch:
            task = asyncio.create_task(self._create(job_id, audio))
            self.creating.add(task)
            task.add_done_callback(self._create_done)

    def _create_done(self, task: asyncio.Task[None]) -> None:
        self.creating.discard(task)
        if not task.cancelled() and task.exception() is not None and self.fatal is None:
            self.fatal = task.exception()
            self._state.stop()
        self._state.wake.notify()

    async def grace(self) -> None:
        """Creates already on the wire get `stop_grace` seconds to record their answer."""
        if self.creating:
            await asyncio.wait(set(self.creating), timeout=self._state.settings.stop_grace)

    async def cancel(self) -> None:
        """Cancel what is still on the wire: a create not sent is journaled unsent, one
        sent stays `submitting` (it resumes as `unknown`)."""
        creating = list(self.creating)
        for task in creating:
            task.cancel()
        await asyncio.gather(*creating, return_exceptions=True)

    async def _cleared(self, job_id: str, audio: bool) -> bool:
        """Pre-flight of a job the shared store claimed (the admission queue, which asks
        the gate otherwise, is not used then): wait for its assets' verdict while holding
        the claim; a definitively bad asset fails the job before anything is sent."""
        gate, state = self._gate, self._state
        if gate is None or self._sharing is None or audio:
            return True
        while (verdict := gate.verdict(job_id)) is None:
            token = state.wake.token()
            if gate.verdict(job_id) is None:
                await state.wake.wait(token, None)
        if not verdict.ok:
            state.fail(job_id, CreateRefused(verdict.error))
        return verdict.ok

    async def _create(self, job_id: str, audio: bool) -> None:
        state = self._state
        try:
            if not await self._cleared(job_id, audio):
                return
        except asyncio.CancelledError:
            state.apply([(job_id, Unsent(audio))], durable=True)  # never sent: pending again
            raise
        if not self._unless_stopped([(job_id, audio)]):
            return  # stopped while it waited for its verdict: back to its queue, unsent
        mark = SentMark(state, job_id)
        call = self._requests.call(state.rows[job_id], audio, mark.on_send)

        async def attempt() -> list[TaskRecord]:
            try:
                return await call()
            except OutcomeUnknown as exc:
                if mark.left:
                    raise
                # failed before a byte left (e.g. waiting for a connection): nothing made
                raise RetryableApiError(str(exc)) from None

        def on_retry(n: int, exc: ApiError, wait: float) -> None:
            mark.refused()
            state.ports.emit(JobEvent(EventKind.RETRY, job_id, str(exc)))

        ports = state.ports
        try:
            records = await state.settings.retry.run(
                attempt, sleep=ports.sleep, clock=ports.clock, rng=ports.rng,
                retry_unknown=False, on_retry=on_retry)
        except asyncio.CancelledError:
            if not mark.left:
                # stopped before a byte of this attempt left (at most its mark was being
                # written: apply() writes that first, then undoes it): provably nothing
                # made, so the job is pending again, never a needless unknown
                state.apply([(job_id, Unsent(audio))], durable=True)
            raise
        except CredentialsError:
            self._back_to_queue(job_id, audio)
            raise
        except (OutcomeUnknown, RetryableApiError, FatalApiError) as exc:
            self._refused(job_id, audio, exc)
            return
        await accepted(state, self._poll, job_id, audio, records)

    def _refused(self, job_id: str, audio: bool,
                 exc: OutcomeUnknown | RetryableApiError | FatalApiError) -> None:
        """A create ended without a task we know of: say what that means for the job."""
        state = self._state
        if isinstance(exc, OutcomeUnknown):
            state.fail(job_id, AnswerLost(
                f"{exc}: the task may exist and be charged; not sent again "
                "(re-run with --resubmit-unknown to send it anyway)", audio))
            state.ports.emit(JobEvent(EventKind.UNKNOWN, job_id, str(exc)))
        elif isinstance(exc, InsufficientCredits):
            self._back_to_queue(job_id, audio)
            state.outcome.out_of_credit = str(exc)
            state.ports.emit(JobEvent(EventKind.NOTICE, job_id,
                                      f"{exc}: no more jobs will be sent"))
        elif isinstance(exc, AccountBusy) and self._poll.flights:
            # the account is at its limit of tasks in flight: wait for a slot instead
            self._back_to_queue(job_id, audio)
            self._limit = max(1, min(self._limit, len(self._poll.flights)))
            state.ports.emit(JobEvent(EventKind.NOTICE, job_id,
                                      f"the API is busy ({exc}); concurrency lowered to "
                                      f"{self._limit} for this run"))
        elif isinstance(exc, RetryableApiError):  # AccountBusy with nothing in flight too
            self._give_up_sending(job_id, audio, exc)
        else:
            state.fail(job_id, CreateRefused(str(exc), audio))

    def _give_up_sending(self, job_id: str, audio: bool, exc: RetryableApiError) -> None:
        # the API kept refusing or could not be reached: nothing was made, so the job
        # waits for a later run instead of failing, and no more jobs are sent now
        self._back_to_queue(job_id, audio)
        outcome = self._state.outcome
        if outcome.api_unavailable is None:
            outcome.api_unavailable = str(exc)
            self._state.ports.emit(JobEvent(EventKind.NOTICE, job_id,
                                            f"gave up sending after retries ({exc}); no more "
                                            "jobs will be sent in this run"))

    def _back_to_queue(self, job_id: str, audio: bool) -> None:
        """A create that provably made no task (refused before or by the API): undone
        (durably) and queued again at the front."""
        (row,) = self._state.apply([(job_id, Unsent(audio))], durable=True)
        if audio:
            self._state.handoffs.audio_due.appendleft(job_id)
        else:
            self._state.commit(job_id, row.committed_credits)
            self.admissions.put_back(job_id)
