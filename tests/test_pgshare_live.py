"""What runners sharing a PostgreSQL state (--state) show the other commands while they
run, and what they never do to each other: a claim never stalls the runner's own loop,
`plan` counts their claims as in flight, `report` names who holds what, and a run
removes only the .part files of runners that are gone."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
from pathlib import Path

from cli_helpers import write_manifest

from batchgen.api import load
from batchgen.cli import main
from batchgen.jobs import JobState
from batchgen.pgshare import SharedPgStore
from batchgen.pgstore import PgStore, _lock_key, schema_name
from batchgen.session_plan import estimates
from batchgen.state_store import parse_state_url

S = JobState


def joined(pg_url: str, manifest_path: Path, n: int = 2) -> list[SharedPgStore]:
    """`n` live runners of the manifest (their rows laid over the state by the first)."""
    manifest = load(manifest_path)
    url = parse_state_url(pg_url)
    runners = [SharedPgStore.join(url, manifest.name) for _ in range(n)]
    runners[0].sync(manifest.jobs, estimates(manifest))
    return runners


def test_plan_counts_the_claims_of_live_runners_in_flight_and_leaves_them_be(pg_url,
                                                                             tmp_path):
    """A live runner holds one create sent (its answer not yet back) and one claimed but
    not sent: `plan` says 2 in flight, 2 to submit, none unknown (the recovery of a crash
    made them unknown and to-submit, and locked the rows the runner was writing)."""
    path = write_manifest(tmp_path, 4)
    (a,) = joined(pg_url, path, 1)
    try:
        a.claim(2, 5, None, "t")
        a.mark_sent("job000")
        out = io.StringIO()
        assert main(["plan", str(path), "--state", pg_url, "--json"], out, io.StringIO()) == 0
        states = {k: v["jobs"] for k, v in json.loads(out.getvalue())["states"].items()}
        assert (states["in_flight"], states["to_submit"], states["unknown"]) == (2, 2, 0)
        a.mark_sent("job001")  # not blocked by plan, still held: nothing was written
        assert [a.get(j).state for j in ("job000", "job001")] == [S.SUBMITTING] * 2
    finally:
        a.close()


def test_report_names_the_runner_holding_each_job_in_a_last_column(pg_url, tmp_path):
    path = write_manifest(tmp_path, 3)
    a, b = joined(pg_url, path)
    try:
        a.claim(1, 5, None, "t")
        b.claim(1, 5, None, "t")
        assert main(["report", str(path), "--state", pg_url], io.StringIO(),
                    io.StringIO()) == 0
    finally:
        a.close()
        b.close()
    with open(tmp_path / "out" / "report.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = {r["job_id"]: r["holder"] for r in reader}
        assert reader.fieldnames is not None and reader.fieldnames[-1] == "holder"
    assert rows == {"job000": f"{a.host}:{a.pid}", "job001": f"{b.host}:{b.pid}",
                    "job002": ""}


async def test_a_run_removes_only_the_part_files_of_runners_that_are_gone(
        pg_url, sandbox, tmp_path):
    """A runner's download in progress in the shared output dir is never removed by
    another runner starting; one left by a runner that is gone is."""
    import batchgen

    sb = await sandbox()
    path = write_manifest(tmp_path, 2, base_url=sb.url)
    live, gone = joined(pg_url, path)
    gone.close()
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    writing = out / f".other.mp4.{live.part_tag}.part"
    left = out / f".other.mp4.{gone.part_tag}.part"
    unnamed = out / ".other.mp4.4242.part"  # a writer we cannot tell: kept
    for part in (writing, left, unnamed):
        part.write_bytes(b"partial")
    try:
        report = await batchgen.arun(str(path), api_key="test-key-123", env={},
                                     state=pg_url)
    finally:
        live.close()
    assert report.ok
    assert (writing.exists(), left.exists(), unnamed.exists()) == (True, False, True)


class ClaimLock:
    """The manifest's claim lock, held by "another runner" (a connection in a thread)
    until `release`, or for `hold` seconds; after 10 s it lets go by itself (a stuck
    event loop cannot)."""

    def __init__(self, pg_url: str, scope: str = "t", hold: float = 10) -> None:
        url = parse_state_url(pg_url)
        self.conninfo = url.conninfo
        self.key = _lock_key(schema_name(url.schema, scope) + ":claims")
        self._holding, self._release = threading.Event(), threading.Event()
        self.timed_out: list[bool] = []
        self._hold_for = hold
        self._thread = threading.Thread(target=self._hold)

    def _hold(self) -> None:
        import psycopg
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
            self._holding.set()
            self.timed_out.append(not self._release.wait(self._hold_for))
            conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))

    async def take(self) -> None:
        self._thread.start()
        assert await asyncio.to_thread(self._holding.wait, 10)

    async def release(self) -> None:
        self._release.set()
        await asyncio.to_thread(self._thread.join)

    async def claim_waits(self) -> bool:
        """A claim of the runner is waiting for the lock (as pg_locks shows a bigint key)."""
        import psycopg
        high, low = divmod(self.key & (2**64 - 1), 2**32)

        def poll() -> bool:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                for _ in range(500):
                    if conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = "
                                    "'advisory' AND NOT granted AND classid = %s AND "
                                    "objid = %s AND objsubid = 1", (high, low)
                                    ).fetchone() == (1,):
                        return True
                    threading.Event().wait(0.01)
            return False
        return await asyncio.to_thread(poll)


async def started(pg_url: str, sb, tmp_path: Path) -> asyncio.Task:
    """A shared run of 12 jobs (tasks of 0.5-2 s, 4 at once), once every slot is taken."""
    import batchgen
    path = write_manifest(tmp_path, 12, base_url=sb.url, concurrency=4)
    run = asyncio.create_task(batchgen.arun(str(path), api_key="test-key-123", env={},
                                            state=pg_url))
    while sb.stats()["tasks_created"] < 4 and not run.done():
        await asyncio.sleep(0.01)
    return run


async def test_a_claim_waiting_its_turn_never_stalls_the_runners_polls(pg_url, sandbox,
                                                                       tmp_path):
    """Another runner holds the manifest's claim lock (say, a long claim on a loaded
    server): this runner's next claim waits, and meanwhile its tasks in flight are
    still polled and its videos downloaded. A claim made on the event loop blocked all
    of it (and here, the emulator on the same loop too)."""
    sb = await sandbox(processing_time=(0.5, 2.0))
    run = await started(pg_url, sb, tmp_path)
    lock = ClaimLock(pg_url)

    def videos() -> int:
        return sum(1 for _ in (tmp_path / "out").glob("*.mp4"))

    await lock.take()
    try:
        # the first task to finish frees a slot: the claim for it waits for the lock...
        assert await lock.claim_waits()
        polls, downloaded = sb.stats()["requests"]["resultsByIds"], videos()
        # ...while the other tasks (up to 2 s each) are polled and downloaded
        for _ in range(500):
            if videos() > downloaded and sb.stats()["requests"]["resultsByIds"] > polls:
                break
            await asyncio.sleep(0.01)
        assert videos() > downloaded and sb.stats()["requests"]["resultsByIds"] > polls
        assert await lock.claim_waits()  # and the claim still waits its turn
    finally:
        await lock.release()
    report = await asyncio.wait_for(run, 30)
    assert lock.timed_out == [False] and report.ok
    assert sb.stats()["tasks_created"] == 12 and sb.stats()["duplicate_fingerprints"] == 0
    with PgStore.open(parse_state_url(pg_url), "t", lock=False) as store:
        assert {r.state for r in store.rows()} == {S.COMPLETED}


async def test_a_run_stopped_while_its_claim_waits_sends_nothing_and_loses_nothing(
        pg_url, sandbox, tmp_path):
    """Stopped while a claim is out (it runs on, off the loop): whatever it takes is
    sent by no one and goes back to the queue when the runner leaves; no job is left
    held, submitting or unknown."""
    import pytest

    sb = await sandbox(processing_time=(0.5, 2.0))
    run = await started(pg_url, sb, tmp_path)
    # let go after 1 s whatever the loop does: the stopping run's own end-of-run record
    # waits for this lock too (runners' figures are added in turn)
    lock = ClaimLock(pg_url, hold=1.0)
    await lock.take()
    try:
        assert await lock.claim_waits()
        created = sb.stats()["tasks_created"]
        run.cancel()  # as Ctrl-C: no new creates, the run winds down
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, 30)  # the claim went on once the lock was free
    finally:
        await lock.release()
    assert sb.stats()["tasks_created"] == created
    with PgStore.open(parse_state_url(pg_url), "t", lock=False) as store:
        rows = store.rows()
        assert store.holders() == {}
    states = {r.state for r in rows}
    assert states <= {S.PENDING, S.RUNNING, S.READY, S.COMPLETED}, states
    assert sum(1 for r in rows if r.state is S.PENDING) == 12 - created
