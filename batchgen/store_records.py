"""What the state reads back (rows, credits), and the side records a run keeps in it.

`StoreRecords` is the layer of `store.Store` above the connection (store.py draws the
layers): job rows in manifest order (all at once, or one at a time from the cursor), one
row, the committed credits (budget.py's rule over every sent row), the tasks a reopen
abandoned (the money audit), and two records kept in the `meta` table beside the jobs:
the run history behind summary.json and the pre-flight verdicts (preflight.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from batchgen import budget
from batchgen.jobs import JobRow, JobState
from batchgen.store_conn import StoreConnection
from batchgen.store_rows import COLUMNS, row_from
from batchgen.store_schema import MARKED
from batchgen.store_sync import SYNC_KEY


class StoreRecords(StoreConnection):
    """Rows, credits and records read from the state (and the records' own writes)."""

    # -- reads -------------------------------------------------------------------------

    def abandoned(self) -> list[dict[str, Any]]:
        """Tasks that --retry-failed/--resubmit-unknown abandoned, oldest first (the audit)."""
        cur = self._conn.execute(
            "SELECT job_id, step, task_id, credits, error, submitted_at, finished_at, "
            "abandoned_at FROM abandoned_tasks ORDER BY rowid")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    def rows(self, *, active_only: bool = True) -> list[JobRow]:
        """Every job row in manifest order."""
        where = "WHERE active = 1 " if active_only else ""
        return [row_from(r) for r in self._conn.execute(
            f"SELECT {COLUMNS} FROM jobs {where}ORDER BY idx, parent IS NOT NULL, job_id")]

    def iter_rows(self, *, active_only: bool = True) -> Iterator[JobRow]:
        """`rows()`, one at a time from the cursor (status over a million rows)."""
        where = "WHERE active = 1 " if active_only else ""
        for r in self._conn.execute(
                f"SELECT {COLUMNS} FROM jobs {where}ORDER BY idx, parent IS NOT NULL, job_id"):
            yield row_from(r)

    def get(self, job_id: str) -> JobRow:
        """One job row (KeyError when absent)."""
        r = self._conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if r is None:
            raise KeyError(job_id)
        return row_from(r)

    def holders(self) -> dict[str, str]:
        """Which runner holds each unfinished job ("host:pid"): none here, where one run
        holds the whole output dir (the shared PostgreSQL state has several)."""
        return {}

    def runners(self) -> list[dict[str, Any]]:
        """The runners sharing this state, with their leases: none here (see `holders`)."""
        return []

    def committed_credits(self) -> int:
        """Credits held by every sent job of this output dir, across all runs (the budget)."""
        return budget.committed(self.rows(active_only=False))

    def rows_and_committed(self) -> tuple[list[JobRow], int]:
        """`rows()` and `committed_credits()` from one scan (a row costs a JSON parse)."""
        every = self.rows(active_only=False)
        return [r for r in every if r.active], budget.committed(every)

    def _synced(self, key: str) -> bool:
        """True when the last sync stored `key` and left nothing for a new one to do.

        A sync of the same jobs would still write a pending row flagged or marked since
        (reopened with an old request, an error or a lost step) and a refused job whose
        entry changed: any such row makes the sync run in full.
        """
        stored = self._conn.execute("SELECT value FROM meta WHERE key = ?",
                                    (SYNC_KEY,)).fetchone()
        if stored is None or stored[0] != key:
            return False
        # only marked rows can wait (MARKED: the partial index, not a million pending rows)
        waiting = self._conn.execute(
            f"SELECT 1 FROM jobs{self._hint('jobs_marked')} WHERE {MARKED} AND active=1 AND "
            "((state=? AND (changed=1 OR new_fingerprint IS NOT NULL OR error IS NOT NULL "
            "OR unknown_step IS NOT NULL)) OR (state=? AND changed=1)) LIMIT 1",
            (JobState.PENDING, JobState.FAILED)).fetchone()
        return waiting is None

    def _changed_ids(self) -> tuple[str, ...]:
        """The active jobs flagged `changed` (edited in the manifest after they were sent),
        in manifest order."""
        return tuple(r[0] for r in self._conn.execute(
            f"SELECT job_id FROM jobs{self._hint('jobs_marked')} WHERE {MARKED} AND "
            "active=1 AND parent IS NULL AND changed=1 ORDER BY idx"))

    # -- run history (for summary.json) --------------------------------------------------

    def run_history(self) -> dict[str, Any]:
        """What earlier runs recorded: `last` (the latest run's figures) and `all` (sums).

        Kept so that summary.json, rewritten by a no-op re-run or `batchgen report`, never
        loses the budget, wall time or requests of the runs before it.
        """
        r = self._conn.execute("SELECT value FROM meta WHERE key='run_history'").fetchone()
        try:
            history = json.loads(r[0]) if r else {}
        except ValueError:
            history = {}
        return history if isinstance(history, dict) else {}

    def record_run(self, *, wall_seconds: float, requests: Mapping[str, int],
                   budget: int | None, finished_at: str) -> dict[str, Any]:
        """Add one run's figures to the history (one transaction); return the new history."""
        with self._tx():
            before = _as_mapping(self.run_history().get("all"))
            total = {k: v for k, v in _as_mapping(before.get("requests")).items()
                     if isinstance(v, int)}
            for name, n in requests.items():
                total[name] = total.get(name, 0) + int(n)
            runs = before.get("runs")
            wall = before.get("wall_seconds")
            history = {
                "last": {"wall_seconds": round(wall_seconds, 3),
                         "requests": dict(sorted(requests.items())), "budget": budget,
                         "finished_at": finished_at},
                "all": {"runs": (runs if isinstance(runs, int) else 0) + 1,
                        "wall_seconds": round((wall if isinstance(wall, int | float) else 0)
                                              + wall_seconds, 3),
                        "requests": dict(sorted(total.items())),
                        "requests_total": sum(total.values())},
            }
            # the standard upsert (SQLite >= 3.24): the same statement serves PostgreSQL
            self._conn.execute("INSERT INTO meta(key, value) VALUES ('run_history', ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                               (json.dumps(history),))
        return history

    # -- pre-flight verdicts (preflight.py), kept beside the run history ------------------

    def asset_check(self, key: str) -> str | None:
        """One remembered verdict (``url:...``/``host:...``), by the meta table's key."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?",
                                 ("asset:" + key,)).fetchone()
        return None if row is None else str(row[0])

    def record_asset_check(self, key: str, value: str) -> None:
        """Remember one verdict (not durable: losing it costs one more check, no money)."""
        with self._tx():
            self._conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                               ("asset:" + key, value))


def _as_mapping(value: object) -> Mapping[str, Any]:
    """`value` when it is a mapping (state written by an older or broken run may not be)."""
    return value if isinstance(value, Mapping) else {}
