"""The run's money in memory (`Ledger`): what each job holds against the budget, the total,
whether the admission queue waits for room, and the prices the API really charged.

Pure (no clock, network or disk); the budget rule itself is budget.py's. Held by the
run's `RunState` (state.py) and read by the submitter's admissions (admit.py).
"""

from __future__ import annotations

from batchgen import budget
from batchgen.jobs import JobRow


class Ledger:
    """The run's money in memory: the credits each job holds against the budget (all runs
    of this output dir), their total, and the prices the API really charged.

    The rule itself is budget.py's; this only keeps the figures it is applied to, so that
    a claim can weigh them without reading the store.
    """

    def __init__(self) -> None:
        #: job -> credits it holds (`JobRow.committed_credits`), for the jobs the run holds
        #: in memory (scheduler/rows.py); `total` counts every job of the state
        self.held: dict[str, int] = {}
        self.total = 0
        #: the head of the admission queue does not fit: admissions wait until room frees
        self.stalled = False
        #: what the API really charged for a video of each kind (resolution, length, ...)
        self.learned: dict[budget.PriceKind, int] = {}
        #: a charge from the API could not be used (told once per run)
        self.bad_charge_noticed = False

    def know(self, job_id: str, credits: int) -> None:
        """The run sees a job for the first time: what it holds is already in `total`
        (the store's sum it started from), so only remember it."""
        self.held.setdefault(job_id, credits)

    def forget(self, job_id: str) -> None:
        """The job left the run's memory holding what its stored row holds."""
        self.held.pop(job_id, None)

    def hold(self, job_id: str, credits: int) -> bool:
        """Record what a job holds now; True when that freed room a stalled queue waits for
        (the API charged less than estimated, or a create made nothing)."""
        before = self.held.get(job_id, 0)
        self.held[job_id] = credits
        self.total += credits - before
        if credits < before and self.stalled:
            self.stalled = False
            return True
        return False

    def learn(self, row: JobRow, credits: int | None) -> None:
        """Keep the highest price the API charged for a video of this kind."""
        if credits is not None:
            kind = budget.price_kind(row)
            self.learned[kind] = max(self.learned.get(kind, 0), credits)
