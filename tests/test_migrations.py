"""State database migrations: every earlier schema opens, upgrades and keeps its rows.

Each schema version a batchgen on main could have left in an output dir is rebuilt here
from the migration text it shipped (`HISTORY`, copied from `git log -p batchgen/store.py`;
a database made by the first commit, before `sent` was added to 0001, never existed: that
commit had no command that opened a store). Representative rows of that time go in, today's
`Store.open` upgrades the file, and the test checks that

* the schema (tables, columns with type/NOT NULL/default/key, indexes) equals a freshly
  created database's, and the migration ledger lists every migration;
* every row kept its values, new columns hold their defaults, and the budget still counts
  what was charged before the upgrade.

A second set builds each version by running only the first k of today's migrations, so a
new migration is covered the day it is added. Adding migration 000N: append it to
`store._MIGRATIONS`, never edit a shipped one (`test_shipped_migrations_are_never_edited`);
if it transforms data, say in `expected_rows` what the old rows become.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from batchgen import store as store_module
from batchgen.cli import main
from batchgen.errors import StateError
from batchgen.jobs import JobState
from batchgen.store import DB_NAME, STATE_DIR, JobRow, Store

#: the migrations as shipped, in order: (name, SQL). Never edit; append the next one.
HISTORY: tuple[tuple[str, str], ...] = (
    ("0001_jobs", """
        CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            idx INTEGER NOT NULL,
            fingerprint TEXT NOT NULL,
            request TEXT NOT NULL,
            state TEXT NOT NULL,
            credits_estimated INTEGER NOT NULL,
            task_id TEXT,
            audio_task_id TEXT,
            credits_video INTEGER,
            credits_audio INTEGER,
            video_url TEXT,
            file TEXT,
            bytes INTEGER,
            sha256 TEXT,
            submitted_at TEXT,
            completed_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            changed INTEGER NOT NULL DEFAULT 0,
            active INTEGER NOT NULL DEFAULT 1,
            unknown_step TEXT,
            remote_deleted INTEGER NOT NULL DEFAULT 0,
            new_fingerprint TEXT,
            sent INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX jobs_state ON jobs(state);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """),
    ("0002_parent", """
        ALTER TABLE jobs ADD COLUMN parent TEXT;
        CREATE INDEX jobs_parent ON jobs(parent)
    """),
    ("0003_credits_prior", """
        ALTER TABLE jobs ADD COLUMN credits_prior INTEGER NOT NULL DEFAULT 0
    """),
    ("0004_budget_holds", """
        ALTER TABLE jobs ADD COLUMN credits_lost INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN audio_held INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE jobs ADD COLUMN credits_note TEXT
    """),
    ("0005_report_audit", """
        ALTER TABLE jobs ADD COLUMN finished_at TEXT;
        CREATE TABLE abandoned_tasks (
            job_id TEXT NOT NULL,
            step TEXT NOT NULL,
            task_id TEXT,
            credits INTEGER,
            error TEXT,
            submitted_at TEXT,
            finished_at TEXT,
            abandoned_at TEXT NOT NULL
        );
        CREATE INDEX abandoned_job ON abandoned_tasks(job_id)
    """),
)

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _req(prompt: str, source: str, **extra: Any) -> str:
    """A stored request as every version so far wrote it (sorted JSON, hidden keys)."""
    req = {"image_url": f"https://cdn.example.com/{prompt}.jpg", "prompt": prompt,
           "resolution": "720p", "video_length": 5, "audio_type": 3, "_source": source,
           **extra}
    return json.dumps(req, sort_keys=True)


#: rows a user of schema 1 could have: columns of 0001 only
ROWS_V1: tuple[dict[str, Any], ...] = (
    # finished with an add-audio step: both tasks charged, file on disk
    {"job_id": "done", "idx": 0, "fingerprint": "fp-done", "state": "completed",
     "request": _req("done", "m.yaml:7", add_audio={"audio_type": 1}, _audio_estimate=5),
     "credits_estimated": 25, "task_id": "t-done", "audio_task_id": "a-done",
     "credits_video": 20, "credits_audio": 5, "video_url": "https://cdn.example.com/done.mp4",
     "file": "out/done.mp4", "bytes": 123456, "sha256": SHA,
     "submitted_at": "2026-11-25T15:40:00Z", "completed_at": "2026-11-25T15:42:00Z",
     "attempts": 1, "sent": 1},
    # never sent
    {"job_id": "wait", "idx": 1, "fingerprint": "fp-wait", "state": "pending",
     "request": _req("wait", "m.yaml:9"), "credits_estimated": 20},
    # create sent, answer lost: may be charged
    {"job_id": "lost", "idx": 2, "fingerprint": "fp-lost", "state": "unknown",
     "request": _req("lost", "m.yaml:11"), "credits_estimated": 20, "attempts": 2,
     "unknown_step": "video", "sent": 1, "submitted_at": "2026-11-25T15:41:00Z",
     "error": "the create request was sent but its answer was lost"},
    # failed at the API after being charged; its remote copy deleted
    {"job_id": "bad", "idx": 3, "fingerprint": "fp-bad", "state": "failed",
     "request": _req("bad", "m.yaml:13"), "credits_estimated": 20, "task_id": "t-bad",
     "credits_video": 20, "error": "task failed: content policy", "attempts": 1,
     "remote_deleted": 1, "sent": 1},
    # from an earlier manifest: inactive, still counted against the budget
    {"job_id": "old", "idx": 4, "fingerprint": "fp-old", "state": "completed",
     "request": _req("old", "old.yaml:3"), "credits_estimated": 20, "task_id": "t-old",
     "credits_video": 20, "file": "out/old.mp4", "bytes": 99, "sha256": SHA,
     "active": 0, "attempts": 1, "sent": 1},
    # running, its manifest entry changed since it was sent
    {"job_id": "edit", "idx": 5, "fingerprint": "fp-edit", "state": "running",
     "request": _req("edit", "m.yaml:17", resolution="1080p"), "credits_estimated": 40,
     "task_id": "t-edit", "credits_video": 40, "changed": 1, "new_fingerprint": "fp-edit-2",
     "attempts": 1, "sent": 1},
    # the process died with this create on the wire
    {"job_id": "flying", "idx": 6, "fingerprint": "fp-fly", "state": "submitting",
     "request": _req("flying", "m.yaml:19"), "credits_estimated": 20, "attempts": 1,
     "sent": 1, "submitted_at": "2026-11-25T15:43:00Z"},
)
#: rows schema 2 added: a `count: 3` job, its videos 2 and 3 as rows of their own
ROWS_V2: tuple[dict[str, Any], ...] = (
    {"job_id": "cnt", "idx": 7, "fingerprint": "fp-cnt", "state": "running",
     "request": _req("cnt", "m.yaml:21", count=3), "credits_estimated": 20,
     "task_id": "t-c1", "credits_video": 20, "attempts": 1, "sent": 1},
    {"job_id": "cnt#2", "idx": 7, "fingerprint": "fp-cnt", "state": "running",
     "request": _req("cnt", "m.yaml:21", count=3), "credits_estimated": 20,
     "task_id": "t-c2", "credits_video": 20, "parent": "cnt"},
    {"job_id": "cnt#3", "idx": 7, "fingerprint": "fp-cnt", "state": "completed",
     "request": _req("cnt", "m.yaml:21", count=3), "credits_estimated": 20,
     "task_id": "t-c3", "credits_video": 20, "file": "out/cnt_3.mp4", "bytes": 7,
     "sha256": SHA, "parent": "cnt"},
)
#: rows schema 3 added: a job retried after a charged failure (--retry-failed)
ROWS_V3: tuple[dict[str, Any], ...] = (
    {"job_id": "again", "idx": 8, "fingerprint": "fp-again", "state": "pending",
     "request": _req("again", "m.yaml:25"), "credits_estimated": 20, "credits_prior": 15,
     "attempts": 1},
)
#: rows schema 4 added: a lost create sent again (its first try may have been charged) and
#: a video whose repeated add-audio step is not reserved; a charge the API gave unusably
ROWS_V4: tuple[dict[str, Any], ...] = (
    {"job_id": "resent", "idx": 9, "fingerprint": "fp-resent", "state": "running",
     "request": _req("resent", "m.yaml:27"), "credits_estimated": 20, "task_id": "t-rs",
     "credits_video": 20, "credits_lost": 20, "attempts": 2, "sent": 1},
    {"job_id": "noaudio", "idx": 10, "fingerprint": "fp-noaudio", "state": "audio_pending",
     "request": _req("noaudio", "m.yaml:29", add_audio={"audio_type": 1}, _audio_estimate=5),
     "credits_estimated": 25, "task_id": "t-na", "credits_video": 20, "audio_held": 0,
     "credits_note": "credit '' is not a number", "attempts": 1, "sent": 1},
)
#: rows schema 5 added: a video finished at the API (when: the timeline, the URL's expiry)
#: and waiting for its download
ROWS_V5: tuple[dict[str, Any], ...] = (
    {"job_id": "ready", "idx": 11, "fingerprint": "fp-ready", "state": "ready",
     "request": _req("ready", "m.yaml:31"), "credits_estimated": 20, "task_id": "t-rd",
     "credits_video": 20, "video_url": "https://cdn.example.com/t-rd.mp4",
     "submitted_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:01:30Z",
     "attempts": 1, "sent": 1},
)
ROWS_BY_VERSION = (ROWS_V1, ROWS_V2, ROWS_V3, ROWS_V4, ROWS_V5)
#: what the budget holds for each version's rows (see budget.held):
#: done 20+5, lost 20 (estimate), bad 20, old 20, edit 40, flying 20; cnt family 3x20;
#: again 15 charged before its retry; resent 20+20, noaudio 20 (its audio not reserved);
#: ready 20
COMMITTED = (145, 145 + 60, 145 + 60 + 15, 145 + 60 + 15 + 60, 145 + 60 + 15 + 60 + 20)

#: defaults of columns a version did not have yet, as the upgrade must fill them
NEW_COLUMN_DEFAULTS: dict[str, Any] = {"parent": None, "credits_prior": 0, "credits_lost": 0,
                                       "audio_held": 1, "credits_note": None,
                                       "finished_at": None}
#: 0001's column defaults, for the columns a fixture row leaves out
V1_DEFAULTS: dict[str, Any] = {
    "task_id": None, "audio_task_id": None, "credits_video": None, "credits_audio": None,
    "video_url": None, "file": None, "bytes": None, "sha256": None, "submitted_at": None,
    "completed_at": None, "attempts": 0, "error": None, "changed": 0, "active": 1,
    "unknown_step": None, "remote_deleted": 0, "new_fingerprint": None, "sent": 0,
}


def _statements(sql: str) -> list[str]:
    """A migration's statements as Store._migrate runs them (split on `;`, no comments)."""
    out = []
    for stmt in sql.split(";"):
        stmt = re.sub(r"--[^\n]*", "", stmt).strip()
        if stmt:
            out.append(stmt)
    return out


def _db(output_dir: Path) -> Path:
    return output_dir / STATE_DIR / DB_NAME


def build_historical(output_dir: Path, version: int) -> Path:
    """A state database exactly as batchgen at schema `version` (1-based) left it."""
    path = _db(output_dir)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY)")
    for name, sql in HISTORY[:version]:
        conn.execute("BEGIN IMMEDIATE")
        for stmt in _statements(sql):
            conn.execute(stmt)
        conn.execute("INSERT INTO _migrations(name) VALUES (?)", (name,))
        conn.execute("COMMIT")
    conn.close()
    return path


def insert_rows(path: Path, rows: tuple[dict[str, Any], ...]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for row in rows:
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO jobs({names}) VALUES ({marks})", tuple(row.values()))
    conn.close()


def schema_of(path: Path) -> dict[str, Any]:
    """Tables, columns and indexes of a database, comparable with ==."""
    conn = sqlite3.connect(path)
    tables: dict[str, Any] = {}
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    for table in names:
        columns = {r[1]: (r[2].upper(), r[3], r[4], r[5])  # type, notnull, default, pk
                   for r in conn.execute(f"PRAGMA table_info({table})")}
        indexes = {}
        for _seq, name, unique, origin, partial in conn.execute(
                f"PRAGMA index_list({table})"):
            cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})"))
            key = name if origin == "c" else f"<{origin}>"  # autoindex names are internal
            indexes[key] = (cols, unique, partial)
        tables[table] = {"columns": columns, "indexes": indexes}
    ledger = sorted(r[0] for r in conn.execute("SELECT name FROM _migrations"))
    conn.close()
    return {"tables": tables, "migrations": ledger}


def fresh_schema(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "fresh"
    Store.open(out).close()
    return schema_of(_db(out))


def raw_rows(path: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = {r["job_id"]: dict(r) for r in conn.execute("SELECT * FROM jobs")}
    conn.close()
    return rows


def expected_rows(rows: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    """What each fixture row must read as after the upgrade to today's schema."""
    return {r["job_id"]: {**V1_DEFAULTS, **NEW_COLUMN_DEFAULTS, **r} for r in rows}


def assert_rows_survived(path: Path, store: Store, rows: tuple[dict[str, Any], ...]) -> None:
    expected = expected_rows(rows)
    # every column, byte for byte (also those JobRow does not carry: sent, new_fingerprint)
    assert raw_rows(path) == expected
    # and as the runner reads them
    for job_id, want in expected.items():
        row: JobRow = store.get(job_id)
        assert row.state is JobState(want["state"])
        stored = json.loads(want["request"])
        # the store's own keys are typed fields of the row; the request is what is sent
        assert row.request == {k: v for k, v in stored.items() if not k.startswith("_")}
        assert (row.source, row.audio_estimate, row.extra) == (
            stored["_source"], stored.get("_audio_estimate", 0), stored.get("_extra"))
        for field in ("idx", "fingerprint", "credits_estimated", "task_id", "audio_task_id",
                      "credits_video", "credits_audio", "video_url", "file", "bytes", "sha256",
                      "submitted_at", "completed_at", "attempts", "error", "unknown_step",
                      "parent", "credits_prior", "credits_lost", "credits_note"):
            assert getattr(row, field) == want[field], (job_id, field)
        for flag in ("changed", "active", "remote_deleted", "audio_held"):
            assert getattr(row, flag) is bool(want[flag]), (job_id, flag)


def rows_up_to(version: int) -> tuple[dict[str, Any], ...]:
    return tuple(r for rows in ROWS_BY_VERSION[:version] for r in rows)


def test_shipped_migrations_are_never_edited():
    """Append-only: a database that ran a shipped migration never runs its new text."""
    today = store_module._MIGRATIONS
    assert len(today) >= len(HISTORY)
    for (name, sql), (shipped_name, shipped_sql) in zip(today, HISTORY, strict=False):
        assert name == shipped_name
        assert _statements(sql) == _statements(shipped_sql), f"migration {name} was edited"
    names = [n for n, _ in today]
    assert names == sorted(set(names)), "migration names must be unique and in order"


@pytest.mark.parametrize("version", range(1, len(HISTORY) + 1))
def test_a_database_of_every_shipped_schema_upgrades_and_keeps_its_rows(tmp_path, version):
    out = tmp_path / "out"
    path = build_historical(out, version)
    rows = rows_up_to(version)
    insert_rows(path, rows)
    with Store.open(out) as store:
        assert_rows_survived(path, store, rows)
        assert store.committed_credits() == COMMITTED[version - 1]
        listed = [r.job_id for r in store.rows()]
    assert schema_of(path) == fresh_schema(tmp_path)
    assert "old" not in listed  # inactive rows stay out of the active view
    with Store.open(out) as store:  # opening an upgraded database again changes nothing
        assert_rows_survived(path, store, rows)
    assert schema_of(path) == fresh_schema(tmp_path / "again")


@pytest.mark.parametrize("applied", range(1, len(store_module._MIGRATIONS)))
def test_a_database_after_any_prefix_of_todays_migrations_upgrades(tmp_path, monkeypatch,
                                                                   applied):
    """Covers migrations added after this file: run only the first `applied`, then all."""
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(store_module, "_MIGRATIONS", store_module._MIGRATIONS[:applied])
        Store.open(out).close()
    path = _db(out)
    assert len(schema_of(path)["migrations"]) == applied
    insert_rows(path, ROWS_V1)  # 0001's columns exist at every version
    with Store.open(out) as store:
        assert_rows_survived(path, store, ROWS_V1)
        assert store.committed_credits() == COMMITTED[0]
    assert schema_of(path) == fresh_schema(tmp_path)


def newer_database(out: Path) -> Path:
    """A state database from a batchgen that knows one more migration than this one."""
    Store.open(out).close()
    path = _db(out)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ALTER TABLE jobs ADD COLUMN from_the_future TEXT")
    conn.execute("INSERT INTO _migrations(name) VALUES ('9999_from_the_future')")
    conn.close()
    return path


def test_a_database_from_a_newer_batchgen_is_refused_with_a_clear_error(tmp_path):
    out = tmp_path / "out"
    path = newer_database(out)
    before = schema_of(path)
    with pytest.raises(StateError) as err:
        Store.open(out)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert "newer batchgen" in message and "9999_from_the_future" in message
    assert "upgrade batchgen" in message
    assert schema_of(path) == before  # refused untouched
    # the refusal released the run lock and the file: the same process can try again
    # (the Python API lives in long-running processes) and gets the same answer
    with pytest.raises(StateError, match="newer batchgen"):
        Store.open(out)
    with pytest.raises(StateError, match="newer batchgen"):
        Store.open(out, lock=False, create=False)


@pytest.mark.parametrize("command", ["status", "plan", "report"])
def test_commands_on_a_newer_database_say_so_in_one_line_and_exit_2(tmp_path, monkeypatch,
                                                                    capsys, command):
    """`plan` must not price the manifest as if nothing had been spent yet."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\noutput: {dir: out}\n"
        "jobs:\n  - {id: a, image_url: 'https://e.com/a.jpg', prompt: p, resolution: 720p,"
        " video_length: 5, audio_type: 3}\n")
    monkeypatch.chdir(tmp_path)
    newer_database(tmp_path / "out")
    code = main([command, str(manifest)], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "newer batchgen" in lines[0] and "upgrade" in lines[0], err


def test_a_reader_never_migrates_a_database_a_run_may_be_writing(tmp_path):
    """status/report/plan take no lock: an older batchgen's run may hold this file. They
    read a migrated private copy and leave the file's schema as it was; the next run
    (which takes the lock) migrates it."""
    out = tmp_path / "out"
    path = build_historical(out, 1)  # the oldest shipped schema: every migration to apply
    rows = rows_up_to(1)
    insert_rows(path, rows)
    before = schema_of(path)
    assert before != fresh_schema(tmp_path / "fresh")
    raw = raw_rows(path)
    with Store.open(out, lock=False, create=False) as store:
        seen = {r.job_id: r.state for r in store.rows(active_only=False)}
    assert seen == {j: JobState(w["state"]) for j, w in expected_rows(rows).items()}
    assert schema_of(path) == before and raw_rows(path) == raw
    with Store.open(out) as store:  # a run migrates in place
        assert_rows_survived(path, store, rows)
    assert schema_of(path) == fresh_schema(tmp_path / "again")
