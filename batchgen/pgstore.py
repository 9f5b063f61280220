"""The PostgreSQL state: a manifest's journal that outlives the host that wrote it.

Same rows, same transitions, same SQL as the SQLite store: `PgStore` subclasses
`store.Store` and hands its SQL a connection shaped like sqlite3's (`pgconn.PgConn`:
``?`` placeholders become ``%s``, booleans and enums are sent as SQLite stored them), so
the two backends cannot drift apart on sync, recover, reopen or the one write path. Only
opening, migrating, transactions and locking differ, and live here.

* **Scope.** Each manifest (by its ``name``) has its own schema,
  ``<prefix>_<name>_<hash>`` (prefix ``batchgen``, or the URL's ``?schema=``), holding
  the very tables of the SQLite store, so several manifests share one database and the
  output dir is free to move (a container's disk may vanish; the journal does not).
* **Migrations** are SQLite's, in order, with names unchanged, plus PostgreSQL-only
  ones (``pg_*``), all append-only; they run at open in one transaction under a
  transaction-level advisory lock, so two hosts starting together migrate once.
* **One runner.** A run holds a session-level advisory lock on its scope for its whole
  life (the server drops it when the connection dies, so kill -9 never leaves it) and
  records who holds it (host, pid) for the refusal message: `OutputDirLocked`.
* **Durability.** Every commit is durable (``synchronous_commit`` is the server's;
  keep it ``on``): `durable=` is accepted for the interface and needs nothing more.

The connection is synchronous psycopg 3: a transition is one short round trip to the
server, as a SQLite commit is one fsync, and the runner's write path stays one code path.
Errors never quote the URL's password (`StateUrl.scrub`). Deliberately not here: the
driver and its errors (pgconn.py), several runners on one manifest (pglease.py,
pgshare.py), the budget rule (budget.py), scheduling (runner.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from batchgen.errors import NoState, OutputDirLocked, StateError
from batchgen.jobs import JobState
from batchgen.pgconn import PgConn, connect
from batchgen.state_store import StateUrl
from batchgen.store import _MIGRATIONS, Store

#: PostgreSQL-only steps after SQLite's (append-only like them)
_PG_MIGRATIONS: tuple[tuple[str, str], ...] = (
    # the money audit lists abandoned tasks in the order they were abandoned (rowid in SQLite)
    ("pg_0001_abandoned_order", "ALTER TABLE abandoned_tasks ADD COLUMN seq BIGSERIAL"),
    # several runners on one manifest (pgshare.py): who they are and how long their lease
    # runs (the server's clock), which runner holds a job, what its claim reserved
    ("pg_0002_runners", """
        CREATE TABLE runners (
            runner_id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid BIGINT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            lease_until TIMESTAMPTZ NOT NULL,
            dead BOOLEAN NOT NULL DEFAULT false
        );
        ALTER TABLE jobs ADD COLUMN holder TEXT;
        ALTER TABLE jobs ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0;
        CREATE INDEX jobs_holder ON jobs(holder)
    """),
)


def schema_name(prefix: str, scope: str) -> str:
    """The schema holding one manifest's rows: readable, unique, within 63 bytes."""
    slug = re.sub(r"[^a-z0-9]+", "_", scope.lower()).strip("_")[:30] or "manifest"
    digest = hashlib.sha256(scope.encode()).hexdigest()[:8]
    return f"{prefix}_{slug}_{digest}"


def _lock_key(text: str) -> int:
    """A signed 64-bit advisory-lock key for `text`."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


class PgStore(Store):
    """One manifest's state in PostgreSQL. Open with `PgStore.open` or `preview`."""

    def __init__(self, conn: PgConn, url: StateUrl, schema: str) -> None:
        # Store's SQL is written against sqlite3's connection; PgConn speaks that part
        super().__init__(cast(sqlite3.Connection, conn), None, Path(schema))
        self._pg = conn
        self.url = url
        self.schema = schema
        self._run_lock: int | None = None

    @property
    def where(self) -> str:
        """Where this state is, for messages (the URL shown without its password)."""
        return f"{self.url.redacted} (schema {self.schema})"

    # -- opening and closing ---------------------------------------------------------

    @classmethod
    def open(cls, url: StateUrl, scope: str, *,  # type: ignore[override]
             lock: bool = True, create: bool = True) -> PgStore:
        """Connect, migrate (when `create`) and, with `lock`, take the scope's run lock.

        NoState when the scope has no schema yet and `create` is false.
        """
        schema = schema_name(url.schema, scope)
        store = cls(connect(url), url, schema)
        store._pg.where = store.where
        try:
            store._prepare(scope, create=create, lock=lock)
        except BaseException:
            store.close()
            raise
        return store

    def _prepare(self, scope: str, *, create: bool, lock: bool = True) -> None:
        """Point the connection at the scope's schema, migrate, check, lock."""
        with self._pg.errors():
            self._pg.execute(f'SET search_path TO "{self.schema}"')
            exists = self._pg.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = ?",
                (self.schema,)).fetchone()
            if exists is None and not create:
                raise NoState(f"{self.where}: no state yet for manifest {scope!r} "
                              "(nothing has been run with it)")
            self._migrate()
            self._check_rows()
            if lock:
                self._take_run_lock(scope)

    @classmethod
    def preview(cls, url: StateUrl, scope: str) -> PgStore:  # type: ignore[override]
        """The state copied into temporary tables, in a transaction never committed:
        `plan` runs a run's preparation on the copies and sees exactly the queue a run
        would start from, without locking a row that live runners write (one snapshot,
        so the tables agree with each other)."""
        store = cls.open(url, scope, lock=False, create=False)
        with store._pg.errors():
            pg = store._pg
            pg.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            for (name,) in pg.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
                    "AND table_type = 'BASE TABLE'", (store.schema,)).fetchall():
                real = f'"{store.schema}"."{name}"'
                pg.execute(f'CREATE TEMP TABLE "{name}" (LIKE {real} INCLUDING ALL)')
                pg.execute(f'INSERT INTO pg_temp."{name}" SELECT * FROM {real}')
            pg.execute(f'SET LOCAL search_path TO pg_temp, "{store.schema}"')
        return store

    def close(self) -> None:
        """Roll back anything uncommitted (a preview), release the lock, disconnect."""
        self._pg.rollback_and_close()
        self._run_lock = None

    def _take_run_lock(self, scope: str) -> None:
        key = _lock_key(self.schema)
        got = self._pg.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()
        if not got or not got[0]:
            row = self._pg.execute("SELECT value FROM meta WHERE key = 'holder'").fetchone()
            holder = row[0] if row else "unknown"
            raise OutputDirLocked(
                f"{self.where}: another batchgen run ({holder}) is running manifest {scope!r} "
                "with this state; wait for it to finish or stop it, then run again")
        self._run_lock = key
        holder = f"host {socket.gethostname()}, pid {os.getpid()}"
        with self._tx():
            self._conn.execute("INSERT INTO meta(key, value) VALUES ('holder', ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                               (holder,))

    def _migrate(self) -> None:
        """Create the schema and bring it up to date, once, whoever else starts now."""
        steps = [(n, sql.replace("INTEGER", "BIGINT")
                  .replace("job_id TEXT PRIMARY KEY", 'job_id TEXT COLLATE "C" PRIMARY KEY'))
                 for n, sql in _MIGRATIONS] + list(_PG_MIGRATIONS)
        with self._tx():
            self._pg.execute("SELECT pg_advisory_xact_lock(?)",
                             (_lock_key(self.schema + ":migrate"),))
            self._pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            self._pg.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY)")
            done = {r[0] for r in self._pg.execute("SELECT name FROM _migrations")}
            unknown = done - {n for n, _ in steps}
            if unknown:
                raise StateError(
                    f"{self.where}: written by a newer batchgen (schema "
                    f"{', '.join(sorted(unknown))} is unknown to this version); upgrade "
                    "batchgen to use this state")
            for name, sql in steps:
                if name in done:
                    continue
                for stmt in sql.split(";"):
                    if stmt.strip() and not stmt.strip().startswith("--"):
                        self._pg.execute(stmt)
                self._pg.execute("INSERT INTO _migrations(name) VALUES (?)", (name,))

    def _check_rows(self, *, guard: bool = False) -> None:
        """Refuse a row whose state batchgen does not know (the columns are typed here)."""
        bad = self._pg.execute(
            "SELECT job_id, state FROM jobs WHERE NOT (state = ANY(?)) LIMIT 1",
            ([s.value for s in JobState],)).fetchone()
        if bad is not None:
            raise StateError(f"{self.where}: job row {bad[0]!r} is damaged (unknown state "
                             f"{bad[1]!r}); batchgen will not guess what it means")

    # -- transactions ------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction (a savepoint inside a preview's); commits are always durable."""
        with self._pg.transaction():
            yield self._conn

    # -- reads -------------------------------------------------------------------------

    def abandoned(self) -> list[dict[str, Any]]:
        """As `Store.abandoned`, in the order the tasks were abandoned."""
        cur = self._pg.execute(
            "SELECT job_id, step, task_id, credits, error, submitted_at, finished_at, "
            "abandoned_at FROM abandoned_tasks ORDER BY seq")
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur]


    def holders(self) -> dict[str, str]:
        """Which runner (host:pid) holds each unfinished job, for `status`."""
        cur = self._pg.execute(
            "SELECT j.job_id, r.host, r.pid, r.dead OR r.lease_until < now() FROM jobs j "
            "JOIN runners r ON j.holder = r.runner_id WHERE j.state NOT IN (?, ?, ?)",
            (JobState.COMPLETED, JobState.FAILED, JobState.UNKNOWN))
        return {j: f"{host}:{pid}" + (" (lease expired)" if gone else "")
                for j, host, pid, gone in cur}

    def runners(self) -> list[dict[str, Any]]:
        """Runners that have not left, with their lease and how many jobs each holds."""
        cur = self._pg.execute(
            "SELECT r.host, r.pid, r.started_at, r.lease_until, r.lease_until > now(), "
            "(SELECT count(*) FROM jobs j WHERE j.holder = r.runner_id) FROM runners r "
            "WHERE NOT r.dead ORDER BY r.started_at")
        return [{"host": h, "pid": p, "started_at": s.isoformat(), "lease_until": u.isoformat(),
                 "alive": bool(a), "jobs": n} for h, p, s, u, a, n in cur]


if TYPE_CHECKING:
    from batchgen.state_store import StateStore

    def _conforms(sqlite: Store, pg: PgStore) -> tuple[StateStore, StateStore]:
        """Both backends provide the interface (checked by mypy, never called)."""
        return sqlite, pg
