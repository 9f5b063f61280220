"""Several runners, one manifest: claims and adoption over the PostgreSQL state.

A `SharedPgStore` is one runner's view of a manifest that other runners (any host) drain
at the same time. What makes that safe, all in the database:

* **Claims** (`claim`) happen in one transaction under the manifest's advisory lock: the
  tasks in flight across *all* runners are counted (jobs submitting or running), so
  ``api.concurrency`` is never exceeded, not even briefly; the budget is the one rule of
  budget.py over every row (what each job holds, plus what open claims reserved), so all
  runners together never commit more than ``max_credits``; the chosen jobs become
  `submitting` with this runner as their holder before the transaction ends.
* **Leases and fences** (pglease.py, the layer below): a runner whose lease ran out is
  reaped by whoever claims next, and its tasks in flight are adopted (`adopt`) by a live
  runner, which polls and downloads them (safe to repeat); every write of a job is fenced
  on its holder, so a runner paused past its lease sends nothing more.
* **Off the loop.** A running scheduler makes its claims, heartbeats and adoptions through
  `offload()` (pgloop.py): a second connection of the same runner, in a thread, so a
  claim's 10-20 ms never stall its polls and downloads.

Deliberately not here: the budget rule itself (budget.py), what one claim chooses
(claims.py), scheduling (runner.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from batchgen import budget
from batchgen.claims import Claim, audio_of, choose
from batchgen.jobs import Job, JobRow, JobState
from batchgen.pgconn import connect
from batchgen.pglease import LeasedPgStore
from batchgen.pgstore import PgStore, _lock_key, schema_name
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


class SharedPgStore(LeasedPgStore):
    """One runner's handle on a manifest shared with other runners (see module doc)."""

    shared = True

    def __init__(self, *args: Any, lease: float = DEFAULT_LEASE) -> None:
        super().__init__(*args, lease=lease)
        #: rows as last parsed, by (job id, the transaction that wrote them)
        self._parsed: dict[tuple[str, str], JobRow] = {}
        self._off: OffLoop | None = None

    @classmethod
    def join(cls, url: StateUrl, scope: str, *, lease: float = DEFAULT_LEASE
             ) -> SharedPgStore:
        """Connect, migrate, and register as a runner of `scope` with a fresh lease."""
        schema = schema_name(url.schema, scope)
        store = cls(connect(url), url, schema, lease=lease)
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

    def offload(self) -> OffLoop:
        """This runner's claims, heartbeats and adoptions, made off the event loop on a
        second connection (same runner id and lease) in a thread of its own (pgloop.py);
        made once, closed with the store."""
        from batchgen.pgloop import OffLoop
        if self._off is None:
            twin = type(self)(connect(self.url), self.url, self.schema, lease=self.lease)
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
        """Leave (`LeasedPgStore.close`), once a claim still running off the loop has
        ended (it may have taken jobs)."""
        if self._off is not None:
            self._off.close()
            self._off = None
        super().close()
