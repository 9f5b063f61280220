"""One runner among several on a manifest: its lease, the reaping of runners whose lease
ran out, and the fences on its writes (the layer below pgshare.py's claims).

* **Leases.** A runner registers with a lease on the server's clock and renews it
  (`heartbeat`); a runner whose lease ran out is reaped by whoever claims next
  (`_reap`): its unsent claims go back to their queue, its sent-but-unanswered creates
  become `unknown` (as after a crash), its tasks in flight lose their holder and are
  adopted (`SharedPgStore.adopt`) by a live runner, which polls and downloads them (safe
  to repeat). A runner that leaves (`close`) settles what it holds at once.
* **Fences.** The durable "sent" mark (`_write_sent`) is written only while this runner
  holds the job and was not reaped: an update that touches no row raises `ClaimLost`, and
  the create is not sent. Every other write of a job is fenced on its holder too, so a
  runner paused past its lease cannot overwrite what another took over, with one
  exception: a task id (paid work) answered after the job was reaped is recorded on the
  job nobody holds, for a live runner to adopt (`_record_paid`).

Deliberately not here: what a claim takes and adoption (pgshare.py), opening and
migrating the schema (pgstore.py), the driver (pgconn.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from batchgen.errors import BatchgenError, ClaimLost
from batchgen.jobs import JobState
from batchgen.pgstore import PgStore, _lock_key
from batchgen.state_store import DEFAULT_LEASE

S = JobState
_NOT_REAPED = "EXISTS (SELECT 1 FROM runners WHERE runner_id = ? AND NOT dead)"
_LOST = ("the create request was sent but its answer was lost (the runner that sent it "
         "stopped renewing its lease); re-run with --resubmit-unknown to send it again")


class LeasedPgStore(PgStore):
    """A PostgreSQL state held by one runner under a lease (see module doc); the shared
    store (`pgshare.SharedPgStore`) builds its claims on it."""

    def __init__(self, *args: Any, lease: float = DEFAULT_LEASE) -> None:
        super().__init__(*args)
        self.runner_id = uuid.uuid4().hex
        self.lease = lease
        self.host = socket.gethostname()
        self.pid = os.getpid()
        #: a preview's copies of the tables (`plan`): no lock, no runner to leave
        self._private = False

    def _limit_idle(self) -> None:
        # a runner frozen inside a transaction (SIGSTOP, a VM pause) would hold the
        # manifest's claim lock and stall every runner: the server ends its session
        # once it has sat idle in a transaction for a lease (its locks go, nothing it
        # had not committed counts, and it can send nothing without the database)
        self._pg.execute(f"SET idle_in_transaction_session_timeout = "
                         f"{max(1000, int(self.lease * 1000))}")

    # -- leases ------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Renew the lease; `ClaimLost` once another runner reaped this one (stop sending)."""
        with self._tx():
            self._renew()

    def _renew(self) -> None:
        """Extend this runner's lease, unless it was reaped.

        A lease that ran out without being reaped took nothing away: jobs change hands
        only when a runner is reaped, under the claim lock. So a runner whose heartbeat
        was late (say, it waited out the claim lock of a runner frozen inside its
        transaction) renews and goes on; refusing it would end a healthy run for nothing.
        Its sent marks are fenced the same way (`_write_sent`).
        """
        # clock_timestamp, not now(): now() is when the transaction began, which for a
        # claim may be before a long wait for the lock
        cur = self._conn.execute(
            "UPDATE runners SET lease_until = clock_timestamp() + make_interval(secs => ?) "
            "WHERE runner_id = ? AND NOT dead", (self.lease, self.runner_id))
        if cur.rowcount == 0:
            raise self._lost()

    @property
    def part_tag(self) -> str:
        """This runner in the temporary names of its downloads (download.py)."""
        return "r" + self.runner_id[:16]

    def departed(self) -> set[str]:
        """The `part_tag`s of runners that left or whose lease ran out: their .part files
        in the shared output dir are leftovers that no live runner writes."""
        cur = self._pg.execute("SELECT runner_id FROM runners WHERE dead OR lease_until < now()")
        return {"r" + r[0][:16] for r in cur}

    def _lost(self) -> ClaimLost:
        return ClaimLost(f"{self.where}: this runner ({self.host}, pid {self.pid}) let its "
                         f"lease of {self.lease:g} s run out, so other runners may have taken "
                         "over its jobs; it sends nothing more — run again to rejoin")

    def _lock_manifest(self) -> None:
        if self._private:  # a preview's own copies: no runner waits for them
            return
        self._conn.execute("SELECT pg_advisory_xact_lock(?)",
                           (_lock_key(self.schema + ":claims"),))

    def _reap(self) -> int:
        """Settle the jobs of runners whose lease ran out (inside the claim lock)."""
        dead = [r[0] for r in self._conn.execute(
            "UPDATE runners SET dead = true WHERE NOT dead AND lease_until < now() "
            "RETURNING runner_id")]
        return self._settle("holder = ANY(?)", (dead,)) if dead else 0

    def _settle(self, where: str, params: tuple[Any, ...]) -> int:
        """As `Store.recover`, for the jobs `where` selects: unsent claims back to their
        queue, sent ones unknown, tasks in flight free to adopt. Returns new unknowns."""
        conn = self._conn
        for frm, to in ((S.SUBMITTING, S.PENDING), (S.AUDIO_SUBMITTING, S.AUDIO_PENDING)):
            conn.execute(f"UPDATE jobs SET state = ?, reserved = 0 WHERE state = ? AND sent = 0 "
                         f"AND {where}", (to, frm, *params))
        cur = conn.execute(
            "UPDATE jobs SET unknown_step = CASE state WHEN ? THEN 'add_audio' ELSE 'video' END, "
            f"state = ?, error = ?, reserved = 0 WHERE state IN (?, ?) AND {where}",
            (S.AUDIO_SUBMITTING, S.UNKNOWN, _LOST, S.SUBMITTING, S.AUDIO_SUBMITTING, *params))
        conn.execute(
            "UPDATE jobs SET state = ?, unknown_step = 'video', error = 'made by the lost "
            "create of ' || parent WHERE state = ? AND parent IN (SELECT job_id FROM jobs "
            "WHERE state = ? AND unknown_step = 'video')", (S.UNKNOWN, S.PENDING, S.UNKNOWN))
        conn.execute(f"UPDATE jobs SET holder = NULL WHERE {where}", params)
        return int(cur.rowcount)

    # -- fenced writes -------------------------------------------------------------------

    def _write_sent(self, job_id: str, sent: bool = True) -> bool:
        """The journal's "sent" mark, written only while this runner holds the job and was
        not reaped; refused (so `ClaimLost`: do not send) when that is no longer so.

        Not reaped is enough, lease or no lease: a job changes hands only when its holder
        is reaped, and the reap's settling of the job and this mark lock the same row, so
        one of them sees the other (the reap then makes the job unknown, never pending).
        Requiring an unexpired lease as well ended healthy runs whose heartbeat waited
        behind a claim held up by a frozen runner.
        """
        cur = self._conn.execute(
            f"UPDATE jobs SET sent = ? WHERE job_id = ? AND holder = ? AND state IN (?, ?) "
            f"AND {_NOT_REAPED}", (int(sent), job_id, self.runner_id, S.SUBMITTING,
                                   S.AUDIO_SUBMITTING, self.runner_id))
        return cur.rowcount > 0 or not sent

    def _write_row(self, job_id: str, cols: Mapping[str, Any]) -> str | None:
        names = ", ".join(f"{k}=?" for k in cols)
        cur = self._conn.execute(f"UPDATE jobs SET {names} WHERE job_id=? AND holder=?",
                                 (*cols.values(), job_id, self.runner_id))
        return None if cur.rowcount else self._record_paid(job_id, cols)

    def _record_paid(self, job_id: str, cols: Mapping[str, Any]) -> str | None:
        """A task id read after this runner lost the job (its lease ran out while the
        create's answer was on its way: the job was reaped to `unknown`) is paid work:
        it is recorded all the same, with the job left to no runner so a live one adopts
        the task, unless another runner took the job since (then the id is told, never
        silently dropped). Returns why the write could not be made, None when it was.

        Nothing here raises: the other rows of the same transaction (a group commit's
        answers, the videos of a `count` job) may carry paid task ids that must land
        (`apply_many` raises once they are committed).
        """
        step = "task_id" if cols.get("task_id") else "audio_task_id"
        paid = cols.get(step)
        if not paid:
            return str(self._lost())
        rescue = {**cols, "holder": None, "error": None, "unknown_step": None}
        names = ", ".join(f"{k}=?" for k in rescue)
        cur = self._conn.execute(
            f"UPDATE jobs SET {names} WHERE job_id=? AND holder IS NULL AND {step} IS NULL "
            "AND state IN (?, ?, ?, ?)", (*rescue.values(), job_id, S.SUBMITTING,
                                          S.AUDIO_SUBMITTING, S.PENDING, S.UNKNOWN))
        if cur.rowcount:
            return None
        return (f"{self.where}: task {paid} of job {job_id} was made and charged, but "
                "another runner holds the job now (this runner's lease ran out first); keep "
                "this task id to claim the video — run again to rejoin")

    def close(self) -> None:
        """Leave: what this runner still holds is settled at once (no lease to wait out)."""
        if not self._pg.closed and not self._private:
            # best effort: if the server is gone, the lease runs out and others reap it
            with contextlib.suppress(BatchgenError), self._tx():
                self._lock_manifest()
                self._settle("holder = ?", (self.runner_id,))
                self._conn.execute("UPDATE runners SET dead = true WHERE runner_id = ?",
                                   (self.runner_id,))
        super().close()
