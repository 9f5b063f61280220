"""The PostgreSQL driver's edge: a psycopg connection shaped like sqlite3's.

`PgStore` (pgstore.py) runs the SQLite store's own SQL, so it needs a connection that
speaks the part of `sqlite3.Connection` that SQL uses: `PgConn` turns ``?`` placeholders
into ``%s``, sends booleans and enums as SQLite stored them, and translates the driver's
errors into batchgen's (`StateUnavailable` when the server stops answering, `StateError`
otherwise) at the one point where they enter, never quoting the URL's password
(`StateUrl.scrub`). This is the only module that imports psycopg, as client.py is the
only one that imports aiohttp.

Deliberately not here: which schema, migrations, locks and transitions (pgstore.py,
pglease.py, pgshare.py); the SQL itself (the store*.py modules).
"""

from __future__ import annotations

import contextlib
import enum
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg

from batchgen.errors import StateError, StateUnavailable
from batchgen.state_store import StateUrl

_QUOTED = re.compile(r"('(?:[^']|'')*')")
#: seconds to wait for the server before giving up (the run then says so and exits)
CONNECT_TIMEOUT = 10


def _pg_sql(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (never inside a quoted literal)."""
    parts = _QUOTED.split(sql)
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("%", "%%").replace("?", "%s")
    return "".join(parts)


def _param(value: Any) -> Any:
    """A value as the SQLite store writes it: bools as 0/1, enums by value."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


class PgConn:
    """The part of sqlite3.Connection that Store's SQL uses, over psycopg; the driver's
    errors leave it as batchgen's (`StateUnavailable`, `StateError`), password scrubbed."""

    def __init__(self, conn: psycopg.Connection[Any], url: StateUrl) -> None:
        self.pg = conn
        self.url = url
        self.where = url.redacted

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        with self.errors():
            return self.pg.execute(_pg_sql(sql),
                                   [_param(p) for p in params])

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        rows = [[_param(p) for p in params] for params in seq]
        if rows:
            with self.errors(), self.pg.cursor() as cur:
                cur.executemany(_pg_sql(sql), rows)

    def close(self) -> None:
        self.pg.close()

    @property
    def closed(self) -> bool:
        return self.pg.closed

    def rollback_and_close(self) -> None:
        """Roll back anything uncommitted (a preview), then disconnect; never raises."""
        with contextlib.suppress(psycopg.Error):
            self.pg.rollback()
        with contextlib.suppress(psycopg.Error):
            self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction (a savepoint inside an open one), errors translated."""
        with self.errors(), self.pg.transaction():
            yield

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """The driver's errors as batchgen's, with the URL's password scrubbed."""
        try:
            yield
        except psycopg.OperationalError as exc:
            raise StateUnavailable(
                f"{self.where}: the state database stopped answering "
                f"({self.url.scrub(_first_line(exc))}); the state is intact up to the last "
                "commit — run the same command again when it is reachable") from None
        except psycopg.Error as exc:
            raise StateError(f"{self.where}: {self.url.scrub(_first_line(exc))}") from None


def connect(url: StateUrl) -> PgConn:
    """A connection to `url` in autocommit mode (`PgConn.transaction` opens one)."""
    try:
        conn = psycopg.connect(url.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                               application_name="batchgen")
    except psycopg.Error as exc:
        raise StateUnavailable(f"{url.redacted}: cannot connect to the state database "
                               f"({url.scrub(_first_line(exc))}); check the URL and that the "
                               "server is running, then run again") from None
    return PgConn(conn, url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
