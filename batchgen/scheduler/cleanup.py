"""Remote clean-up (`output.delete_remote`): one loop that deletes downloaded videos at the
API, in comma-joined batches, once their files are verified on disk.

A deletion the API refuses (`noPermissionItems`, e.g. "still processing") is tried again
later in the run, up to `delete_attempts` times, and reported if it stays. The worker
keeps its own queue; everything else — the client, the clock, the write path — comes in
explicitly (the client and the run's `RunState`). Deliberately not here: deciding that a
file is safe (fetch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from batchgen.client import AkoolClient
from batchgen.errors import ApiError
from batchgen.jobs import JobRow
from batchgen.scheduler.state import EventKind, JobEvent, RunState
from batchgen.transitions import Event, RemoteDeleted, RemoteKept


@dataclass(slots=True)
class Deletion:
    """A task whose video is safely on disk and is to be deleted at the API."""

    job_id: str
    task_id: str
    due: float
    tries: int = 0
    reason: str = ""


class Cleanup:
    """The deleter: `schedule` a verified job, `run` the loop until downloads are over."""

    def __init__(self, client: AkoolClient, state: RunState, *,
                 backoff: Callable[[int], float]) -> None:
        self._client = client
        self._state = state
        #: seconds before try n+1 of a refused deletion
        self._backoff = backoff
        self._due: list[Deletion] = []
        #: job -> its tasks not deleted yet
        self._left: dict[str, set[str]] = {}

    def schedule(self, row: JobRow, now: float) -> None:
        """Queue a job's tasks for deletion; called only once its file is verified."""
        ids = {t for t in (row.task_id, row.audio_task_id) if t}
        if not ids:
            return
        self._left[row.job_id] = set(ids)
        self._due.extend(Deletion(row.job_id, t, due=now) for t in sorted(ids))
        self._state.wake.notify()

    async def run(self, downloads_over: Callable[[], bool]) -> None:
        """Delete what is due; return once nothing is queued and `downloads_over()`."""
        wake = self._state.wake
        batch_size = max(1, self._state.settings.poll_batch)
        while True:
            token = wake.token()
            now = self._state.ports.clock()
            due = [d for d in self._due if d.due <= now][:batch_size]
            if due:
                await self._delete_batch(due)
                continue
            if not self._due:
                if downloads_over():
                    return
                await wake.wait(token, None)
                continue
            await wake.wait(token, min(d.due for d in self._due) - now)

    async def _delete_batch(self, batch: list[Deletion]) -> None:
        settings, ports = self._state.settings, self._state.ports
        for d in batch:
            self._due.remove(d)
        try:
            deleted, refused = await settings.retry.run(
                lambda: self._client.delete([d.task_id for d in batch]), sleep=ports.sleep,
                clock=ports.clock, rng=ports.rng)
        except ApiError as exc:
            deleted, refused = [], {d.task_id: str(exc) for d in batch}
        gone = set(deleted)
        changes: list[tuple[str, Event]] = []
        now = ports.clock()
        for d in batch:
            left = self._left.get(d.job_id)
            if left is None:
                continue
            if d.task_id in gone:
                left.discard(d.task_id)
                if not left:
                    del self._left[d.job_id]
                    changes.append((d.job_id, RemoteDeleted()))
                continue
            d.tries += 1
            d.reason = refused.get(d.task_id) or "not deleted by the API"
            if d.tries < settings.delete_attempts:
                d.due = now + self._backoff(d.tries)
                self._due.append(d)
            else:
                del self._left[d.job_id]
                msg = f"remote copy not deleted after {d.tries} tries: {d.reason}"
                changes.append((d.job_id, RemoteKept(msg)))
                ports.emit(JobEvent(EventKind.NOTICE, d.job_id, msg))
        if changes:
            self._state.apply(changes)
