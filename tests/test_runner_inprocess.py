"""The runner in-process against the emulator (loopback, port 0) on an injected clock.

No subprocess and no real waiting: the runner's loops wait on the `sleep` it is given, so
a 30-second poll interval costs nothing and a whole run takes a fraction of a second.
The end-to-end CLI tests (kill -9, signals, exit codes) stay in test_run/test_steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.client import AkoolClient, Credentials
from batchgen.jobs import Job, JobState
from batchgen.runner import JobEvent, Runner, RunSettings
from batchgen.sandbox import Sandbox, SandboxConfig
from batchgen.store import Store


class FakeTime:
    """A clock that moves only when a loop sleeps on it (each sleep yields once)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def jobs(n: int) -> list[Job]:
    return [Job(id=f"j{i:02d}", index=i, image_url=f"https://e.com/{i}.jpg", resolution="720p",
                video_length=5, audio_type=3, prompt=f"p{i}", negative_prompt="blurry",
                fingerprint=f"fp{i}") for i in range(n)]


@dataclass
class Rig:
    """The emulator, a state of `n` synced jobs and a client to it, on a fake clock."""

    sandbox: Sandbox
    store: Store
    client: AkoolClient
    fake: FakeTime
    settings: RunSettings

    def runner(self, on_event: Callable[[JobEvent], None] = lambda e: None) -> Runner:
        return Runner(self.store, self.client, self.settings, on_event,
                      clock=self.fake.clock, sleep=self.fake.sleep)


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, n: int, config: SandboxConfig, **settings: Any
              ) -> AsyncIterator[Rig]:
    """A `Rig`; `settings` go to `RunSettings` (no outage timeout unless given)."""
    settings.setdefault("outage_timeout", None)
    async with Sandbox(config) as sandbox:
        with Store.open(tmp_path) as store:
            store.sync(jobs(n), [(20, 0)] * n)
            run_settings = RunSettings(output_dir=tmp_path, name="t", **settings)
            async with AkoolClient.open(sandbox.url, Credentials(api_key="test-key-123")) as c:
                yield Rig(sandbox, store, c, FakeTime(), run_settings)


#: tasks that finish at once
INSTANT = SandboxConfig(queue_time=(0.0, 0.0), processing_time=(0.0, 0.0))


async def run_in_process(tmp_path: Path, n: int, *, max_credits: int | None = None,
                         concurrency: int = 2, poll_interval: float = 30.0,
                         delete_remote: bool = False):
    async with rig(tmp_path, n, INSTANT, concurrency=concurrency,
                   poll_interval=poll_interval, max_credits=max_credits,
                   download_workers=2, delete_remote=delete_remote) as r:
        runner = r.runner()
        outcome = await asyncio.wait_for(runner.run(), 20)
        in_memory = dict(runner.state.rows)
        stored = {row.job_id: row for row in r.store.rows()}
        return outcome, r.fake, in_memory, stored, r.store.committed_credits(), r.sandbox.stats()


def test_the_loops_wait_on_the_injected_clock(tmp_path):
    started = time.monotonic()
    outcome, fake, _, stored, _, stats = asyncio.run(run_in_process(tmp_path, 6))
    assert {r.state for r in stored.values()} == {JobState.COMPLETED}
    assert stats["tasks_created"] == 6 and stats["duplicate_fingerprints"] == 0
    # the poller's waits between rounds went to the injected sleep (fake time moved),
    # not to the event loop's timer
    assert fake.waits and fake.now == sum(max(0.0, w) for w in fake.waits) > 0
    assert time.monotonic() - started < 15.0
    assert not outcome.interrupted


def test_the_budget_holds_back_jobs_in_process(tmp_path):
    outcome, _, _, stored, committed, stats = asyncio.run(
        run_in_process(tmp_path, 5, max_credits=60))
    assert stats["tasks_created"] == 3 and stats["credits_charged"] == 60
    assert (outcome.budget_blocked, outcome.budget_needed) == (2, 40)
    assert committed == 60
    states = [stored[f"j{i:02d}"].state for i in range(5)]
    assert states == [JobState.COMPLETED] * 3 + [JobState.PENDING] * 2


def test_the_runner_view_is_the_store_after_a_run(tmp_path):
    # one write path: every row the runner holds is exactly the row the store has, and a
    # job that ended left memory (issue 18: the run holds only the jobs in play)
    _, _, in_memory, stored, _, _ = asyncio.run(run_in_process(tmp_path, 4, concurrency=3))
    assert all(stored[j] == row for j, row in in_memory.items())
    assert {r.state for r in stored.values()} == {JobState.COMPLETED} and in_memory == {}


def test_the_deleter_removes_verified_videos_in_process(tmp_path):
    _, _, in_memory, stored, _, stats = asyncio.run(
        run_in_process(tmp_path, 3, delete_remote=True))
    assert all(r.state is JobState.COMPLETED and r.remote_deleted for r in stored.values())
    assert stats["requests"].get("delbyids", 0) >= 1 and stats["tasks_stored"] == 0
    assert all(stored[j] == row for j, row in in_memory.items())


async def stop_while_creates_are_on_the_wire(tmp_path: Path, stop_grace: float):
    """Two creates held 0.3 s by the emulator (before it makes anything); `stop()` while
    both are on the wire. Returns the outcome, the stored rows and the server's ledger."""
    config = SandboxConfig(queue_time=(5.0, 5.0), processing_time=(5.0, 5.0),
                           latency=(0.3, 0.3))
    async with rig(tmp_path, 2, config, concurrency=2, stop_grace=stop_grace) as r:
        runner = r.runner()
        task = asyncio.create_task(runner.run())
        async with asyncio.timeout(10):
            while r.sandbox.state.faults["latency"] < 2:  # both reached the emulator
                await asyncio.sleep(0.005)
        runner.stop()
        outcome = await asyncio.wait_for(task, 10)
        stored = {row.job_id: row for row in r.store.rows()}
        await asyncio.sleep(0.5)  # let the emulator finish what it was given
        return outcome, stored, r.sandbox.stats(), r.store


def test_a_stop_gives_creates_on_the_wire_their_grace(tmp_path):
    # stop/grace rule: creates already sent get `stop_grace` to record their answer, so
    # the paid task ids are in the state and the next run polls them, never resends
    outcome, stored, stats, _ = asyncio.run(stop_while_creates_are_on_the_wire(tmp_path, 5.0))
    assert outcome.interrupted
    assert stats["tasks_created"] == 2
    assert {r.state for r in stored.values()} == {JobState.RUNNING}
    assert all(r.task_id for r in stored.values())


def test_a_stop_without_grace_leaves_sent_creates_to_resume_as_unknown(tmp_path):
    # a cancelled create that was sent stays `submitting` (never `pending`: it may be
    # charged), and the next run's recovery makes it `unknown`, not sent again
    outcome, stored, _, _ = asyncio.run(stop_while_creates_are_on_the_wire(tmp_path, 0.0))
    assert outcome.interrupted
    assert {r.state for r in stored.values()} == {JobState.SUBMITTING}
    with Store.open(tmp_path) as store:
        assert store.recover() == 2
        assert {r.state for r in store.rows()} == {JobState.UNKNOWN}


def test_a_worker_error_ends_the_run_as_itself_not_as_a_group(tmp_path):
    # the TaskGroup's ExceptionGroup is unwrapped: cli maps CredentialsError to exit 4
    import pytest

    from batchgen.errors import CredentialsError
    from batchgen.runner import EventKind

    async def scenario() -> dict:
        config = SandboxConfig(queue_time=(0.0, 0.0), processing_time=(60.0, 60.0))
        async with rig(tmp_path, 3, config, concurrency=1) as r:
            def ban(event) -> None:  # the key is revoked once the first task is paid
                if event.kind is EventKind.SUBMITTED:
                    r.sandbox.config.update({"banned_keys": ["test-key-123"]})

            with pytest.raises(CredentialsError):
                await asyncio.wait_for(r.runner(ban).run(), 10)
            assert r.sandbox.stats()["tasks_created"] == 1
            return {row.job_id: row for row in r.store.rows()}

    stored = asyncio.run(scenario())
    assert [r.state for r in stored.values()] == [JobState.RUNNING, JobState.PENDING,
                                                  JobState.PENDING]


def test_drained_waits_for_the_last_tasks_in_flight_not_for_the_run_to_start(tmp_path):
    """The run's end is prepared (the reports' warm-up, session.py) when `drained`
    returns: every job sent and its create answered. Awaited before `run` has loaded
    the store, it once returned at once (nothing queued looked like nothing left), and
    the warm-up's imports delayed the first creates (issue 15)."""
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        async with rig(tmp_path, 6, INSTANT, concurrency=2, poll_interval=30.0,
                       download_workers=2) as r:
            runner = r.runner()

            async def watch() -> None:
                await runner.drained()
                seen.append((r.sandbox.stats()["tasks_created"], len(runner.submit.creating)))

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0)  # the watcher waits before the run begins
            await asyncio.wait_for(runner.run(), 20)
            await asyncio.wait_for(watcher, 5)

    asyncio.run(main())
    assert seen == [(6, 0)]
