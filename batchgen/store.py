"""The state database: `Store`, its one interface (the store*.py modules alone speak SQL).

One SQLite file per output dir (``.batchgen/state.db``) holds one row per job: what was
asked (fingerprint + request), what the API answered (task ids, credits), where the job is
in its life (``JobState``) and what landed on disk. It is the evidence that makes resume and
"never pay twice" possible, so it is written *before* money moves:

* ``begin_submit`` commits ``submitting`` with ``synchronous=FULL`` before the create POST;
* ``mark_accepted`` commits the task id the moment the answer arrives (also FULL);
* on open, a job still ``submitting`` (the process died mid-request) becomes ``unknown``.

Other transitions use ``synchronous=NORMAL`` (in WAL mode it survives ``kill -9``: the
write is in the OS cache) at a tenth of a FULL commit's cost. The interface is narrow —
sync, claim, record a transition, read rows — so a shared PostgreSQL backend for several
runners is an addition, not a rewrite. Deliberately not here: scheduling decisions, HTTP,
files. The store also holds the run lock (``fcntl`` on ``.batchgen/lock``): it guards
exactly this database.

The output dir is not trusted: ``.batchgen`` must be a real directory and its files regular
files (a planted symlink is refused, never followed), the lock is opened with O_NOFOLLOW,
and every row is checked on open (a tampered row is named, not half-read). A write the
environment refuses (read-only, disk full) is `OutputNotWritable`, which never advises
moving an intact database away: the next run would pay again for every video made.

`Store` is built in layers, a module each (README Design draws them): store.py >
store_writes.py > store_records.py > store_conn.py, each using only those below it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from batchgen import budget
from batchgen.errors import NoState, OutputNotWritable, StateError
from batchgen.jobs import IN_FLIGHT as IN_FLIGHT
from batchgen.jobs import REPORT_STATUS as REPORT_STATUS
from batchgen.jobs import SUBMITTED as SUBMITTED
from batchgen.jobs import Job, JobState
from batchgen.jobs import JobRow as JobRow
from batchgen.jobs import report_status as report_status
from batchgen.state_files import (
    _SQLITE_ENV,
    _check_state_dir,
    _disk_is_full,
    _open_error,
    _take_lock,
)
from batchgen.state_files import DB_NAME as DB_NAME
from batchgen.state_files import LOCK_NAME as LOCK_NAME
from batchgen.state_files import STATE_DIR as STATE_DIR
from batchgen.state_files import STATE_FILES as STATE_FILES
from batchgen.store_reads import StreamReads, drop_scratch, scratch_db
from batchgen.store_rows import COLUMNS as _COLUMNS
from batchgen.store_rows import row_from as _row
from batchgen.store_rows import stored_fields as stored_fields
from batchgen.store_schema import MIGRATIONS
from batchgen.store_sync import SYNC_KEY as _SYNC_KEY
from batchgen.store_sync import SyncResult as SyncResult
from batchgen.store_sync import SyncWrites, batches
from batchgen.store_writes import StoreWrites

#: the schema's migrations, applied in order (tests shorten this list to build old states)
_MIGRATIONS: tuple[tuple[str, str], ...] = MIGRATIONS

#: jobs read, compared and written at a time by `Store.sync`; ids per lookup query
SYNC_BATCH = 5_000
_LOOKUP = 500


class Store(StreamReads, StoreWrites):
    """SQLite state of one output dir. Open with `Store.open` (takes the lock).

    Opening, migrating and syncing are here, where `_MIGRATIONS`, `SYNC_BATCH` and
    `_LOOKUP` are (tests shorten them); the rest is in the layers below."""

    @classmethod
    def open(cls, output_dir: Path, *, lock: bool = True, create: bool = True) -> Store:
        """Open (creating if needed) the state of `output_dir`.

        With `lock`, takes the run lock first and raises `OutputDirLocked` naming the
        holder's pid when another run has it. Read-only commands pass ``lock=False``.
        """
        state_dir = output_dir / STATE_DIR
        db_path = state_dir / DB_NAME
        if output_dir.exists() and not output_dir.is_dir():
            raise OutputNotWritable(f"{output_dir} is a file, not a directory: choose another "
                                    "output dir (--output or output.dir) or move the file")
        _check_state_dir(state_dir)
        if not create and not db_path.exists():
            raise NoState(f"{output_dir}: no state yet (nothing has been run here)")
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputNotWritable(f"cannot create {state_dir}: {exc.strerror or exc}; "
                                    "check the output dir and its permissions") from None
        _check_state_dir(state_dir)
        if db_path.exists() and not (os.access(db_path, os.W_OK)
                                     and os.access(state_dir, os.W_OK)):
            # asked before SQLite opens it: a read-only open would leave -wal/-shm behind
            refused = OutputNotWritable(
                f"{db_path}: cannot write the state: {_SQLITE_ENV[8]}; the state is intact "
                "(nothing is lost) — make it writable, then run the same command again")
            if lock:
                raise refused
            return cls._open_read_only(db_path, refused)
        if lock and _disk_is_full(state_dir):  # before SQLite leaves a -wal it cannot fill
            raise OutputNotWritable(
                f"{db_path}: cannot write the state: {_SQLITE_ENV[13]}; the state is intact "
                "(nothing is lost) — free some space, then run the same command again")
        lock_fd = _take_lock(state_dir / LOCK_NAME) if lock else None
        return cls._connect(db_path, lock_fd, lock=lock)

    @classmethod
    def _connect(cls, db_path: Path, lock_fd: int | None, *, lock: bool) -> Store:
        """Connect, bring the schema up to date (a reader: a private copy) and check the
        rows; on any error, release the file and the lock before raising."""
        store: Store | None = None
        try:
            conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            store = cls(conn, lock_fd, db_path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            if lock or not store._behind():
                store._migrate()
            else:
                # a run of an older batchgen may be writing this file right now: a reader
                # never changes its schema under it, and reads an up-to-date private copy
                store = store._migrated_copy()
            store._check_rows(guard=lock)
        except BaseException as exc:
            # release the lock and the file: a caller in a long-lived process (Python API)
            # must be able to open this output dir again once the problem is fixed
            if store is not None:
                store.close()
            elif lock_fd is not None:
                os.close(lock_fd)
            if isinstance(exc, sqlite3.DatabaseError):
                error = _open_error(db_path, exc)
                if lock or not isinstance(error, OutputNotWritable):
                    raise error from None
                return cls._open_read_only(db_path, error)
            raise
        return store

    @classmethod
    def _open_read_only(cls, db_path: Path, refused: OutputNotWritable) -> Store:
        """`status` and `plan` on a state they may read but not write (a read-only dir).

        SQLite cannot open a WAL database read-only without writing its index, unless told
        the file is immutable; nothing can be writing it, since nobody may.
        """
        try:
            conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro&immutable=1",
                                   uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            raise refused from None
        try:
            store = cls(conn, None, db_path)
            done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
            if done != {n for n, _ in _MIGRATIONS}:
                raise refused
            store._check_rows()
        except sqlite3.Error:
            conn.close()
            raise refused from None
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def preview(cls, output_dir: Path) -> Store:
        """A private copy of `output_dir`'s state (StateError when there is none).

        `plan` runs a run's own preparation (recover, sync, reopen) on it to see exactly
        the queue a run would start from, without the lock and without changing the state.
        The copy is a temporary file (removed on close), not memory.
        """
        with cls.open(output_dir, lock=False, create=False) as source:
            copy, scratch = scratch_db()  # on disk: a million rows stay out of memory
            try:
                source._conn.backup(copy)
            except sqlite3.DatabaseError as exc:
                copy.close()
                drop_scratch(scratch)
                raise StateError(f"{source.path}: unreadable state database ({exc})") from exc
            store = cls(copy, None, source.path)
            store._scratch = scratch
            return store

    def _applied(self) -> set[str]:
        """The migrations this database has (read only); StateError when it has one this
        batchgen does not know (a newer batchgen wrote it: leave it untouched)."""
        if self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' "
                              "AND name='_migrations'").fetchone() is None:
            return set()
        done = {r[0] for r in self._conn.execute("SELECT name FROM _migrations")}
        unknown = done - {n for n, _ in _MIGRATIONS}
        if unknown:
            raise StateError(
                f"{self.path}: written by a newer batchgen (schema {', '.join(sorted(unknown))} "
                "is unknown to this version); upgrade batchgen to use this output dir")
        return done

    def _behind(self) -> bool:
        """The schema lacks a migration this batchgen would apply."""
        return self._applied() != {n for n, _ in _MIGRATIONS}

    def _migrated_copy(self) -> Store:
        """A private in-memory copy, migrated; this store is closed."""
        copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            self._conn.backup(copy)
        except BaseException:
            copy.close()
            raise
        self.close()
        store = type(self)(copy, None, self.path)
        store._migrate()
        return store

    def _migrate(self) -> None:
        """Bring the schema up to date; refuse a database from a newer batchgen untouched."""
        done = self._applied()
        self._conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY)")
        for name, sql in _MIGRATIONS:
            if name in done:
                continue
            with self._tx():
                for stmt in sql.split(";"):
                    if stmt.strip() and not stmt.strip().startswith("--"):
                        self._conn.execute(stmt)
                self._conn.execute("INSERT INTO _migrations(name) VALUES (?)", (name,))

    # -- the manifest over the state ---------------------------------------------------

    def sync(self, jobs: Sequence[Job],
             estimates: Sequence[tuple[int, int]] | Callable[[Job], tuple[int, int]],
             *, key: str | None = None) -> SyncResult:
        """Lay the manifest's jobs over the state, in one transaction.

        New jobs are added as pending. A pending job takes the manifest's current request.
        A job that was already sent keeps its recorded request; if the manifest now asks
        for something else, it is flagged `changed` (reported, never resubmitted silently).
        A job whose every create was refused with no task made (`budget.free_to_change`)
        cost nothing: when its entry changed, it takes the new request and is pending again.
        `estimates` gives (total, add-audio part) credits per job, as a list or a function.

        The jobs are read once, in batches written as they come (a 1,000,000-job manifest
        is never held whole). `key` names the expansion and its prices (`session.sync_key`):
        when it is the one the last sync stored and no row waits for the manifest to
        correct it, that sync's rows stand and are not compared again.
        """
        total = self._conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        if key is not None and total and self._synced(key):
            return SyncResult(added=0, changed=self._changed_ids(), removed=total - len(jobs))
        free = {r.job_id for r in (_row(x) for x in self._conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE state=?", (JobState.FAILED,)))
            if budget.free_to_change(r)}
        pairs: Iterable[tuple[Job, tuple[int, int]]]
        if callable(estimates):
            price = estimates
            pairs = ((job, price(job)) for job in jobs)
        else:
            pairs = zip(jobs, estimates, strict=True)
        writes = SyncWrites(free)
        with self._tx(), self._unguarded():
            self._conn.execute("UPDATE jobs SET active = 0")
            for batch in batches(pairs, SYNC_BATCH):
                existing = self._existing(batch) if total else {}
                writes.plan(batch, existing)
                writes.flush(self._conn)
            if key is None:
                self._conn.execute("DELETE FROM meta WHERE key = ?", (_SYNC_KEY,))
            else:
                self._conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) "
                                   "DO UPDATE SET value = excluded.value", (_SYNC_KEY, key))
        return SyncResult(added=writes.seen - writes.matched, changed=tuple(writes.changed),
                          removed=total - writes.matched)

    def _existing(self, batch: list[tuple[Job, tuple[int, int]]]
                  ) -> dict[str, tuple[str, str]]:
        """(state, fingerprint) of the stored rows of these jobs and of their later videos."""
        ids = [job.id for job, _ in batch]
        ids += [f"{job.id}#{k}" for job, _ in batch for k in range(2, (job.count or 1) + 1)]
        out: dict[str, tuple[str, str]] = {}
        for start in range(0, len(ids), _LOOKUP):
            part = ids[start:start + _LOOKUP]
            out.update((r[0], (r[1], r[2])) for r in self._conn.execute(
                "SELECT job_id, state, fingerprint FROM jobs WHERE job_id IN "
                f"({', '.join('?' * len(part))})", part))
        return out
