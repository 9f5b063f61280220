"""`batchgen run` end to end: the real CLI in a subprocess against the emulator over HTTP.

Each test names the promise it protects and asserts against the emulator's own ledger
(what it received and charged), not against log text.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import random
import signal
from pathlib import Path

import pytest
from cli_helpers import run_cli, start_cli, write_manifest

from batchgen.report_csv import COLUMNS
from batchgen.store import Store


def creates(stats: dict) -> int:
    return stats["requests"].get("createBySourcePrompt", 0)


def report_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "report.csv", newline="") as f:
        return list(csv.DictReader(f))


async def test_happy_path_30_jobs_completes_downloads_and_reports(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 30, base_url=sb.url, concurrency=8)
    result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
    assert result.code == 0, result.err
    out = tmp_path / "out"
    rows = report_rows(out)
    assert len(rows) == 30
    with open(out / "report.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header[: len(COLUMNS)]) == COLUMNS
    for row in rows:
        assert row["status"] == "completed"
        data = (out / row["file"]).read_bytes()
        assert data[4:8] == b"ftyp"
        assert int(row["bytes"]) == len(data)
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["credits_deducted"] == row["credits_estimated"] == "20"
        assert row["submitted_at"].endswith("Z") and row["completed_at"].endswith("Z")
    stats = sb.stats()
    assert stats["tasks_created"] == 30
    assert stats["duplicate_fingerprints"] == 0
    assert stats["max_in_flight"] <= 8
    # polls are batched: far fewer results requests than tasks polled
    assert stats["requests"]["resultsByIds"] < 60
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"]["completed"] == 30
    assert summary["credits_deducted"] == 600
    assert summary["requests"]["createBySourcePrompt"] == 30
    assert not list(out.glob(".*part"))


async def test_rerun_of_a_completed_manifest_sends_no_create(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 5, base_url=sb.url)
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    before = creates(sb.stats())
    again = await run_cli("run", str(manifest), cwd=tmp_path)
    assert again.code == 0, again.err
    assert creates(sb.stats()) == before == 5


async def test_lost_create_answer_makes_the_job_unknown_and_never_resends_it(sandbox, tmp_path):
    sb = await sandbox(lost_create_rate=1.0)
    manifest = write_manifest(tmp_path, 3, base_url=sb.url)
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 1
    assert {r["status"] for r in report_rows(tmp_path / "out")} == {"unknown"}
    assert sb.stats()["tasks_created"] == 3  # created and charged, answers lost
    sb.config.lost_create_rate = 0.0
    again = await run_cli("run", str(manifest), cwd=tmp_path)
    assert again.code == 1
    assert sb.stats()["tasks_created"] == 3  # nothing paid twice
    assert sb.stats()["duplicate_fingerprints"] == 0


async def test_resubmit_unknown_sends_again_only_when_asked(sandbox, tmp_path):
    sb = await sandbox(lost_create_rate=1.0)
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    await run_cli("run", str(manifest), cwd=tmp_path)
    sb.config.lost_create_rate = 0.0
    result = await run_cli("run", str(manifest), "--resubmit-unknown", cwd=tmp_path)
    assert result.code == 0, result.err
    assert sb.stats()["tasks_created"] == 4


async def test_a_second_run_on_the_same_output_dir_exits_5_naming_the_holder(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 1, base_url=sb.url)
    with Store.open(tmp_path / "out"):
        result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 5
    assert f"pid {os.getpid()}" in result.err
    assert creates(sb.stats()) == 0


async def test_missing_credentials_exit_4_naming_the_variables(tmp_path):
    manifest = write_manifest(tmp_path, 1, base_url="http://127.0.0.1:9")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKOOL_")}
    result = await run_cli("run", str(manifest), cwd=tmp_path, env=env)
    assert result.code == 4
    assert "AKOOL_API_KEY" in result.err and "AKOOL_CLIENT_ID" in result.err
    assert "Traceback" not in result.err


async def test_rejected_key_exits_4_with_state_saved(sandbox, tmp_path):
    sb = await sandbox(api_keys=["the-right-key"])
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 4
    assert "1109" in result.err
    assert (tmp_path / "out" / ".batchgen" / "state.db").exists()


async def test_sandbox_flag_runs_with_no_credentials(tmp_path):
    manifest = write_manifest(tmp_path, 2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKOOL_")}
    result = await run_cli("run", str(manifest), "--sandbox", cwd=tmp_path, env=env)
    assert result.code == 0, result.err
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 2


@pytest.mark.slow
async def test_kill_9_at_random_instants_never_pays_twice_and_completes(sandbox, tmp_path):
    """20+ SIGKILLs across submit, poll and download; then a clean run finishes the job.

    The emulator's per-fingerprint ledger proves no create was paid twice. A kill that lands
    while a create is on the wire leaves that job `unknown` (the answer is lost with the
    process); those are the only jobs allowed not to complete, and each was paid at most once.
    """
    sb = await sandbox(queue_time=0.05, processing_time=[0.2, 0.6], slow_download=0.05)
    manifest = write_manifest(tmp_path, 120, base_url=sb.url, concurrency=4)
    rng = random.Random(7)
    kills = 0
    while kills < 22:
        proc = await start_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
        try:
            await asyncio.wait_for(proc.wait(), rng.uniform(0.35, 1.0))
        except TimeoutError:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            kills += 1
        else:
            break  # finished before we could kill it
    final = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
    stats = sb.stats()
    assert stats["duplicate_fingerprints"] == 0, stats["creates_by_fingerprint"]
    rows = report_rows(tmp_path / "out")
    statuses = {r["status"] for r in rows}
    assert statuses <= {"completed", "unknown"}, final.err
    done = [r for r in rows if r["status"] == "completed"]
    unknown = [r for r in rows if r["status"] == "unknown"]
    # only creates on the wire at a kill instant can be unknown: at most `concurrency` each
    assert len(unknown) <= kills * 4, unknown
    assert len(done) + len(unknown) == 120
    print(f"kills={kills} unknown={len(unknown)} creates={stats['tasks_created']}")
    for row in done:
        data = (tmp_path / "out" / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    assert not list((tmp_path / "out").glob(".*part"))
    assert kills >= 20


async def test_a_changed_entry_is_reported_and_never_silently_resubmitted(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    manifest.write_text(manifest.read_text().replace("prompt 1", "a different prompt"))
    again = await run_cli("run", str(manifest), cwd=tmp_path)
    assert again.code == 0
    assert "changed in the manifest after submission" in again.err and "job001" in again.err
    assert sb.stats()["tasks_created"] == 2
    rows = {r["job_id"]: r for r in report_rows(tmp_path / "out")}
    assert rows["job001"]["manifest_changed"] == "true"
    assert rows["job001"]["prompt"] == "prompt 1"  # the report says what was really made


async def test_a_second_ctrl_c_exits_at_once_and_the_state_stays_consistent(sandbox, tmp_path):
    # slow answers keep creates on the wire, so the first Ctrl-C waits its grace for them
    sb = await sandbox(latency=3.0)
    manifest = write_manifest(tmp_path, 4, base_url=sb.url, concurrency=4)
    proc = await start_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
    while sb.stats()["requests"].get("createBySourcePrompt", 0) < 4:
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)
    assert proc.returncode is None  # still waiting for the creates on the wire
    loop = asyncio.get_running_loop()
    second = loop.time()
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 3)
    assert proc.returncode == 130 and loop.time() - second < 1.0
    sb.config.latency = (0.0, 0.0)
    final = await run_cli("run", str(manifest), cwd=tmp_path)
    assert final.code == 1, final.err  # those creates were sent: unknown, never resent
    stats = sb.stats()
    assert stats["duplicate_fingerprints"] == 0 and stats["tasks_created"] <= 4
    assert {r["status"] for r in report_rows(tmp_path / "out")} == {"unknown"}
