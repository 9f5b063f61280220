"""A shared runner's claims, lease and adoption, kept off its event loop.

A claim reads every row of the manifest under the manifest's lock: 10-20 ms with one
runner, more with several waiting their turn. Made on the event loop, that time is taken
from the polls, downloads and answers of every task in flight. `OffLoop` makes the calls
the scheduler awaits (`claim`, `heartbeat`, `adopt`) on a second connection of the same
runner (same runner id, same lease), in one thread of its own, so they run one at a
time, in order, and the loop goes on meanwhile.

Why a thread and not psycopg's AsyncConnection: the run's other writes (sent marks, task
ids, downloads) stay synchronous on the first connection — one write path for both
backends (store.py), and a sent mark must be durable before a byte leaves. A transaction
driven by the same loop would stall for good whenever one of those writes waited on a
row it had locked (the loop blocked in the write cannot drive the transaction to its
end; only the server's idle-in-transaction timeout would end it, a lease later). In a
thread, the transaction always finishes on its own. Same SQL, same fences (pgshare.py).

`close` waits for a call still running (a claim whose caller was cancelled commits, and
the store's `close` then settles what it took) before the connection closes.

Deliberately not here: the SQL of a claim (pgshare.py), scheduling (scheduler/share.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from batchgen.errors import BatchgenError

if TYPE_CHECKING:
    from batchgen.claims import Claim
    from batchgen.jobs import JobRow
    from batchgen.pgshare import SharedPgStore

T = TypeVar("T")


class OffLoop:
    """The calls of a shared runner that the scheduler awaits, made in a thread."""

    def __init__(self, twin: SharedPgStore) -> None:
        #: the runner's second handle: its own connection, the runner's id and lease
        self._twin = twin
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchgen-pg")
        self.lease = twin.lease

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args))

    async def claim(self, free: int, limit: int, max_credits: int | None,
                    now: str) -> Claim:
        """`SharedPgStore.claim`, off the loop."""
        return await self._call(self._twin.claim, free, limit, max_credits, now)

    async def heartbeat(self) -> None:
        """`SharedPgStore.heartbeat`, off the loop."""
        await self._call(self._twin.heartbeat)

    async def adopt(self) -> list[JobRow]:
        """`SharedPgStore.adopt`, off the loop."""
        return await self._call(self._twin.adopt)

    def close(self) -> None:
        """Wait for a call still running, then disconnect (the runner stays registered:
        the store that made this leaves for it)."""
        self._thread.shutdown(wait=True)
        with contextlib.suppress(BatchgenError):
            self._twin.disconnect()
