"""What one claim of a shared runner takes: pure, over the rows the claim read.

`choose` is the scheduler's order applied to every row of the manifest: add-audio steps
already paid for first, then admissions in manifest order until the first that the
budget (budget.py) does not let through, within the free slots. `Claim` is what a claim
hands back to the scheduler. No SQL, no clock: pgshare.py reads and writes the rows
under the manifest's lock around it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from batchgen import budget
from batchgen.jobs import JobRow, JobState

S = JobState


@dataclass(frozen=True, slots=True)
class Claim:
    """What one `claim` took: the creates to send and the rows as written."""

    sends: tuple[tuple[str, bool], ...]   #: (job id, add-audio step?) in sending order
    rows: Mapping[str, JobRow]            #: the claimed rows and their families' rows
    needs: Mapping[str, int]              #: credits each claimed create reserved
    in_flight: int                        #: slots busy across all runners before it
    committed: int                        #: credits held by all runners after it
    #: the admission at the head of the queue that the budget holds back (or None)
    blocked: tuple[str, int] | None = None
    blocked_jobs: int = 0                 #: admissions held back by the budget
    blocked_need: int = 0                 #: the credits they would need
    claimable: bool = False               #: creates left that a free slot could take
    elsewhere: int = 0                    #: unfinished jobs other runners hold (or nobody)


@dataclass(frozen=True, slots=True)
class Choice:
    """What `choose` took from the queue, and what the budget held back."""

    sends: list[tuple[str, bool]]
    needs: dict[str, int]
    blocked: tuple[str, int] | None
    blocked_jobs: int
    blocked_need: int
    claimable: bool


def choose(every: Sequence[JobRow], slots: int, cap: int | None, committed: int) -> Choice:
    """The runner's order (runner's admissions): add-audio steps already paid for first,
    then admissions in manifest order until the first that does not fit (budget.py)."""
    queue = budget.queue([r for r in every if r.active])
    state = {r.job_id: r.state for r in every}
    ordered = [s for s in queue if not s.admission] + [s for s in queue if s.admission]
    sends: list[tuple[str, bool]] = []
    needs: dict[str, int] = {}
    for k, send in enumerate(ordered):
        if send.admission and not budget.fits(cap, committed, send.need):
            held = [s for s in ordered[k:] if s.admission]
            return Choice(sends, needs, (send.job_id, send.need), len(held),
                         sum(s.need for s in held), False)
        if len(sends) >= slots:
            return Choice(sends, needs, None, 0, 0, True)
        sends.append((send.job_id, state[send.job_id] is S.AUDIO_PENDING))
        needs[send.job_id] = send.need
        committed += max(0, send.need)
    return Choice(sends, needs, None, 0, 0, False)


def audio_of(sends: Sequence[tuple[str, bool]], job_id: str | None) -> bool:
    """Is `job_id`'s claimed create its add-audio step (then its family is not sent)?"""
    return any(j == job_id and audio for j, audio in sends)
