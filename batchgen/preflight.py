"""Pre-flight: every job's image and audio checked before its first create is paid for.

Owns the run's schedule of checks. `Preflight` checks the assets of the
jobs still to send, in the order the submitter will send them, a few at a time, starting
as the run starts and staying at most `LOOKAHEAD` jobs ahead of the submitter (issue 18:
its memory is bounded by that, not by the manifest; preflight_ahead.py keeps the books),
so the verdicts are there before the submitter asks (`verdict`) and the check costs no
wall time. A URL shared by jobs within the lookahead (or checked shortly before) is
fetched once; verdicts are kept in the state (asset_memory.py, looked up per URL): a good
one is reused for a day, also later in the same run, an unreachable host is remembered
for an hour (a dead host is asked once, not once per image). A definitive
failure fails that job before it is sent (the runner's gate); an inconclusive one is
told once per host and the job goes on. `check_jobs` is the same check for
`validate --online` / `plan --online`, as located problems.

Deliberately not here: fetching (asset_probe.py), what a format is (assets.py), how
long a verdict is remembered (asset_memory.py), failing a job (the runner applies the
transition) and SQL (store.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from batchgen.asset_memory import CheckMemory, CheckStore
from batchgen.assets import AUDIO, IMAGE, Check, Verdict, host_of, shown
from batchgen.errors import Problem
from batchgen.preflight_ahead import Lookahead
from batchgen.settings import PREFLIGHT_CONCURRENCY as CONCURRENCY
from batchgen.settings import PreflightSettings as PreflightSettings
from batchgen.settings import is_loopback as is_loopback

Probe = Callable[[str, str], Awaitable[Check]]

#: jobs read ahead of the submitter at most (issue 18: memory bounded by this, not by the
#: manifest). The submitter takes up to `concurrency` jobs a wave (at most 1,000): 4,000
#: is four such waves, or ten seconds at issue 18's 412 jobs/s, so each job's verdict is
#: ready before the submitter asks, while the checks, 8 at a time, are the slower side
#: anyway. The jobs, their assets and the verdicts kept for them come to a few MB.
LOOKAHEAD = 4_000


@dataclass(frozen=True, slots=True)
class Asset:
    """One URL a job makes the API fetch: which field, and what it must be."""

    field: str
    url: str
    kind: str


def assets_of(request: Mapping[str, Any], skip: Container[str] = ()) -> list[Asset]:
    """The remote assets of a job's request: http(s) URLs, and s3:// URLs (presigned when
    checked: uploads.bucket_probe) except those in `skip`, the objects batchgen uploads
    itself from local files already checked at load."""
    found = [Asset("image_url", request.get("image_url") or "", IMAGE)]
    if request.get("audio_type") == 2:
        found.append(Asset("audio_url", request.get("audio_url") or "", AUDIO))
    step = request.get("add_audio")
    if isinstance(step, Mapping) and step.get("audio_type") == 2:
        found.append(Asset("add_audio.audio_url", step.get("audio_url") or "", AUDIO))
    return [a for a in found if a.url.startswith(("http://", "https://", "s3://"))
            and a.url not in skip]


@dataclass(frozen=True, slots=True)
class Cleared:
    """The gate's answer for one job: go on, or fail it with `error` (nothing was paid)."""

    ok: bool
    error: str = ""


class Gate(Protocol):
    """What the runner asks before sending a job's first create."""

    def verdict(self, job_id: str) -> Cleared | None:
        """None while the job's checks are still running."""

    def listen(self, notify: Callable[[], None]) -> None:
        """`notify` is called whenever a verdict lands."""


def describe(asset: Asset, check: Check) -> str:
    """Which field, which URL (never its query or password) and what is wrong."""
    return f"{asset.field} {shown(asset.url)}: {check.reason}"


def bad_asset_error(asset: Asset, check: Check) -> str:
    """The failed job's error: what is wrong and what to do."""
    return (f"pre-flight: {describe(asset, check)}; nothing was sent or paid; fix the asset "
            "and re-run with --retry-failed (or --no-preflight to send it anyway)")


class Preflight:
    """The checks of one run; `start` them, ask `verdict`, `close` at the end."""

    def __init__(self, probe: Probe, *, store: CheckStore | None = None,
                 concurrency: int = CONCURRENCY, lookahead: int | None = None,
                 now: Callable[[], float] = time.time,
                 warn: Callable[[str], None] = lambda message: None) -> None:
        self._probe = probe
        self._memory = CheckMemory(store)
        self._concurrency = concurrency
        self._now = now
        self._warn = warn
        #: the jobs read ahead of the submitter, and the verdicts they need
        self._ahead: Lookahead[Cleared] = Lookahead(lookahead or LOOKAHEAD)
        self._down: dict[str, str] = {}        #: host -> why it could not be reached
        #: host -> its first check, which the others on that host wait for
        self._first: dict[str, asyncio.Future[None]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        #: set when the workers may have more to do: room in the lookahead, a job asked
        self._stir = asyncio.Event()
        self.probes = 0                        #: URLs actually fetched in this run

    def listen(self, notify: Callable[[], None]) -> None:
        self._listeners.append(notify)

    def start(self, jobs: Iterable[tuple[str, Sequence[Asset]]],
              lookup: Callable[[str], Sequence[Asset]] | None = None) -> None:
        """Check these jobs' assets, in this order, in the background, read from `jobs`
        only as far as the lookahead goes. `lookup` gives the assets of a job asked for
        that is not held (asked again after its answer was forgotten, or beyond the
        reader); without it such a job has nothing to check."""
        self._ahead.feed(jobs, lookup)
        self._spawn()

    async def wait(self, each: Callable[[str, list[tuple[Asset, Check]]], None]
                   | None = None) -> None:
        """Until every job has its verdicts (validate/plan --online): each job is given,
        in order, with its assets' checks to `each` and then forgotten."""
        landed = asyncio.Event()
        self.listen(landed.set)
        made_room = True
        while True:
            for job_id, checks in self._ahead.ripe():
                made_room = True
                if each is not None:
                    each(job_id, checks)
            if made_room:  # else idle workers and this loop would wake each other
                self._stir.set()  # until the check in flight lands (a core at 100%)
                made_room = False
            running = [t for t in self._tasks if not t.done()]
            if not running:
                break
            landed.clear()
            woken = asyncio.ensure_future(landed.wait())
            await asyncio.wait([woken, *running], return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
        await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def verdict(self, job_id: str) -> Cleared | None:
        ahead = self._ahead
        cleared = ahead.answered.get(job_id)
        if cleared is not None:
            return cleared  # asked again (the budget held it back, or its create made nothing)
        if not ahead.holds(job_id):
            if not ahead.ask(job_id):
                return Cleared(True)  # not to check (no remote asset, or no longer pending)
            self._spawn()  # checked first: the submitter waits for it
        cleared = ahead.answer(job_id, _cleared)
        if cleared is not None:
            self._stir.set()  # room in the lookahead
        return cleared

    def holding(self) -> tuple[int, int]:
        """(jobs, URL verdicts) held now: what the lookahead bounds (tests sample it)."""
        return len(self._ahead.held), len(self._ahead.done)

    def _spawn(self) -> None:
        """Workers up to the concurrency (they end when the source is read and nothing is
        left to check; a job asked later starts them again)."""
        self._tasks = [t for t in self._tasks if not t.done()]
        self._stir.set()
        for i in range(len(self._tasks), self._concurrency):
            self._tasks.append(asyncio.create_task(self._work(), name=f"preflight-{i}"))

    async def _work(self) -> None:
        ahead = self._ahead
        while True:
            item = ahead.next_url()
            if item is None:
                if ahead.exhausted:
                    return
                self._stir.clear()  # the lookahead is full: until the submitter moves on
                self._tell()  # (`wait` lets go of what is ripe: maybe nothing had to land)
                await self._stir.wait()
                continue
            url, kind = item
            try:
                check = await self._check(url, kind)
            except Exception as exc:  # a bug must not hold the submitter forever
                check = Check(Verdict.INCONCLUSIVE, f"the check failed ({type(exc).__name__})")
            ahead.land(url, check)
            self._tell()

    def _tell(self) -> None:
        for notify in self._listeners:
            notify()

    async def _check(self, url: str, kind: str) -> Check:
        host = host_of(url)
        now = self._now()
        if host not in self._down and host not in self._first:
            kept = self._memory.host_down(host, now)
            if kept is not None:
                self._host_down(host, kept.reason, told_before=True)
        first = self._first.get(host)
        if first is not None and not first.done():
            await asyncio.shield(first)  # a host's first answer decides if it is reachable
        if host in self._down:
            return Check(Verdict.INCONCLUSIVE, self._down[host])
        kept = self._memory.good(url, now)
        if kept is not None:
            return kept
        if first is None:
            first = self._first[host] = asyncio.get_running_loop().create_future()
        try:
            check = await self._probe(url, kind)
        finally:
            if not first.done():
                first.set_result(None)
        self.probes += 1
        if check.verdict is Verdict.INCONCLUSIVE:
            self._host_down(host, check.reason)
            self._memory.keep_host(host, check, self._now())
        else:
            self._memory.keep_url(url, check, self._now())
        return check

    def _host_down(self, host: str, reason: str, told_before: bool = False) -> None:
        if host in self._down:
            return
        self._down[host] = reason
        when = " (remembered from a run within the hour)" if told_before else ""
        self._warn(f"pre-flight: {host} could not be checked: {reason}{when}; its assets "
                   "are sent unchecked (the API's servers may reach it)")


async def check_jobs(jobs: Sequence[Any], probe: Probe, *, concurrency: int = CONCURRENCY,
                     skip: Container[str] = ()) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) for `validate --online`/`plan --online`: every bad asset of every
    job, located by the job's source; each unreachable host once. URLs in `skip` (the
    objects a run uploads from local files) are not fetched. The jobs are walked once, in
    order, with the run's lookahead: only the jobs being checked are held."""
    warnings: list[str] = []
    errors: list[Problem] = []
    checks = Preflight(probe, concurrency=concurrency, warn=warnings.append)
    held: dict[str, Any] = {}  #: job id -> job, for the jobs the lookahead holds

    def listed() -> Iterator[tuple[str, list[Asset]]]:
        for job in jobs:
            held[job.id] = job
            yield job.id, assets_of(job.request_fields() | _add_audio(job), skip)

    def located(job_id: str, done: list[tuple[Asset, Check]]) -> None:
        job = held.pop(job_id)
        errors.extend(_located(job, asset.field, describe(asset, check),
                               "fix or replace the asset: a run fails this job before paying")
                      for asset, check in done if check.bad)

    checks.start(listed())
    try:
        await checks.wait(located)
    finally:
        await checks.close()
    first = jobs[0] if jobs else None
    return errors, [_located(first, "", w) for w in warnings]


def _cleared(checks: list[tuple[Asset, Check]]) -> Cleared:
    """A job's answer from its assets' verdicts: the first bad one fails it."""
    for asset, check in checks:
        if check.bad:
            return Cleared(False, bad_asset_error(asset, check))
    return Cleared(True)


def _add_audio(job: Any) -> dict[str, Any]:
    return {"add_audio": job.add_audio.as_dict()} if job.add_audio is not None else {}


def _located(job: Any, field: str, what: str, fix: str = "") -> Problem:
    if job is None:
        return Problem("", 1, "", what, fix)
    file, _, line = str(job.source).rpartition(":")
    where = f"jobs[{job.index}] (id {job.id})" if field else ""
    return Problem(file, int(line) if line.isdigit() else 1, where, what, fix)
