"""Several runners, one manifest: claims, leases and fences over the PostgreSQL state.

A `SharedPgStore` is one runner's view of a manifest that other runners (any host) drain
at the same time. What makes that safe, all in the database:

* **Claims** (`claim`) happen in one transaction under the manifest's advisory lock: the
  tasks in flight across *all* runners are counted (jobs submitting or running), so
  ``api.concurrency`` is never exceeded, not even briefly; the budget is the one rule of
  budget.py over every row (what each job holds, plus what open claims reserved), so all
  runners together never commit more than ``max_credits``; the chosen jobs become
  `submitting` with this runner as their holder before the transaction ends.
* **Leases.** A runner registers with a lease on the server's clock and renews it
  (`heartbeat`); a runner whose lease ran out is reaped by whoever claims next:
  its unsent claims go back to their queue, its sent-but-unanswered creates become
  `unknown` (as after a crash), its tasks in flight lose their holder and are adopted
  (`adopt`) by a live runner, which polls and downloads them (safe to repeat).
* **Fences.** The durable "sent" mark (`mark_sent`) is written only while this runner
  holds the job and its lease is current: an update that touches no row raises
  `ClaimLost`, and the create is not sent. Every other write of a job is fenced on its
  holder too, so a runner paused past its lease cannot overwrite what another took over,
  with one exception: a task id (paid work) answered after the job was reaped is recorded
  on the job nobody holds, for a live runner to adopt (`_record_paid`).
* **Off the loop.** A running scheduler makes its claims, heartbeats and adoptions through
  `offload()` (pgloop.py): a second connection of the same runner, in a thread, so a
  claim's 10-20 ms never stall its polls and downloads.

Deliberately not here: the budget rule itself (budget.py), scheduling (runner.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from batchgen import budget
from batchgen.claims import Claim, audio_of, choose
from batchgen.errors import BatchgenError, ClaimLost
from batchgen.jobs import Job, JobRow, JobState
from batchgen.pgstore import PgStore, _connect, _lock_key, schema_name
from batchgen.state_store import DEFAULT_LEASE, StateUrl
from batchgen.store import _COLUMNS, SyncResult, _row
from batchgen.transitions import Claimed

if TYPE_CHECKING:
    from batchgen.pgloop import OffLoop

S = JobState
#: states in which a job occupies a slot of the account's concurrency
BUSY = (S.SUBMITTING, S.AUDIO_SUBMITTING, S.RUNNING, S.AUDIO_RUNNING)
#: states of work a dead runner leaves that another may take over without paying
ADOPTABLE = (S.RUNNING, S.AUDIO_RUNNING, S.READY)
_NOT_REAPED = "EXISTS (SELECT 1 FROM runners WHERE runner_id = ? AND NOT dead)"
_LOST = ("the create request was sent but its answer was lost (the runner that sent it "
         "stopped renewing its lease); re-run with --resubmit-unknown to send it again")


def _vals(states: Sequence[JobState]) -> list[str]:
    return [s.value for s in states]


class SharedPgStore(PgStore):
    """One runner's handle on a manifest shared with other runners (see module doc)."""

    shared = True

    def __init__(self, *args: Any, lease: float = DEFAULT_LEASE) -> None:
        super().__init__(*args)
        self.runner_id = uuid.uuid4().hex
        #: rows as last parsed, by (job id, the transaction that wrote them)
        self._parsed: dict[tuple[str, str], JobRow] = {}
        self.lease = lease
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._off: OffLoop | None = None
        #: a preview's copies of the tables (`plan`): no lock, no runner to leave
        self._private = False

    @classmethod
    def join(cls, url: StateUrl, scope: str, *, lease: float = DEFAULT_LEASE
             ) -> SharedPgStore:
        """Connect, migrate, and register as a runner of `scope` with a fresh lease."""
        schema = schema_name(url.schema, scope)
        store = cls(_connect(url), url, schema, lease=lease)
        store._pg.where = store.where
        try:
            store._limit_idle()
            store._prepare(scope, create=True)
            with store._tx():
                store._conn.execute(
                    "INSERT INTO runners (runner_id, host, pid, lease_until) VALUES "
                    "(?, ?, ?, now() + make_interval(secs => ?))",
                    (store.runner_id, store.host, store.pid, lease))
        except BaseException:
            store.close()
            raise
        return store

    def _limit_idle(self) -> None:
        # a runner frozen inside a transaction (SIGSTOP, a VM pause) would hold the
        # manifest's claim lock and stall every runner: the server ends its session
        # once it has sat idle in a transaction for a lease (its locks go, nothing it
        # had not committed counts, and it can send nothing without the database)
        self._pg.execute(f"SET idle_in_transaction_session_timeout = "
                         f"{max(1000, int(self.lease * 1000))}")

    def offload(self) -> OffLoop:
        """This runner's claims, heartbeats and adoptions, made off the event loop on a
        second connection (same runner id and lease) in a thread of its own (pgloop.py);
        made once, closed with the store."""
        from batchgen.pgloop import OffLoop
        if self._off is None:
            twin = type(self)(_connect(self.url), self.url, self.schema, lease=self.lease)
            twin.runner_id, twin._pg.where = self.runner_id, self.where
            try:
                twin._limit_idle()
                twin._pg.execute(f'SET search_path TO "{self.schema}"')
            except BaseException:
                twin.disconnect()
                raise
            self._off = OffLoop(twin)
        return self._off

    @classmethod
    def preview(cls, url: StateUrl, scope: str) -> SharedPgStore:  # type: ignore[override]
        """`PgStore.preview` (private copies of the tables) where `recover` is a joining
        runner's: only the jobs of runners whose lease ran out (or of none) are settled,
        so `plan` counts the claims and tasks of live runners as in flight."""
        store = super().preview(url, scope)
        assert isinstance(store, SharedPgStore)
        store._private = True
        return store

    def disconnect(self) -> None:
        """Close the connection without leaving (`offload`'s second connection)."""
        PgStore.close(self)

    def _take_run_lock(self, scope: str) -> None:
        """Shared: excludes only a single-runner (exclusive) run of the same manifest."""
        got = self._pg.execute("SELECT pg_try_advisory_lock_shared(?)",
                               (_lock_key(self.schema),)).fetchone()
        if not got or not got[0]:
            super()._take_run_lock(scope)  # raises OutputDirLocked naming the holder

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

    # -- the manifest over the state, serialized with claims ------------------------------

    def sync(self, jobs: Sequence[Job],
             estimates: Sequence[tuple[int, int]] | Callable[[Job], tuple[int, int]],
             *, key: str | None = None) -> SyncResult:
        with self._tx():
            self._lock_manifest()
            return super().sync(jobs, estimates, key=key)

    def recover(self) -> int:
        """Reap runners whose lease ran out, and settle jobs nobody holds (a run before
        runners were shared, or a crash): returns how many became unknown."""
        with self._tx():
            self._lock_manifest()
            return self._reap() + self._settle("holder IS NULL", ())

    def record_run(self, **figures: Any) -> dict[str, Any]:
        """As `Store.record_run`; runners ending together add their figures in turn."""
        with self._tx():
            self._lock_manifest()
            return super().record_run(**figures)

    def reopen(self, *, unknown: bool, failed: bool) -> int:
        with self._tx():
            self._lock_manifest()
            return super().reopen(unknown=unknown, failed=failed)

    # -- claims ------------------------------------------------------------------------

    def claim(self, free: int, limit: int, max_credits: int | None, now: str) -> Claim:
        """Take up to `free` creates to send, within `limit` tasks in flight across all
        runners and `max_credits` over everything held (module docstring)."""
        with self._tx():
            self._lock_manifest()
            self._renew()  # before the reap, which would otherwise count this runner dead
            self._reap()
            every = self._every_row()
            busy = sum(1 for r in every if r.state in BUSY)
            committed = budget.committed(every) + self._reserved_extra(every)
            plan = choose(every, min(free, limit - busy), max_credits, committed)
            sends, needs = plan.sends, plan.needs
            rows = {r.job_id: r for r in every}
            family = [r.job_id for r in every if r.parent in needs
                      and r.state is S.PENDING and not audio_of(sends, r.parent)]
            if sends:
                self._conn.executemany(
                    "UPDATE jobs SET holder = ?, reserved = ? WHERE job_id = ?",
                    [(self.runner_id, needs[j], j) for j, _ in sends]
                    + [(self.runner_id, 0, j) for j in family])
                written = self.apply_many([(rows[j], Claimed(now, a)) for j, a in sends])
                rows.update({r.job_id: r for r in written})
            elsewhere = self._conn.execute(
                "SELECT count(*) FROM jobs WHERE active = 1 AND state IN (?, ?, ?, ?, ?) "
                "AND holder IS DISTINCT FROM ?", (*BUSY, S.READY, self.runner_id)).fetchone()
            return Claim(tuple(sends), {j: rows[j] for j in [*(j for j, _ in sends), *family]},
                         needs, busy, committed + sum(needs.values()), plan.blocked,
                         plan.blocked_jobs, plan.blocked_need, plan.claimable,
                         int(elsewhere[0]))

    def _every_row(self) -> list[JobRow]:
        """`rows(active_only=False)`, parsing only rows changed since the last claim.

        A row version is named by its job and the transaction that wrote it (``xmin``);
        read at the start of a claim's transaction, it is a committed version, so an
        unchanged name means unchanged content. Parsing every row's JSON was 70 % of a
        claim's time on 2,000 jobs.
        """
        seen: dict[tuple[str, str], JobRow] = {}
        out: list[JobRow] = []
        for r in self._conn.execute(
                f"SELECT xmin::text, {_COLUMNS} FROM jobs "
                "ORDER BY idx, parent IS NOT NULL, job_id"):
            key = (r[1], r[0])
            row = self._parsed.get(key)
            if row is None:
                row = _row(r[1:])
            seen[key] = row
            out.append(row)
        self._parsed = seen
        return out

    def _reserved_extra(self, every: Sequence[JobRow]) -> int:
        """What open claims reserved beyond what their rows hold (a learned price, the
        later videos of a `count` job): counted until the create's answer is recorded."""
        reserved = dict(self._conn.execute(
            "SELECT job_id, reserved FROM jobs WHERE state IN (?, ?) AND reserved > 0",
            (S.SUBMITTING, S.AUDIO_SUBMITTING)).fetchall())
        extra = 0
        for row in every:
            if row.job_id in reserved:
                spent = budget.held(row) - row.credits_prior - row.credits_lost
                extra += max(0, reserved[row.job_id] - spent)
        return extra

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

    # -- adoption and who holds what -------------------------------------------------------

    def adopt(self) -> list[JobRow]:
        """Take over tasks in flight (and finished videos to fetch) that no runner holds."""
        with self._tx():
            self._lock_manifest()
            self._renew()  # a runner reaped by itself would adopt its own jobs, dead
            self._reap()
            ids = [r[0] for r in self._conn.execute(
                "UPDATE jobs SET holder = ? WHERE holder IS NULL AND active = 1 AND state IN "
                "(?, ?, ?) RETURNING job_id", (self.runner_id, *ADOPTABLE))]
            return [self.get(j) for j in ids]

    def close(self) -> None:
        """Leave: what this runner still holds is settled at once (no lease to wait out),
        once a claim still running off the loop has ended (it may have taken jobs)."""
        if self._off is not None:
            self._off.close()
            self._off = None
        if not self._pg.pg.closed and not self._private:
            # best effort: if the server is gone, the lease runs out and others reap it
            with contextlib.suppress(BatchgenError), self._tx():
                self._lock_manifest()
                self._settle("holder = ?", (self.runner_id,))
                self._conn.execute("UPDATE runners SET dead = true WHERE runner_id = ?",
                                   (self.runner_id,))
        super().close()
