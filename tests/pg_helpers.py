"""A real PostgreSQL for the state tests: each test gets its own schemas, dropped after.

The server is the machine's (127.0.0.1:5432, trust auth, database `test`; override with
BATCHGEN_TEST_PG). Without one, the tests skip and say why; CI sets
BATCHGEN_REQUIRE_PG=1 so that a missing server fails there instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

SERVER = os.environ.get("BATCHGEN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _unreachable() -> str | None:
    """Why the tests cannot use the server, or None when they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'batchgen[postgres]')"
    try:
        psycopg.connect(SERVER, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL at {SERVER} ({str(exc).strip().splitlines()[0]})"
    return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A state URL whose schemas are this test's alone (`?schema=<unique prefix>`)."""
    why = _unreachable()
    if why is not None:
        if os.environ.get("BATCHGEN_REQUIRE_PG"):
            pytest.fail(f"BATCHGEN_REQUIRE_PG is set but {why}")
        pytest.skip(why)
    import psycopg
    prefix = f"t{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in SERVER else "?"
    yield f"{SERVER}{sep}schema={prefix}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        schemas = [r[0] for r in conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
            (prefix + "\\_%",))]
        for name in schemas:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def with_password(url: str, password: str) -> str:
    """`url` with a password in it (trust auth ignores it; it must never be shown)."""
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{password}@{host}"
