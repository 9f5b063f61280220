"""A shared runner stopped (SIGINT/SIGTERM -> Runner.stop) while its claim is out (off
the loop, waiting its turn behind another runner) sends none of the claimed creates: they
go back unsent. One launched after the stop would be cut off by the grace period, left
unknown, and paid again by --resubmit-unknown."""
from __future__ import annotations

import asyncio
import threading

from batchgen.client import AkoolClient, Credentials
from batchgen.jobs import Job, JobState
from batchgen.pgshare import SharedPgStore
from batchgen.runner import Runner, RunSettings
from batchgen.sandbox import Sandbox, SandboxConfig
from batchgen.state_store import parse_state_url

S = JobState


def jobs(n: int) -> list[Job]:
    return [Job(id=f"j{i:02d}", index=i, image_url=f"https://e.com/{i}.jpg", resolution="720p",
                video_length=5, audio_type=3, prompt=f"p{i}", negative_prompt="blurry",
                fingerprint=f"fp{i}") for i in range(n)]


def waiting_claims(url) -> int:
    import psycopg
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND NOT granted").fetchone()[0]


async def test_no_create_leaves_after_a_stop_that_came_while_the_claim_was_out(pg_url,
                                                                               tmp_path):
    url = parse_state_url(pg_url)
    mine = SharedPgStore.join(url, "t", lease=30)
    mine.sync(jobs(3), [(20, 0)] * 3)
    other = SharedPgStore.join(url, "t", lease=30)
    assert [j for j, _ in other.claim(1, 3, None, "t").sends] == ["j00"]  # 1 slot of 3
    holding, release = threading.Event(), threading.Event()

    def other_claims_long() -> None:
        # the other runner's claim holds the manifest's lock a while, then gives j00 back
        with other._tx():
            other._lock_manifest()
            holding.set()
            release.wait(10)
            other._settle("holder = ?", (other.runner_id,))

    config = SandboxConfig(queue_time=(5.0, 5.0), processing_time=(5.0, 5.0),
                           latency=(1.5, 1.5))
    async with Sandbox(config) as sandbox:
        settings = RunSettings(output_dir=tmp_path, name="t", concurrency=3, stop_grace=5.0,
                               poll_interval=0.05, outage_timeout=None)
        async with AkoolClient.open(sandbox.url, Credentials(api_key="test-key-123")) as c:
            runner = Runner(mine, c, settings)
            task = asyncio.create_task(runner.run())
            async with asyncio.timeout(10):
                while sandbox.state.faults["latency"] < 2:  # j01, j02 on the wire
                    await asyncio.sleep(0.005)
            thread = threading.Thread(target=other_claims_long)
            thread.start()
            assert await asyncio.to_thread(holding.wait, 5)
            async with asyncio.timeout(5):                 # the runner's next claim waits
                while await asyncio.to_thread(waiting_claims, url) < 1:
                    await asyncio.sleep(0.01)
            runner.stop()                                  # Ctrl-C
            creates_at_stop = sandbox.stats()["requests"].get("createBySourcePrompt", 0)
            release.set()                                  # the claim goes on: gets j00
            await asyncio.to_thread(thread.join)
            outcome = await asyncio.wait_for(task, 15)
        await asyncio.sleep(2.0)
        stats = sandbox.stats()
    other.close()
    mine.close()
    with SharedPgStore.join(url, "t") as check:
        states = {r.job_id: r.state for r in check.rows()}
    assert outcome.interrupted
    assert stats["requests"].get("createBySourcePrompt", 0) == creates_at_stop == 2, \
        f"a create left after stop(): {stats['requests']}, tasks made {stats['tasks_created']}"
    assert states["j00"] is S.PENDING, states


async def test_no_create_leaves_after_a_stop_that_came_while_its_verdict_was_awaited(
        pg_url, tmp_path):
    # a claimed job waits for its pre-flight verdict (Submit._cleared); Ctrl-C comes,
    # then the verdict: the create is not sent (found in review: it was, after the stop)
    from batchgen.preflight import Cleared

    class SlowGate:
        def __init__(self) -> None:
            self.asked: set[str] = set()
            self.ready = False

        def listen(self, notify) -> None:
            self.notify = notify

        def verdict(self, job_id: str) -> Cleared | None:
            self.asked.add(job_id)
            return Cleared(True) if self.ready else None

    url = parse_state_url(pg_url)
    mine = SharedPgStore.join(url, "t-verdict", lease=30)
    mine.sync(jobs(2), [(20, 0)] * 2)
    gate = SlowGate()
    async with Sandbox(SandboxConfig(queue_time=(0.0, 0.0), processing_time=(0.0, 0.0))
                       ) as sandbox:
        settings = RunSettings(output_dir=tmp_path, name="t-verdict", concurrency=2,
                               stop_grace=5.0, poll_interval=0.05, outage_timeout=None)
        async with AkoolClient.open(sandbox.url, Credentials(api_key="test-key-123")) as c:
            runner = Runner(mine, c, settings, gate=gate)  # type: ignore[arg-type]
            task = asyncio.create_task(runner.run())
            async with asyncio.timeout(10):
                while len(gate.asked) < 2:  # both claimed, both waiting for the verdict
                    await asyncio.sleep(0.005)
            runner.stop()                   # Ctrl-C
            gate.ready = True               # then the verdicts come
            gate.notify()
            outcome = await asyncio.wait_for(task, 15)
        stats = sandbox.stats()
    mine.close()
    with SharedPgStore.join(url, "t-verdict") as check:
        states = {r.job_id: r.state for r in check.rows()}
    assert outcome.interrupted
    assert stats["tasks_created"] == 0, f"a create left after stop(): {stats['requests']}"
    assert states == {"j00": S.PENDING, "j01": S.PENDING}, states
