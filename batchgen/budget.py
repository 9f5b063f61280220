"""The one budget rule: what a job holds, what a send needs, and which sends fit.

SPEC §5: a create goes out only if the credits of everything already sent from this output
dir (all runs; the API's `deduction_credit` where known, the estimate otherwise) plus what
the create needs stay within `max_credits`. This module is the only place that says so;
`plan`, `run`, `status` and the store all ask it.

**The rule.** Creates that start new spending ("admissions": a job's video, or an
add-audio step repeated by `--retry-failed`/`--resubmit-unknown`) are considered in
manifest order. Each goes out while ``committed + need <= max_credits``; the first one that
does not fit stops submissions, and every admission after it waits too, even a cheaper
one. A run therefore spends on a prefix of the queue, which is exactly what `plan` counts
in `jobs_within_budget`, and which jobs got made never depends on timing. When the API
charges less than estimated, or a create is refused, room frees and the queue goes on in
the same order.

A job's add-audio step is reserved together with its video (the job was admitted whole),
so the step that follows a finished video needs nothing more; a repeated step was not
reserved and is an admission like any other.

**What a job holds** (`held`): what the API charged for its tasks (including abandoned
ones), the estimate of every create that was sent but whose charge is unknown (including
lost answers that were then sent again: the first may have been charged too), and the
estimate of its add-audio step while that is reserved.

**Numbers from the API are data** (`charge`, budget_charge.py): a `deduction_credit` that
is negative, zero for a paid item, fractional, not finite, not a number or absurdly large
is not used; the estimate stays held and the caller records what the API said.

Pure: plain values in, plain values out; no clock, network or disk. Deliberately not
here: prices (pricing.py), SQL (store.py), scheduling (runner.py), printing (batchgen/cli/).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from batchgen.budget_charge import MAX_TASK_CREDITS as MAX_TASK_CREDITS
from batchgen.budget_charge import Charge as Charge
from batchgen.budget_charge import charge as charge
from batchgen.jobs import JobState


class Row(Protocol):
    """The fields of a state row the rule reads (`store.JobRow` has them all)."""

    @property
    def job_id(self) -> str: ...
    @property
    def parent(self) -> str | None: ...
    @property
    def state(self) -> JobState: ...
    @property
    def request(self) -> Mapping[str, Any]: ...
    @property
    def credits_estimated(self) -> int: ...
    @property
    def task_id(self) -> str | None: ...
    @property
    def audio_task_id(self) -> str | None: ...
    @property
    def credits_video(self) -> int | None: ...
    @property
    def credits_audio(self) -> int | None: ...
    @property
    def credits_prior(self) -> int: ...
    @property
    def credits_lost(self) -> int: ...
    @property
    def audio_held(self) -> bool: ...
    @property
    def unknown_step(self) -> str | None: ...
    @property
    def video_url(self) -> str | None: ...
    @property
    def active(self) -> bool: ...
    @property
    def changed(self) -> bool: ...
    @property
    def audio_estimate(self) -> int: ...


# -- what a job holds ---------------------------------------------------------------------


def audio_estimate(row: Row) -> int:
    """Estimated credits of the job's add-audio step (per video); 0 without one."""
    if not row.request.get("add_audio"):
        return 0
    return row.audio_estimate


def video_estimate(row: Row) -> int:
    """Estimated credits of the job's video create (per video)."""
    return row.credits_estimated - audio_estimate(row)


def held(row: Row) -> int:
    """Credits this job holds against the budget (see the module docstring)."""
    spent_before = row.credits_prior + row.credits_lost
    if row.state is JobState.PENDING:
        return spent_before
    if row.credits_video is not None:
        video = row.credits_video
    elif row.task_id is None and row.state is JobState.FAILED:
        video = 0  # the API refused the create: nothing was made
    else:
        video = video_estimate(row)  # sent, charge not known (yet)
    if row.credits_audio is not None:
        audio = row.credits_audio
    elif not row.audio_held or (row.state is JobState.FAILED and row.audio_task_id is None):
        audio = 0  # not reserved, or the job ended before an add-audio task was made
    else:
        audio = audio_estimate(row)
    return spent_before + video + audio


def committed(rows: Iterable[Row]) -> int:
    """Credits held by every job among `rows` (pass inactive rows too: money is money)."""
    return sum(held(r) for r in rows)


# -- what a send needs ----------------------------------------------------------------------

PriceKind = tuple[Any, ...]


def price_kind(row: Row) -> PriceKind:
    """Videos of one kind cost the same: resolution, length and model."""
    req = row.request
    return (req.get("resolution"), req.get("video_length"), req.get("model_name"))


def learned_prices(rows: Iterable[Row]) -> dict[PriceKind, int]:
    """The highest price the API charged per video of each kind (akool-api.md §8.4).

    The published table may be wrong for an account; once the API has charged more for a
    kind of video, that figure is reserved for the next ones so the cap still holds.
    """
    learned: dict[PriceKind, int] = {}
    for row in rows:
        if row.credits_video is not None:
            kind = price_kind(row)
            learned[kind] = max(learned.get(kind, 0), row.credits_video)
    return learned


def need(row: Row, learned: Mapping[PriceKind, int], family: int = 1) -> int:
    """Credits to reserve before sending the job's next create.

    A pending job reserves its video and its add-audio step, for every video its create
    makes (`family`: a `count` job's later videos ride on its first one's create). An
    add-audio step already reserved with its video needs nothing more; a repeated one
    needs its estimate.
    """
    if row.state is JobState.AUDIO_PENDING:
        return 0 if row.audio_held else audio_estimate(row)
    per_video = row.credits_estimated
    price = learned.get(price_kind(row))
    if price is not None:
        per_video = max(per_video, price + audio_estimate(row))
    return per_video * family


def is_admission(row: Row) -> bool:
    """Does the job's next create start new spending (and so wait its turn in the queue)?"""
    return row.state is JobState.PENDING or (row.state is JobState.AUDIO_PENDING
                                             and not row.audio_held)


def fits(max_credits: int | None, committed_credits: int, needed: int) -> bool:
    """THE rule for one send: everything held plus what it needs stays within the cap."""
    return max_credits is None or needed <= 0 or committed_credits + needed <= max_credits


@dataclass(frozen=True, slots=True)
class Admission:
    """Which of a queue of sends go out, from one state."""

    admitted: int    #: sends that go, counted from the head of the queue
    held_back: int   #: the first send that does not fit and every one after it
    needed: int      #: credits the held-back sends need


def admit(max_credits: int | None, committed_credits: int, needs: Iterable[int]) -> Admission:
    """Apply the rule to a queue: admit in order, stop at the first send that does not fit."""
    rest = iter(needs)
    admitted, first = admitted_head(max_credits, committed_credits, rest)
    held_back, needed = (0, 0) if first is None else (1, first)
    for n in rest:
        held_back += 1
        needed += n
    return Admission(admitted, held_back, needed)


def admitted_head(max_credits: int | None, committed_credits: int, needs: Iterable[int]
                  ) -> tuple[int, int | None]:
    """(sends admitted, the need of the first one held back or None), reading `needs` no
    further than that one: `plan` counts a million-job queue that a budget stops early."""
    admitted, total = 0, committed_credits
    for n in needs:
        if not fits(max_credits, total, n):
            return admitted, n
        admitted += 1
        total += max(0, n)
    return admitted, None


@dataclass(frozen=True, slots=True)
class Send:
    """One create a run would send from a state, in the order it would send it."""

    job_id: str          #: the row whose create it is
    need: int            #: credits it must reserve
    admission: bool      #: starts new spending (waits its turn) or continues an admitted job


def queue(rows: Sequence[Row]) -> list[Send]:
    """The creates a run would send from `rows` (active rows in manifest order).

    The runner builds its queue with this function and `plan` counts with it, so the two
    cannot disagree. A `count` job's later videos that are still pending ride on their
    first video's create and are part of its need.
    """
    learned = learned_prices(rows)
    by_id = {r.job_id: r for r in rows}
    family: dict[str, int] = {}
    for r in rows:
        if r.parent and r.state is JobState.PENDING:
            family[r.parent] = family.get(r.parent, 0) + 1
    sends: list[Send] = []
    for r in rows:
        if not r.active or r.state not in (JobState.PENDING, JobState.AUDIO_PENDING):
            continue
        if r.state is JobState.PENDING and r.parent:
            parent = by_id.get(r.parent)
            if parent is not None and parent.state in (JobState.PENDING,
                                                       JobState.SUBMITTING):
                # rides on its parent's create, also while that is on the wire (a shared
                # state rebuilds this queue mid-run: the video would be made twice)
                continue
        size = 1 + family.get(r.job_id, 0) if r.state is JobState.PENDING else 1
        sends.append(Send(r.job_id, need(r, learned, size), is_admission(r)))
    return sends


# -- repeating what went wrong ------------------------------------------------------------


def free_to_change(row: Row) -> bool:
    """Every create of this job was refused with no task made (e.g. code 1003).

    Nothing was charged and nothing may have been, so a corrected manifest entry is simply
    sent as the new request instead of being "kept as sent".
    """
    return (row.state is JobState.FAILED and row.task_id is None and row.audio_task_id is None
            and row.credits_video is None and row.credits_audio is None
            and not row.credits_prior and not row.credits_lost and row.unknown_step is None)


def reopened(row: Row, *, unknown: bool, failed: bool) -> dict[str, Any] | None:
    """The column changes `--resubmit-unknown`/`--retry-failed` make to one row, or None.

    Only the step that went wrong is repeated: a failed download is fetched again (the
    video exists and was paid for), a failed or lost add-audio step is sent again on the
    finished video, and only otherwise is the video made again. Money already spent, or
    possibly spent, stays held: a known charge moves to `credits_prior`, and the estimate
    of a create that was sent but whose charge is unknown (a lost answer, a task that
    failed without saying what it cost) moves to `credits_lost`, so a resubmission needs
    room for a second charge. Jobs whose manifest entry changed after sending are left
    alone.
    """
    if not row.active or row.changed:
        return None
    if not ((row.state is JobState.FAILED and failed)
            or (row.state is JobState.UNKNOWN and unknown)):
        return None
    if row.state is JobState.FAILED and row.video_url is not None:
        return {"state": JobState.READY, "error": None}
    lost_answer = row.state is JobState.UNKNOWN
    audio_charged = row.credits_audio or 0
    audio_maybe = (audio_estimate(row) if row.credits_audio is None
                   and (row.audio_task_id is not None
                        or (lost_answer and row.unknown_step == "add_audio")) else 0)
    if row.unknown_step == "add_audio" and row.task_id is not None:
        return {"state": JobState.AUDIO_PENDING, "error": None, "unknown_step": None,
                "credits_prior": row.credits_prior + audio_charged,
                "credits_lost": row.credits_lost + audio_maybe,
                "audio_task_id": None, "credits_audio": None, "audio_held": False}
    video_charged = row.credits_video or 0
    video_maybe = (video_estimate(row) if row.credits_video is None
                   and (row.task_id is not None or lost_answer) else 0)
    return {"state": JobState.PENDING, "error": None, "unknown_step": None,
            "credits_prior": row.credits_prior + video_charged + audio_charged,
            "credits_lost": row.credits_lost + video_maybe + audio_maybe,
            "task_id": None, "audio_task_id": None, "credits_video": None,
            "credits_audio": None, "video_url": None, "audio_held": True}
