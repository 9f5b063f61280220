"""The scheduler: turns pending rows of the store into finished files, spending each credit once.

Three kinds of worker share one event loop and one `AkoolClient`:

* the **submitter** keeps `concurrency` tasks in flight at the API (queueing + processing,
  not HTTP connections): a slot frees when a task is done or failed and the next job
  is sent at once. Before a create leaves, the job is journaled `submitting` (durably) and
  its estimate is reserved against the budget in the same synchronous step, so racing
  submissions cannot overshoot together;
* the **poller** asks `resultsByIds` about every task in flight, `poll_batch` ids per
  request, when `PollClock` says: probing early and backing off while nothing is known,
  then timed by the durations the API reports (`update_time - create_time`) for each kind
  of task — few requests for long tasks, low latency for short ones;
* **downloaders** (bounded on their own) fetch finished videos while the others go on.

Every transition is written to the store as it happens, so the process may die at any
instant. Progress is reported through `on_event`; the runner never prints. Time, sleep and
randomness are injected. Deliberately not here: HTTP details (client.py), files
(download.py), SQL (store.py), retry arithmetic (retry.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from batchgen import budget
from batchgen.client import AkoolClient, TaskRecord
from batchgen.download import Downloaded
from batchgen.errors import (
    AccountBusy,
    ApiError,
    CredentialsError,
    FatalApiError,
    InsufficientCredits,
    OutcomeUnknown,
    RetryableApiError,
    UsageError,
)
from batchgen.polling import PollClock
from batchgen.posters import PosterMaker
from batchgen.preflight import Gate
from batchgen.retry import OutageWatch
from batchgen.scheduler.cleanup import Cleanup
from batchgen.scheduler.fetch import Fetch, FetchHooks, target_path
from batchgen.scheduler.poll import Poll, PollHooks
from batchgen.scheduler.state import (
    BATCH_FIELDS,
    COUNT_FILE_SEPARATOR,
    MISSING_LIMIT,
    MISSING_MIN_AGE,
    EventKind,
    JobEvent,
    Ports,
    RunOutcome,
    RunSettings,
    Wakeup,
    utc_now_iso,
)
from batchgen.store import IN_FLIGHT, JobRow, JobState, Store
from batchgen.transitions import (
    Accepted,
    AnswerLost,
    ChargeNoted,
    Claimed,
    CreateRefused,
    DownloadFailed,
    Event,
    FamilyAccepted,
    Held,
    Unsent,
)

__all__ = ["BATCH_FIELDS", "COUNT_FILE_SEPARATOR", "MISSING_LIMIT", "MISSING_MIN_AGE",
           "EventKind", "JobEvent", "RunOutcome", "RunSettings", "Runner", "utc_now_iso"]

class Runner:
    """One run over one store. Build, then `await run()`; `stop()` may be called any time."""

    def __init__(self, store: Store, client: AkoolClient, settings: RunSettings,
                 on_event: Callable[[JobEvent], None] = lambda e: None, *,
                 clock: Callable[[], float] = time.monotonic,
                 now_iso: Callable[[], str] = utc_now_iso,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None, gate: Gate | None = None) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.emit = on_event
        self.clock = clock
        self.now_iso = now_iso
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.outcome = RunOutcome()
        self._wake = Wakeup(sleep)
        self._stop = asyncio.Event()
        self._rows: dict[str, JobRow] = {}
        self._posters = PosterMaker(settings.output_dir)
        #: admissions (budget.py): jobs whose next create starts new spending, in order
        self._pending: deque[str] = deque()
        #: the head of `_pending` does not fit the budget: admissions wait (budget rule)
        self._stalled = False
        self._held: set[str] = set()  #: jobs already reported as held back
        #: add-audio steps of admitted jobs (already reserved): sent as slots free
        self._audio_pending: deque[str] = deque()
        self._creating: set[asyncio.Task[None]] = set()
        self._committed: dict[str, int] = {}
        self._committed_total = 0
        self._submitting_done = False
        self._children: dict[str, list[str]] = {}
        #: file name -> job that owns it, as recorded by earlier runs
        self._files: dict[str, str] = {}
        self._limit = settings.concurrency
        #: pre-flight (preflight.py): a job's first create waits for its assets' verdict
        self._gate = gate
        if gate is not None:
            gate.listen(self._wake.notify)
        self._fatal: BaseException | None = None
        #: what the API really charged for a video of each kind (resolution, length, ...)
        self._learned: dict[budget.PriceKind, int] = {}
        #: a charge from the API could not be used (reported once per run)
        self._bad_charge_noticed = False
        ports = Ports(emit=lambda e: self.emit(e), clock=clock, now_iso=now_iso, sleep=sleep,
                      rng=self.rng)
        #: the poller: the tasks in flight and when to ask about them
        self.poll = Poll(client, settings, ports, self._wake, PollHooks(
            rows=self._rows.__getitem__, apply=self._apply,
            committed=lambda row: self._set_committed(row.job_id, row.committed_credits),
            charge=self._charge, note=self._note_charge, audio_due=self._audio_pending.append,
            ready=lambda job_id: self.fetch.queue.put_nowait(job_id),
            draining=lambda: self._halted() or not (self._pending or self._audio_pending),
            submitting_done=lambda: self._submitting_done,
            closed=lambda: self.fetch.close()), self.outcome)
        #: the deleter (output.delete_remote): its own queue, our write path and clock
        self.cleanup = Cleanup(client, settings, self._wake, ports, apply=self._apply,
                               backoff=lambda n: min(self.polls.base * n, self.polls.cap))
        #: the download workers: their queue, fed by the poller
        self.fetch = Fetch(client, settings, ports, FetchHooks(
            rows=self._rows.__getitem__, apply=self._apply, fail=self._fail,
            results=self.poll.results, downloaded=self._downloaded), self.outcome)

    # -- public ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop submitting now; the run winds down and `run` returns (interrupted)."""
        self._stop.set()
        self._wake.notify()

    @property
    def polls(self) -> PollClock:
        """When the poller asks about what (polling.py)."""
        return self.poll.schedule

    @property
    def committed_credits(self) -> int:
        """Credits held by everything sent from this output dir, all runs included."""
        return self._committed_total

    async def run(self) -> RunOutcome:
        """Drive every job of the store to a final state (or until stopped)."""
        self._load()
        loops = [asyncio.create_task(self._submit_loop(), name="submitter"),
                 asyncio.create_task(self.poll.run(), name="poller")]
        loops += [asyncio.create_task(self.fetch.run_worker(self._wake.notify),
                                      name=f"downloader-{i}")
                  for i in range(max(1, self.settings.download_workers))]
        if self.settings.delete_remote:
            loops.append(asyncio.create_task(self.cleanup.run(self.fetch.over),
                                             name="deleter"))
        everything: asyncio.Future[list[None]] = asyncio.gather(*loops)
        stopper: asyncio.Future[Any] = asyncio.create_task(self._stop.wait())
        watchdog = asyncio.create_task(self._outage_loop(), name="outage-watch")
        try:
            await asyncio.wait([everything, stopper], return_when=asyncio.FIRST_COMPLETED)
            failed = everything.done() and everything.exception() is not None
            if not everything.done() and self.outcome.outage is None:
                self.outcome.interrupted = True
            if (failed or not everything.done()) and self._creating:
                # creates already on the wire: give them a moment to record their answer;
                # a cancelled one stays `submitting` and resumes as `unknown`
                self._stop.set()
                await asyncio.wait(set(self._creating), timeout=self.settings.stop_grace)
            if everything.done():
                everything.result()  # raise a loop's error, if any
        finally:
            stopper.cancel()
            watchdog.cancel()
            for task in [*loops, *self._creating]:
                task.cancel()
            await asyncio.gather(everything, *self._creating, return_exceptions=True)
            await self._posters.finish(drop_waiting=self.outcome.interrupted)
        if self._fatal is not None:
            raise self._fatal
        if self._stalled and self._pending:
            # the head did not fit, so under the rule every admission after it waits too
            self.outcome.budget_blocked = len(self._pending)
            self.outcome.budget_needed = sum(self._need(self._rows[j]) for j in self._pending)
        return self.outcome

    async def _outage_loop(self) -> None:
        """End the run when the API has answered nothing usable for `outage_timeout`:
        every loop would otherwise retry forever, and tomorrow's run would find the lock."""
        timeout = self.settings.outage_timeout
        if timeout is None:
            return
        watch = OutageWatch(timeout)
        watch.observe(self.clock(), self.client.answers_ok, self.client.answers_failed)
        step = min(1.0, max(0.02, timeout / 20))
        while True:
            await self.sleep(step)
            now = self.clock()
            if watch.observe(now, self.client.answers_ok, self.client.answers_failed):
                since = now - (watch.since if watch.since is not None else now)
                self.outcome.outage = f"no usable answer from the API for {since:.0f} s"
                self.emit(JobEvent(EventKind.NOTICE, "", f"{self.outcome.outage}: stopping; "
                                   "the state is saved and nothing is lost"))
                self.stop()
                return

    # -- loading -----------------------------------------------------------------------

    def _load(self) -> None:
        now = self.clock()
        every = self.store.rows(active_only=False)
        self._learned = budget.learned_prices(every)
        for row in every:
            if row.committed_credits:
                self._set_committed(row.job_id, row.committed_credits)
            if row.file:
                self._files[row.file] = row.job_id
            if not row.active:
                continue
            self._rows[row.job_id] = row
            if row.parent:
                self._children.setdefault(row.parent, []).append(row.job_id)
        active = list(self._rows.values())
        # the queue is budget.queue's, so `plan` counts exactly what this run will send
        for send in budget.queue(active):
            (self._pending if send.admission else self._audio_pending).append(send.job_id)
        for row in active:
            if row.state in IN_FLIGHT:
                audio = row.state is JobState.AUDIO_RUNNING
                task_id = row.audio_task_id if audio else row.task_id
                if task_id:
                    # its age is unknown: timed by what its finished record will tell
                    self.poll.track(task_id, row, audio, now, timed=False)
            elif row.state is JobState.READY:
                self.fetch.stale.add(row.job_id)
                self.fetch.queue.put_nowait(row.job_id)
            elif (row.state is JobState.COMPLETED and row.sha256 and not row.remote_deleted
                  and self.settings.delete_remote):
                self.cleanup.schedule(row, now)
        self._check_filenames()
        self._posters.backfill((r.file, r.sha256) for r in self._rows.values()
                               if r.state is JobState.COMPLETED and r.file and r.sha256)

    def _check_filenames(self) -> None:
        """Refuse a run that would give two jobs one file: a finished video would be lost.

        Names are compared with each other and with the files earlier runs recorded, since
        a template with `{index}` renames jobs when the manifest's order changes.
        """
        if "{task_id}" in self.settings.filename:
            return
        seen: dict[str, str] = {}
        for row in self._rows.values():
            if row.file:
                continue  # already on disk under its recorded name
            name = target_path(self.settings, row).name
            owner = seen.get(name) or self._files.get(name)
            if owner is not None and owner != row.job_id:
                raise UsageError(
                    f"output.filename {self.settings.filename!r} would write job {row.job_id} "
                    f"to {name!r}, which belongs to job {owner}; use {{id}} in the template "
                    "(ids never change) or another output dir")
            seen[name] = row.job_id

    def _set_committed(self, job_id: str, credits: int) -> None:
        before = self._committed.get(job_id, 0)
        self._committed[job_id] = credits
        self._committed_total += credits - before
        if credits < before and self._stalled:
            # the API charged less than estimated, or a create made nothing: room freed,
            # so the head of the queue is weighed again
            self._stalled = False
            self._wake.notify()

    def _apply(self, steps: list[tuple[str, Event]], *, durable: bool = False) -> list[JobRow]:
        """The one write path: the store applies the transitions and the in-memory view
        keeps the very rows it wrote (one per step; a job's later steps chain)."""
        rows = self.store.apply_many([(self._rows[j], e) for j, e in steps], durable=durable)
        for row in rows:
            self._rows[row.job_id] = row
        return rows

    # -- submission --------------------------------------------------------------------

    def _busy_slots(self) -> int:
        return len(self.poll.flights) + len(self._creating)

    def _need(self, row: JobRow) -> int:
        """Credits to reserve before sending the job's next create (`budget.need`)."""
        family = len(self._family(row.job_id)) if row.state is JobState.PENDING else 1
        return budget.need(row, self._learned, family)

    def _family(self, job_id: str) -> list[str]:
        """The rows one create of `job_id` makes: itself, plus the later videos of a `count`
        job that are still to make (never ones already made)."""
        return [job_id, *(c for c in self._children.get(job_id, ())
                          if self._rows[c].state is JobState.PENDING)]

    def _halted(self) -> bool:
        """Submissions stopped for this run: the account is out of credit, or the API
        stayed unreachable through every retry."""
        return bool(self.outcome.out_of_credit or self.outcome.api_unavailable)

    def _work_may_appear(self) -> bool:
        """Could a job still become submittable without us doing anything?"""
        return bool(self.poll.flights or self._creating)

    async def _submit_loop(self) -> None:
        try:
            while not self._stop.is_set():
                token = self._wake.token()
                free = self._limit - self._busy_slots()
                if free > 0 and not self._halted():
                    batch = self._claim(free)
                    if batch:
                        self._launch(batch)
                        continue
                nothing_to_send = self._halted() or not (
                    (self._pending and not self._stalled) or self._audio_pending)
                if nothing_to_send and not self._work_may_appear():
                    return
                await self._wake.wait(token, None)
        finally:
            self._submitting_done = True
            self._wake.notify()

    def _claim(self, free: int) -> list[tuple[str, bool]]:
        """Pick up to `free` creates to send and journal them, all in one durable write.

        Add-audio steps of admitted jobs go first (their credits are reserved). Then
        admissions, in order, under the one budget rule (`budget.fits`): the first that
        does not fit stops them all until room frees. Nothing awaits between the budget
        check and the journal, so two claims can never both spend the same credits.
        """
        batch: list[tuple[str, bool]] = []
        while self._audio_pending and len(batch) < free:
            batch.append((self._audio_pending.popleft(), True))
        claimed = 0  # credits reserved by this batch so far
        cap = self.settings.max_credits
        while self._pending and len(batch) < free and not self._stalled:
            if not self._screen_head() or not self._pending:
                break
            job_id = self._pending[0]
            row = self._rows[job_id]
            need = self._need(row)
            if not budget.fits(cap, self._committed_total + claimed, need):
                self._stalled = True
                if job_id not in self._held:
                    self._held.add(job_id)
                    self.emit(JobEvent(EventKind.BUDGET, job_id,
                                       f"held back: needs {need} credits, "
                                       f"{self._remaining()} left of the budget; the jobs "
                                       "after it wait too (the budget keeps manifest order)"))
                break
            self._pending.popleft()
            batch.append((job_id, row.state is JobState.AUDIO_PENDING))
            claimed += need
        if not batch:
            return batch
        now = self.now_iso()
        needs = {j: self._need(self._rows[j]) for j, _ in batch}
        claimed_rows = self._apply([(j, Claimed(now, audio)) for j, audio in batch],
                                   durable=True)
        for (job_id, audio), row in zip(batch, claimed_rows, strict=True):
            need = needs[job_id]
            # the job now holds what it held before plus what this create reserved (for a
            # video: the whole family at the learned price, its add-audio step included)
            self._set_committed(job_id, row.committed_credits if audio else
                                row.credits_prior + row.credits_lost + need)
        return batch

    def _screen_head(self) -> bool:
        """Pre-flight at the head of the queue: fail jobs whose asset is definitively bad
        (before anything is sent or reserved); False while the head's verdict is due."""
        while self._gate is not None and self._pending:
            job_id = self._pending[0]
            if self._rows[job_id].state is not JobState.PENDING:
                return True  # an add-audio step: its video was checked before it was paid
            verdict = self._gate.verdict(job_id)
            if verdict is None:
                return False
            if verdict.ok:
                return True
            self._pending.popleft()
            self._fail(job_id, CreateRefused(verdict.error))
        return True

    def _remaining(self) -> int | None:
        cap = self.settings.max_credits
        return None if cap is None else cap - self._committed_total

    def _launch(self, batch: list[tuple[str, bool]]) -> None:
        for job_id, audio in batch:
            task = asyncio.create_task(self._create(job_id, audio))
            self._creating.add(task)
            task.add_done_callback(self._create_done)

    def _create_done(self, task: asyncio.Task[None]) -> None:
        self._creating.discard(task)
        if not task.cancelled() and task.exception() is not None and self._fatal is None:
            self._fatal = task.exception()
            self.stop()
        self._wake.notify()

    def _create_call(self, row: JobRow, audio: bool, on_send: Callable[[], None]
                     ) -> Callable[[], Awaitable[list[TaskRecord]]]:
        """The one request a create sends: the add-audio step, a batch create (`count`,
        `model_name`: the family's videos still to make), or a single create."""
        req = row.request
        if audio:
            step = req["add_audio"]

            async def call() -> list[TaskRecord]:
                return [await self.client.update_audio(row.task_id or "", step["audio_type"],
                                                       step.get("audio_url"), on_send)]
        elif req.get("model_name") or req.get("count"):
            batch_fields = {k: v for k, v in req.items() if k in BATCH_FIELDS}
            batch_fields["count"] = len(self._family(row.job_id))

            async def call() -> list[TaskRecord]:
                return await self.client.create_batch(batch_fields, on_send)
        else:
            fields = {k: v for k, v in req.items() if k != "add_audio"}

            async def call() -> list[TaskRecord]:
                return [await self.client.create(fields, on_send)]
        return call

    async def _create(self, job_id: str, audio: bool) -> None:
        row = self._rows[job_id]
        sent = False

        def on_send() -> None:
            nonlocal sent
            if not sent:
                sent = True
                self.store.mark_sent(job_id)

        call = self._create_call(row, audio, on_send)

        async def attempt() -> list[TaskRecord]:
            try:
                return await call()
            except OutcomeUnknown as exc:
                if sent:
                    raise
                # failed before a byte left (e.g. waiting for a connection): nothing made
                raise RetryableApiError(str(exc)) from None

        def on_retry(n: int, exc: ApiError, wait: float) -> None:
            nonlocal sent
            if sent:
                # the API refused that attempt, so nothing exists yet; if we die while
                # waiting to try again, the job must come back as never sent, not unknown
                sent = False
                self.store.mark_sent(job_id, False)
            self.emit(JobEvent(EventKind.RETRY, job_id, str(exc)))

        try:
            records = await self.settings.retry.run(
                attempt, sleep=self.sleep, clock=self.clock, rng=self.rng, retry_unknown=False,
                on_retry=on_retry)
        except asyncio.CancelledError:
            if not sent:  # stopped before this attempt left: provably nothing made
                self._apply([(job_id, Unsent(audio))], durable=True)
            raise
        except OutcomeUnknown as exc:
            self._lost(job_id, audio, exc)
            return
        except InsufficientCredits as exc:
            self._out_of_credit(job_id, audio, exc)
            return
        except CredentialsError:
            self._back_to_queue(job_id, audio)
            raise
        except AccountBusy as exc:
            self._busy(job_id, audio, exc)
            return
        except RetryableApiError as exc:
            self._give_up_sending(job_id, audio, exc)
            return
        except FatalApiError as exc:
            self._fail(job_id, CreateRefused(str(exc), audio))
            return
        self._accepted(job_id, audio, records)

    def _lost(self, job_id: str, audio: bool, exc: OutcomeUnknown) -> None:
        self._fail(job_id, AnswerLost(
            f"{exc}: the task may exist and be charged; not sent again "
            "(re-run with --resubmit-unknown to send it anyway)", audio))
        self.emit(JobEvent(EventKind.UNKNOWN, job_id, str(exc)))

    def _out_of_credit(self, job_id: str, audio: bool, exc: InsufficientCredits) -> None:
        self._back_to_queue(job_id, audio)
        self.outcome.out_of_credit = str(exc)
        self.emit(JobEvent(EventKind.NOTICE, job_id, f"{exc}: no more jobs will be sent"))

    def _busy(self, job_id: str, audio: bool, exc: AccountBusy) -> None:
        if self.poll.flights:
            # the account is at its limit of tasks in flight: wait for a slot instead
            self._back_to_queue(job_id, audio)
            self._limit = max(1, min(self._limit, len(self.poll.flights)))
            self.emit(JobEvent(EventKind.NOTICE, job_id,
                               f"the API is busy ({exc}); concurrency lowered to "
                               f"{self._limit} for this run"))
            return
        self._give_up_sending(job_id, audio, exc)

    def _give_up_sending(self, job_id: str, audio: bool, exc: RetryableApiError) -> None:
        # the API kept refusing or could not be reached: nothing was made, so the job
        # waits for a later run instead of failing, and no more jobs are sent now
        self._back_to_queue(job_id, audio)
        if self.outcome.api_unavailable is None:
            self.outcome.api_unavailable = str(exc)
            self.emit(JobEvent(EventKind.NOTICE, job_id,
                               f"gave up sending after retries ({exc}); no more jobs will "
                               "be sent in this run"))

    def _accepted(self, job_id: str, audio: bool, records: list[TaskRecord]) -> None:
        row = self._rows[job_id]
        req = row.request
        if not audio and (req.get("model_name") or req.get("count")):
            self._adopt_family(job_id, records)
            return
        (record,) = records
        # the task id is recorded whatever else the answer says: it is paid work
        credits = self._charge(row, record, audio)
        (row,) = self._apply([(job_id, Accepted(record.task_id, credits, audio))], durable=True)
        if not audio:
            self._learn(row, credits)
        self._set_committed(job_id, row.committed_credits)
        note = self._note_charge(row, record, audio)
        if note is not None:
            (row,) = self._apply([(job_id, note)])
        now = self.clock()
        self.poll.track(record.task_id, row, audio, now)
        self.emit(JobEvent(EventKind.SUBMITTED, job_id, record.task_id,
                           credits=credits or 0))

    def _charge(self, row: JobRow, record: TaskRecord, audio: bool) -> int | None:
        """The API's `deduction_credit` for one task, if the budget may use it."""
        estimate = budget.audio_estimate(row) if audio else budget.video_estimate(row)
        return budget.charge(record.charged, estimate).credits

    def _note_charge(self, row: JobRow, record: TaskRecord, audio: bool) -> ChargeNoted | None:
        """An unusable charge, as the API said it, to record (state column `credits_note`);
        told to the user once per run. The estimate stays held (see `budget.charge`)."""
        estimate = budget.audio_estimate(row) if audio else budget.video_estimate(row)
        value = record.charged
        problem = budget.charge(value, estimate).problem
        if problem is None:
            return None
        step = "add-audio task" if audio else "task"
        note = (f"{step} {record.task_id}: the API's deduction_credit is unusable "
                f"({problem}); the estimate {estimate} is held instead")
        if not self._bad_charge_noticed:
            self._bad_charge_noticed = True
            self.emit(JobEvent(EventKind.NOTICE, row.job_id,
                               f"{note} (any further such answers are recorded in the state "
                               "without another notice)"))
        return ChargeNoted(note) if row.credits_note != note else None

    def _learn(self, row: JobRow, credits: int | None) -> None:
        """Keep the highest price the API charged for a video of this kind."""
        if credits is not None:
            kind = budget.price_kind(row)
            self._learned[kind] = max(self._learned.get(kind, 0), credits)

    def _adopt_family(self, job_id: str, records: list[TaskRecord]) -> None:
        """Give each video of a batch create its own row: one durable write for all."""
        members = self._family(job_id)
        assigned = list(zip(members, records, strict=False))
        missing = members[len(assigned):]
        # videos listed under an id we cannot use were made and charged: never take them
        # for videos the API refused (that would free their credits and make them again)
        unusable = getattr(records, "unusable", 0)
        unreadable, missing = missing[:unusable], missing[unusable:]
        unreadable_error = ("the batch create listed this video under an unusable task id: "
                            "it may exist and be charged; not sent again (re-run with "
                            "--resubmit-unknown to send it anyway)")
        error = f"the batch create returned {len(records)} of {len(members)} videos"
        charged = [self._charge(self._rows[j], r, False) for j, r in assigned]
        at = self.now_iso()
        steps: list[tuple[str, Event]] = [
            (j, FamilyAccepted(r.task_id, c, at)) for (j, r), c in zip(assigned, charged,
                                                                        strict=True)]
        steps += [(j, AnswerLost(unreadable_error)) for j in unreadable]
        steps += [(j, CreateRefused(error)) for j in missing]
        rows = self._apply(steps, durable=True)
        now = self.clock()
        notes: list[tuple[str, Event]] = []
        for (j, record), credits, row in zip(assigned, charged, rows, strict=False):
            self._set_committed(j, row.committed_credits)
            note = self._note_charge(row, record, False)
            if note is not None:
                notes.append((j, note))
            self._learn(row, credits)
            self.poll.track(record.task_id, row, False, now)
            self.emit(JobEvent(EventKind.SUBMITTED, j, record.task_id, credits=credits or 0))
        if notes:
            self._apply(notes)
        lost_rows = rows[len(assigned):len(assigned) + len(unreadable)]
        for j, row in zip(unreadable, lost_rows, strict=True):
            self._set_committed(j, row.committed_credits)
            self.emit(JobEvent(EventKind.UNKNOWN, j, unreadable_error))
        for j, row in zip(missing, rows[len(assigned) + len(unreadable):], strict=True):
            self._set_committed(j, row.committed_credits)
            self.emit(JobEvent(EventKind.FAILED, j, error))
        if len(records) > len(members):
            self._hold_surplus(job_id, records[len(members):])
        if unusable > len(unreadable):
            # surplus videos we cannot even name: held at the estimate
            extra = unusable - len(unreadable)
            lost = budget.video_estimate(self._rows[job_id]) * extra
            held = (f"the batch create made {extra} video(s) more than asked under unusable "
                    f"task ids; they are held against the budget ({lost} credits)")
            (row,) = self._apply([(job_id, Held(0, lost, held))], durable=True)
            self._set_committed(job_id, row.committed_credits)
            self.emit(JobEvent(EventKind.NOTICE, job_id, held))

    def _hold_surplus(self, job_id: str, surplus: list[TaskRecord]) -> None:
        """The API made more videos than asked: they were charged, so the job holds them
        (the API's figure where usable, else the estimate) and their ids are recorded."""
        row = self._rows[job_id]
        estimate = budget.video_estimate(row)
        charged = [budget.charge(r.charged, estimate).credits
                   for r in surplus]
        prior = sum(c for c in charged if c is not None)
        lost = estimate * sum(1 for c in charged if c is None)
        ids = ", ".join(r.task_id for r in surplus)
        note = (f"the batch create made {len(surplus)} video(s) more than asked ({ids}); "
                f"they are held against the budget ({prior + lost} credits)")
        (row,) = self._apply([(job_id, Held(prior, lost, note))], durable=True)
        self._set_committed(job_id, row.committed_credits)
        self.emit(JobEvent(EventKind.NOTICE, job_id, note))

    def _back_to_queue(self, job_id: str, audio: bool) -> None:
        """A create that provably made no task (refused before or by the API): undone
        (durably) and queued again at the front."""
        (row,) = self._apply([(job_id, Unsent(audio))], durable=True)
        if audio:
            self._audio_pending.appendleft(job_id)
        else:
            self._set_committed(job_id, row.committed_credits)
            self._pending.appendleft(job_id)

    def _fail(self, job_id: str, event: AnswerLost | CreateRefused | DownloadFailed) -> None:
        # the videos of a count job still to make share the fate of its one create
        audio_step = not isinstance(event, DownloadFailed) and event.audio
        family = [job_id] if audio_step or self._rows[job_id].task_id else self._family(job_id)
        for row in self._apply([(j, event) for j in family]):
            self._set_committed(row.job_id, row.committed_credits)
        if not isinstance(event, AnswerLost):
            self.emit(JobEvent(EventKind.FAILED, job_id, event.error))
        self._wake.notify()

    def _downloaded(self, row: JobRow, got: Downloaded) -> None:
        """A verified file is on disk: its remote copy may go, report.html gets a poster."""
        if self.settings.delete_remote:
            self.cleanup.schedule(row, self.clock())
        self._posters.add(got.path, got.sha256)  # report.html's, made once, in the background
