"""The store's streamed reads (issue 18): what a run, `status` and `report` ask of a state
of a million rows without holding its rows — aggregates computed by the database, and
the admission queue a page at a time in manifest order.

`StreamReads` is mixed into `store.Store` (so PgStore has it too); its SQL is the store's
like the rest. The budget's figures here are `budget.held` and `budget.learned_prices`
written as SQL (`HELD_SQL`, `learned_prices`): the tests compare both with the Python rule
row by row, so the two cannot drift apart. Deliberately not here: which rows a run sends
(scheduler/window.py builds the queue from these pages with `budget`'s rule), writes.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen import budget
from batchgen.jobs import JobState
from batchgen.store_schema import HOLDING

if TYPE_CHECKING:
    from batchgen.jobs import JobRow

_P, _F = JobState.PENDING.value, JobState.FAILED.value


def _json(key: str) -> str:
    return f"json_extract(request, '$.{key}')"


#: `row.request.get("add_audio")` is truthy (every JSON falsy value: null, false, 0, "",
#: [], {}) — a tampered row is weighed as Python would weigh it
_AUDIO_ON = (
    "(CASE json_type(request, '$.add_audio') WHEN 'true' THEN 1 "
    f"WHEN 'object' THEN {_json('add_audio')} != '{{}}' "
    "WHEN 'array' THEN json_array_length(request, '$.add_audio') > 0 "
    f"WHEN 'text' THEN {_json('add_audio')} != '' "
    f"WHEN 'integer' THEN {_json('add_audio')} != 0 "
    f"WHEN 'real' THEN {_json('add_audio')} != 0 ELSE 0 END)")
#: `budget.audio_estimate(row)`: the stored `_audio_estimate` when the job has a step
_AUDIO_ESTIMATE = (
    f"(CASE WHEN {_AUDIO_ON} THEN (CASE json_type(request, '$._audio_estimate') "
    f"WHEN 'integer' THEN {_json('_audio_estimate')} WHEN 'true' THEN 1 ELSE 0 END) "
    "ELSE 0 END)")
#: `budget.held(row)` as SQL (SQLite's JSON functions), one value per row
HELD_SQL = (
    f"(credits_prior + credits_lost + CASE WHEN state = '{_P}' THEN 0 ELSE "
    "(CASE WHEN credits_video IS NOT NULL THEN credits_video "
    f"WHEN task_id IS NULL AND state = '{_F}' THEN 0 "
    f"ELSE credits_estimated - {_AUDIO_ESTIMATE} END) + "
    "(CASE WHEN credits_audio IS NOT NULL THEN credits_audio "
    f"WHEN audio_held = 0 OR (state = '{_F}' AND audio_task_id IS NULL) THEN 0 "
    f"ELSE {_AUDIO_ESTIMATE} END) END)")

#: the order of a manifest's rows (`Store.rows`), and an admission's place in it
ORDER = "idx, parent IS NOT NULL, job_id"
#: rows whose next create starts new spending (`budget.is_admission`)
_ADMISSION = (f"active = 1 AND (state = '{_P}' OR (state = "
              f"'{JobState.AUDIO_PENDING.value}' AND audio_held = 0))")
Cursor = tuple[int, int, str]


def cursor_of(row: JobRow) -> Cursor:
    """A row's place in manifest order (what `queue_page` reads after)."""
    return (row.idx, int(row.parent is not None), row.job_id)


def scratch_db() -> tuple[sqlite3.Connection, str]:
    """A private database in a temporary folder (`Store.preview`'s copy): a million rows
    on disk, not in memory; `drop_scratch` removes the folder."""
    folder = tempfile.mkdtemp(prefix="batchgen-preview-")
    try:
        conn = sqlite3.connect(Path(folder) / "state.db", isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error:
        drop_scratch(folder)
        raise
    return conn, folder


def drop_scratch(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


class StreamReads:
    """Reads that stream or aggregate; mixed into `store.Store`."""

    _conn: Any
    #: the temporary folder of a private copy (`Store.preview`), removed on close
    _scratch: str | None = None

    def close(self) -> None:
        """Close (the store's own `close`), then remove a private copy's folder."""
        super().close()  # type: ignore[misc]
        drop_scratch(self._scratch)
        self._scratch = None

    def _sqlite(self) -> bool:
        return isinstance(self._conn, sqlite3.Connection)

    def _parse(self, rows: Iterable[Any]) -> list[JobRow]:
        from batchgen.store import _row
        return [_row(r) for r in rows]

    def committed_total(self) -> int:
        """Credits held by every sent job of this state (`budget.committed` over all its
        rows), summed by the database: no row is parsed."""
        if not self._sqlite():  # PostgreSQL has other JSON functions: a row at a time
            return budget.committed(self.iter_rows(active_only=False))  # type: ignore[attr-defined]
        # every other row holds 0 (HOLDING): the partial index, not a million pending rows
        return int(self._conn.execute(
            f"SELECT COALESCE(SUM({HELD_SQL}), 0) FROM jobs INDEXED BY jobs_holding "
            f"WHERE {HOLDING}").fetchone()[0])

    def learned(self, *, active_only: bool = False) -> dict[budget.PriceKind, int]:
        """`budget.learned_prices` over every row (or the active ones), by the database."""
        if not self._sqlite():
            return budget.learned_prices(
                self.iter_rows(active_only=active_only))  # type: ignore[attr-defined]
        out: dict[budget.PriceKind, int] = {}
        active = " AND active = 1" if active_only else ""
        for res, length, model, price in self._conn.execute(
                f"SELECT {_json('resolution')}, {_json('video_length')}, "
                f"{_json('model_name')}, MAX(credits_video) FROM jobs "
                f"WHERE credits_video IS NOT NULL{active} GROUP BY 1, 2, 3"):
            kind = (res, length, model)
            out[kind] = max(out.get(kind, 0), price)
        return out

    def queue_page(self, after: Cursor | None, limit: int) -> list[JobRow]:
        """Up to `limit` active admissions (pending jobs, repeated add-audio steps not yet
        admitted) after `after` in manifest order: the admission queue, a page at a time."""
        from batchgen.store import _COLUMNS
        hint = " INDEXED BY jobs_order" if self._sqlite() else ""
        where = _ADMISSION
        params: tuple[Any, ...] = ()
        if after is not None:
            # PostgreSQL compares no boolean with a number: the middle key as 0/1 there
            child = ("parent IS NOT NULL" if self._sqlite()
                     else "CASE WHEN parent IS NULL THEN 0 ELSE 1 END")
            where += f" AND (idx, {child}, job_id) > (?, ?, ?)"
            params = after
        return self._parse(self._conn.execute(
            f"SELECT {_COLUMNS} FROM jobs{hint} WHERE {where} ORDER BY {ORDER} LIMIT ?",
            (*params, limit)))

    def parent_states(self, parents: Iterable[str]) -> dict[str, JobState]:
        """The states of these jobs among the active rows."""
        ids = list(dict.fromkeys(parents))
        out: dict[str, JobState] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            out.update((r[0], JobState(r[1])) for r in self._conn.execute(
                f"SELECT job_id, state FROM jobs WHERE active = 1 AND job_id IN "
                f"({', '.join('?' * len(part))})", part))
        return out

    def pending_children(self, parents: Iterable[str]) -> dict[str, list[JobRow]]:
        """The active pending later videos of these `count` jobs, in manifest order."""
        from batchgen.store import _COLUMNS
        ids = list(dict.fromkeys(parents))
        out: dict[str, list[JobRow]] = {}
        # by the parent index: SQLite would otherwise walk every pending row (state index)
        hint = " INDEXED BY jobs_parent" if self._sqlite() else ""
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for row in self._parse(self._conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs{hint} WHERE active = 1 AND state = ? AND parent "
                    f"IN ({', '.join('?' * len(part))}) ORDER BY {ORDER}", (_P, *part))):
                out.setdefault(row.parent or "", []).append(row)
        return out

    def rows_in(self, states: Iterable[JobState], *, where: str = "",
                params: tuple[Any, ...] = ()) -> Iterator[JobRow]:
        """Active rows in these states (and `where`, with its `params`), in manifest
        order, one at a time."""
        from batchgen.store import _COLUMNS
        names = [s.value for s in states]
        extra = f" AND {where}" if where else ""
        cur = self._conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE active = 1 AND state IN "
            f"({', '.join('?' * len(names))}){extra} ORDER BY {ORDER}", (*names, *params))
        from batchgen.store import _row
        for r in cur:
            yield _row(r)

    def rows_with_extra(self) -> Iterator[JobRow]:
        """The active rows that may carry the user's own columns (`JobRow.extra`), in
        manifest order: those whose stored request mentions them (a superset)."""
        return self.rows_in(JobState, where="request LIKE ?", params=("%_extra%",))

    def ids_in(self, states: Iterable[JobState]) -> list[str]:
        """The ids of the active rows in these states, in manifest order (no row parsed)."""
        names = [s.value for s in states]
        return [r[0] for r in self._conn.execute(
            f"SELECT job_id FROM jobs WHERE active = 1 AND state IN "
            f"({', '.join('?' * len(names))}) ORDER BY {ORDER}", names)]

    def counts(self) -> dict[str, int]:
        """Active rows per state, and how many have a task id (`submitted`)."""
        out: dict[str, int] = {s.value: 0 for s in JobState}
        if not self._sqlite():
            submitted = 0
            for state, n, tasks in self._conn.execute(
                    "SELECT state, COUNT(*), COUNT(task_id) FROM jobs WHERE active = 1 "
                    "GROUP BY state"):
                out[state] = int(n)
                submitted += int(tasks)
            out["submitted"] = submitted
            return out
        # every row by the state index alone, less the inactive ones, and the rows with a
        # task id: three index reads instead of a million rows
        for state, n in self._conn.execute("SELECT state, COUNT(*) FROM jobs INDEXED BY "
                                           "jobs_state GROUP BY state"):
            out[state] = int(n)
        for state, n in self._conn.execute("SELECT state, COUNT(*) FROM jobs INDEXED BY "
                                           "jobs_inactive WHERE active != 1 GROUP BY state"):
            out[state] -= int(n)
        out["submitted"] = int(self._conn.execute(
            "SELECT COUNT(*) FROM jobs INDEXED BY jobs_tasked WHERE task_id IS NOT NULL "
            "AND active = 1").fetchone()[0])
        return out

    def files(self) -> Iterator[tuple[str, str]]:
        """(file, job id) of every row with a recorded file, active or not."""
        yield from self._conn.execute("SELECT file, job_id FROM jobs WHERE file IS NOT NULL")

    def downloaded_files(self) -> Iterator[tuple[str, str]]:
        """(file, sha256) of every active job downloaded (report.html's posters)."""
        yield from self._conn.execute(
            f"SELECT file, sha256 FROM jobs WHERE active = 1 AND state = ? AND file IS NOT "
            f"NULL AND file != '' AND sha256 IS NOT NULL AND sha256 != '' ORDER BY {ORDER}",
            (JobState.COMPLETED.value,))

    def naming_fields(self) -> Iterator[tuple[str, int, Any, Any]]:
        """(job id, index, resolution, length) of the active rows without a file, in no
        particular order: what names their file, for a million rows without parsing them."""
        if not self._sqlite():
            for r in self.iter_rows():  # type: ignore[attr-defined]
                if not r.file:
                    yield (r.job_id, r.idx, r.request.get("resolution"),
                           r.request.get("video_length"))
            return
        yield from self._conn.execute(
            f"SELECT job_id, idx, {_json('resolution')}, {_json('video_length')} FROM "
            "jobs WHERE active = 1 AND (file IS NULL OR file = '')")

    def plan_fields(self) -> Iterator[tuple[str, int, str | None, str, int, int | None,
                                            int | None, int]]:
        """(job id, idx, parent, state, credits_estimated, credits_video, credits_audio,
        credits_prior) of the active rows, in no order: what `plan` counts, no request
        parsed (plan_state.py)."""
        yield from self._conn.execute(
            "SELECT job_id, idx, parent, state, credits_estimated, credits_video, "
            "credits_audio, credits_prior FROM jobs WHERE active = 1")

    def meta_value(self, key: str) -> str | None:
        r = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if r is None else str(r[0])

    def set_meta_value(self, key: str, value: str) -> None:
        """Remember a derived fact (not durable: losing it costs one more check)."""
        with self._tx():  # type: ignore[attr-defined]
            self._conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                               (key, value))
