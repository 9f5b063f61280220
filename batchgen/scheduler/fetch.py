"""Downloads: workers that turn `ready` jobs into verified files under their final names.

Each worker takes job ids from one queue (None ends it). An expired URL is refreshed from
the API once; a body that arrives wrong is retried and then fails the job; a host that
cannot be reached keeps the job `ready` for the next run (an outage never fails paid
work). The file itself is written by download.py; the state change goes through the
runner's one write path, passed in. Deliberately not here: polling, deleting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from batchgen.client import AkoolClient, TaskRecord, TaskStatus
from batchgen.download import Downloaded, fetch_to, render_filename
from batchgen.errors import ApiError, DownloadError, FatalApiError, RetryableApiError, UrlGone
from batchgen.jobs import JobRow
from batchgen.scheduler.state import (
    COUNT_FILE_SEPARATOR,
    BadBody,
    EventKind,
    JobEvent,
    Ports,
    RunOutcome,
    RunSettings,
)
from batchgen.transitions import Downloaded as Done
from batchgen.transitions import DownloadFailed, Event


def target_path(settings: RunSettings, row: JobRow) -> Path:
    """Where a job's video goes (output.filename rendered for the row)."""
    req = row.request
    name = render_filename(settings.filename, {
        "id": row.job_id.replace("#", COUNT_FILE_SEPARATOR), "name": settings.name,
        "index": row.idx,
        "resolution": req.get("resolution"), "video_length": req.get("video_length"),
        "task_id": row.final_task_id})
    return settings.output_dir / name


@dataclass(frozen=True, slots=True)
class FetchHooks:
    """What the download workers need from the rest of the run."""

    rows: Callable[[str], JobRow]
    apply: Callable[[list[tuple[str, Event]]], Sequence[JobRow]]
    fail: Callable[[str, DownloadFailed], None]
    results: Callable[[list[str]], Awaitable[list[TaskRecord]]]
    #: a verified file is on disk (remote clean-up, posters)
    downloaded: Callable[[JobRow, Downloaded], None]


class Fetch:
    """The download queue and its workers; `run_worker` is one worker's loop."""

    def __init__(self, client: AkoolClient, settings: RunSettings, ports: Ports,
                 hooks: FetchHooks, outcome: RunOutcome) -> None:
        self._client = client
        self._settings = settings
        self._ports = ports
        self._hooks = hooks
        self._outcome = outcome
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        #: jobs whose video URL was recorded by an earlier run: it may have expired
        self.stale: set[str] = set()
        #: workers still running
        self.workers_left = max(1, settings.download_workers)

    def over(self) -> bool:
        """Every worker has ended."""
        return self.workers_left <= 0

    def close(self) -> None:
        """No more jobs will come: each worker ends once the queue is drained."""
        for _ in range(max(1, self._settings.download_workers)):
            self.queue.put_nowait(None)

    async def run_worker(self, on_exit: Callable[[], None]) -> None:
        try:
            while True:
                job_id = await self.queue.get()
                if job_id is None:
                    return
                await self._download(job_id)
        finally:
            self.workers_left -= 1
            on_exit()

    async def _download(self, job_id: str) -> None:
        row = self._hooks.rows(job_id)
        target = target_path(self._settings, row)
        url = row.video_url or ""
        refreshed = False
        if job_id in self.stale or not url:
            # a URL from an earlier run (say, one that failed with 403 and is retried now)
            # has likely expired, or the finished record gave none: ask the API for a
            # fresh one before fetching anything
            self.stale.discard(job_id)
            refreshed = True
            url = await self._fresh_url(row) or url
        if not url:
            # done and paid, but no usable URL yet: the job stays `ready` and the next
            # run asks again (failing it would let --retry-failed pay twice)
            self._outcome.kept_ready += 1
            self._ports.emit(JobEvent(EventKind.NOTICE, job_id,
                                      f"task {row.final_task_id} is done but the API gave no "
                                      "usable video_url; kept for the next run"))
            return
        while True:
            try:
                got = await self._fetch(job_id, url, target)
            except UrlGone as exc:
                if not refreshed:
                    # the URL expired: ask the API for a fresh one, once
                    refreshed = True
                    fresh = await self._fresh_url(row)
                    if fresh:
                        url = fresh
                        continue
                self._hooks.fail(job_id, DownloadFailed(f"download failed: {exc}"))
                return
            except FatalApiError as exc:
                self._hooks.fail(job_id, DownloadFailed(f"download failed: {exc}"))
                return
            except (BadBody, DownloadError) as exc:
                self._hooks.fail(job_id, DownloadFailed(f"download failed after retries: {exc}"))
                return
            except RetryableApiError as exc:
                # the host could not be reached: the video is still there, and the next
                # run fetches it (state stays `ready`): an outage never fails paid work
                self._outcome.kept_ready += 1
                self._ports.emit(JobEvent(EventKind.NOTICE, job_id,
                                          f"download unavailable ({exc}); kept for the next run"))
                return
            break
        done_at = self._ports.now_iso()
        (row,) = self._hooks.apply([(job_id, Done(got.path.name, got.bytes, got.sha256,
                                                  done_at, url))])
        self._ports.emit(JobEvent(EventKind.DOWNLOADED, job_id, got.path.name))
        self._hooks.downloaded(row, got)

    async def _fetch(self, job_id: str, url: str, target: Path) -> Downloaded:
        """One download with the run's retries (a wrong body is retried too)."""
        ports = self._ports

        async def once() -> Downloaded:
            try:
                return await fetch_to(self._client, url, target)
            except DownloadError as exc:
                # a truncated or garbled body may well arrive whole next time
                raise BadBody(str(exc)) from None

        return await self._settings.retry.run(
            once, sleep=ports.sleep, clock=ports.clock, rng=ports.rng,
            on_retry=lambda n, e, w: ports.emit(JobEvent(EventKind.RETRY, job_id, str(e))))

    async def _fresh_url(self, row: JobRow) -> str | None:
        task_id = row.final_task_id
        if not task_id:
            return None
        try:
            records = await self._hooks.results([task_id])
        except ApiError:
            return None
        for record in records:
            if record.task_id == task_id and record.status is TaskStatus.DONE:
                return record.video_url
        return None
