"""`run --sandbox` resumes like a run against the real API.

The in-process emulator keeps its tasks in the output dir's `.batchgen/` (a journal
written before each create is answered), so a run killed with `kill -9` and started again
polls the tasks it had created instead of finding them unknown; and `run --sandbox` takes
the emulator's knobs as `batchgen sandbox` does.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from pathlib import Path

from cli_helpers import run_cli, start_cli, write_manifest

from batchgen.cli import main
from batchgen.sandbox import SandboxConfig, SandboxState
from batchgen.store import JobState, Store

JOURNAL = Path("out/.batchgen/sandbox-tasks.jsonl")


def journal_tasks(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _wait_for_tasks(out: Path, n: int, timeout: float = 30) -> None:
    """Until the state records `n` task ids (read-only, without the run's lock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Store.open(out, lock=False, create=False) as store:
                if sum(1 for r in store.rows() if r.task_id) >= n:
                    return
        except Exception:  # the state may not exist yet, or be mid-write
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {n} tasks recorded in {timeout}s")


async def test_a_killed_sandbox_run_resumes_its_tasks_without_paying_again(tmp_path):
    manifest = write_manifest(tmp_path, 4, concurrency=4, poll_interval=0.1)
    proc = await start_cli("run", str(manifest), "--sandbox", "--no-progress",
                           "--queue-time", "0", "--processing-time", "2", cwd=tmp_path)
    try:
        await _wait_for_tasks(tmp_path / "out", 4)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    with Store.open(tmp_path / "out", lock=False, create=False) as store:
        before = {r.job_id: r.task_id for r in store.rows()}
        assert not any(r.state is JobState.COMPLETED for r in store.rows())
    result = await run_cli("run", str(manifest), "--sandbox", "--no-progress",
                           cwd=tmp_path, timeout=60)
    assert result.code == 0, result.err
    assert "no longer known" not in result.err
    with Store.open(tmp_path / "out", lock=False, create=False) as store:
        rows = store.rows()
    assert all(r.state is JobState.COMPLETED for r in rows)
    assert {r.job_id: r.task_id for r in rows} == before  # the same tasks, polled
    tasks = journal_tasks(tmp_path / JOURNAL)
    assert len(tasks) == 4  # the emulator made (and charged) each video once
    assert {t["id"] for t in tasks} == set(before.values())


def test_a_task_gone_from_the_api_is_printed_like_any_failure(tmp_path, monkeypatch):
    """"no longer known" is a failure: it gets its `failed:` line like the others."""
    import batchgen.scheduler.poll as poll  # where the poller reads its limits
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AKOOL_API_KEY", raising=False)
    manifest = write_manifest(tmp_path, 2)
    out, err = io.StringIO(), io.StringIO()
    assert main(["run", str(manifest), "--sandbox", "--processing-time", "0", "--queue-time",
                 "0"], out, err) == 0
    with Store.open(tmp_path / "out") as store:  # job000's task is polled again next run...
        store.update([("job000", {"state": JobState.RUNNING})])
    (tmp_path / JOURNAL).unlink()                 # ...by an API that no longer knows it
    monkeypatch.setattr(poll, "MISSING_LIMIT", 1)
    monkeypatch.setattr(poll, "MISSING_MIN_AGE", 0.0)
    out, err = io.StringIO(), io.StringIO()
    assert main(["run", str(manifest), "--sandbox"], out, err) == 1
    assert "failed: job000: task " in err.getvalue()
    assert "is no longer known to the API" in err.getvalue()


def test_the_journal_keeps_tasks_across_emulators(tmp_path):
    journal = tmp_path / "state" / "tasks.jsonl"
    config = SandboxConfig.from_dict({"queue_time": 0, "processing_time": 0.5,
                                      "balance": 100})
    first = SandboxState(config, journal=journal)
    now = time.monotonic()
    kept = first.create_task(now=now, create_ms=1, video_length=5, credits=20, prompt="p",
                             fields={"prompt": "p"})
    gone = first.create_task(now=now, create_ms=2, video_length=5, credits=20, prompt="p",
                             fields={"prompt": "p"})
    first.delete_task(gone.id)
    first.close()
    with journal.open("a") as f:
        f.write(json.dumps({**json.loads(journal.read_text().splitlines()[0]),
                            "id": "odd", "queue_s": "soon"}) + "\n")  # not ours: ignored
        f.write('{"id": "cut-short-by-a-ki')  # a kill in the middle of a line
    second = SandboxState(SandboxConfig.from_dict({"balance": 100}), journal=journal)
    assert set(second.tasks) == {kept.id}
    task = second.tasks[kept.id]
    assert task.status(time.monotonic()) in (1, 2)  # still processing, on the new clock
    assert task.status(time.monotonic() + 1) == 3
    assert task.fields == {"prompt": "p"} and task.deduction_credit == 20
    assert second.balance == 80  # the balance remembers the tasks it still holds
    assert second.in_flight(time.monotonic()) == 1
    second.close()
    assert len(journal.read_text().splitlines()) == 1  # compacted on load
