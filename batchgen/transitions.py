"""The job's life as a pure function: `advance(row, event)` -> the new row, or a refusal.

Every change the run makes to a job is an event (job_events.py). `advance` checks that the job is in
a state where that event can happen and returns the new `JobRow` (rows are frozen); an
event that cannot happen raises `IllegalTransition`, so a scheduling bug shows up as an
error instead of a silently rewritten row. `changed_columns` says which columns differ, so
the store writes exactly those, and the runner keeps the very row the store wrote.

The path (SPEC §5, jobs.JobState), each arrow an event:

    pending -Claimed-> submitting -Accepted-> running -TaskDone-> ready -Downloaded-> completed
    submitting -Unsent-> pending | -AnswerLost-> unknown | -CreateRefused-> failed
    running -TaskDone-> audio_pending -Claimed-> audio_submitting -Accepted-> audio_running
    running, audio_running -TaskFailed/TaskLost-> failed;  ready -DownloadFailed-> failed
    unknown, failed -Reopened-> pending | audio_pending | ready  (budget.reopened decides)

Pure: no clock (times come in the events), no network, no disk. Deliberately not here:
what is sent, when, and whether it fits the budget (runner, budget.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from batchgen import budget
from batchgen.job_events import (
    Accepted,
    AnswerLost,
    Charged,
    ChargeNoted,
    Claimed,
    CreateRefused,
    Downloaded,
    DownloadFailed,
    Event,
    FamilyAccepted,
    Held,
    RemoteDeleted,
    RemoteKept,
    Reopened,
    TaskDone,
    TaskFailed,
    TaskLost,
    Unsent,
)
from batchgen.jobs import JobRow, JobState

__all__ = [
    "AUDIO_STEP",
    "RUNNING",
    "SENDING",
    "VIDEO_STEP",
    "Accepted",
    "AnswerLost",
    "ChargeNoted",
    "Charged",
    "Claimed",
    "CreateRefused",
    "DownloadFailed",
    "Downloaded",
    "Event",
    "FamilyAccepted",
    "Held",
    "IllegalTransition",
    "RemoteDeleted",
    "RemoteKept",
    "Reopened",
    "TaskDone",
    "TaskFailed",
    "TaskLost",
    "Unsent",
    "advance",
    "allowed",
    "changed_columns",
]

S = JobState

#: the step a lost answer or failure belongs to, as `unknown_step` records it
VIDEO_STEP = "video"
AUDIO_STEP = "add_audio"


class IllegalTransition(ValueError):
    """An event that cannot happen to a job in its state: a bug in the caller."""

    def __init__(self, row: JobRow, event: Event) -> None:
        super().__init__(f"job {row.job_id}: {type(event).__name__} is not allowed "
                         f"in state {row.state.value}")
        self.row = row
        self.event = event


SENDING = frozenset({S.SUBMITTING, S.AUDIO_SUBMITTING})
RUNNING = frozenset({S.RUNNING, S.AUDIO_RUNNING})


# -- the function --------------------------------------------------------------------------


def advance(row: JobRow, event: Event) -> JobRow:
    """The row after `event`, or `IllegalTransition` when it cannot happen in row.state."""
    changes = _changes(row, event)
    if changes is None:
        raise IllegalTransition(row, event)
    return replace(row, **changes)


def allowed(row: JobRow, event: Event) -> bool:
    """Whether `event` may happen to `row` now."""
    return _changes(row, event) is not None


def changed_columns(old: JobRow, new: JobRow) -> dict[str, Any]:
    """The columns whose values differ between two versions of one row."""
    return {f.name: getattr(new, f.name) for f in fields(new)
            if getattr(old, f.name) != getattr(new, f.name)}


def _step_state(audio: bool, video: JobState, audio_state: JobState) -> JobState:
    return audio_state if audio else video


Changes = dict[str, Any] | None


def _claimed(row: JobRow, e: Claimed) -> Changes:
    if row.state is not _step_state(e.audio, S.PENDING, S.AUDIO_PENDING):
        return None
    return {"state": _step_state(e.audio, S.SUBMITTING, S.AUDIO_SUBMITTING),
            "attempts": row.attempts + 1, "audio_held": True,
            "submitted_at": row.submitted_at or e.now}


def _unsent(row: JobRow, e: Unsent) -> Changes:
    if row.state is not _step_state(e.audio, S.SUBMITTING, S.AUDIO_SUBMITTING):
        return None
    return {"state": _step_state(e.audio, S.PENDING, S.AUDIO_PENDING)}


def _accepted(row: JobRow, e: Accepted) -> Changes:
    if e.audio:
        if row.state is not S.AUDIO_SUBMITTING:
            return None
        return {"state": S.AUDIO_RUNNING, "audio_task_id": e.task_id, "credits_audio": e.credits}
    if row.state is not S.SUBMITTING:
        return None
    return {"state": S.RUNNING, "task_id": e.task_id, "credits_video": e.credits, "error": None}


def _family_accepted(row: JobRow, e: FamilyAccepted) -> Changes:
    # the head was claimed (submitting); the later videos of its family are still pending
    if row.state not in (S.SUBMITTING, S.PENDING):
        return None
    return {"state": S.RUNNING, "task_id": e.task_id, "credits_video": e.credits,
            "error": None, "attempts": 1, "submitted_at": row.submitted_at or e.now}


def _answer_lost(row: JobRow, e: AnswerLost) -> Changes:
    # a family's later videos (pending) share the fate of the head's create
    if row.state not in SENDING and not (row.state is S.PENDING and not e.audio):
        return None
    return {"state": S.UNKNOWN, "error": e.error,
            "unknown_step": AUDIO_STEP if e.audio else VIDEO_STEP}


def _create_refused(row: JobRow, e: CreateRefused) -> Changes:
    if row.state not in SENDING and row.state is not S.PENDING:
        return None
    return {"state": S.FAILED, "error": e.error, **({"unknown_step": AUDIO_STEP} if e.audio
                                                    else {})}


def _charged(row: JobRow, e: Charged) -> Changes:
    # only a task the job has can have cost something
    if (row.audio_task_id if e.audio else row.task_id) is None:
        return None
    return {"credits_audio" if e.audio else "credits_video": e.credits}


def _charge_noted(row: JobRow, e: ChargeNoted) -> Changes:
    return {"credits_note": e.note}


def _held(row: JobRow, e: Held) -> Changes:
    return {"credits_prior": row.credits_prior + e.prior,
            "credits_lost": row.credits_lost + e.lost, "credits_note": e.note}


def _task_done(row: JobRow, e: TaskDone) -> Changes:
    if row.state is not _step_state(e.audio, S.RUNNING, S.AUDIO_RUNNING):
        return None
    done = _finished(e.finished_at)
    if not e.audio and row.request.get("add_audio"):
        return {"state": S.AUDIO_PENDING, **done}
    if e.video_url:
        return {"state": S.READY, "video_url": e.video_url, **done}
    # paid work: without a usable URL the video is still there, so the job waits `ready`
    # for one (the fetcher asks the API again, now and on every later run); failing it
    # would let --retry-failed pay for the same video twice
    return {"state": S.READY, "video_url": None, **done,
            "error": f"task {e.task_id} finished but the API gave no usable video_url yet"}


def _task_failed(row: JobRow, e: TaskFailed) -> Changes:
    if row.state is not _step_state(e.audio, S.RUNNING, S.AUDIO_RUNNING):
        return None
    return {"state": S.FAILED, "error": e.error, **_finished(e.finished_at),
            **({"unknown_step": AUDIO_STEP} if e.audio else {})}


def _task_lost(row: JobRow, e: TaskLost) -> Changes:
    return {"state": S.FAILED, "error": e.error} if row.state in RUNNING else None


def _finished(at: str | None) -> dict[str, Any]:
    return {} if at is None else {"finished_at": at}


def _downloaded(row: JobRow, e: Downloaded) -> Changes:
    if row.state is not S.READY:
        return None
    return {"state": S.COMPLETED, "file": e.file, "bytes": e.bytes, "sha256": e.sha256,
            "completed_at": e.completed_at, "video_url": e.video_url, "error": None}


def _download_failed(row: JobRow, e: DownloadFailed) -> Changes:
    return {"state": S.FAILED, "error": e.error} if row.state is S.READY else None


def _remote_deleted(row: JobRow, e: RemoteDeleted) -> Changes:
    return {"remote_deleted": True} if row.state is S.COMPLETED else None


def _remote_kept(row: JobRow, e: RemoteKept) -> Changes:
    return {"error": e.error} if row.state is S.COMPLETED else None


def _reopened(row: JobRow, e: Reopened) -> Changes:
    return budget.reopened(row, unknown=e.unknown, failed=e.failed)


_RULES: dict[type[Any], Callable[[JobRow, Any], Changes]] = {
    Claimed: _claimed, Unsent: _unsent, Accepted: _accepted, FamilyAccepted: _family_accepted,
    AnswerLost: _answer_lost, CreateRefused: _create_refused, Charged: _charged,
    ChargeNoted: _charge_noted, Held: _held, TaskDone: _task_done, TaskFailed: _task_failed,
    TaskLost: _task_lost,
    Downloaded: _downloaded, DownloadFailed: _download_failed, RemoteDeleted: _remote_deleted,
    RemoteKept: _remote_kept, Reopened: _reopened,
}


def _changes(row: JobRow, event: Event) -> Changes:
    return _RULES[type(event)](row, event)
