"""The rows a run holds in memory (`Rows`): only the jobs in play (issue 18).

A run of a million jobs keeps the admissions due soon (scheduler/window.py), the creates
on the wire and the tasks in flight; a job that reaches an end (completed, failed,
unknown), or whose video waits for its download (`ready`: the download queue holds its
id), leaves memory once it is written. A job asked for that is not
held is read from the store, which has every row as last written (the one write path:
`RunState.apply`), so nothing is lost by leaving.

The ledger (ledger.py) is told the credits a job holds the first time the run sees it
(what the store's total, from which the run's total starts, already counts) and forgets
it when the job leaves — but only once it holds what the store says: a reservation the
run still keeps beyond the stored row (say, an add-audio step of a failed video, freed
only by the next run's count) stays in the ledger. Deliberately not here: the writes
(state.py), the budget rule (budget.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from batchgen.jobs import JobRow, JobState
from batchgen.scheduler.ledger import Ledger

if TYPE_CHECKING:
    from batchgen.store import Store

#: a job in one of these states has nothing more to do in this run
ENDED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.UNKNOWN})
#: ...and one in these is not kept either: a video waiting for its download is a job id
#: in the download queue (read again when a worker takes it), however long the queue
AWAY = ENDED | {JobState.READY}


class Rows:
    """job id -> its row as last written, for the jobs in play; others from the store."""

    def __init__(self, store: Store, ledger: Ledger, *, retire: bool) -> None:
        self._store = store
        self._ledger = ledger
        self._rows: dict[str, JobRow] = {}
        #: jobs that reached an end leave memory (False with a shared state, whose claims
        #: and adoption rebuild the view: every row stays, as before)
        self._retire = retire
        #: ended jobs whose ledger entry waits to equal what their stored row holds
        self._leaving: dict[str, int] = {}

    def __getitem__(self, job_id: str) -> JobRow:
        row = self._rows.get(job_id)
        if row is None:
            row = self._store.get(job_id)  # KeyError when the store has no such job
            self._ledger.know(job_id, row.committed_credits)
            if not (self._retire and row.state in AWAY):
                self._rows[job_id] = row
        return row

    def __setitem__(self, job_id: str, row: JobRow) -> None:
        if job_id not in self._rows:
            self._ledger.know(job_id, row.committed_credits)
        self._rows[job_id] = row

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def keys(self) -> Iterator[str]:
        return iter(self._rows)

    def values(self) -> Iterator[JobRow]:
        return iter(list(self._rows.values()))

    def written(self, rows: list[JobRow]) -> None:
        """Rows the store just wrote: kept, or, for a job that ended, let go."""
        for row in rows:
            self[row.job_id] = row
        if not self._retire:
            return
        for row in {r.job_id: r for r in rows}.values():  # each job's last row
            if row.state in AWAY:
                del self._rows[row.job_id]
                self._leaving[row.job_id] = row.committed_credits
                self.settled(row.job_id)

    def settled(self, job_id: str) -> None:
        """The ledger changed what `job_id` holds: an ended job whose entry now equals its
        stored row's is forgotten (the store's total counts it)."""
        stored = self._leaving.get(job_id)
        if stored is not None and self._ledger.held.get(job_id) == stored:
            del self._leaving[job_id]
            self._ledger.forget(job_id)
