"""Repeating only what went wrong: --retry-failed and --resubmit-unknown never pay again for
a video that exists, never forget credits already spent, and never strand a job.

Where the emulator cannot aim a failure at one task, the test puts the state database in
the state a real failure leaves (through the store's own API), then drives the real CLI.
"""

from __future__ import annotations

import asyncio
import csv
import json
import signal
from pathlib import Path

import pytest
from cli_helpers import run_cli, start_cli, write_manifest

from batchgen.store import JobState, Store

BATCH = "createBySourcePrompt/batch"


def rows_of(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "report.csv", newline="") as f:
        return {r["job_id"]: r for r in csv.DictReader(f)}


def fail(out: Path, job_id: str, **cols) -> None:
    with Store.open(out) as store:
        store.update([(job_id, {"state": JobState.FAILED, "error": "boom", **cols})])


async def test_retry_failed_on_one_video_of_a_count_job_makes_only_that_one(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 1, base_url=sb.url, job_extra={
        "model_name": "AkoolImage2VideoFastV1", "count": 3})
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    out = tmp_path / "out"
    before = rows_of(out)
    fail(out, "job000", video_url=None)  # as if its task had ended in status 4
    result = await run_cli("run", str(manifest), "--retry-failed", cwd=tmp_path)
    assert result.code == 0, result.err
    assert sb.stats()["tasks_created"] == 4  # one more video, not three
    after = rows_of(out)
    for child in ("job000#2", "job000#3"):  # the videos that were fine are untouched
        assert after[child]["task_id"] == before[child]["task_id"]
        assert after[child]["sha256"] == before[child]["sha256"]
    assert after["job000"]["task_id"] != before["job000"]["task_id"]
    assert after["job000"]["credits_deducted"] == "10"  # the failed task's 5 is not forgotten


async def test_a_failed_later_video_of_a_count_job_is_made_on_its_own(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 1, base_url=sb.url, job_extra={
        "model_name": "AkoolImage2VideoFastV1", "count": 2})
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    fail(tmp_path / "out", "job000#2", video_url=None)
    result = await run_cli("run", str(manifest), "--retry-failed", cwd=tmp_path)
    assert result.code == 0, result.err  # not stranded in pending
    assert sb.stats()["requests"][BATCH] == 2 and sb.stats()["tasks_created"] == 3


async def test_retry_failed_after_a_failed_audio_step_keeps_the_video(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 1, base_url=sb.url,
                              job_extra={"add_audio": {"audio_type": 1}})
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    fail(tmp_path / "out", "job000", video_url=None, unknown_step="add_audio")
    result = await run_cli("run", str(manifest), "--retry-failed", cwd=tmp_path)
    assert result.code == 0, result.err
    stats = sb.stats()
    assert stats["requests"]["createBySourcePrompt"] == 1  # the video is not made again
    assert stats["requests"]["updateVideoAudio"] == 2
    row = rows_of(tmp_path / "out")["job000"]
    assert row["credits_deducted"] == "30"  # video 20 + the abandoned audio 5 + the new 5
    status = await run_cli("status", str(manifest), "--json", cwd=tmp_path)
    assert json.loads(status.out)["credits_committed"] == 30


async def test_a_lost_count_create_holds_its_whole_family_against_the_budget(sandbox,
                                                                             tmp_path):
    sb = await sandbox(lost_create_rate=1.0)
    manifest = write_manifest(tmp_path, 4, base_url=sb.url, concurrency=1,
                              extra={"budget": {"max_credits": 80}})
    text = manifest.read_text().replace(
        "  prompt: prompt 0\n",
        "  prompt: prompt 0\n  model_name: AkoolImage2VideoFastV1\n  count: 3\n")
    manifest.write_text(text)
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 3, result.err
    # 3 unknown videos hold 60 of 80 credits: one single job fits, the other two do not
    assert sb.stats()["requests"].get("createBySourcePrompt", 0) == 1
    status = await run_cli("status", str(manifest), "--json", cwd=tmp_path)
    assert json.loads(status.out)["credits_committed"] == 80


async def test_an_index_template_never_overwrites_a_finished_video(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 2, base_url=sb.url,
                              extra={"output": {"dir": "out", "filename": "clip-{index}.mp4"}})
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    first = (tmp_path / "out" / "clip-0.mp4").read_bytes()
    text = manifest.read_text().replace(
        "jobs:\n", "jobs:\n- id: inserted\n  image_url: https://example.com/new.jpg\n"
        "  prompt: a new first job\n", 1)
    manifest.write_text(text)
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 2 and "belongs to job job000" in result.err
    assert (tmp_path / "out" / "clip-0.mp4").read_bytes() == first
    assert sb.stats()["tasks_created"] == 2


@pytest.mark.slow
async def test_a_stop_while_a_refused_create_waits_to_retry_leaves_no_unknown(sandbox,
                                                                             tmp_path):
    sb = await sandbox(rate_limit_rate=1.0, retry_after=30)
    manifest = write_manifest(tmp_path, 3, base_url=sb.url, concurrency=3)
    proc = await start_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
    while sb.stats()["faults_injected"].get("rate_limit", 0) < 3:
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 130, err.decode()
    sb.config.rate_limit_rate = 0.0
    again = await run_cli("run", str(manifest), cwd=tmp_path)
    assert again.code == 0, again.err  # nothing was left unknown
    assert "marked unknown" not in again.err
    assert {r["status"] for r in rows_of(tmp_path / "out").values()} == {"completed"}
    assert sb.stats()["tasks_created"] == 3
