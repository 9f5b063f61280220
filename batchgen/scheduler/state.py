"""The run's shared values: settings, outcome, progress events and the small records the
workers keep (a task in flight, a deletion due), and the wake-up the loops wait on.

Plain data and one asyncio primitive: no HTTP, SQL or files. The runner (runner.py) and
its workers (cleanup.py, ...) import them from here; `batchgen.runner` re-exports the
public ones (RunSettings, RunOutcome, JobEvent, EventKind, utc_now_iso).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from batchgen.errors import RetryableApiError
from batchgen.retry import RetryPolicy

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


@dataclass(slots=True)
class Flight:
    """A task in flight at the API, as the poller tracks it."""

    job_id: str
    audio: bool
    sent: float
    missing: int = 0


@dataclass(slots=True)
class Deletion:
    """A task whose video is safely on disk and is to be deleted at the API."""

    job_id: str
    task_id: str
    due: float
    tries: int = 0
    reason: str = ""


class Wakeup:
    """Edge-triggered wake-up for loops that wait on state changes, or for a while.

    A timed wait sleeps on the runner's injected `sleep`, so a test that injects a fake
    clock and sleep runs every loop on fake time.
    """

    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._event = asyncio.Event()
        self._sleep = sleep

    def token(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, token: asyncio.Event, timeout: float | None) -> None:
        """Until `token` is set (a state change) or `timeout` seconds have passed."""
        if token.is_set():
            return
        if timeout is None:
            await token.wait()
            return
        woken = asyncio.ensure_future(token.wait())
        slept = asyncio.ensure_future(self._sleep(max(0.0, timeout)))
        try:
            await asyncio.wait({woken, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()


class BadBody(RetryableApiError):
    """A download that arrived but was wrong (truncated, not an MP4): retried, and once
    retries run out the job fails, unlike a host that could not be reached at all."""


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
