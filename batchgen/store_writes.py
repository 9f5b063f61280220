"""How the state changes: the run's one write path, and the repairs between runs.

`StoreWrites` is the layer of `store.Store` above the reads (store.py draws the layers).
`apply_many` is the one write path of a run: each new row is
`transitions.advance(row, event)`, and exactly the columns that changed are written; the
journal's `sent` mark says a create's bytes may have left. Between runs, `recover` settles
creates whose answer was lost and `reopen` makes unknown or failed jobs eligible again as
`budget.reopened` decides, keeping the tasks it abandons for the money audit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from batchgen import budget
from batchgen.errors import ClaimLost
from batchgen.jobs import JobRow, JobState
from batchgen.store_records import StoreRecords
from batchgen.store_rows import COLUMNS, HIDDEN, encode, row_from
from batchgen.transitions import Accepted, Claimed, Event, Unsent, advance, changed_columns


class StoreWrites(StoreRecords):
    """Transitions written to the state, and what reopens and recovery change."""

    # -- transitions -------------------------------------------------------------------

    def apply(self, row: JobRow, event: Event, *, durable: bool = False) -> JobRow:
        """Apply one transition to `row` (see `apply_many`) and return the row written."""
        return self.apply_many([(row, event)], durable=durable)[-1]

    def apply_many(self, steps: Sequence[tuple[JobRow, Event]], *,
                   durable: bool = False, sent: Sequence[str] = ()) -> list[JobRow]:
        """The one write path of the run: apply transitions, in one transaction.

        Each new row is `transitions.advance(row, event)` (an illegal event raises
        `IllegalTransition` before anything is written); events for one job chain in order.
        Exactly the columns that changed are written, and the rows returned (one per step)
        are the values written, so the caller's in-memory view is the store's. `durable`
        fsyncs at commit: the records that guard money (a claim, an accepted create,
        a hold, an undone create) use it. A claim also clears the job's `sent` mark (the
        journal's "the request has left", not part of the row); the jobs in `sent` get it,
        in the same transaction (scheduler/journal.py: one fsync for a tick's creates).
        """
        first: dict[str, JobRow] = {}
        latest: dict[str, JobRow] = {}
        claimed: set[str] = set()
        out: list[JobRow] = []
        unwritten: list[str] = []
        for row, event in steps:
            current = latest.get(row.job_id, row)
            first.setdefault(row.job_id, current)
            latest[row.job_id] = new = advance(current, event)
            if isinstance(event, Claimed):
                claimed.add(row.job_id)
            out.append(new)
        with self._tx(durable=durable):
            for job_id, new in latest.items():
                cols = changed_columns(first[job_id], new)
                if cols.keys() & {"request", *HIDDEN.values()}:
                    for name in ("request", *HIDDEN.values()):
                        cols.pop(name, None)
                    cols["request"] = encode(new)
                if job_id in claimed:
                    cols["sent"] = 0
                if cols and (problem := self._write_row(job_id, cols)) is not None:
                    unwritten.append(problem)
            refused = [j for j in sent if not self._write_sent(j)]
        if unwritten or refused:
            # what could be written is committed (a task id is never lost); no create
            # whose mark was refused may leave, and every paid task id not recorded is told
            raise ClaimLost("; ".join(dict.fromkeys(unwritten)) if unwritten
                            else str(self._lost()))
        return out

    def _write_row(self, job_id: str, cols: Mapping[str, Any]) -> str | None:
        """Write one row's changed columns; None, or why the write was refused (the shared
        PostgreSQL store fences it on the runner's claim: `pgshare.SharedPgStore`)."""
        names = ", ".join(f"{k}=?" for k in cols)
        self._conn.execute(f"UPDATE jobs SET {names} WHERE job_id=?", (*cols.values(), job_id))
        return None

    def _write_sent(self, job_id: str, sent: bool = True) -> bool:
        """The journal's "sent" mark; False when refused (the shared PostgreSQL store
        fences it on the runner's claim: then the create must not leave)."""
        self._conn.execute("UPDATE jobs SET sent=? WHERE job_id=?", (int(sent), job_id))
        return True

    def _lost(self) -> ClaimLost:
        return ClaimLost(f"{self.path}: this run no longer holds the jobs it meant to send; "
                         "it sends nothing more — run again")

    def begin_submit(self, job_ids: Iterable[str], now: str, *, audio: bool = False) -> None:
        """Journal creates about to be sent (durably): the evidence against paying twice."""
        self.apply_many([(self.get(j), Claimed(now, audio)) for j in job_ids], durable=True)

    def mark_sent(self, job_id: str, sent: bool = True) -> None:
        """A journaled create is about to leave: from now on it may exist (durably).

        ``sent=False`` undoes it when the API refused that attempt (nothing was made) and
        the create waits to try again: a crash during the wait must not leave an unknown.
        """
        with self._tx(durable=True):
            written = self._write_sent(job_id, sent)
        if not written:
            raise self._lost()

    def mark_accepted(self, job_id: str, task_id: str, credits: int | None, *,
                      audio: bool = False) -> None:
        """The API accepted a create: record its task id and charge at once (durably)."""
        self.apply(self.get(job_id), Accepted(task_id, credits, audio), durable=True)

    def mark_unsent(self, job_id: str, *, audio: bool = False) -> None:
        """A create that provably made no task (refused before or by the API): undo."""
        self.apply(self.get(job_id), Unsent(audio), durable=True)

    def update(self, changes: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Write column values as given, in one transaction: [(job_id, {column: value})].

        No transition is checked: for tests and repairs that set up a state directly.
        The run writes through `apply`.
        """
        allowed = {"state", "video_url", "file", "bytes", "sha256", "completed_at", "error",
                   "credits_video", "credits_audio", "unknown_step", "remote_deleted",
                   "credits_note", "finished_at"}
        with self._tx():
            for job_id, cols in changes:
                bad = cols.keys() - allowed
                if bad:
                    raise ValueError(f"not updatable: {sorted(bad)}")
                names = ", ".join(f"{k}=?" for k in cols)
                self._conn.execute(f"UPDATE jobs SET {names} WHERE job_id=?",
                                   (*cols.values(), job_id))

    # -- between runs ------------------------------------------------------------------

    def recover(self) -> int:
        """After a crash, settle creates that were journaled but never answered.

        One whose request never left (no `sent` mark: the process died before a connection
        was in hand) provably made nothing and goes back to its queue. One that was sent
        becomes `unknown`. Returns how many became unknown.
        """
        with self._tx(durable=True):
            self._conn.execute("UPDATE jobs SET state=? WHERE state=? AND sent=0",
                               (JobState.PENDING, JobState.SUBMITTING))
            self._conn.execute("UPDATE jobs SET state=? WHERE state=? AND sent=0",
                               (JobState.AUDIO_PENDING, JobState.AUDIO_SUBMITTING))
            cur = self._conn.execute(
                "UPDATE jobs SET unknown_step = CASE state WHEN ? THEN 'add_audio' ELSE 'video' "
                "END, state = ?, error = 'the create request was sent but its answer was lost "
                "(the run stopped); re-run with --resubmit-unknown to send it again' "
                "WHERE state IN (?, ?)",
                (JobState.AUDIO_SUBMITTING, JobState.UNKNOWN, JobState.SUBMITTING,
                 JobState.AUDIO_SUBMITTING))
            self._conn.execute(  # by the parent index, not every pending row
                f"UPDATE jobs{self._hint('jobs_parent')} SET state=?, unknown_step='video', "
                "error='made by the lost create of ' || parent WHERE state=? AND parent IN "
                "(SELECT job_id FROM jobs WHERE state=? AND unknown_step='video')",
                (JobState.UNKNOWN, JobState.PENDING, JobState.UNKNOWN))
        return cur.rowcount

    def reopen(self, *, unknown: bool, failed: bool) -> int:
        """Make unknown and/or failed jobs eligible again (--resubmit-unknown/--retry-failed).

        What is repeated, and what stays held against the budget, is `budget.reopened`'s
        decision (plan asks the same function); this only writes it, durably, in one
        transaction. Returns how many jobs were reopened.
        """
        states = ([JobState.UNKNOWN] if unknown else []) + ([JobState.FAILED] if failed else [])
        if not states:
            return 0
        marks = ", ".join("?" * len(states))
        n = 0
        with self._tx(durable=True):
            rows = [row_from(r) for r in self._conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE state IN ({marks}) AND active=1 "
                "AND changed=0", states)]
            for row in rows:
                changes = budget.reopened(row, unknown=unknown, failed=failed)
                if changes is None:
                    continue
                self._record_abandoned(row, changes)
                names = ", ".join(f"{k}=?" for k in changes)
                self._conn.execute(f"UPDATE jobs SET {names} WHERE job_id=?",
                                   (*changes.values(), row.job_id))
                n += 1
        return n

    def _record_abandoned(self, row: JobRow, changes: dict[str, Any]) -> None:
        """Keep the tasks a reopen abandons: their ids, charges and the error that ended them.

        Kept: each task the reopen drops (its id is cleared) that exists — it has an id or
        a charge — and an unknown create of the step repeated, which may have been charged.
        The job's row forgets them; the report's money audit lists them.
        """
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        unknown = row.state is JobState.UNKNOWN
        steps = (("video", "task_id", row.task_id, row.credits_video),
                 ("add_audio", "audio_task_id", row.audio_task_id, row.credits_audio))
        for step, column, task_id, credits in steps:
            if column not in changes or (changes[column] == task_id and task_id is not None):
                continue  # this step's task is kept
            lost = unknown and (row.unknown_step or "video") == step
            if task_id is None and credits is None and not lost:
                continue
            self._conn.execute(
                "INSERT INTO abandoned_tasks (job_id, step, task_id, credits, error, "
                "submitted_at, finished_at, abandoned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row.job_id, step, task_id, credits, row.error, row.submitted_at,
                 row.finished_at, now))
