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
from batchgen.store_schema import damaged_row_query


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

    def _check_rows(self) -> None:
        """Refuse a state with a tampered row, naming it, before anything reads or pays.

        One SQL pass (no Python per row), so it costs little even for 100,000 jobs.
        """
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(jobs)")}
        bad = self._conn.execute(damaged_row_query(have)).fetchone()
        if bad is not None:
            raise StateError(
                f"{self.path}: job row {bad[0]!r} is damaged ({bad[1]}); batchgen will not "
                "guess what it means — restore the state from a backup or correct that row "
                "(starting over without this database would pay again for every video)")
