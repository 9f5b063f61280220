"""The run's shared state: settings, outcome, progress events, and `RunState` — the one
in-memory view every worker is given explicitly (the hand-offs and the wake-up the loops
wait on are in handoffs.py).

`RunState` holds the rows of the jobs still in play, the count families, the credits each
job holds (`Ledger`, ledger.py), the run's outcome and the hand-offs between workers
(`Handoffs`: add-audio steps due, videos ready, the end of sending); its `apply` is the
one write path (the store applies each transition, the view keeps the very row written).
No HTTP, SQL or files here: the store does the writing, client/ the wire. The runner
(runner.py) builds one `RunState` per run and passes it to its workers (submit.py,
poll.py, fetch.py, cleanup.py); `batchgen.runner` re-exports the public names
(RunSettings, RunOutcome, JobEvent, EventKind, utc_now_iso).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen import budget
from batchgen.jobs import JobRow, JobState
from batchgen.retry import RetryPolicy
from batchgen.scheduler.handoffs import Handoffs, Wakeup
from batchgen.scheduler.journal import GroupCommit
from batchgen.scheduler.ledger import Ledger
from batchgen.scheduler.rows import ENDED, Rows
from batchgen.transitions import AnswerLost, ChargeNoted, CreateRefused, DownloadFailed, Event

if TYPE_CHECKING:
    from batchgen.client import TaskRecord
    from batchgen.store import Store

#: fields the batch endpoint takes (akool-api.md E2); audio and effects do not apply there
BATCH_FIELDS = frozenset({"image_url", "prompt", "model_name", "negative_prompt",
                          "extend_prompt", "resolution", "video_length", "count",
                          "webhook_url"})
#: in file names, video k of a `count` job is `<id>~k` (its job id `<id>#k` would put a
#: URL fragment into every link to the file); `~` can be in no job id, so no clash
COUNT_FILE_SEPARATOR = "~"
#: a task missing from this many consecutive results is treated as gone...
MISSING_LIMIT = 5
#: ...but only once it is this many seconds old
MISSING_MIN_AGE = 120.0


class EventKind(StrEnum):
    SUBMITTED = "submitted"      #: a create was accepted (detail: task id, credits)
    TASK_DONE = "task_done"      #: a task finished at the API (its video is ready)
    DOWNLOADED = "downloaded"    #: a verified file is under its final name
    FAILED = "failed"            #: a job failed permanently
    UNKNOWN = "unknown"          #: a create's answer was lost
    RETRY = "retry"              #: a transient fault, retried
    BUDGET = "budget"            #: a job was held back by the budget
    NOTICE = "notice"            #: anything else worth a line


@dataclass(frozen=True, slots=True)
class JobEvent:
    kind: EventKind
    job_id: str = ""
    message: str = ""
    credits: int = 0


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What the runner needs to know, already resolved from manifest, flags and env."""

    output_dir: Path
    name: str
    filename: str = "{id}.mp4"
    concurrency: int = 5
    poll_interval: float = 5.0
    poll_batch: int = 50
    max_credits: int | None = None
    download_workers: int = 4
    #: videos waiting for download that pause the submitter (None: 4 x concurrency, >= 64)
    ready_limit: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: seconds to let creates already on the wire finish after a stop request
    stop_grace: float = 2.0
    #: delete each video at the API once its file is verified on disk
    delete_remote: bool = False
    #: seconds after which a task still queued or processing is left for the next run
    max_task_age: float = 3 * 3600.0
    #: how often a deletion refused by the API (e.g. still processing) is tried again
    delete_attempts: int = 5
    #: seconds with no usable answer from the API after which the run saves its state and
    #: ends (`RunOutcome.outage`); None never gives up
    outage_timeout: float | None = 600.0


@dataclass(slots=True)
class RunOutcome:
    """How the run ended; cli turns it into an exit code."""

    interrupted: bool = False
    budget_blocked: int = 0          #: jobs left because of the budget
    budget_needed: int = 0           #: credits those jobs would need
    out_of_credit: str | None = None  #: the API refused for lack of credit
    api_unavailable: str | None = None  #: a create gave up after every retry
    abandoned: int = 0               #: tasks no longer polled (too old); resumed next run
    outage: str | None = None        #: the API answered nothing usable for outage_timeout
    kept_ready: int = 0              #: finished videos not downloaded (unreachable); next run


def utc_now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Ports:
    """What every worker is given instead of reaching for it: the progress callback and
    the run's injected clock, UTC timestamps, sleep and randomness."""

    emit: Callable[[JobEvent], None]
    clock: Callable[[], float]
    now_iso: Callable[[], str]
    sleep: Callable[[float], Awaitable[None]]
    rng: random.Random


class RunState:
    """What the workers of one run share, passed to each explicitly (nothing global)."""

    def __init__(self, store: Store, settings: RunSettings, ports: Ports) -> None:
        self.store = store
        self.settings = settings
        self.ports = ports
        self.outcome = RunOutcome()
        self.wake = Wakeup(ports.sleep)
        #: set by `Runner.stop` (or an outage, or a fatal create): no new submissions
        self.stopping = asyncio.Event()
        self.ledger = Ledger()
        #: job id -> its row as last written, for the jobs in play (others are read from
        #: the store: a job that ended leaves memory unless the state is shared)
        self.rows = Rows(store, self.ledger, retire=not store.shared)
        #: a `count` job -> the ids of its later videos (`<id>#k`)
        self.children: dict[str, list[str]] = {}
        #: add-audio steps due, videos ready, the end of sending
        self.handoffs = Handoffs()
        #: durable submit-path records share one commit per loop turn (journal.py); the
        #: in-memory rows are updated when it is written, before any writer goes on
        self.journal = GroupCommit(lambda steps, sent: self._write(steps, durable=True,
                                                                   sent=sent))

    @property
    def ready_limit(self) -> int:
        """Videos waiting for download that pause the submitter (handoffs.py)."""
        limit = self.settings.ready_limit
        return max(1, limit) if limit is not None else max(64, 4 * self.settings.concurrency)

    def apply(self, steps: list[tuple[str, Event]], *, durable: bool = False) -> list[JobRow]:
        """The one write path: the store applies the transitions and the in-memory view
        keeps the very rows it wrote (one per step; a job's later steps chain)."""
        self.journal.flush()  # records staged for a shared commit go first, in order
        return self._write([(self.rows[j], e) for j, e in steps], durable=durable)

    async def apply_shared(self, steps: list[tuple[str, Event]]) -> list[JobRow]:
        """`apply(..., durable=True)` in the commit shared by this loop turn's writers
        (journal.py): returns once the rows are durable."""
        return await self.journal.apply([(self.rows[j], e) for j, e in steps])

    async def sent(self, job_id: str) -> None:
        """The journal's durable "sent" mark of a create about to leave, shared likewise;
        `ClaimLost` when a shared state refuses it (then the create must not leave)."""
        await self.journal.sent(job_id)

    def _write(self, steps: Sequence[tuple[JobRow, Event]], *, durable: bool,
               sent: Sequence[str] = ()) -> list[JobRow]:
        for before, _ in steps:  # what the store's total counts for it until now
            self.ledger.know(before.job_id, before.committed_credits)
        rows = self.store.apply_many(steps, durable=durable, sent=sent)
        self.rows.written(rows)
        if not self.store.shared:
            for row in rows:
                if row.state in ENDED:  # its family is settled: it left memory too
                    self.children.pop(row.job_id, None)
        return rows

    def admit(self, row: JobRow, family: Sequence[JobRow] = ()) -> None:
        """A job read into the run's view, with the later videos its create makes."""
        self.rows[row.job_id] = row
        for child in family:
            self.rows[child.job_id] = child
        if family:
            self.children[row.job_id] = [c.job_id for c in family]

    def commit(self, job_id: str, credits: int) -> None:
        """What a job holds against the budget changed; a freed room wakes the submitter."""
        if self.ledger.hold(job_id, credits):
            self.wake.notify()
        self.rows.settled(job_id)

    def family(self, job_id: str) -> list[str]:
        """The rows one create of `job_id` makes: itself, plus the later videos of a `count`
        job that are still to make (never ones already made)."""
        return [job_id, *(c for c in self.children.get(job_id, ())
                          if self.rows[c].state is JobState.PENDING)]

    def halted(self) -> bool:
        """Submissions stopped for this run: the account is out of credit, or the API
        stayed unreachable through every retry."""
        return bool(self.outcome.out_of_credit or self.outcome.api_unavailable)

    def stop(self) -> None:
        """No new submissions from now on; every loop wakes to notice."""
        self.stopping.set()
        self.wake.notify()

    def fail(self, job_id: str, event: AnswerLost | CreateRefused | DownloadFailed) -> None:
        """A job failed (or its answer was lost); the later videos of a count job still to
        make share the fate of its one create."""
        audio_step = not isinstance(event, DownloadFailed) and event.audio
        family = [job_id] if audio_step or self.rows[job_id].task_id else self.family(job_id)
        for row in self.apply([(j, event) for j in family]):
            self.commit(row.job_id, row.committed_credits)
        if not isinstance(event, AnswerLost):
            self.ports.emit(JobEvent(EventKind.FAILED, job_id, event.error))
        self.wake.notify()

    def charge(self, row: JobRow, record: TaskRecord, audio: bool) -> int | None:
        """The API's `deduction_credit` for one task, if the budget may use it."""
        estimate = budget.audio_estimate(row) if audio else budget.video_estimate(row)
        return budget.charge(record.charged, estimate).credits

    def charge_note(self, row: JobRow, record: TaskRecord, audio: bool) -> ChargeNoted | None:
        """An unusable charge, as the API said it, to record (state column `credits_note`);
        told to the user once per run. The estimate stays held (see `budget.charge`)."""
        estimate = budget.audio_estimate(row) if audio else budget.video_estimate(row)
        problem = budget.charge(record.charged, estimate).problem
        if problem is None:
            return None
        step = "add-audio task" if audio else "task"
        note = (f"{step} {record.task_id}: the API's deduction_credit is unusable "
                f"({problem}); the estimate {estimate} is held instead")
        if not self.ledger.bad_charge_noticed:
            self.ledger.bad_charge_noticed = True
            self.ports.emit(JobEvent(EventKind.NOTICE, row.job_id,
                                     f"{note} (any further such answers are recorded in the "
                                     "state without another notice)"))
        return ChargeNoted(note) if row.credits_note != note else None
