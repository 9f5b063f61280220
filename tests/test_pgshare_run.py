"""Several `batchgen run` processes drain one manifest through one PostgreSQL state,
against one emulator that refuses any task over the concurrency (so an overshoot shows)."""

from __future__ import annotations

import asyncio
import csv
import re
import signal
from pathlib import Path

import pytest
from cli_helpers import run_cli, start_cli, write_manifest


def report(out: Path) -> list[dict[str, str]]:
    with open(out / "report.csv", newline="") as f:
        return list(csv.DictReader(f))


def unknown_in(result) -> int:
    """How many jobs a run's last line (stdout) says are unknown: what its exit code
    follows. A runner may also make jobs unknown mid-run (a reap), not only at start."""
    found = re.search(r"(\d+) unknown", result.out)
    assert found, result.out
    return int(found.group(1))


async def finish(proc: asyncio.subprocess.Process, timeout: float = 60) -> tuple[int, str]:
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, err.decode()


@pytest.mark.slow
async def test_three_runners_one_killed_share_the_limit_and_the_budget_paying_once(
        pg_url, sandbox, tmp_path):
    n, limit, cap = 60, 4, 20 * 50
    sb = await sandbox(processing_time=(0.05, 0.15), max_in_flight=limit)
    manifest = write_manifest(tmp_path, n, base_url=sb.url, concurrency=limit,
                              extra={"budget": {"max_credits": cap}})
    state = f"{pg_url}&lease=2"
    args = ("run", str(manifest), "--no-progress", "--state", state)
    runners = [await start_cli(*args, cwd=tmp_path) for _ in range(3)]
    try:
        while sb.stats()["tasks_created"] < 12 and all(p.returncode is None for p in runners):
            await asyncio.sleep(0.005)
        runners[0].send_signal(signal.SIGKILL)  # dies holding claims and tasks in flight
        ends = [await finish(p) for p in runners[1:]]
    finally:
        for proc in runners:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert runners[0].returncode == -signal.SIGKILL
    assert all(code == 3 for code, _ in ends), ends  # the budget stopped submissions
    stats = sb.stats()
    assert stats["duplicate_fingerprints"] == 0
    assert stats["max_in_flight"] <= limit
    assert stats["credits_charged"] <= cap and stats["tasks_created"] <= 50
    assert stats["faults_injected"].get("max_in_flight", 0) == 0  # never refused for it
    rows = report(tmp_path / "out")
    done = [r for r in rows if r["status"] != "pending"]
    assert {r["status"] for r in done} <= {"completed", "unknown"}
    # the killed runner's tasks were adopted: every task the API made is completed, or
    # unknown when the kill cut off its answer
    made = [r for r in done if r["task_id"]]
    lost = [r for r in done if not r["task_id"] and r["status"] == "unknown"]
    assert len(made) <= stats["tasks_created"] <= len(made) + len(lost)
    assert all(r["status"] == "completed" for r in made)
    assert len(list((tmp_path / "out").glob("*.mp4"))) == len(made)


@pytest.mark.slow
async def test_a_runner_stopped_past_its_lease_sends_nothing_another_took_over(
        pg_url, sandbox, tmp_path):
    limit = 3
    sb = await sandbox(processing_time=0.3, max_in_flight=limit)
    manifest = write_manifest(tmp_path, 12, base_url=sb.url, concurrency=limit)
    state = f"{pg_url}&lease=1"
    args = ("run", str(manifest), "--no-progress", "--state", state)
    paused = await start_cli(*args, cwd=tmp_path)
    try:
        while sb.stats()["tasks_created"] < 2 and paused.returncode is None:
            await asyncio.sleep(0.005)
        paused.send_signal(signal.SIGSTOP)  # holding claims and tasks in flight
        other = await run_cli(*args, cwd=tmp_path)
    finally:
        paused.send_signal(signal.SIGCONT)
    code, err = await finish(paused)
    # it noticed (its lease, or the server ended the session it froze in) and stopped
    assert (code, "lease" in err) == (1, True) or code == 75, err
    stats = sb.stats()
    assert stats["duplicate_fingerprints"] == 0 and stats["max_in_flight"] <= limit
    assert stats["tasks_created"] <= 12
    # its tasks in flight were adopted and finished by the other; a create it had on the
    # wire when it stopped is unknown to the other (as after a crash), never sent again.
    # If the stopped one then read that create's answer, it recorded the task (paid work is
    # never dropped) for whichever runner comes next: the other may have ended by then.
    rows = report(tmp_path / "out")
    assert len(rows) == 12
    assert all(r["status"] in ("completed", "unknown")
               or (r["state"] == "running" and r["task_id"]) for r in rows), rows
    assert other.code == (1 if unknown_in(other) else 0), other.err
    # the next run takes the recorded tasks over and pays for nothing
    created = stats["tasks_created"]
    again = await run_cli(*args, cwd=tmp_path)
    rows = report(tmp_path / "out")
    assert {r["status"] for r in rows} <= {"completed", "unknown"}, rows
    assert all(r["status"] == "completed" for r in rows if r["task_id"])
    assert sb.stats()["tasks_created"] == created
    assert sb.stats()["duplicate_fingerprints"] == 0
    assert again.code == (1 if unknown_in(again) else 0), again.err
    assert unknown_in(again) == sum(r["status"] == "unknown" for r in rows)


async def test_a_runner_whose_lease_was_taken_stops_sending_and_says_so(pg_url, sandbox,
                                                                        tmp_path):
    import pytest

    import batchgen
    from batchgen.errors import ClaimLost
    from batchgen.pgstore import PgStore
    from batchgen.state_store import parse_state_url

    sb = await sandbox(processing_time=0.4)
    manifest = write_manifest(tmp_path, 10, base_url=sb.url, concurrency=2)
    run = asyncio.create_task(batchgen.arun(str(manifest), api_key="test-key-123",
                                            state=f"{pg_url}&lease=0.3"))
    while sb.stats()["tasks_created"] < 2 and not run.done():
        await asyncio.sleep(0.01)
    with PgStore.open(parse_state_url(pg_url), "t", lock=False) as other:
        other._pg.execute("UPDATE runners SET dead = true")  # reaped, as by another host
        created = sb.stats()["tasks_created"]
    with pytest.raises(ClaimLost, match="lease"):
        await asyncio.wait_for(run, 20)
    assert sb.stats()["tasks_created"] <= created + 2  # at most what was already claimed
    assert sb.stats()["duplicate_fingerprints"] == 0
