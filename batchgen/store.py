"""The state database: the only module that speaks SQL.

One SQLite file per output dir (``.batchgen/state.db``) holds one row per job: what was
asked (fingerprint + request), what the API answered (task ids, credits), where the job is
in its life (``JobState``) and what landed on disk. It is the evidence that makes resume and
"never pay twice" possible, so it is written *before* money moves:

* ``begin_submit`` commits ``submitting`` with ``synchronous=FULL`` before the create POST;
* ``mark_accepted`` commits the task id the moment the answer arrives (also FULL);
* on open, a job still ``submitting`` (the process died mid-request) becomes ``unknown``.

Other transitions use ``synchronous=NORMAL``: in WAL mode that survives ``kill -9`` (the
write is in the OS cache) and costs a tenth of a FULL commit.

The interface is deliberately narrow — sync, claim, record a transition, read rows — so a
shared PostgreSQL backend for several runners would be an addition, not a rewrite.
Deliberately not here: scheduling decisions, HTTP, files. The store also holds the run lock
(``fcntl`` on ``.batchgen/lock``) because the lock guards exactly this database.

The output dir is not trusted: ``.batchgen`` must be a real directory and its files regular
files (a planted symlink is refused, never followed), the lock is opened with O_NOFOLLOW,
and every row is checked on open (a tampered row is named, not half-read). When the
environment refuses a write (read-only file or dir, full disk) the error says so
(`OutputNotWritable`) and never advises moving an intact database away: without it the
next run would pay again for every video already made.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchgen import budget
from batchgen.errors import ClaimLost, NoState, OutputNotWritable, StateError
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
    _env_error,
    _open_error,
    _take_lock,
)
from batchgen.state_files import DB_NAME as DB_NAME
from batchgen.state_files import LOCK_NAME as LOCK_NAME
from batchgen.state_files import STATE_DIR as STATE_DIR
from batchgen.state_files import STATE_FILES as STATE_FILES
from batchgen.transitions import Accepted, Claimed, Event, Unsent, advance, changed_columns

_COLUMNS = (
    "job_id, idx, fingerprint, request, state, credits_estimated, task_id, audio_task_id, "
    "credits_video, credits_audio, video_url, file, bytes, sha256, submitted_at, "
    "completed_at, attempts, error, changed, active, unknown_step, remote_deleted, parent, "
    "credits_prior, credits_lost, audio_held, credits_note, finished_at"
)

_MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("0001_jobs", f"""
        CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            idx INTEGER NOT NULL,
            fingerprint TEXT NOT NULL,
            request TEXT NOT NULL,
            state TEXT NOT NULL,
            credits_estimated INTEGER NOT NULL,
            task_id TEXT,
            audio_task_id TEXT,
            credits_video INTEGER,
            credits_audio INTEGER,
            video_url TEXT,
            file TEXT,
            bytes INTEGER,
            sha256 TEXT,
            submitted_at TEXT,
            completed_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            changed INTEGER NOT NULL DEFAULT 0,
            active INTEGER NOT NULL DEFAULT 1,
            unknown_step TEXT,
            remote_deleted INTEGER NOT NULL DEFAULT 0,
            new_fingerprint TEXT,
            sent INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX jobs_state ON jobs(state);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- {_COLUMNS}
    """),
    # videos 2..N of a `count` job: rows of their own that follow their parent's one create
    ("0002_parent", """
        ALTER TABLE jobs ADD COLUMN parent TEXT;
        CREATE INDEX jobs_parent ON jobs(parent)
    """),
    # charges of tasks a job abandoned (--retry-failed): spent money the budget must keep
    ("0003_credits_prior", """
        ALTER TABLE jobs ADD COLUMN credits_prior INTEGER NOT NULL DEFAULT 0
    """),
    # the budget keeps lost creates that were sent again, and knows whether a repeated
    # add-audio step was admitted; an unusable charge from the API is recorded as said
    ("0004_budget_holds", """
        ALTER TABLE jobs ADD COLUMN credits_lost INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN audio_held INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE jobs ADD COLUMN credits_note TEXT
    """),
    # report.html: when a task finished at the API (timeline, 7-day URL expiry), and the
    # tasks --retry-failed abandoned, with what they cost and why (the money audit)
    ("0005_report_audit", """
        ALTER TABLE jobs ADD COLUMN finished_at TEXT;
        CREATE TABLE abandoned_tasks (
            job_id TEXT NOT NULL,
            step TEXT NOT NULL,
            task_id TEXT,
            credits INTEGER,
            error TEXT,
            submitted_at TEXT,
            finished_at TEXT,
            abandoned_at TEXT NOT NULL
        );
        CREATE INDEX abandoned_job ON abandoned_tasks(job_id)
    """),
)


def _row(r: sqlite3.Row | tuple[Any, ...]) -> JobRow:
    return JobRow(
        job_id=r[0], idx=r[1], fingerprint=r[2], **_decode(json.loads(r[3])), state=JobState(r[4]),
        credits_estimated=r[5], task_id=r[6], audio_task_id=r[7], credits_video=r[8],
        credits_audio=r[9], video_url=r[10], file=r[11], bytes=r[12], sha256=r[13],
        submitted_at=r[14], completed_at=r[15], attempts=r[16], error=r[17],
        changed=bool(r[18]), active=bool(r[19]), unknown_step=r[20], remote_deleted=bool(r[21]),
        parent=r[22], credits_prior=r[23], credits_lost=r[24], audio_held=bool(r[25]),
        credits_note=r[26], finished_at=r[27],
    )


#: what the stored request JSON carries beside the job's fields, and the typed `JobRow`
#: field each becomes on reading: only this module sees these keys
_HIDDEN = {"_audio_estimate": "audio_estimate", "_source": "source", "_extra": "extra"}


def _decode(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored request JSON as `JobRow` fields: the request (only what the API is
    sent) and the typed values the store keeps beside it."""
    fields: dict[str, Any] = {"request": {k: v for k, v in stored.items() if k not in _HIDDEN}}
    estimate = stored.get("_audio_estimate", 0)
    fields["audio_estimate"] = estimate if isinstance(estimate, int) else 0
    fields["source"] = str(stored.get("_source") or "")
    extra = stored.get("_extra")
    fields["extra"] = extra if isinstance(extra, dict) else None
    return fields


def _encode(row: JobRow) -> str:
    """The inverse of `_decode`: a row's request JSON as stored."""
    stored = dict(row.request)
    if row.request.get("add_audio"):
        stored["_audio_estimate"] = row.audio_estimate
    stored["_source"] = row.source
    if row.extra:
        stored["_extra"] = row.extra
    return json.dumps(stored, sort_keys=True)


def stored_fields(job: Job, audio_estimate: int) -> dict[str, Any]:
    """The `JobRow` fields of a job as `sync` stores it: request, source, audio_estimate,
    extra (for a row of a job that never ran)."""
    return _decode(job_request(job, audio_estimate))


def job_request(job: Job, audio_estimate: int) -> dict[str, Any]:
    """The request as stored: the job's fields plus what the report and runner need
    (read back as typed `JobRow` fields by `_decode`; the keys never leave this module)."""
    req = job.request_fields()
    if job.add_audio is not None:
        req["add_audio"] = job.add_audio.as_dict()
        req["_audio_estimate"] = audio_estimate
    req["_source"] = job.source
    if job.extra:
        req["_extra"] = dict(job.extra)  # for report.csv only; "_" keys are never sent
    return req


#: jobs read, compared and written at a time by `Store.sync`; ids per lookup query
SYNC_BATCH = 5_000
_LOOKUP = 500
#: the meta key holding the last sync's expansion key (see `Store.sync`)
_SYNC_KEY = "sync_key"


def _batches(pairs: Iterable[tuple[Job, tuple[int, int]]], size: int
             ) -> Iterator[list[tuple[Job, tuple[int, int]]]]:
    batch: list[tuple[Job, tuple[int, int]]] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _SyncWrites:
    """What `Store.sync` writes for each batch of jobs, one executemany per kind."""

    def __init__(self, free: set[str]) -> None:
        self.free = free
        self.changed: list[str] = []
        self.seen = self.matched = 0
        self.inserts: list[tuple[Any, ...]] = []
        self.resets: list[tuple[Any, ...]] = []
        self.children: list[tuple[Any, ...]] = []
        self.sent: list[tuple[Any, ...]] = []

    def plan(self, batch: list[tuple[Job, tuple[int, int]]],
             existing: dict[str, tuple[str, str]]) -> None:
        for job, (total, audio) in batch:
            self.seen += 1
            count = job.count or 1
            total, audio = total // count, audio // count  # per video
            prev = existing.get(job.id)
            self.matched += prev is not None
            # a job that cost nothing and whose entry changed is sent as corrected
            fresh = prev is not None and job.id in self.free and prev[1] != job.fingerprint
            open_ = prev is None or prev[0] == JobState.PENDING or fresh
            if prev is not None and not open_:
                is_changed = prev[1] != job.fingerprint
                if is_changed:
                    self.changed.append(job.id)
                self.sent.append((job.index, int(is_changed),
                                  job.fingerprint if is_changed else None, job.id))
                if count == 1:
                    continue  # its recorded request stays: no need to build the new one
            req = json.dumps(job_request(job, audio), sort_keys=True)
            for k in range(2, count + 1):
                child = f"{job.id}#{k}"
                if child not in existing:
                    if open_:  # else: count raised after sending: flagged, not paid
                        self.inserts.append((child, job.index, job.fingerprint, req, total,
                                             job.id))
                elif fresh and child in self.free:
                    self.resets.append((job.index, job.fingerprint, req, total, child))
                else:
                    self.children.append((req, total, child))
            if prev is None:
                self.inserts.append((job.id, job.index, job.fingerprint, req, total, None))
            elif open_:
                self.resets.append((job.index, job.fingerprint, req, total, job.id))

    def flush(self, conn: Any) -> None:
        conn.executemany(
            "INSERT INTO jobs(job_id, idx, fingerprint, request, state, credits_estimated, "
            f"parent) VALUES (?,?,?,?,'{JobState.PENDING.value}',?,?)", self.inserts)
        # a job not (or no longer) bound by an earlier create takes the manifest's request
        conn.executemany(
            "UPDATE jobs SET idx=?, fingerprint=?, request=?, credits_estimated=?, active=1, "
            "changed=0, new_fingerprint=NULL, error=NULL, unknown_step=NULL, "
            f"state='{JobState.PENDING.value}' WHERE job_id=?", self.resets)
        conn.executemany(
            f"UPDATE jobs SET active=1, request=CASE state WHEN '{JobState.PENDING.value}' "
            "THEN ? ELSE request END, credits_estimated=CASE state WHEN "
            f"'{JobState.PENDING.value}' THEN ? ELSE credits_estimated END WHERE job_id=?",
            self.children)
        conn.executemany("UPDATE jobs SET idx=?, active=1, changed=?, new_fingerprint=? "
                         "WHERE job_id=?", self.sent)
        self.inserts, self.resets, self.children, self.sent = [], [], [], []


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What `Store.sync` found when it laid the manifest over the state."""

    added: int
    changed: tuple[str, ...]      #: ids whose entry changed after submission (kept, reported)
    removed: int                  #: jobs in the state that the manifest no longer lists


class Store:
    """SQLite state of one output dir. Open with `Store.open` (takes the lock)."""

    #: several runners drain this state at once: the store hands out the work
    #: (state_store.SharedState, pgshare.SharedPgStore); never for SQLite
    shared = False

    def __init__(self, conn: sqlite3.Connection, lock_fd: int | None, path: Path) -> None:
        self._conn = conn
        self._lock_fd = lock_fd
        self.path = path

    # -- opening and closing ---------------------------------------------------------

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
            store._check_rows()
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
        """A private in-memory copy of `output_dir`'s state (StateError when there is none).

        `plan` runs a run's own preparation (recover, sync, reopen) on it to see exactly
        the queue a run would start from, without the lock and without changing the state.
        """
        with cls.open(output_dir, lock=False, create=False) as source:
            copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            try:
                source._conn.backup(copy)
            except sqlite3.DatabaseError as exc:
                copy.close()
                raise StateError(f"{source.path}: unreadable state database ({exc})") from exc
            return cls(copy, None, source.path)

    def close(self) -> None:
        """Close the database and release the lock; safe to call twice."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    @contextlib.contextmanager
    def _tx(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; `durable` fsyncs the WAL at commit (for records guarding money).

        A write the environment refuses (read-only, disk full) rolls back and raises
        `OutputNotWritable`: the database keeps its last committed state.
        """
        try:
            with self._tx_raw(durable) as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            env = _env_error(self.path, exc)
            if env is None:
                raise
            raise env from None

    @contextlib.contextmanager
    def _tx_raw(self, durable: bool) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        if durable:
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if durable:
                conn.execute("PRAGMA synchronous=NORMAL")

    def _check_rows(self) -> None:
        """Refuse a state with a tampered row, naming it, before anything reads or pays.

        One SQL pass (no Python per row), so it costs little even for 100,000 jobs.
        """
        states = ", ".join(f"'{s.value}'" for s in JobState)
        ints = ("idx", "attempts", "credits_prior")
        opt_ints = ("credits_video", "credits_audio", "bytes")
        opt_texts = ("task_id", "audio_task_id", "video_url", "file", "sha256",
                     "submitted_at", "completed_at", "error", "unknown_step", "parent")
        cases = [f"WHEN state NOT IN ({states}) THEN 'unknown state ' || quote(state)",
                 "WHEN typeof(credits_estimated) != 'integer' OR credits_estimated < 0 "
                 "THEN 'credits_estimated is ' || quote(credits_estimated)",
                 "WHEN typeof(fingerprint) != 'text' THEN 'fingerprint is not text'",
                 "WHEN NOT json_valid(request) OR json_type(request) != 'object' "
                 "THEN 'request is not a JSON object'"]
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(jobs)")}
        cases += [f"WHEN typeof({c}) != 'integer' OR {c} < 0 THEN '{c} is ' || quote({c})"
                  for c in ints if c in have]
        cases += [f"WHEN {c} IS NOT NULL AND (typeof({c}) != 'integer' OR {c} < 0) "
                  f"THEN '{c} is ' || quote({c})" for c in opt_ints if c in have]
        cases += [f"WHEN {c} IS NOT NULL AND typeof({c}) != 'text' "
                  f"THEN '{c} is not text'" for c in opt_texts if c in have]
        sql = (f"SELECT job_id, problem FROM (SELECT job_id, CASE "
               f"WHEN typeof(job_id) != 'text' THEN 'job_id is not text' {' '.join(cases)} "
               "END AS problem FROM jobs) WHERE problem IS NOT NULL LIMIT 1")
        bad = self._conn.execute(sql).fetchone()
        if bad is not None:
            raise StateError(
                f"{self.path}: job row {bad[0]!r} is damaged ({bad[1]}); batchgen will not "
                "guess what it means — restore the state from a backup or correct that row "
                "(starting over without this database would pay again for every video)")

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
            changed = [r[0] for r in self._conn.execute(
                "SELECT job_id FROM jobs WHERE active=1 AND parent IS NULL AND changed=1 "
                "ORDER BY idx")]
            return SyncResult(added=0, changed=tuple(changed), removed=total - len(jobs))
        free = {r.job_id for r in (_row(x) for x in self._conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE state=?", (JobState.FAILED,)))
            if budget.free_to_change(r)}
        pairs: Iterable[tuple[Job, tuple[int, int]]]
        if callable(estimates):
            price = estimates
            pairs = ((job, price(job)) for job in jobs)
        else:
            pairs = zip(jobs, estimates, strict=True)
        writes = _SyncWrites(free)
        with self._tx():
            self._conn.execute("UPDATE jobs SET active = 0")
            for batch in _batches(pairs, SYNC_BATCH):
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

    def _synced(self, key: str) -> bool:
        """True when the last sync stored `key` and left nothing for a new one to do.

        A sync of the same jobs would still write a pending row flagged or marked since
        (reopened with an old request, an error or a lost step) and a refused job whose
        entry changed: any such row makes the sync run in full.
        """
        stored = self._conn.execute("SELECT value FROM meta WHERE key = ?",
                                    (_SYNC_KEY,)).fetchone()
        if stored is None or stored[0] != key:
            return False
        waiting = self._conn.execute(
            "SELECT 1 FROM jobs WHERE active=1 AND ((state=? AND (changed=1 OR "
            "new_fingerprint IS NOT NULL OR error IS NOT NULL OR unknown_step IS NOT NULL)) "
            "OR (state=? AND changed=1)) LIMIT 1",
            (JobState.PENDING, JobState.FAILED)).fetchone()
        return waiting is None

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

    def recover(self) -> int:
        """After a crash, settle creates that were journaled but never answered.

        One whose request never left (no `sent` mark: the process died before a connection
        was in hand) provably made nothing and goes back to its queue. One that was sent
        becomes `unknown`. Returns how many became unknown.
        """
        with self._tx(durable=True):
            self._conn.execute("UPDATE jobs SET state=? WHERE state=? AND sent=0",
                               (JobState.PENDING, JobState.SUBMITTING))
            self._conn.execute("UPDATE jobs SET state=? WHERE state=? AND sent=0",
                               (JobState.AUDIO_PENDING, JobState.AUDIO_SUBMITTING))
            cur = self._conn.execute(
                "UPDATE jobs SET unknown_step = CASE state WHEN ? THEN 'add_audio' ELSE 'video' "
                "END, state = ?, error = 'the create request was sent but its answer was lost "
                "(the run stopped); re-run with --resubmit-unknown to send it again' "
                "WHERE state IN (?, ?)",
                (JobState.AUDIO_SUBMITTING, JobState.UNKNOWN, JobState.SUBMITTING,
                 JobState.AUDIO_SUBMITTING))
            self._conn.execute(
                "UPDATE jobs SET state=?, unknown_step='video', error='made by the lost create "
                "of ' || parent WHERE state=? AND parent IN (SELECT job_id FROM jobs "
                "WHERE state=? AND unknown_step='video')",
                (JobState.UNKNOWN, JobState.PENDING, JobState.UNKNOWN))
        return cur.rowcount

    def reopen(self, *, unknown: bool, failed: bool) -> int:
        """Make unknown and/or failed jobs eligible again (--resubmit-unknown/--retry-failed).

        What is repeated, and what stays held against the budget, is `budget.reopened`'s
        decision (plan asks the same function); this only writes it, durably, in one
        transaction. Returns how many jobs were reopened.
        """
        states = ([JobState.UNKNOWN] if unknown else []) + ([JobState.FAILED] if failed else [])
        if not states:
            return 0
        marks = ", ".join("?" * len(states))
        n = 0
        with self._tx(durable=True):
            rows = [_row(r) for r in self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) AND active=1 "
                "AND changed=0", states)]
            for row in rows:
                changes = budget.reopened(row, unknown=unknown, failed=failed)
                if changes is None:
                    continue
                self._record_abandoned(row, changes)
                names = ", ".join(f"{k}=?" for k in changes)
                self._conn.execute(f"UPDATE jobs SET {names} WHERE job_id=?",
                                   (*changes.values(), row.job_id))
                n += 1
        return n

    def _record_abandoned(self, row: JobRow, changes: dict[str, Any]) -> None:
        """Keep the tasks a reopen abandons: their ids, charges and the error that ended them.

        Kept: each task the reopen drops (its id is cleared) that exists — it has an id or
        a charge — and an unknown create of the step repeated, which may have been charged.
        The job's row forgets them; the report's money audit lists them.
        """
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        unknown = row.state is JobState.UNKNOWN
        steps = (("video", "task_id", row.task_id, row.credits_video),
                 ("add_audio", "audio_task_id", row.audio_task_id, row.credits_audio))
        for step, column, task_id, credits in steps:
            if column not in changes or (changes[column] == task_id and task_id is not None):
                continue  # this step's task is kept
            lost = unknown and (row.unknown_step or "video") == step
            if task_id is None and credits is None and not lost:
                continue
            self._conn.execute(
                "INSERT INTO abandoned_tasks (job_id, step, task_id, credits, error, "
                "submitted_at, finished_at, abandoned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row.job_id, step, task_id, credits, row.error, row.submitted_at,
                 row.finished_at, now))

    # -- reads -------------------------------------------------------------------------

    def abandoned(self) -> list[dict[str, Any]]:
        """Tasks that --retry-failed/--resubmit-unknown abandoned, oldest first (the audit)."""
        cur = self._conn.execute(
            "SELECT job_id, step, task_id, credits, error, submitted_at, finished_at, "
            "abandoned_at FROM abandoned_tasks ORDER BY rowid")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    def rows(self, *, active_only: bool = True) -> list[JobRow]:
        """Every job row in manifest order."""
        where = "WHERE active = 1 " if active_only else ""
        return [_row(r) for r in self._conn.execute(
            f"SELECT {_COLUMNS} FROM jobs {where}ORDER BY idx, parent IS NOT NULL, job_id")]

    def iter_rows(self, *, active_only: bool = True) -> Iterator[JobRow]:
        """`rows()`, one at a time from the cursor (status over a million rows)."""
        where = "WHERE active = 1 " if active_only else ""
        for r in self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs {where}ORDER BY idx, parent IS NOT NULL, job_id"):
            yield _row(r)

    def get(self, job_id: str) -> JobRow:
        """One job row (KeyError when absent)."""
        r = self._conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if r is None:
            raise KeyError(job_id)
        return _row(r)

    def holders(self) -> dict[str, str]:
        """Which runner holds each unfinished job ("host:pid"): none here, where one run
        holds the whole output dir (the shared PostgreSQL state has several)."""
        return {}

    def runners(self) -> list[dict[str, Any]]:
        """The runners sharing this state, with their leases: none here (see `holders`)."""
        return []

    def committed_credits(self) -> int:
        """Credits held by every sent job of this output dir, across all runs (the budget)."""
        return budget.committed(self.rows(active_only=False))

    def rows_and_committed(self) -> tuple[list[JobRow], int]:
        """`rows()` and `committed_credits()` from one scan (a row costs a JSON parse)."""
        every = self.rows(active_only=False)
        return [r for r in every if r.active], budget.committed(every)

    # -- run history (for summary.json) --------------------------------------------------

    def run_history(self) -> dict[str, Any]:
        """What earlier runs recorded: `last` (the latest run's figures) and `all` (sums).

        Kept so that summary.json, rewritten by a no-op re-run or `batchgen report`, never
        loses the budget, wall time or requests of the runs before it.
        """
        r = self._conn.execute("SELECT value FROM meta WHERE key='run_history'").fetchone()
        try:
            history = json.loads(r[0]) if r else {}
        except ValueError:
            history = {}
        return history if isinstance(history, dict) else {}

    def record_run(self, *, wall_seconds: float, requests: Mapping[str, int],
                   budget: int | None, finished_at: str) -> dict[str, Any]:
        """Add one run's figures to the history (one transaction); return the new history."""
        with self._tx():
            before = _as_mapping(self.run_history().get("all"))
            total = {k: v for k, v in _as_mapping(before.get("requests")).items()
                     if isinstance(v, int)}
            for name, n in requests.items():
                total[name] = total.get(name, 0) + int(n)
            runs = before.get("runs")
            wall = before.get("wall_seconds")
            history = {
                "last": {"wall_seconds": round(wall_seconds, 3),
                         "requests": dict(sorted(requests.items())), "budget": budget,
                         "finished_at": finished_at},
                "all": {"runs": (runs if isinstance(runs, int) else 0) + 1,
                        "wall_seconds": round((wall if isinstance(wall, int | float) else 0)
                                              + wall_seconds, 3),
                        "requests": dict(sorted(total.items())),
                        "requests_total": sum(total.values())},
            }
            # the standard upsert (SQLite >= 3.24): the same statement serves PostgreSQL
            self._conn.execute("INSERT INTO meta(key, value) VALUES ('run_history', ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                               (json.dumps(history),))
        return history

    # -- pre-flight verdicts (preflight.py), kept beside the run history ------------------

    def asset_checks(self) -> dict[str, str]:
        """Every remembered asset verdict: key (``url:...``/``host:...``) -> JSON text."""
        rows = self._conn.execute("SELECT key, value FROM meta "
                                  "WHERE substr(key, 1, 6) = 'asset:'")
        return {k.removeprefix("asset:"): v for k, v in rows}

    def record_asset_check(self, key: str, value: str) -> None:
        """Remember one verdict (not durable: losing it costs one more check, no money)."""
        with self._tx():
            self._conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                               ("asset:" + key, value))

    # -- transitions -------------------------------------------------------------------

    def apply(self, row: JobRow, event: Event, *, durable: bool = False) -> JobRow:
        """Apply one transition to `row` (see `apply_many`) and return the row written."""
        return self.apply_many([(row, event)], durable=durable)[-1]

    def apply_many(self, steps: Sequence[tuple[JobRow, Event]], *,
                   durable: bool = False, sent: Sequence[str] = ()) -> list[JobRow]:
        """The one write path of the run: apply transitions, in one transaction.

        Each new row is `transitions.advance(row, event)` (an illegal event raises
        `IllegalTransition` before anything is written); events for one job chain in order.
        Exactly the columns that changed are written, and the rows returned (one per step)
        are the values written, so the caller's in-memory view is the store's. `durable`
        fsyncs at commit: the records that guard money (a claim, an accepted create,
        a hold, an undone create) use it. A claim also clears the job's `sent` mark (the
        journal's "the request has left", not part of the row); the jobs in `sent` get it,
        in the same transaction (scheduler/journal.py: one fsync for a tick's creates).
        """
        first: dict[str, JobRow] = {}
        latest: dict[str, JobRow] = {}
        claimed: set[str] = set()
        out: list[JobRow] = []
        for row, event in steps:
            current = latest.get(row.job_id, row)
            first.setdefault(row.job_id, current)
            latest[row.job_id] = new = advance(current, event)
            if isinstance(event, Claimed):
                claimed.add(row.job_id)
            out.append(new)
        with self._tx(durable=durable):
            for job_id, new in latest.items():
                cols = changed_columns(first[job_id], new)
                if cols.keys() & {"request", *_HIDDEN.values()}:
                    for name in ("request", *_HIDDEN.values()):
                        cols.pop(name, None)
                    cols["request"] = _encode(new)
                if job_id in claimed:
                    cols["sent"] = 0
                if cols:
                    self._write_row(job_id, cols)
            refused = [j for j in sent if not self._write_sent(j)]
        if refused:
            # the transitions above are committed (a task id is never lost); no create
            # whose mark was refused may leave
            raise self._lost()
        return out

    def _write_row(self, job_id: str, cols: Mapping[str, Any]) -> None:
        """Write one row's changed columns (the shared PostgreSQL store fences this write
        on the runner's claim: `pgshare.SharedPgStore`)."""
        names = ", ".join(f"{k}=?" for k in cols)
        self._conn.execute(f"UPDATE jobs SET {names} WHERE job_id=?", (*cols.values(), job_id))

    def _write_sent(self, job_id: str, sent: bool = True) -> bool:
        """The journal's "sent" mark; False when refused (the shared PostgreSQL store
        fences it on the runner's claim: then the create must not leave)."""
        self._conn.execute("UPDATE jobs SET sent=? WHERE job_id=?", (int(sent), job_id))
        return True

    def _lost(self) -> ClaimLost:
        return ClaimLost(f"{self.path}: this run no longer holds the jobs it meant to send; "
                         "it sends nothing more — run again")

    def begin_submit(self, job_ids: Iterable[str], now: str, *, audio: bool = False) -> None:
        """Journal creates about to be sent (durably): the evidence against paying twice."""
        self.apply_many([(self.get(j), Claimed(now, audio)) for j in job_ids], durable=True)

    def mark_sent(self, job_id: str, sent: bool = True) -> None:
        """A journaled create is about to leave: from now on it may exist (durably).

        ``sent=False`` undoes it when the API refused that attempt (nothing was made) and
        the create waits to try again: a crash during the wait must not leave an unknown.
        """
        with self._tx(durable=True):
            written = self._write_sent(job_id, sent)
        if not written:
            raise self._lost()

    def mark_accepted(self, job_id: str, task_id: str, credits: int | None, *,
                      audio: bool = False) -> None:
        """The API accepted a create: record its task id and charge at once (durably)."""
        self.apply(self.get(job_id), Accepted(task_id, credits, audio), durable=True)

    def mark_unsent(self, job_id: str, *, audio: bool = False) -> None:
        """A create that provably made no task (refused before or by the API): undo."""
        self.apply(self.get(job_id), Unsent(audio), durable=True)

    def update(self, changes: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Write column values as given, in one transaction: [(job_id, {column: value})].

        No transition is checked: for tests and repairs that set up a state directly.
        The run writes through `apply`.
        """
        allowed = {"state", "video_url", "file", "bytes", "sha256", "completed_at", "error",
                   "credits_video", "credits_audio", "unknown_step", "remote_deleted",
                   "credits_note", "finished_at"}
        with self._tx():
            for job_id, cols in changes:
                bad = cols.keys() - allowed
                if bad:
                    raise ValueError(f"not updatable: {sorted(bad)}")
                names = ", ".join(f"{k}=?" for k in cols)
                self._conn.execute(f"UPDATE jobs SET {names} WHERE job_id=?",
                                   (*cols.values(), job_id))


def _as_mapping(value: object) -> Mapping[str, Any]:
    """`value` when it is a mapping (state written by an older or broken run may not be)."""
    return value if isinstance(value, Mapping) else {}
