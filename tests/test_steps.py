"""The rest of the API surface from a manifest: the add-audio step and remote clean-up."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import signal
from pathlib import Path

import aiohttp
from cli_helpers import run_cli, start_cli, write_manifest


def rows_of(out: Path) -> list[dict[str, str]]:
    with open(out / "report.csv", newline="") as f:
        return list(csv.DictReader(f))


async def fetch(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_add_audio_makes_the_audio_task_the_file_and_bills_both(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 4, base_url=sb.url,
                              job_extra={"add_audio": {"audio_type": 1}})
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 0, result.err
    stats = sb.stats()
    assert stats["requests"]["updateVideoAudio"] == 4
    assert stats["requests"]["download"] == 4  # the silent videos are never fetched
    for row in rows_of(tmp_path / "out"):
        assert row["status"] == "completed"
        assert row["credits_estimated"] == "25" and row["credits_deducted"] == "25"
        assert row["credits_video"] == "20" and row["credits_audio"] == "5"
        assert row["file_task_id"] == row["audio_task_id"] != row["task_id"]
        data = (tmp_path / "out" / row["file"]).read_bytes()
        expected = await fetch(f"{sb.url}/videos/{row['audio_task_id']}.mp4")
        assert hashlib.sha256(data).digest() == hashlib.sha256(expected).digest()


async def test_kill_9_between_video_and_audio_steps_pays_for_nothing_twice(sandbox, tmp_path):
    sb = await sandbox(processing_time=0.2, latency=0.02)
    n = 12
    manifest = write_manifest(tmp_path, n, base_url=sb.url, concurrency=4,
                              job_extra={"add_audio": {"audio_type": 1}})
    for _ in range(3):
        proc = await start_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
        target = sb.stats()["requests"].get("updateVideoAudio", 0) + 1
        while (sb.stats()["requests"].get("updateVideoAudio", 0) < target
               and proc.returncode is None):
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # right after an add-audio step went out
        await proc.wait()
    final = await run_cli("run", str(manifest), cwd=tmp_path)
    stats = sb.stats()
    assert stats["duplicate_fingerprints"] == 0
    # no video made twice; a create killed half-written (headers out, body not) reaches the
    # emulator as a broken request and its job stays unknown, so fewer than n is possible
    # (aiohttp 3.10, the declared minimum, writes headers and body separately)
    assert stats["requests"]["createBySourcePrompt"] <= n
    rows = rows_of(tmp_path / "out")
    assert {r["status"] for r in rows} <= {"completed", "unknown"}, final.err
    for row in rows:
        if row["status"] == "unknown":
            # cut off by a kill: an add-audio step (its video exists) or, with 4 in flight,
            # a video create on the wire at that instant (no task id); never sent again
            assert row["state"] == "unknown"
        else:
            assert row["file_task_id"] == row["audio_task_id"]


async def test_delete_remote_retries_refusals_and_deletes_only_downloaded_videos(sandbox,
                                                                                  tmp_path):
    sb = await sandbox(delete_refusal_rate=0.5, seed=3)
    manifest = write_manifest(tmp_path, 10, base_url=sb.url, poll_interval=0.05,
                              extra={"output": {"dir": "out", "delete_remote": True}})
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 0, result.err
    stats = sb.stats()
    assert stats["faults_injected"]["delete_refused"] > 0
    assert stats["requests"]["delbyids"] >= 2
    assert stats["tasks_stored"] == 0  # every video ended deleted at the API...
    rows = rows_of(tmp_path / "out")
    for row in rows:  # ...and each one only after its file was verified on disk
        assert row["remote_deleted"] == "true" and row["sha256"]
        assert (tmp_path / "out" / row["file"]).stat().st_size == int(row["bytes"])


async def test_a_deletion_that_stays_refused_is_reported_not_fatal(sandbox, tmp_path):
    sb = await sandbox(delete_refusal_rate=1.0)
    manifest = write_manifest(tmp_path, 2, base_url=sb.url,
                              extra={"output": {"dir": "out", "delete_remote": True}})
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 0, result.err
    for row in rows_of(tmp_path / "out"):
        assert row["status"] == "completed" and row["remote_deleted"] == "false"
        assert "not deleted" in row["error"]


async def test_count_and_model_go_through_the_batch_endpoint_one_row_per_video(sandbox,
                                                                               tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 2, base_url=sb.url, job_extra={
        "model_name": "AkoolImage2VideoFastV1", "count": 3})
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 0, result.err
    stats = sb.stats()
    assert stats["requests"]["createBySourcePrompt/batch"] == 2
    assert stats["requests"].get("createBySourcePrompt", 0) == 0
    assert stats["tasks_created"] == 6
    rows = rows_of(tmp_path / "out")
    assert [r["job_id"] for r in rows] == ["job000", "job000#2", "job000#3",
                                           "job001", "job001#2", "job001#3"]
    assert len({r["task_id"] for r in rows}) == 6
    assert len({r["sha256"] for r in rows}) == 6  # six different videos, six files
    for row in rows:
        assert row["status"] == "completed"
        assert row["credits_deducted"] == "5"  # the model's unit_credit, per video
        assert (tmp_path / "out" / row["file"]).exists()
    again = await run_cli("run", str(manifest), cwd=tmp_path)
    assert again.code == 0 and sb.stats()["tasks_created"] == 6


async def test_a_lost_batch_create_makes_every_video_of_it_unknown(sandbox, tmp_path):
    sb = await sandbox(lost_create_rate=1.0)
    manifest = write_manifest(tmp_path, 1, base_url=sb.url, job_extra={"count": 2,
                              "model_name": "AkoolImage2VideoFastV1"})
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 1
    assert [r["status"] for r in rows_of(tmp_path / "out")] == ["unknown", "unknown"]
    sb.config.lost_create_rate = 0.0
    await run_cli("run", str(manifest), cwd=tmp_path)
    assert sb.stats()["requests"]["createBySourcePrompt/batch"] == 1  # never re-sent
