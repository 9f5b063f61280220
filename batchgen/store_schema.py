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

#: a row some sync or reopen marked (the store_records `_synced` and `Store.sync` queries
#: name this term as it is, so SQLite can use the partial index `jobs_marked`)
MARKED = ("(changed = 1 OR new_fingerprint IS NOT NULL OR error IS NOT NULL "
          "OR unknown_step IS NOT NULL)")
#: a row that may hold credits (`budget.held` is 0 for every other row: a pending job
#: with no prior or lost charge), for `committed_total` and the partial index `jobs_holding`
HOLDING = f"(state != '{JobState.PENDING.value}' OR credits_prior != 0 OR credits_lost != 0)"

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
    # a run's start-up over a million rows reads only the rows that matter (issue 18):
    # rows waiting for the manifest (sync), holding credits (the budget's sum), charged
    # (prices learnt), with a task id or inactive (counts); each a partial index
    ("0007_startup_reads", f"""
        CREATE INDEX jobs_marked ON jobs(state) WHERE {MARKED};
        CREATE INDEX jobs_holding ON jobs(state) WHERE {HOLDING};
        CREATE INDEX jobs_charged ON jobs(credits_video) WHERE credits_video IS NOT NULL;
        CREATE INDEX jobs_tasked ON jobs(state) WHERE task_id IS NOT NULL;
        CREATE INDEX jobs_inactive ON jobs(state) WHERE active != 1
    """),
)


def _damages(have: set[str], row: str = "") -> list[tuple[str, str]]:
    """(condition, what is wrong) of each way a job row can be damaged, over the columns
    in `have` (a column an older schema lacks is not checked); `row` prefixes the
    columns (``NEW.`` in a trigger)."""
    states = ", ".join(f"'{s.value}'" for s in JobState)
    ints = ("idx", "attempts", "credits_prior")
    opt_ints = ("credits_video", "credits_audio", "bytes")
    opt_texts = ("task_id", "audio_task_id", "video_url", "file", "sha256",
                 "submitted_at", "completed_at", "error", "unknown_step", "parent")
    r = row
    out = [(f"typeof({r}job_id) != 'text'", "'job_id is not text'"),
           (f"{r}state NOT IN ({states})", f"'unknown state ' || quote({r}state)"),
           (f"typeof({r}credits_estimated) != 'integer' OR {r}credits_estimated < 0",
            f"'credits_estimated is ' || quote({r}credits_estimated)"),
           (f"typeof({r}fingerprint) != 'text'", "'fingerprint is not text'"),
           (f"NOT json_valid({r}request) OR json_type({r}request) != 'object'",
            "'request is not a JSON object'")]
    out += [(f"typeof({r}{c}) != 'integer' OR {r}{c} < 0", f"'{c} is ' || quote({r}{c})")
            for c in ints if c in have]
    out += [(f"{r}{c} IS NOT NULL AND (typeof({r}{c}) != 'integer' OR {r}{c} < 0)",
             f"'{c} is ' || quote({r}{c})") for c in opt_ints if c in have]
    out += [(f"{r}{c} IS NOT NULL AND typeof({r}{c}) != 'text'", f"'{c} is not text'")
            for c in opt_texts if c in have]
    return out


def damaged_row_query(have: set[str]) -> str:
    """SELECT (job_id, problem) of the first damaged row, checking the columns in `have`.

    One SQL pass (no Python per row); on a guarded state (`guard_triggers`) it is needed
    only where the guard was missing, altered or paused.
    """
    cases = " ".join(f"WHEN {cond} THEN {what}" for cond, what in _damages(have))
    return (f"SELECT job_id, problem FROM (SELECT job_id, CASE {cases} "
            "END AS problem FROM jobs) WHERE problem IS NOT NULL LIMIT 1")


#: the meta key that pauses the guard inside one of batchgen's own transactions (a sync
#: writing the manifest's rows); never committed: a state where it is found is checked
GUARD_PAUSED = "guard_paused"


def guard_triggers(have: set[str]) -> dict[str, str]:
    """The row guard: triggers refusing an INSERT or UPDATE that would leave a damaged
    job row (each `_damages` condition on the new row), by batchgen or any other
    writer. With it in place, every row was checked when written, so opening a state
    need not read a million rows again (`StoreConnection._check_rows`)."""
    bad = " OR ".join(f"({cond})" for cond, _ in _damages(have, "NEW."))
    paused = f"NOT EXISTS (SELECT 1 FROM meta WHERE key = '{GUARD_PAUSED}')"
    refuse = ("BEGIN SELECT RAISE(ABORT, 'batchgen: this would damage a job row "
              "(the state refuses it: README, The output dir is not trusted)'); END")
    return {f"jobs_guard_{op.lower()}": f"CREATE TRIGGER jobs_guard_{op.lower()} BEFORE {op} "
            f"ON jobs WHEN {paused} AND ({bad}) {refuse}" for op in ("INSERT", "UPDATE")}
