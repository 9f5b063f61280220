"""Pre-flight: every job's image and audio checked before its first create is paid for.

Owns the run's schedule of checks. `Preflight` checks the assets of the
jobs still to send, in the order the submitter will send them, a few at a time, starting
as the run starts, so the verdicts are there before the submitter asks (`verdict`) and
the check costs no wall time. Each distinct URL is checked once per run; verdicts are
kept in the state (asset_memory.py): a good one is reused for a day, an unreachable host
is remembered for an hour (a dead host is asked once, not once per image). A definitive
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
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from batchgen.asset_memory import CheckMemory, CheckStore
from batchgen.assets import AUDIO, IMAGE, Check, Verdict, host_of, shown
from batchgen.errors import Problem
from batchgen.settings import PREFLIGHT_CONCURRENCY as CONCURRENCY
from batchgen.settings import PreflightSettings as PreflightSettings
from batchgen.settings import is_loopback as is_loopback

Probe = Callable[[str, str], Awaitable[Check]]


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
                 concurrency: int = CONCURRENCY, now: Callable[[], float] = time.time,
                 warn: Callable[[str], None] = lambda message: None) -> None:
        self._probe = probe
        self._memory = CheckMemory(store)
        self._concurrency = concurrency
        self._now = now
        self._warn = warn
        self._jobs: dict[str, list[Asset]] = {}
        self._done: dict[str, Check] = {}      #: url -> verdict of this run
        self._down: dict[str, str] = {}        #: host -> why it could not be reached
        #: host -> its first check, which the others on that host wait for
        self._first: dict[str, asyncio.Future[None]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.probes = 0                        #: URLs actually fetched in this run

    def listen(self, notify: Callable[[], None]) -> None:
        self._listeners.append(notify)

    def start(self, jobs: Sequence[tuple[str, Sequence[Asset]]]) -> None:
        """Check these jobs' assets, in this order, in the background."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        seen: set[str] = set()
        for job_id, assets in jobs:
            self._jobs[job_id] = list(assets)
            for asset in assets:
                if asset.url not in seen:
                    seen.add(asset.url)
                    queue.put_nowait(asset.url)
        kinds = {a.url: a.kind for assets in self._jobs.values() for a in assets}
        self._memory.load()
        workers = min(self._concurrency, queue.qsize())
        self._tasks = [asyncio.create_task(self._work(queue, kinds), name=f"preflight-{i}")
                       for i in range(workers)]

    async def wait(self) -> None:
        """Until every check has its verdict (validate/plan --online)."""
        await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def verdict(self, job_id: str) -> Cleared | None:
        assets = self._jobs.get(job_id)
        if assets is None:
            return Cleared(True)  # not to check (no remote asset, or sent before)
        for asset in assets:
            check = self._done.get(asset.url)
            if check is None:
                return None
            if check.bad:
                return Cleared(False, bad_asset_error(asset, check))
        return Cleared(True)

    def results(self) -> dict[str, Check]:
        """Every verdict of this run, by URL."""
        return dict(self._done)

    async def _work(self, queue: asyncio.Queue[str], kinds: Mapping[str, str]) -> None:
        while not queue.empty():
            url = queue.get_nowait()
            try:
                check = await self._check(url, kinds[url])
            except Exception as exc:  # a bug must not hold the submitter forever
                check = Check(Verdict.INCONCLUSIVE, f"the check failed ({type(exc).__name__})")
            self._done[url] = check
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
    objects a run uploads from local files) are not fetched."""
    warnings: list[str] = []
    checks = Preflight(probe, concurrency=concurrency, warn=warnings.append)
    listed = [(job, assets_of(job.request_fields() | _add_audio(job), skip)) for job in jobs]
    checks.start([(job.id, assets) for job, assets in listed])
    try:
        await checks.wait()
    finally:
        await checks.close()
    done = checks.results()
    errors = [_located(job, asset.field, describe(asset, done[asset.url]),
                       "fix or replace the asset: a run fails this job before paying")
              for job, assets in listed for asset in assets if done[asset.url].bad]
    first = jobs[0] if jobs else None
    return errors, [_located(first, "", w) for w in warnings]


def _add_audio(job: Any) -> dict[str, Any]:
    return {"add_audio": job.add_audio.as_dict()} if job.add_audio is not None else {}


def _located(job: Any, field: str, what: str, fix: str = "") -> Problem:
    if job is None:
        return Problem("", 1, "", what, fix)
    file, _, line = str(job.source).rpartition(":")
    where = f"jobs[{job.index}] (id {job.id})" if field else ""
    return Problem(file, int(line) if line.isdigit() else 1, where, what, fix)
