"""Money and faults (SPEC §5): budget, retries that never double-charge, signals, secrets.

Every test runs the real CLI in a subprocess against the emulator and asserts on the
emulator's ledger: what it received, created and charged.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import signal
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli, start_cli, write_manifest

#: fast retries for fault tests: many attempts, tiny waits
FAST_RETRY = {"BATCHGEN_RETRY_BASE": "0.01", "BATCHGEN_RETRY_CAP": "0.2",
              "BATCHGEN_RETRY_ATTEMPTS": "30"}


def rows_of(out: Path) -> list[dict[str, str]]:
    with open(out / "report.csv", newline="") as f:
        return list(csv.DictReader(f))


async def test_budget_is_exact_to_the_credit_with_8_racing_submissions(sandbox, tmp_path):
    sb = await sandbox(processing_time=0.2)
    manifest = write_manifest(tmp_path, 20, base_url=sb.url, concurrency=8,
                              extra={"budget": {"max_credits": 170}})
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 3, result.err
    stats = sb.stats()
    assert stats["credits_charged"] == 160  # 8 × 20; a 9th would make 180 > 170
    assert stats["tasks_created"] == 8
    assert "12 job(s) not submitted" in result.err and "240 more credits" in result.err
    statuses = [r["status"] for r in rows_of(tmp_path / "out")]
    assert statuses.count("completed") == 8 and statuses.count("pending") == 12


@pytest.mark.slow
async def test_budget_holds_across_three_runs_and_a_raised_cap_goes_on(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 10, base_url=sb.url, concurrency=4)
    first = await run_cli("run", str(manifest), "--max-credits", "60", cwd=tmp_path)
    assert first.code == 3
    assert sb.stats()["credits_charged"] == 60
    second = await run_cli("run", str(manifest), "--max-credits", "130", cwd=tmp_path)
    assert second.code == 3
    assert sb.stats()["credits_charged"] == 120  # 60 spent before counts against 130
    third = await run_cli("run", str(manifest), "--max-credits", "200", cwd=tmp_path)
    assert third.code == 0, third.err
    stats = sb.stats()
    assert stats["credits_charged"] == 200 and stats["tasks_created"] == 10
    assert stats["duplicate_fingerprints"] == 0


async def test_api_charging_more_than_the_table_never_overshoots_the_budget(sandbox, tmp_path):
    # the table says 20 credits; the account is really charged 35 per video
    sb = await sandbox(prices={"720p": {"5": 35}})
    manifest = write_manifest(tmp_path, 6, base_url=sb.url, concurrency=1,
                              extra={"budget": {"max_credits": 100}})
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 3, result.err
    assert sb.stats()["credits_charged"] <= 100
    done = [r for r in rows_of(tmp_path / "out") if r["status"] == "completed"]
    assert done and all(r["credits_estimated"] == "20" and r["credits_deducted"] == "35"
                        for r in done)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["charged_differently"] == len(done)
    assert summary["credits_deducted"] == 35 * len(done)
    plan = await run_cli("plan", str(manifest), cwd=tmp_path)
    assert (f"{35 * len(done)} credits deducted by the API against {20 * len(done)} estimated"
            in plan.out) and "charged differently" in plan.out


async def test_fault_storm_never_pays_twice_and_leaves_nothing_partial(sandbox, tmp_path):
    """200 jobs through 30% 5xx, 429s with Retry-After, 10% code 1005, 5% lost create
    answers and 20% truncated downloads: every job ends completed or unknown."""
    sb = await sandbox(http_error_rate=0.3, rate_limit_rate=0.05, retry_after=0.05,
                       code_1005_rate=0.1, lost_create_rate=0.05, truncate_rate=0.2,
                       processing_time=0.05, seed=99)
    manifest = write_manifest(tmp_path, 200, base_url=sb.url, concurrency=20)
    result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path,
                           env=cli_env(**FAST_RETRY), timeout=150)
    stats = sb.stats()
    assert stats["duplicate_fingerprints"] == 0
    assert stats["faults_injected"].get("truncate", 0) > 0
    assert stats["faults_injected"].get("lost_create", 0) > 0
    rows = rows_of(tmp_path / "out")
    assert {r["status"] for r in rows} <= {"completed", "unknown"}, result.err[-2000:]
    unknown = [r for r in rows if r["status"] == "unknown"]
    assert len(unknown) == stats["faults_injected"]["lost_create"]
    assert result.code == (1 if unknown else 0)
    out = tmp_path / "out"
    for row in rows:
        if row["status"] == "completed":
            data = (out / row["file"]).read_bytes()
            assert data[4:8] == b"ftyp" and hashlib.sha256(data).hexdigest() == row["sha256"]
    assert not list(out.glob(".*part"))
    assert len(list(out.glob("*.mp4"))) == len(rows) - len(unknown)


@pytest.mark.slow
async def test_sigterm_mid_run_exits_130_quickly_and_a_rerun_completes(sandbox, tmp_path):
    sb = await sandbox(processing_time=0.3, slow_download=0.2)
    manifest = write_manifest(tmp_path, 30, base_url=sb.url, concurrency=4)
    proc = await start_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
    while sb.stats()["tasks_created"] < 6:
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 130, err.decode()
    assert loop.time() - sent_at < 5
    out = tmp_path / "out"
    assert (out / "report.csv").exists()
    assert not list(out.glob(".*part"))
    again = await run_cli("run", str(manifest), cwd=tmp_path)
    assert again.code == 0, again.err
    stats = sb.stats()
    assert stats["tasks_created"] == 30 and stats["duplicate_fingerprints"] == 0


async def test_no_secret_in_any_output_or_file_after_a_faulty_run(sandbox, tmp_path):
    secret = "sec-4f1d-very-secret-value"
    sb = await sandbox(client_pairs={"cid-0042": secret}, token_expiry_uses=7,
                       http_error_rate=0.2, lost_create_rate=0.1, truncate_rate=0.2, seed=5)
    manifest = write_manifest(tmp_path, 20, base_url=sb.url, concurrency=4)
    env = cli_env(AKOOL_CLIENT_ID="cid-0042", AKOOL_CLIENT_SECRET=secret, **FAST_RETRY)
    env.pop("AKOOL_API_KEY")
    result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path, env=env)
    assert result.code in (0, 1), result.err
    assert sb.stats()["tokens_issued"] >= 2  # the token expired and was fetched again
    tokens = list(sb.state.tokens)
    needles = [secret, *tokens]
    blobs = [result.out, result.err]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            blobs.append(path.read_bytes().decode("latin-1"))
    for needle in needles:
        assert all(needle not in blob for blob in blobs), needle
    # and a rejected secret is not echoed either
    env["AKOOL_CLIENT_SECRET"] = "wrong-" + secret
    rejected = await run_cli("run", str(manifest), cwd=tmp_path, env=env)
    assert rejected.code == 4
    assert secret not in rejected.err and secret not in rejected.out


async def test_permanent_faults_fail_only_their_job_with_the_apis_reason(sandbox, tmp_path):
    sb = await sandbox(fail_prompts=["explode"])
    manifest = write_manifest(tmp_path, 4, base_url=sb.url)
    manifest.write_text(manifest.read_text().replace("prompt 1", "explode 1"))
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 1, result.err
    rows = {r["job_id"]: r for r in rows_of(tmp_path / "out")}
    assert rows["job001"]["status"] == "failed"
    assert "status 4" in rows["job001"]["error"] and rows["job001"]["task_id"]
    assert all(rows[j]["status"] == "completed" for j in ("job000", "job002", "job003"))
    # a rerun leaves the failed job alone: it would cost credits again
    await run_cli("run", str(manifest), cwd=tmp_path)
    assert sb.stats()["tasks_created"] == 4


async def test_a_parameter_error_fails_the_job_with_code_and_message(sandbox, tmp_path):
    # this account's API offers no 4k (validation cannot know): 1003 naming the field
    sb = await sandbox()
    del sb.config.prices["4k"]
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    manifest.write_text(manifest.read_text().replace(
        "  prompt: prompt 1\n", "  prompt: prompt 1\n  resolution: 4k\n"))
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 1, result.err
    rows = {r["job_id"]: r for r in rows_of(tmp_path / "out")}
    assert rows["job000"]["status"] == "completed"
    assert rows["job001"]["status"] == "failed" and not rows["job001"]["task_id"]
    assert "1003" in rows["job001"]["error"] and "resolution" in rows["job001"]["error"]
    assert rows["job001"]["credits_deducted"] == ""


async def test_an_expired_url_is_read_again_once_then_fails_and_retry_only_downloads(
        sandbox, tmp_path):
    sb = await sandbox(url_expiry=0.001, processing_time=0.05)
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 1
    rows = rows_of(tmp_path / "out")
    assert all(r["status"] == "failed" and "403" in r["error"] for r in rows)
    assert sb.stats()["requests"]["download"] == 4  # each URL tried, re-read, tried again
    sb.config.url_expiry = 0.0
    again = await run_cli("run", str(manifest), "--retry-failed", cwd=tmp_path)
    assert again.code == 0, again.err
    assert sb.stats()["tasks_created"] == 2  # fetched again, never made again
