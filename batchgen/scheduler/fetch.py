"""Downloads: workers that turn `ready` jobs into verified files under their final names.

Each worker takes job ids from the run's `ready` queue (None ends it). An expired URL is
refreshed from the API once; a body that arrives wrong is retried and then fails the
job; a host that cannot be reached keeps the job `ready` for the next run (an outage
never fails paid work). The file itself is written by download.py; the state change goes through the
one write path (`RunState.apply`). Deliberately not here: polling, deleting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from batchgen.client import AkoolClient, TaskStatus
from batchgen.download import Downloaded, fetch_to, render_filename
from batchgen.errors import ApiError, DownloadError, FatalApiError, RetryableApiError, UrlGone
from batchgen.jobs import JobRow
from batchgen.objstore import StorageError
from batchgen.scheduler.state import (
    COUNT_FILE_SEPARATOR,
    EventKind,
    JobEvent,
    RunSettings,
    RunState,
)
from batchgen.transitions import Downloaded as Done
from batchgen.transitions import DownloadFailed

if TYPE_CHECKING:
    from batchgen.poster_maker import PosterMaker
    from batchgen.scheduler.cleanup import Cleanup
    from batchgen.scheduler.poll import Poll
    from batchgen.state_store import SharedState


def target_path(settings: RunSettings, row: JobRow) -> Path:
    """Where a job's video goes (output.filename rendered for the row; the start-up's
    check of a million names renders the same fields: scheduler/startup.py)."""
    req = row.request
    name = render_filename(settings.filename, {
        "id": row.job_id.replace("#", COUNT_FILE_SEPARATOR), "name": settings.name,
        "index": row.idx,
        "resolution": req.get("resolution"), "video_length": req.get("video_length"),
        "task_id": row.final_task_id})
    return settings.output_dir / name


class BadBody(RetryableApiError):
    """A download that arrived but was wrong (truncated, not an MP4): retried, and once
    retries run out the job fails, unlike a host that could not be reached at all."""


class Fetch:
    """The download workers; `run_worker` is one worker's loop over `RunState.handoffs.ready`.

    Given explicitly: the poller (`results`, to refresh an expired URL), the deleter to
    hand a verified file to (None unless output.delete_remote) and report.html's posters.
    """

    def __init__(self, client: AkoolClient, state: RunState, poll: Poll,
                 cleanup: Cleanup | None, posters: PosterMaker,
                 publish: Callable[[Path, int], Awaitable[None]] | None = None) -> None:
        self._client = client
        #: a bucket output (outputs.py): the verified file goes there before `downloaded`
        self._publish = publish
        self._state = state
        self._poll = poll
        self._cleanup = cleanup
        self._posters = posters
        #: jobs whose video URL was recorded by an earlier run: it may have expired
        self.stale: set[str] = set()
        #: workers still running
        self.workers_left = max(1, state.settings.download_workers)
        #: names this runner in its temporary files, when other runners share the output
        #: dir (they remove a .part file only once its writer is gone: download.py)
        self._tag = cast("SharedState", state.store).part_tag if state.store.shared else None

    def over(self) -> bool:
        """Every worker has ended."""
        return self.workers_left <= 0

    async def run_worker(self) -> None:
        """Download ready jobs until the poller closes the queue."""
        try:
            while True:
                job_id = await self._state.handoffs.ready.get()
                if job_id is None:
                    return
                self._state.handoffs.took(self._state.ready_limit, self._state.wake)
                await self._download(job_id)
        finally:
            self.workers_left -= 1
            self._state.wake.notify()

    async def _download(self, job_id: str) -> None:
        state = self._state
        row = state.rows[job_id]
        target = target_path(state.settings, row)
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
            self._keep(job_id, f"task {row.final_task_id} is done but the API gave no "
                               "usable video_url; kept for the next run")
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
                state.fail(job_id, DownloadFailed(f"download failed: {exc}"))
                return
            except FatalApiError as exc:
                state.fail(job_id, DownloadFailed(f"download failed: {exc}"))
                return
            except (BadBody, DownloadError) as exc:
                state.fail(job_id, DownloadFailed(f"download failed after retries: {exc}"))
                return
            except RetryableApiError as exc:
                # the host could not be reached: the video is still there, and the next
                # run fetches it (state stays `ready`): an outage never fails paid work
                self._keep(job_id, f"download unavailable ({exc}); kept for the next run")
                return
            break
        await self._done(job_id, got, url)

    def _keep(self, job_id: str, why: str) -> None:
        """The job stays `ready` and the next run fetches it: paid work is never failed
        for a fault that may pass."""
        self._state.outcome.kept_ready += 1
        self._state.ports.emit(JobEvent(EventKind.NOTICE, job_id, why))

    async def _done(self, job_id: str, got: Downloaded, url: str) -> None:
        """A verified file: published (to an output bucket, if any), recorded, its remote
        copy queued for deletion (output.delete_remote) and report.html's poster made."""
        state = self._state
        if self._publish is not None:
            try:
                await self._publish(got.path, got.bytes)
            except StorageError as exc:
                # the video is verified here and still at the API: the next run uploads it
                self._keep(job_id, f"upload to the bucket failed ({exc}); kept for the "
                                   "next run")
                return
        done_at = state.ports.now_iso()
        (row,) = state.apply([(job_id, Done(got.path.name, got.bytes, got.sha256, done_at,
                                            url))])
        state.ports.emit(JobEvent(EventKind.DOWNLOADED, job_id, got.path.name))
        # a verified file is on disk: its remote copy may go, report.html gets a poster
        if self._cleanup is not None:
            self._cleanup.schedule(row, state.ports.clock())
        self._posters.add(got.path, got.sha256)  # made once, in the background

    async def _fetch(self, job_id: str, url: str, target: Path) -> Downloaded:
        """One download with the run's retries (a wrong body is retried too)."""
        ports = self._state.ports

        async def once() -> Downloaded:
            try:
                return await fetch_to(self._client, url, target, self._tag)
            except DownloadError as exc:
                # a truncated or garbled body may well arrive whole next time
                raise BadBody(str(exc)) from None

        return await self._state.settings.retry.run(
            once, sleep=ports.sleep, clock=ports.clock, rng=ports.rng,
            on_retry=lambda n, e, w: ports.emit(JobEvent(EventKind.RETRY, job_id, str(e))))

    async def _fresh_url(self, row: JobRow) -> str | None:
        task_id = row.final_task_id
        if not task_id:
            return None
        try:
            records = await self._poll.results([task_id])
        except ApiError:
            return None
        for record in records:
            if record.task_id == task_id and record.status is TaskStatus.DONE:
                return record.video_url
        return None
