"""The state database's connection: transactions, closing, and the check of every row.

`StoreConnection` is the bottom layer of `store.Store` (store.py draws the layers): it
holds the SQLite connection, the run lock's descriptor and the database's path, and owns
what every other layer writes through: `_tx`, one transaction, fsynced at commit when it
guards money, turning a write the environment refuses (read-only, disk full) into
`OutputNotWritable` with the database left at its last commit. Also `_check_rows`, which
refuses a tampered row before anything reads it or pays.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from batchgen.errors import StateError
from batchgen.state_files import _env_error
from batchgen.store_schema import GUARD_PAUSED, damaged_row_query, guard_triggers


class StoreConnection:
    """One open state database (made by `Store.open`; the lock is released on close)."""

    #: several runners drain this state at once: the store hands out the work
    #: (state_store.SharedState, pgshare.SharedPgStore); never for SQLite
    shared = False

    def __init__(self, conn: sqlite3.Connection, lock_fd: int | None, path: Path) -> None:
        self._conn = conn
        self._lock_fd = lock_fd
        self.path = path

    def close(self) -> None:
        """Close the database and release the lock; safe to call twice."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def _hint(self, index: str) -> str:
        """`INDEXED BY index` for SQLite (whose planner would walk the state index and
        every pending row instead); nothing for PostgreSQL, which plans for itself."""
        return f" INDEXED BY {index}" if isinstance(self._conn, sqlite3.Connection) else ""

    def _check_rows(self, *, guard: bool = False) -> None:
        """Refuse a state with a tampered row, naming it, before anything reads or pays.

        A state whose row guard is in place (store_schema.guard_triggers: each row was
        checked as it was written, whoever wrote it) is not read again: at a million rows
        the pass took 2 s. Otherwise one SQL pass over every row; then a writer (`guard`:
        it holds the lock) puts the guard in place, in the same transaction.
        """
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(jobs)")}
        triggers = guard_triggers(have)
        if self._guarded(triggers):
            return
        with self._tx() if guard else contextlib.nullcontext():
            bad = self._conn.execute(damaged_row_query(have)).fetchone()
            if bad is not None:
                raise StateError(
                    f"{self.path}: job row {bad[0]!r} is damaged ({bad[1]}); batchgen will "
                    "not guess what it means — restore the state from a backup or correct "
                    "that row (starting over without this database would pay again for "
                    "every video)")
            if guard:
                for name, sql in triggers.items():
                    self._conn.execute(f"DROP TRIGGER IF EXISTS {name}")
                    self._conn.execute(sql)
                self._conn.execute("DELETE FROM meta WHERE key = ?", (GUARD_PAUSED,))

    def _guarded(self, triggers: dict[str, str]) -> bool:
        """The guard's triggers are there, as this batchgen writes them, and not paused."""
        found = dict(self._conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'jobs'"))
        if any(found.get(name) != sql for name, sql in triggers.items()):
            return False
        return self._conn.execute("SELECT 1 FROM meta WHERE key = ?",
                                  (GUARD_PAUSED,)).fetchone() is None

    @contextlib.contextmanager
    def _unguarded(self) -> Iterator[None]:
        """Inside one transaction of batchgen's own that writes rows it built itself (a
        sync of the manifest's jobs): the guard is paused, so a million inserts do not
        pay its check (10 µs each). Nobody else sees the pause: it is never committed (a
        state where it is found, left by some other writer, is checked in full)."""
        if not isinstance(self._conn, sqlite3.Connection):
            yield
            return
        self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, '1')",
                           (GUARD_PAUSED,))
        yield
        self._conn.execute("DELETE FROM meta WHERE key = ?", (GUARD_PAUSED,))
