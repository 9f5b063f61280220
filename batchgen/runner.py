"""The scheduler: turns pending rows of the store into finished files, spending each credit once.

`Runner.run()` is an `asyncio.TaskGroup` over small workers that share one `RunState`
(scheduler/state.py: the rows in play, the budget ledger, the outcome, the wake-up) and
one `AkoolClient`, each given what it needs explicitly:

* the **submitter** (scheduler/submit.py) keeps `concurrency` tasks in flight at the API,
  journaling each create `submitting` (durably) and reserving its estimate in the same
  synchronous step, so racing submissions cannot overshoot the budget together;
* the **poller** (scheduler/poll.py) asks `resultsByIds` about every task in flight when
  `PollClock` says, and hands done videos on;
* **downloaders** (scheduler/fetch.py) fetch finished videos while the others go on;
* the **deleter** (scheduler/cleanup.py) deletes verified videos at the API, if asked.

The runner itself owns start-up (`_load`, scheduler/startup.py: the store's sums and
queues into the run's view, which holds only the jobs in play, and the tasks to poll
again) and stop: on `stop()`, creates already on the wire get
`stop_grace` seconds to record their answer; a cancelled one that was not sent is
journaled unsent, one that was sent stays `submitting` and resumes as `unknown`. Every
transition is written to the store as it happens, so the process may die at any instant.
Progress is reported through `on_event`; the runner never prints. Time, sleep and
randomness are injected. Deliberately not here: HTTP details (client/), files
(download.py), SQL (store.py), retry arithmetic (retry.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from batchgen.client import AkoolClient
from batchgen.polling import PollClock
from batchgen.poster_maker import PosterMaker
from batchgen.retry import OutageWatch
from batchgen.scheduler import startup
from batchgen.scheduler.cleanup import Cleanup
from batchgen.scheduler.fetch import Fetch
from batchgen.scheduler.poll import Poll
from batchgen.scheduler.share import Sharing
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
    RunState,
    utc_now_iso,
)
from batchgen.scheduler.submit import Submit
from batchgen.store import Store

if TYPE_CHECKING:
    from batchgen.preflight import Gate
    from batchgen.state_store import SharedState

__all__ = ["BATCH_FIELDS", "COUNT_FILE_SEPARATOR", "MISSING_LIMIT", "MISSING_MIN_AGE",
           "EventKind", "JobEvent", "RunOutcome", "RunSettings", "Runner", "utc_now_iso"]


class Runner:
    """One run over one store. Build, then `await run()`; `stop()` may be called any time."""

    def __init__(self, store: Store, client: AkoolClient, settings: RunSettings,
                 on_event: Callable[[JobEvent], None] = lambda e: None, *,
                 clock: Callable[[], float] = time.monotonic,
                 now_iso: Callable[[], str] = utc_now_iso,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None, gate: Gate | None = None,
                 sign: Callable[[str], Awaitable[str]] | None = None,
                 publish: Callable[[Path, int], Awaitable[None]] | None = None) -> None:
        self.client = client
        ports = Ports(emit=on_event, clock=clock, now_iso=now_iso, sleep=sleep,
                      rng=rng or random.Random())
        #: what every worker shares: the rows in play, the ledger, the outcome, the wake-up
        self.state = RunState(store, settings, ports)
        #: a bucket output's staged videos are deleted once their poster is made
        self._posters = PosterMaker(settings.output_dir, discard=publish is not None)
        #: the poller: the tasks in flight and when to ask about them
        self.poll = Poll(client, self.state)
        #: with a state shared by several runners (--state): claims, lease, adoption
        self.sharing = (Sharing(cast("SharedState", store), self.state)
                        if store.shared else None)
        #: the submitter; `gate` (pre-flight) clears each job's assets before its first create
        #: and `sign` presigns its s3:// URLs as it leaves (uploads.py)
        self.submit = Submit(client, self.state, self.poll, gate, sign,
                             sharing=self.sharing)
        #: the deleter (output.delete_remote): its own queue, our write path and clock
        self.cleanup = Cleanup(client, self.state,
                               backoff=lambda n: min(self.polls.base * n, self.polls.cap))
        #: the download workers, fed by the poller; `publish` puts each verified video in
        #: the output bucket before it counts as downloaded (outputs.py)
        self.fetch = Fetch(client, self.state, self.poll,
                           self.cleanup if settings.delete_remote else None, self._posters,
                           publish)
        #: set once `run` has read the store: before that, nothing is known to be left
        self._loaded = asyncio.Event()

    # -- public ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop submitting now; the run winds down and `run` returns (interrupted)."""
        self.state.stop()

    @property
    def outcome(self) -> RunOutcome:
        return self.state.outcome

    @property
    def polls(self) -> PollClock:
        """When the poller asks about what (polling.py)."""
        return self.poll.schedule

    @property
    def committed_credits(self) -> int:
        """Credits held by everything sent from this output dir, all runs included (with
        a shared state: by every runner, as the store has it now)."""
        if self.sharing is not None:
            return self.state.store.committed_credits()
        return self.state.ledger.total

    async def drained(self) -> None:
        """Return once nothing is left to send and no create is on the wire (the last
        tasks are in flight at the API), or the run is stopping: what the run's end needs
        can be prepared then, while it only waits."""
        state = self.state
        await self._loaded.wait()  # until then the window is empty: "nothing to send"

        def done() -> bool:
            return state.stopping.is_set() or (self.submit.draining()
                                               and not self.submit.creating)

        while not done():
            token = state.wake.token()
            if done():
                return
            await state.wake.wait(token, None)

    async def run(self) -> RunOutcome:
        """Drive every job of the store to a final state (or until stopped)."""
        self._load()
        self._loaded.set()
        lease = (asyncio.create_task(self.sharing.keep_lease(self.poll, self.fetch))
                 if self.sharing is not None else None)
        try:
            async with asyncio.TaskGroup() as group:
                workers = self._start(group)
                watch = group.create_task(self._outage_watch(), name="outage-watch")
                group.create_task(self._supervise(workers, watch), name="supervisor")
        except ExceptionGroup as failed:
            # a worker failed: creates already on the wire first record their answer
            self.state.stop()
            await self.submit.grace()
            raise failed.exceptions[0] from None
        finally:
            await self.submit.cancel()
            # records staged by cancelled creates (say, a task id just read) still land
            self.state.journal.flush()
            if lease is not None:
                lease.cancel()
            await self._posters.finish(drop_waiting=self.outcome.interrupted)
        for fatal in (self.submit.fatal, self.sharing and self.sharing.fatal):
            if fatal:
                raise fatal
        self.outcome.budget_blocked, self.outcome.budget_needed = self.submit.blocked()
        return self.outcome

    def _start(self, group: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        """The workers, one task each."""
        settings = self.state.settings
        workers = [group.create_task(self.submit.run(), name="submitter"),
                   group.create_task(self.poll.run(self.submit.draining), name="poller")]
        workers += [group.create_task(self.fetch.run_worker(), name=f"downloader-{i}")
                    for i in range(max(1, settings.download_workers))]
        if settings.delete_remote:
            workers.append(group.create_task(self.cleanup.run(self.fetch.over),
                                             name="deleter"))
        return workers

    async def _supervise(self, workers: list[asyncio.Task[None]],
                         watch: asyncio.Task[None]) -> None:
        """Wait until every worker has ended, or a stop: then creates already on the wire
        get their grace (the workers go on meanwhile) and the workers are ended."""
        finished = asyncio.gather(*workers, return_exceptions=True)
        stopped = asyncio.ensure_future(self.state.stopping.wait())
        either: set[asyncio.Future[Any]] = {finished, stopped}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            watch.cancel()
        if finished.done():
            return
        if self.outcome.outage is None:
            self.outcome.interrupted = True
        # a cancelled create stays `submitting` and resumes as `unknown`
        await self.submit.grace()
        for task in workers:
            task.cancel()

    async def _outage_watch(self) -> None:
        """End the run when the API has answered nothing usable for `outage_timeout`:
        every loop would otherwise retry forever, and tomorrow's run would find the lock."""
        timeout = self.state.settings.outage_timeout
        if timeout is None:
            return
        ports = self.state.ports
        watch = OutageWatch(timeout)
        watch.observe(ports.clock(), self.client.answers_ok, self.client.answers_failed)
        step = min(1.0, max(0.02, timeout / 20))
        while True:
            await ports.sleep(step)
            now = ports.clock()
            if watch.observe(now, self.client.answers_ok, self.client.answers_failed):
                since = now - (watch.since if watch.since is not None else now)
                self.outcome.outage = f"no usable answer from the API for {since:.0f} s"
                ports.emit(JobEvent(EventKind.NOTICE, "", f"{self.outcome.outage}: stopping; "
                                    "the state is saved and nothing is lost"))
                self.stop()
                return

    # -- start-up ----------------------------------------------------------------------

    def _load(self) -> None:
        """The store's state into the run's view (scheduler/startup.py): the jobs in play
        only, or, with a shared state, every row (the store hands out the work)."""
        if self.sharing is not None:
            startup.load_shared(self.state)
            return
        startup.load(self.state, self.submit, self.poll, self.fetch, self.cleanup,
                     self._posters)
