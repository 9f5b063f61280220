"""The output dir is not an attack surface, and the environment's problems are named.

A planted symlink never makes batchgen truncate or write outside the output dir; a state
database with a tampered row is refused naming the row; a read-only state or output dir,
an `--output` that is a file and a full disk each end with one line and exit 73, the
state intact, no temporary file left, nothing paid, and never the advice to move an
intact database away (the next run would pay again for everything).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_env, write_manifest

from batchgen import report as report_module
from batchgen.cli import main
from batchgen.errors import NoState, OutputNotWritable, StateError
from batchgen.jobs import Job
from batchgen.report import write_reports
from batchgen.store import JobRow, JobState, Store
from batchgen.store_schema import guard_triggers

VICTIM_TEXT = "precious data outside the output dir\n"


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def row(job_id: str = "a") -> JobRow:
    return JobRow(job_id=job_id, idx=0, fingerprint="f", request={"prompt": "p"},
                  state=JobState.PENDING, credits_estimated=20)


def jobs(n: int) -> list[Job]:
    return [Job(id=f"j{i}", index=i, image_url="https://example.com/a.jpg", resolution="720p",
                video_length=5, audio_type=3, prompt=f"p{i}", fingerprint=f"f{i}")
            for i in range(n)]


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


# -- planted symlinks ---------------------------------------------------------------------

def test_a_symlink_planted_as_the_reports_temporary_file_is_never_written_through(
        tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.csv", "summary.json"):  # the names a crash-free run would use
        (out / f".{name}.{os.getpid()}.tmp").symlink_to(victim)
    write_reports(out, "report.csv", [row()], {"jobs": 1})
    assert victim.read_text() == VICTIM_TEXT
    assert not (out / "report.csv").is_symlink() and "job_id" in (out / "report.csv").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "summary.json"]


def test_a_symlink_planted_as_the_report_is_replaced_not_followed(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.csv").symlink_to(victim)
    write_reports(out, "report.csv", [row()], {"jobs": 1})
    assert victim.read_text() == VICTIM_TEXT and not (out / "report.csv").is_symlink()


def test_a_symlink_planted_as_the_lock_is_refused_not_truncated(tmp_path, victim):
    out = tmp_path / "out"
    (out / ".batchgen").mkdir(parents=True)
    (out / ".batchgen" / "lock").symlink_to(victim)
    with pytest.raises(StateError, match="is a symlink"):
        Store.open(out)
    assert victim.read_text() == VICTIM_TEXT


@pytest.mark.parametrize("name", ["state.db", "state.db-wal", "state.db-journal"])
def test_a_symlink_planted_in_the_state_folder_is_refused(tmp_path, victim, name):
    out = tmp_path / "out"
    (out / ".batchgen").mkdir(parents=True)
    (out / ".batchgen" / name).symlink_to(victim)
    with pytest.raises(StateError, match="is a symlink"):
        Store.open(out)
    assert victim.read_text() == VICTIM_TEXT


def test_a_state_folder_that_is_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / ".batchgen").symlink_to(elsewhere, target_is_directory=True)
    for kwargs in ({}, {"lock": False, "create": False}):
        with pytest.raises(StateError, match=r"\.batchgen is a symlink"):
            Store.open(out, **kwargs)
    assert list(elsewhere.iterdir()) == []


# -- tampered and unreadable state ----------------------------------------------------------

def _state_with(tmp_path: Path, sql: str) -> Path:
    """A state whose row j1 was tampered with by someone who first removed the row guard
    (store_schema.guard_triggers), which would otherwise refuse the edit."""
    manifest = write_manifest(tmp_path, 3)
    with Store.open(tmp_path / "out") as store:
        store.sync(jobs(3), [(20, 0)] * 3)
    conn = sqlite3.connect(tmp_path / "out" / ".batchgen" / "state.db")
    for name in guard_triggers(set()):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute(sql)
    conn.commit()
    conn.close()
    return manifest


@pytest.mark.parametrize("sql", [
    "UPDATE jobs SET state='bogus' WHERE job_id='j1'",
    "UPDATE jobs SET request='{not json' WHERE job_id='j1'",
    "INSERT INTO jobs (job_id, idx, fingerprint, request, state, credits_estimated) "
    "VALUES ('j9', 9, 'f', '[]', 'pending', 20)",
])
def test_a_damaging_edit_is_refused_while_the_guard_is_there(tmp_path, sql):
    with Store.open(tmp_path / "out") as store:
        store.sync(jobs(3), [(20, 0)] * 3)
    conn = sqlite3.connect(tmp_path / "out" / ".batchgen" / "state.db")
    with pytest.raises(sqlite3.IntegrityError, match="would damage a job row"):
        conn.execute(sql)
    conn.close()
    with Store.open(tmp_path / "out") as store:
        assert [r.job_id for r in store.rows()] == ["j0", "j1", "j2"]


@pytest.mark.parametrize("undo", [
    "DROP TRIGGER jobs_guard_update",
    "INSERT INTO meta(key, value) VALUES ('guard_paused', '1')",
])
def test_a_state_whose_guard_was_undone_is_checked_in_full(tmp_path, undo):
    with Store.open(tmp_path / "out") as store:
        store.sync(jobs(3), [(20, 0)] * 3)
    conn = sqlite3.connect(tmp_path / "out" / ".batchgen" / "state.db")
    conn.execute(undo)  # either lets the edit below through
    conn.execute("UPDATE jobs SET credits_video=-5 WHERE job_id='j2'")
    conn.commit()
    conn.close()
    for lock in (False, True):
        with pytest.raises(StateError, match="job row 'j2' is damaged"):
            Store.open(tmp_path / "out", lock=lock)


@pytest.mark.parametrize("sql, said", [
    ("UPDATE jobs SET state='bogus' WHERE job_id='j1'", "unknown state 'bogus'"),
    ("UPDATE jobs SET request='{not json' WHERE job_id='j1'", "request is not a JSON object"),
    ("UPDATE jobs SET credits_estimated='lots' WHERE job_id='j1'", "credits_estimated is 'lots'"),
    ("UPDATE jobs SET credits_video=-5 WHERE job_id='j1'", "credits_video is -5"),
    ("UPDATE jobs SET task_id=x'00ff' WHERE job_id='j1'", "task_id is not text"),
])
def test_a_tampered_row_is_named_by_every_command(tmp_path, monkeypatch, sql, said):
    monkeypatch.chdir(tmp_path)
    manifest = str(_state_with(tmp_path, sql))
    for argv in (["status", manifest], ["plan", manifest], ["report", manifest],
                 ["run", manifest, "--sandbox"]):
        code, out, err = cli(*argv)
        assert code == 2, (argv, out, err)
        assert "job row 'j1' is damaged" in err and said in err and len(err.splitlines()) == 1
        assert "move it away" not in err


def test_plan_and_status_do_not_ignore_a_state_they_cannot_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = str(write_manifest(tmp_path, 2))
    state = tmp_path / "out" / ".batchgen"
    state.mkdir(parents=True)
    (state / "state.db").write_bytes(b"this is not a database, it was overwritten" * 100)
    for command in ("plan", "status"):
        code, out, err = cli(command, manifest)
        assert code == 2 and "damaged" in err and "restore it from a backup" in err, (out, err)
        assert "Traceback" not in err and len(err.splitlines()) == 1


def test_no_state_yet_is_not_an_error_for_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("plan", str(write_manifest(tmp_path, 2)))
    assert code == 0 and "2" in out
    with pytest.raises(NoState):
        Store.open(tmp_path / "out", lock=False, create=False)


# -- the environment: a file as --output, read-only, full ---------------------------------

def test_output_that_is_a_regular_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = str(write_manifest(tmp_path, 1))
    (tmp_path / "taken").write_text("a file")
    code, out, err = cli("run", manifest, "--sandbox", "--output", "taken")
    assert code == 73, (out, err)
    assert "taken is a file, not a directory" in err and len(err.splitlines()) == 1
    assert (tmp_path / "taken").read_text() == "a file"


def test_a_full_disk_while_writing_the_report_leaves_the_old_one_and_no_temp_file(
        tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_reports(out, "report.csv", [row("old")], {"jobs": 1})
    before = (out / "report.csv").read_bytes()

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(report_module.os, "write", full)
    with pytest.raises(OutputNotWritable, match="No space left on device"):
        write_reports(out, "report.csv", [row("new")], {"jobs": 1})
    assert (out / "report.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "summary.json"]


def test_a_full_disk_under_the_state_is_named_and_the_state_stays_intact(tmp_path):
    out = tmp_path / "out"
    with Store.open(out) as store:
        store.sync(jobs(3), [(20, 0)] * 3)
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk full"
        with pytest.raises(OutputNotWritable, match=r"the disk is full.*state is intact"):
            store.sync(jobs(3000), [(20, 0)] * 3000)
        assert [r.job_id for r in store.rows()] == ["j0", "j1", "j2"]
    conn = sqlite3.connect(out / ".batchgen" / "state.db")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


async def _run_cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchgen", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def _mount(*args: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Make `path` (a dir and all below it, or one file) read-only for the CLI.

    Root ignores permissions, so as root `path` is bind-mounted read-only on itself;
    otherwise permissions are removed. Skips when neither can be done.
    """
    if os.geteuid() != 0:
        paths = [path, *path.rglob("*")] if path.is_dir() else [path]
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p in paths:
                p.chmod(0o755 if p.is_dir() else 0o644)
        return
    if not (_mount("--bind", str(path), str(path))
            and _mount("-o", "remount,bind,ro", str(path))):
        subprocess.run(["umount", str(path)], capture_output=True)
        pytest.skip("cannot make a read-only bind mount here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def _state_rows(out: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{out / '.batchgen' / 'state.db'}?mode=ro&immutable=1",
                           uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return conn.execute("SELECT job_id, state FROM jobs ORDER BY job_id").fetchall()
    finally:
        conn.close()


def _add_a_job(manifest: Path) -> None:
    manifest.write_text(manifest.read_text().replace(
        "jobs:\n", "jobs:\n- id: extra\n  image_url: https://example.com/x.jpg\n"
        "  prompt: one more\n"))


@pytest.mark.parametrize("which", ["dir", "db"], ids=["read-only dir", "read-only db"])
async def test_a_read_only_state_is_named_and_nothing_is_paid(sandbox, tmp_path, which):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    code, _, err = await _run_cli("run", str(manifest), cwd=tmp_path, env=cli_env())
    assert code == 0, err
    out = tmp_path / "out"
    _add_a_job(manifest)
    before = _state_rows(out)
    files = sorted(p.name for p in out.rglob("*"))
    with _read_only(out if which == "dir" else out / ".batchgen" / "state.db"):
        code, _, err = await _run_cli("run", str(manifest), cwd=tmp_path, env=cli_env())
        assert code == 73, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "read-only" in err.lower() or "permission denied" in err.lower(), err
        assert "move" not in err  # the database is intact: never advise moving it away
        assert sb.stats()["tasks_created"] == 2
        assert sorted(p.name for p in out.rglob("*")) == files  # no temporary file left
        # the state can still be read
        code, text, err = await _run_cli("status", str(manifest), cwd=tmp_path, env=cli_env())
        assert code == 0 and "completed" in text, err
    assert _state_rows(out) == before


async def test_a_full_disk_is_named_the_state_stays_intact_and_nothing_is_paid(
        sandbox, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)):
        pytest.skip("cannot mount a small tmpfs here (the injected ENOSPC tests still run)")
    try:
        sb = await sandbox()
        manifest = write_manifest(tmp_path, 2, base_url=sb.url)
        code, _, err = await _run_cli("run", str(manifest), cwd=tmp_path, env=cli_env())
        assert code == 0, err
        before = _state_rows(out)
        _add_a_job(manifest)
        # fill the disk to the last block
        with open(out / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
        files = sorted(p.name for p in out.rglob("*"))
        code, _, err = await _run_cli("run", str(manifest), cwd=tmp_path, env=cli_env())
        assert code == 73, err
        assert len(err.splitlines()) == 1, err
        assert "disk is full" in err or "No space left" in err, err
        assert "move" not in err
        assert sb.stats()["tasks_created"] == 2
        assert _state_rows(out) == before
        assert sorted(p.name for p in out.rglob("*")) == files
    finally:
        subprocess.run(["umount", str(out)], capture_output=True)
