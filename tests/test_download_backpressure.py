"""The submitter pauses while too many paid videos wait for their download.

At zero task time a 1,000,000-job run sent creates 3.7 times faster than its downloads
kept up, and 700,000 paid videos waited in memory (their URLs may expire). With
`RunSettings.ready_limit`, no new create leaves while that many wait; the tasks already
in flight may still finish, so the queue never holds more than the limit plus the
concurrency. Against the emulator on loopback, downloads trickled on purpose.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_runner_inprocess import rig

from batchgen.jobs import JobState
from batchgen.runner import RunSettings
from batchgen.sandbox import SandboxConfig


async def run_with_slow_downloads(tmp_path: Path, n: int, ready_limit: int | None,
                                  concurrency: int) -> tuple[int, dict[str, JobState], int]:
    """(the most videos seen waiting at once, each job's state, creates the server saw)."""
    config = SandboxConfig(queue_time=(0.0, 0.0), processing_time=(0.0, 0.0),
                           slow_download=0.02)
    most = 0
    async with rig(tmp_path, n, config, concurrency=concurrency, poll_interval=1.0,
                   download_workers=1, ready_limit=ready_limit) as r:
        runner = r.runner()
        task = asyncio.create_task(runner.run())
        # sampled on the event loop the runner runs on; a submitter that is never
        # woken again once it paused would hang here: bounded
        async with asyncio.timeout(30):
            while not task.done():
                most = max(most, runner.state.handoffs.ready.qsize())
                await asyncio.sleep(0.002)
        await task
        states = {row.job_id: row.state for row in r.store.rows()}
        return most, states, r.sandbox.stats()["tasks_created"]


def test_creates_pause_while_downloads_are_behind(tmp_path):
    most, states, created = asyncio.run(run_with_slow_downloads(tmp_path, 40, 3, 8))
    assert set(states.values()) == {JobState.COMPLETED} and created == 40
    assert most <= 3 + 8


def test_without_the_pause_paid_videos_pile_up(tmp_path):
    # the same run with a limit it never reaches: the pile the pause prevents (so the
    # test above measures the pause, not a slow emulator)
    most, states, _ = asyncio.run(run_with_slow_downloads(tmp_path, 40, 10_000, 8))
    assert set(states.values()) == {JobState.COMPLETED}
    assert most > 3 + 8


def test_the_default_limit_follows_the_concurrency():
    import random

    from batchgen.scheduler.state import Ports, RunState

    class NoStore:
        shared = False

    def limit(**kw: object) -> int:
        settings = RunSettings(output_dir=Path("."), name="t", **kw)  # type: ignore[arg-type]
        ports = Ports(emit=lambda e: None, clock=lambda: 0.0, now_iso=lambda: "",
                      sleep=asyncio.sleep, rng=random.Random())
        return RunState(NoStore(), settings, ports).ready_limit  # type: ignore[arg-type]

    assert limit(concurrency=5) == 64
    assert limit(concurrency=100) == 400
    assert limit(concurrency=100, ready_limit=7) == 7
