"""The state database's schema: its migrations, and the check that refuses a damaged row.

Owns `MIGRATIONS`, an append-only list of named SQL scripts (a shipped one is never
edited: tests/test_migrations.py), and `damaged_row_query`, the one SQL pass that names
a tampered row before anything reads it or pays. Applying the migrations is `Store`'s
(store.py), which reads them as `store._MIGRATIONS`; PostgreSQL's own additions are in
pgstore.py.
"""

from __future__ import annotations

from batchgen.jobs import JobState
from batchgen.store_rows import COLUMNS as _COLUMNS

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("0001_jobs", f"""
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
        -- {_COLUMNS}
    """),
    # videos 2..N of a `count` job: rows of their own that follow their parent's one create
    ("0002_parent", """
        ALTER TABLE jobs ADD COLUMN parent TEXT;
        CREATE INDEX jobs_parent ON jobs(parent)
    """),
    # charges of tasks a job abandoned (--retry-failed): spent money the budget must keep
    ("0003_credits_prior", """
        ALTER TABLE jobs ADD COLUMN credits_prior INTEGER NOT NULL DEFAULT 0
    """),
    # the budget keeps lost creates that were sent again, and knows whether a repeated
    # add-audio step was admitted; an unusable charge from the API is recorded as said
    ("0004_budget_holds", """
        ALTER TABLE jobs ADD COLUMN credits_lost INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN audio_held INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE jobs ADD COLUMN credits_note TEXT
    """),
    # report.html: when a task finished at the API (timeline, 7-day URL expiry), and the
    # tasks --retry-failed abandoned, with what they cost and why (the money audit)
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
    # the runner reads its admission queue a page at a time in manifest order (issue 18)
    ("0006_manifest_order", """
        CREATE INDEX jobs_order ON jobs(idx, (parent IS NOT NULL), job_id)
    """),
)


def damaged_row_query(have: set[str]) -> str:
    """SELECT (job_id, problem) of the first damaged row, checking the columns in `have`.

    One SQL pass (no Python per row), so it costs little even for 100,000 jobs; a column
    an older schema lacks is not checked.
    """
    states = ", ".join(f"'{s.value}'" for s in JobState)
    ints = ("idx", "attempts", "credits_prior")
    opt_ints = ("credits_video", "credits_audio", "bytes")
    opt_texts = ("task_id", "audio_task_id", "video_url", "file", "sha256",
                 "submitted_at", "completed_at", "error", "unknown_step", "parent")
    cases = [f"WHEN state NOT IN ({states}) THEN 'unknown state ' || quote(state)",
             "WHEN typeof(credits_estimated) != 'integer' OR credits_estimated < 0 "
             "THEN 'credits_estimated is ' || quote(credits_estimated)",
             "WHEN typeof(fingerprint) != 'text' THEN 'fingerprint is not text'",
             "WHEN NOT json_valid(request) OR json_type(request) != 'object' "
             "THEN 'request is not a JSON object'"]
    cases += [f"WHEN typeof({c}) != 'integer' OR {c} < 0 THEN '{c} is ' || quote({c})"
              for c in ints if c in have]
    cases += [f"WHEN {c} IS NOT NULL AND (typeof({c}) != 'integer' OR {c} < 0) "
              f"THEN '{c} is ' || quote({c})" for c in opt_ints if c in have]
    cases += [f"WHEN {c} IS NOT NULL AND typeof({c}) != 'text' "
              f"THEN '{c} is not text'" for c in opt_texts if c in have]
    return (f"SELECT job_id, problem FROM (SELECT job_id, CASE "
            f"WHEN typeof(job_id) != 'text' THEN 'job_id is not text' {' '.join(cases)} "
            "END AS problem FROM jobs) WHERE problem IS NOT NULL LIMIT 1")
