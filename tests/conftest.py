"""Shared fixtures: the API emulator on a free loopback port, in the test's own loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pg_helpers import pg_url  # noqa: F401  (a real PostgreSQL for the --state tests)
from s3_helpers import s3  # noqa: F401  (an S3 server on loopback for the storage tests)

from batchgen.sandbox import Sandbox, SandboxConfig

#: fast lifecycle for tests: no queueing, 50 ms of processing
FAST = {"queue_time": 0, "processing_time": 0.05, "seed": 1234}

SandboxFactory = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxFactory]:
    """Factory: `sb = await sandbox(failure_rate=0.5)` starts an emulator with FAST timings
    plus the given settings; every emulator started is closed at teardown, pass or fail."""
    started: list[Sandbox] = []

    async def start(config: SandboxConfig | None = None, **settings: Any) -> Sandbox:
        if config is None:
            config = SandboxConfig.from_dict({**FAST, **settings})
        emulator = Sandbox(config)
        await emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        await emulator.close()
