"""The retry policy as pure arithmetic: no sleeping, no network."""

from __future__ import annotations

import random

import pytest

from batchgen.errors import FatalApiError, OutcomeUnknown, RetryableApiError
from batchgen.retry import RetryPolicy


def test_waits_grow_exponentially_with_full_jitter_under_the_cap():
    policy = RetryPolicy(base=1.0, cap=8.0, max_attempts=10, deadline=1e9)
    rng = random.Random(1)
    err = RetryableApiError("x")
    for attempt in range(1, 9):
        ceiling = min(8.0, 2 ** (attempt - 1))
        waits = [policy.delay_for(attempt, 0, err, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # full jitter really spans the range


def test_retry_after_is_a_floor_and_is_capped():
    policy = RetryPolicy(base=0.1, cap=1.0, max_retry_after=30.0, deadline=1e9)
    rng = random.Random(2)
    assert policy.delay_for(1, 0, RetryableApiError("x", retry_after=7.0), rng) == 7.0
    assert policy.delay_for(1, 0, RetryableApiError("x", retry_after=999.0), rng) == 30.0


def test_gives_up_after_max_attempts_and_at_the_deadline():
    policy = RetryPolicy(base=1.0, cap=1.0, max_attempts=3, deadline=10.0)
    rng = random.Random(3)
    err = RetryableApiError("x")
    assert policy.delay_for(2, 0, err, rng) is not None
    assert policy.delay_for(3, 0, err, rng) is None
    assert policy.delay_for(1, 9.99, RetryableApiError("x", retry_after=5.0), rng) is None


class Script:
    """A call that fails with the given errors, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def run(policy: RetryPolicy, call: Script, **kw):
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    result = await policy.run(call, sleep=sleep, clock=lambda: sum(slept),
                              rng=random.Random(0), **kw)
    return result, slept


async def test_transient_errors_are_retried_until_success():
    call = Script(RetryableApiError("503"), RetryableApiError("429", retry_after=2.0))
    result, slept = await run(RetryPolicy(), call)
    assert result == "ok" and call.calls == 3 and slept[1] == 2.0


async def test_a_fatal_error_is_never_retried():
    call = Script(FatalApiError("1003"))
    with pytest.raises(FatalApiError):
        await run(RetryPolicy(), call)
    assert call.calls == 1


async def test_an_unknown_outcome_is_not_retried_unless_the_caller_opts_in():
    call = Script(OutcomeUnknown("disconnected after sending"))
    with pytest.raises(OutcomeUnknown):
        await run(RetryPolicy(), call)
    assert call.calls == 1
    opted_in = Script(OutcomeUnknown("disconnected"))
    assert (await run(RetryPolicy(), opted_in, retry_unknown=True))[0] == "ok"


def test_an_unknown_outcome_is_not_caught_as_a_transient_error():
    # code that retries "anything transient" must never repeat a create that may have
    # made a paid task
    assert not issubclass(OutcomeUnknown, RetryableApiError)
    with pytest.raises(OutcomeUnknown):
        try:
            raise OutcomeUnknown("lost")
        except RetryableApiError:
            pass


async def test_the_last_error_is_raised_when_retries_run_out():
    call = Script(*[RetryableApiError(f"503 #{i}") for i in range(5)])
    with pytest.raises(RetryableApiError, match="#2"):
        await run(RetryPolicy(max_attempts=3), call)
    assert call.calls == 3
