"""The submit path's durable writes, grouped: one fsync for every create leaving at once.

Two records guard money on each create: the "sent" mark, durable before a byte of the
request leaves (so a crash afterwards resumes the job as `unknown`, never sends it again),
and the accepted task id, durable as soon as the answer is read (so a paid task is never
lost). Each was its own fsync'd commit (~3 ms on this VM's disk), taken on the event loop:
a wave of 20 creates spent ~110 ms writing one record after another while finished tasks
waited for their slot to be refilled.

`GroupCommit` keeps every guarantee and shares the cost: a record is staged, the writer
awaits, and one durable transaction (`Store.apply_many(..., durable=True, sent=...)`) at
the next turn of the event loop carries everything staged until then. Nothing goes on
(no request leaves, no task is tracked) before its own record is durable. A write of any
other kind calls `flush()` first, so the store sees every job's events in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from batchgen.jobs import JobRow
from batchgen.transitions import Event

#: the store's durable write: (steps, ids to mark sent) -> one row per step, in order
Write = Callable[[Sequence[tuple[JobRow, Event]], Sequence[str]], list[JobRow]]


class GroupCommit:
    """Stages durable records and writes them together at the next loop iteration."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._steps: list[tuple[JobRow, Event]] = []
        self._sent: list[str] = []
        self._done: asyncio.Future[list[JobRow]] | None = None
        #: durable commits taken and records they carried (bench figures)
        self.commits = 0
        self.records = 0

    async def sent(self, job_id: str) -> None:
        """The create of `job_id` is about to leave: return once that is durable."""
        self._sent.append(job_id)
        await self._wait()

    async def apply(self, steps: Sequence[tuple[JobRow, Event]]) -> list[JobRow]:
        """Apply `steps` durably; return the rows written (one per step)."""
        start = len(self._steps)
        self._steps.extend(steps)
        rows = await self._wait()
        return rows[start:start + len(steps)]

    def flush(self) -> None:
        """Write what is staged now (a no-op when nothing is)."""
        done = self._done
        if done is None:
            return
        steps, sent = self._steps, self._sent
        self._steps, self._sent, self._done = [], [], None
        try:
            rows = self._write(steps, sent)
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc)
            return
        self.commits += 1
        self.records += len(steps) + len(sent)
        if not done.done():
            done.set_result(rows)

    def _wait(self) -> asyncio.Future[list[JobRow]]:
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            # a failed commit whose writers were all cancelled must not warn at exit
            self._done.add_done_callback(lambda f: f.cancelled() or f.exception())
            loop.call_soon(self.flush)
        # shielded: one writer cancelled (a stop) must not cancel the others' commit,
        # nor unstage its record, which may already be on its way to the disk
        return asyncio.shield(self._done)
