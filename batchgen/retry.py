"""Retry policy: what to retry, how long to wait, when to stop — one object, no I/O.

Every network call of the runner goes through `RetryPolicy.run`, so there is exactly one
place that decides about retries. The decision itself (`delay_for`) is a pure function of
the attempt number, the elapsed time and the error, so tests check delays without sleeping.

Two rules keep money safe:
* only `RetryableApiError` is ever retried, always with an attempt cap and a total deadline;
* an `OutcomeUnknown` (a create whose answer was lost: it may have made a paid task) is not
  a `RetryableApiError` and propagates at once, unless the caller opts in with
  ``retry_unknown=True``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from batchgen.errors import ApiError, OutcomeUnknown, RetryableApiError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, a cap per wait and a total deadline."""

    base: float = 0.5          #: first backoff ceiling, seconds
    cap: float = 20.0          #: no single wait is longer than this
    max_attempts: int = 8      #: attempts in all, the first included
    deadline: float = 180.0    #: give up when the next wait would end past this many seconds
    max_retry_after: float = 120.0  #: a server asking for a longer wait is capped here

    def delay_for(self, attempt: int, elapsed: float, error: ApiError,
                  rng: random.Random) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up.

        `attempt` counts attempts made so far (1 after the first failure). Full jitter
        (uniform in [0, min(cap, base * 2**(attempt-1))]) spreads many clients hitting one
        overloaded server; a `Retry-After` from the server is honoured as a floor.
        """
        if attempt >= self.max_attempts:
            return None
        ceiling = min(self.cap, self.base * (2 ** (attempt - 1)))
        wait = rng.uniform(0, ceiling)
        if error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.max_retry_after))
        if elapsed + wait > self.deadline:
            return None
        return wait

    async def run(self, call: Callable[[], Awaitable[T]], *,
                  sleep: Callable[[float], Awaitable[None]], clock: Callable[[], float],
                  rng: random.Random, retry_unknown: bool = False,
                  on_retry: Callable[[int, ApiError, float], None] | None = None) -> T:
        """Run `call` until it succeeds, a non-retryable error occurs, or the policy gives up.

        The last error is re-raised when giving up, so callers see what really went wrong.
        """
        start = clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except (RetryableApiError, OutcomeUnknown) as exc:
                if isinstance(exc, OutcomeUnknown) and not retry_unknown:
                    raise
                wait = self.delay_for(attempt, clock() - start, exc, rng)
                if wait is None:
                    raise
                if on_retry is not None:
                    on_retry(attempt, exc, wait)
                await sleep(wait)


@dataclass(slots=True)
class OutageWatch:
    """When has the API answered nothing usable for long enough to call it an outage?

    Pure: fed the client's running counts of usable and failed answers with the time they
    were read. An outage starts at the first failure seen with no usable answer since,
    and is declared when a failure is seen `timeout` seconds or more after that start. A
    quiet spell (nothing asked) is not an outage: only a failure past the timeout is.
    """

    timeout: float
    #: when the current run of failures began (None while answers are usable)
    since: float | None = None
    _ok: int = 0
    _failed: int = 0

    def observe(self, now: float, ok: int, failed: int) -> bool:
        """Feed the counters; True once the API has been unusable for `timeout` seconds."""
        fresh_failure = failed != self._failed
        if ok != self._ok:
            self.since = None
        elif fresh_failure and self.since is None:
            self.since = now
        self._ok, self._failed = ok, failed
        return fresh_failure and self.since is not None and now - self.since >= self.timeout
