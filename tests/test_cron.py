"""Cron and pipelines: `--quiet`, `--log-file`, the status interval, `status --json`,
`validate --json`, `run --json`, and the small rough edges of the terminal output.

The real CLI runs in a subprocess against the emulator on loopback (stderr is not a
terminal there, as under cron); one test gives it a pseudo-terminal to see the bars.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli, write_manifest

from batchgen.cli import main

ISO_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z ")


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


async def test_a_quiet_run_that_succeeds_prints_nothing(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 3, base_url=sb.url)
    result = await run_cli("run", str(manifest), "--quiet", cwd=tmp_path)
    assert result.code == 0
    assert result.out == "" and result.err == ""  # cron mails nothing
    assert sb.stats()["tasks_created"] == 3


async def test_a_quiet_run_still_says_what_needs_a_human(sandbox, tmp_path):
    sb = await sandbox(fail_prompts=["explode"])
    manifest = write_manifest(tmp_path, 2, base_url=sb.url,
                              extra={"budget": {"max_credits": 40}})
    doc = manifest.read_text().replace("prompt 1", "explode 1")
    manifest.write_text(doc)
    result = await run_cli("run", str(manifest), "--quiet", cwd=tmp_path)
    assert result.code == 1
    assert result.out == ""
    assert "failed: job001" in result.err and "status 4" in result.err
    # the budget holding jobs back is also for a human
    manifest.write_text(doc.replace("jobs:\n", "jobs:\n- id: extra\n  image_url: "
                                    "https://example.com/x.jpg\n  prompt: more\n", 1))
    result = await run_cli("run", str(manifest), "--quiet", cwd=tmp_path)
    assert result.code == 3 and result.out == ""
    assert "budget: 1 job(s) not submitted" in result.err


async def test_log_file_is_appended_with_iso_times(sandbox, tmp_path):
    sb = await sandbox(processing_time=0.6)
    manifest = write_manifest(tmp_path, 3, base_url=sb.url)
    log = tmp_path / "logs" / "batch.log"
    for _ in range(2):
        result = await run_cli("run", str(manifest), "--quiet", "--log-file", str(log),
                               "--status-interval", "0.2", cwd=tmp_path)
        assert result.code == 0 and result.err == ""
    lines = log.read_text().splitlines()
    assert lines and all(ISO_LINE.match(line) for line in lines)
    finals = [line for line in lines if "3 completed, 0 failed" in line]
    assert len(finals) == 2  # the second run appended; nothing was overwritten
    assert any("submitted " in line and "credits " in line for line in lines)  # status lines
    assert "test-key" not in log.read_text()


async def test_status_interval_is_a_setting(sandbox, tmp_path):
    sb = await sandbox(processing_time=1.5)
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    result = await run_cli("run", str(manifest), "--status-interval", "0.3", cwd=tmp_path)
    assert result.code == 0
    status = [line for line in result.err.splitlines() if "submitted " in line]
    assert len(status) >= 2  # the default (5 s) would print none in a 2 s run
    result = await run_cli("run", str(manifest), "--output", "out2", "--status-interval", "0",
                           cwd=tmp_path)
    assert result.code == 0 and "submitted " not in result.err


@pytest.mark.slow
async def test_resumed_progress_counts_the_failed_jobs_of_earlier_runs(sandbox, tmp_path):
    sb = await sandbox(fail_prompts=["explode"], processing_time=1.5)
    manifest = write_manifest(tmp_path, 2, base_url=sb.url,
                              extra={"budget": {"max_credits": 20}})
    manifest.write_text(manifest.read_text().replace("prompt 0", "explode 0"))
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 3  # job000 failed, job001 held back by the budget
    result = await run_cli("run", str(manifest), "--max-credits", "100",
                           "--status-interval", "0.3", cwd=tmp_path)
    status = [line for line in result.err.splitlines() if "submitted " in line]
    assert status and all("failed 1" in line for line in status), result.err


async def test_one_cause_reported_by_many_jobs_is_one_notice(sandbox, tmp_path):
    sb = await sandbox(balance=0)
    manifest = write_manifest(tmp_path, 8, base_url=sb.url, concurrency=8)
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 3
    assert sb.stats()["requests"]["createBySourcePrompt"] >= 2  # several jobs met the 1006
    assert result.err.count("no more jobs will be sent") == 1, result.err


async def test_run_json_prints_the_summary(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    result = await run_cli("run", str(manifest), "--json", cwd=tmp_path)
    assert result.code == 0
    summary = json.loads(result.out)
    assert summary["status"]["completed"] == 2 and summary["credits_deducted"] == 40


def test_status_json_lists_every_job_before_the_first_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_manifest(tmp_path, 2, job_extra={})
    doc = path.read_text().replace(
        "jobs:\n", "jobs:\n- id: fam\n  image_url: https://example.com/f.jpg\n  prompt: f\n"
        "  model_name: AkoolImage2VideoFastV1\n  count: 2\n", 1)
    path.write_text(doc)
    code, out, err = cli("status", str(path), "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["ran"] is False and status["status"]["pending"] == 4
    jobs = {j["id"]: j for j in status["job_list"]}
    assert set(jobs) == {"fam", "fam#2", "job000", "job001"}
    assert jobs["job000"] == {"id": "job000", "status": "pending", "state": "pending",
                              "task_id": None, "file": None, "credits_estimated": 20,
                              "credits_deducted": None, "error": None,
                              "credits_held": 0, "credits_note": None}
    code, out, _ = cli("status", str(path))
    assert code == 0 and "not run yet" in out and "pending" in out


def test_status_json_after_a_run_has_task_ids_files_and_credits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AKOOL_API_KEY", raising=False)
    path = write_manifest(tmp_path, 2)
    code, _, err = cli("run", str(path), "--sandbox", "--quiet", "--processing-time", "0",
                       "--queue-time", "0")
    assert code == 0, err
    code, out, _ = cli("status", str(path), "--json")
    status = json.loads(out)
    assert status["ran"] is True
    for job in status["job_list"]:
        assert job["status"] == "completed" and job["task_id"] and job["credits_deducted"] == 20
        assert (tmp_path / "out" / job["file"]).exists()


def test_validate_json_reports_errors_as_objects(tmp_path):
    good = write_manifest(tmp_path, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\njobs:\n  - image_url: https://example.com/a.jpg\n"
                   "    resolution: 9k\n")
    code, out, _ = cli("validate", "--json", str(good), str(bad))
    assert code == 2
    doc = json.loads(out)
    assert doc["ok"] is False
    first, second = doc["manifests"]
    assert first == {"manifest": str(good), "ok": True, "jobs": 2, "errors": [],
                     "warnings": []}
    assert second["ok"] is False and second["jobs"] is None
    error = next(e for e in second["errors"] if "9k" in e["message"])
    assert set(error) == {"file", "line", "job", "message", "fix"}
    assert error["file"] == str(bad) and error["line"] == 4 and error["job"] == "jobs[0]"
    assert any("missing prompt" in e["message"] for e in second["errors"])  # all at once


def test_a_usage_error_names_the_program_once(tmp_path):
    code, _, err = cli("run")
    assert code == 2
    assert err.startswith("batchgen: ") and "batchgen: batchgen" not in err
    assert "batchgen run --help" in err


def test_every_option_says_what_it_does():
    from batchgen.cli import build_parser
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            for option in sub._actions:
                if option.dest != "help":
                    assert option.help, f"batchgen {name} {option.option_strings or option.dest}"


def test_emulator_settings_need_the_sandbox(tmp_path):
    path = write_manifest(tmp_path, 1)
    code, _, err = cli("run", str(path), "--failure-rate", "0.5")
    assert code == 2 and "--sandbox" in err
    code, _, err = cli("run", str(path), "--sandbox", "--failure-rate", "2")
    assert code == 2 and "--failure-rate" in err and "Traceback" not in err


async def _run_on_a_terminal(manifest: Path, cwd: Path, *, interrupt_when: bytes = b""
                             ) -> tuple[int, bytes]:
    """`batchgen run` with stderr on a pseudo-terminal (bars on); SIGINT once the output
    holds `interrupt_when`. Returns the exit code and everything the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchgen", "run", str(manifest), cwd=cwd,
        env=cli_env(), stdout=asyncio.subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []
    loop = asyncio.get_running_loop()
    seen = asyncio.Event()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)
            if interrupt_when and interrupt_when in b"".join(chunks):
                loop.call_soon_threadsafe(seen.set)

    reader = loop.run_in_executor(None, read)
    if interrupt_when:
        await asyncio.wait_for(seen.wait(), 60)
        proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 60)
    await asyncio.wait_for(reader, 10)
    os.close(master)
    return proc.returncode or 0, b"".join(chunks)


async def test_bars_show_failed_and_unknown_jobs(sandbox, tmp_path):
    """On a terminal: the bars say why they end short of 100 %."""
    sb = await sandbox(fail_prompts=["explode"])
    manifest = write_manifest(tmp_path, 3, base_url=sb.url)
    manifest.write_text(manifest.read_text().replace("prompt 0", "explode 0"))
    code, raw = await _run_on_a_terminal(manifest, tmp_path)
    assert code == 1
    assert b"failed 1, unknown 0" in raw


async def test_stopping_is_written_above_the_bars_not_over_them(sandbox, tmp_path):
    sb = await sandbox(processing_time=5)
    manifest = write_manifest(tmp_path, 3, base_url=sb.url)
    code, raw = await _run_on_a_terminal(manifest, tmp_path, interrupt_when=b"credits   :")
    assert code == 130
    at = raw.index(b"stopping: no new submissions")
    # the bars were cleared first (tqdm.write): a blanked line, then the cursor moved up;
    # printed straight away the line landed in the middle of a bar, and bars were drawn twice
    assert re.search(rb"\r +\r(\x1b\[A)*$", raw[:at]), raw[at - 200:at]


def test_count_videos_get_file_names_without_a_hash(tmp_path, monkeypatch):
    """`#` starts a URL fragment: beach#2.mp4 cannot be linked. Ids keep `#`, files use `~`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AKOOL_API_KEY", raising=False)
    path = write_manifest(tmp_path, 1, job_extra={"model_name": "AkoolImage2VideoFastV1",
                                                  "count": 3})
    code, _, err = cli("run", str(path), "--sandbox", "--quiet", "--processing-time", "0",
                       "--queue-time", "0")
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "out").glob("*.mp4"))
    assert files == ["job000.mp4", "job000~2.mp4", "job000~3.mp4"]
    code, out, _ = cli("status", str(path), "--json")
    ids = sorted(j["id"] for j in json.loads(out)["job_list"])
    assert ids == ["job000", "job000#2", "job000#3"]


def test_schema_command_ships_the_schema_for_editors(tmp_path):
    code, out, _ = cli("schema")
    assert code == 0 and json.loads(out)["title"].startswith("batchgen manifest")
    target = tmp_path / "manifest.schema.json"
    code, out, _ = cli("schema", "--write", str(target))
    assert code == 0 and "yaml-language-server: $schema=manifest.schema.json" in out
    assert json.loads(target.read_text()) == json.loads(
        (Path(__file__).parent.parent / "schemas" / "manifest.schema.json").read_text())


def test_the_example_manifest_points_editors_at_the_schema():
    root = Path(__file__).parent.parent
    first = (root / "manifests" / "example.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/manifest.schema.json"
    assert (root / "manifests" / "../schemas/manifest.schema.json").exists()


async def test_summary_json_keeps_earlier_runs_through_a_no_op_rerun_and_report(sandbox,
                                                                               tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 2, base_url=sb.url,
                              extra={"budget": {"max_credits": 500}})
    summary_path = tmp_path / "out" / "summary.json"
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    first = json.loads(summary_path.read_text())
    assert first["requests"]["createBySourcePrompt"] == 2 and first["budget"] == 500
    assert first["all_runs"]["runs"] == 1
    assert first["all_runs"]["requests"] == first["requests"]
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0  # nothing to do
    second = json.loads(summary_path.read_text())
    assert second["all_runs"]["runs"] == 2
    assert second["all_runs"]["requests"]["createBySourcePrompt"] == 2  # earlier runs kept
    assert second["all_runs"]["requests_total"] >= first["requests_total"]
    assert second["budget"] == 500 and second["credits_committed"] == 40
    assert second["last_run_finished_at"].endswith("Z")
    result = await run_cli("report", str(manifest), cwd=tmp_path)
    assert result.code == 0
    third = json.loads(summary_path.read_text())
    for key in ("budget", "credits_committed", "wall_seconds", "requests", "requests_total",
                "all_runs", "status", "credits_deducted"):
        assert third[key] == second[key], key
    assert set(first) <= set(third)  # only additions, nothing taken away


class _Unwritable(io.StringIO):
    """A terminal stream whose reader went away (`batchgen run … | head`, a dead tty)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__()
        self.exc = exc

    def write(self, text: str) -> int:
        raise self.exc


def _statuses(out: Path) -> list[str]:
    import csv
    with open(out / "report.csv", newline="") as f:
        return [row["status"] for row in csv.DictReader(f)]


def test_a_terminal_that_cannot_be_written_never_stops_the_run(tmp_path, monkeypatch):
    """Events are printed from inside the runner: a broken pipe there used to end the run
    half-way with exit 0 (and any other write error with exit 70, "internal error")."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AKOOL_API_KEY", raising=False)
    path = write_manifest(tmp_path, 3)
    for exc in (BrokenPipeError(32, "Broken pipe"), OSError(5, "Input/output error")):
        code = main(["run", str(path), "--sandbox", "--no-progress", "--status-interval",
                     "0.01", "--processing-time", "0", "--queue-time", "0"],
                    _Unwritable(exc), _Unwritable(exc))
        assert code == 0
        assert _statuses(tmp_path / "out") == ["completed"] * 3


def test_a_log_file_on_a_full_disk_is_told_once_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AKOOL_API_KEY", raising=False)
    if not os.path.exists("/dev/full"):
        import pytest
        pytest.skip("needs /dev/full to fill a disk")
    path = write_manifest(tmp_path, 3)
    code, _, err = cli("run", str(path), "--sandbox", "--quiet", "--log-file", "/dev/full",
                       "--processing-time", "0", "--queue-time", "0")
    assert code == 0, err
    assert err.count("cannot write to the log file /dev/full (No space left on device); "
                     "logging stops here and the run goes on") == 1, err
    assert _statuses(tmp_path / "out") == ["completed"] * 3


async def test_the_last_line_names_the_report_as_a_person_would_write_it(sandbox, tmp_path):
    sb = await sandbox()
    (tmp_path / "manifests").mkdir()
    manifest = write_manifest(tmp_path / "manifests", 1, base_url=sb.url,
                              extra={"output": {"dir": "../output/t"}})
    result = await run_cli("run", "manifests/manifest.yaml", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "report: output/t/report.csv" in result.out, result.out
    assert (tmp_path / "output" / "t" / "report.csv").exists() and manifest.exists()
