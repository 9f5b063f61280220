"""The events of a job's life: what can happen to it, as frozen values.

Each event carries what the transition needs and nothing else (times come in as ISO UTC
text: the events hold no clock). `transitions.advance(row, event)` says which states an
event may happen in and what it changes; the scheduler's workers make the events, the
store applies them. Pure values: no behaviour here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claimed:
    """A create was journaled to be sent (video, or the add-audio step); `now` is ISO UTC."""

    now: str
    audio: bool = False


@dataclass(frozen=True, slots=True)
class Unsent:
    """A journaled create provably made nothing (refused before or by the API): undo it."""

    audio: bool = False


@dataclass(frozen=True, slots=True)
class Accepted:
    """The API accepted a create: its task id and usable charge (None: not known)."""

    task_id: str
    credits: int | None
    audio: bool = False


@dataclass(frozen=True, slots=True)
class FamilyAccepted:
    """Video k of a batch create (`count`/`model_name`) got its task; `now` is ISO UTC.

    The head row was claimed (submitting); its later videos are still pending.
    """

    task_id: str
    credits: int | None
    now: str


@dataclass(frozen=True, slots=True)
class AnswerLost:
    """A create was sent and its answer lost: it may exist and be charged."""

    error: str
    audio: bool = False


@dataclass(frozen=True, slots=True)
class CreateRefused:
    """A create (or a batch create's missing video) failed for good."""

    error: str
    audio: bool = False


@dataclass(frozen=True, slots=True)
class Charged:
    """The API said what a task of the job cost (a usable figure)."""

    credits: int
    audio: bool = False


@dataclass(frozen=True, slots=True)
class ChargeNoted:
    """What the API said about a charge the budget could not use, as recorded."""

    note: str


@dataclass(frozen=True, slots=True)
class Held:
    """Charges (`prior`) and possible charges (`lost`) of tasks the job does not keep."""

    prior: int
    lost: int
    note: str


@dataclass(frozen=True, slots=True)
class TaskDone:
    """The job's task in flight finished; `video_url` is what the record gave."""

    task_id: str
    video_url: str | None
    audio: bool = False
    #: when it finished (ISO UTC), for the report's timeline
    finished_at: str | None = None


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """The job's task in flight failed at the API, or is no longer known to it."""

    error: str
    audio: bool = False
    #: when the API said it failed (ISO UTC); None for a task that vanished
    finished_at: str | None = None


@dataclass(frozen=True, slots=True)
class TaskLost:
    """The job's task in flight is no longer known to the API (missing, again and again)."""

    error: str


@dataclass(frozen=True, slots=True)
class Downloaded:
    """The final video is on disk, verified, under its final name."""

    file: str
    bytes: int
    sha256: str
    completed_at: str
    video_url: str


@dataclass(frozen=True, slots=True)
class DownloadFailed:
    """The finished video could not be fetched (for good)."""

    error: str


@dataclass(frozen=True, slots=True)
class RemoteDeleted:
    """Every task of a completed job was deleted at the API."""


@dataclass(frozen=True, slots=True)
class RemoteKept:
    """The API refused to delete a completed job's tasks; `error` says so in the report."""

    error: str


@dataclass(frozen=True, slots=True)
class Reopened:
    """--resubmit-unknown / --retry-failed: repeat the step that went wrong."""

    unknown: bool
    failed: bool


Event = (Claimed | Unsent | Accepted | FamilyAccepted | AnswerLost | CreateRefused | Charged
         | ChargeNoted | Held | TaskDone | TaskFailed | TaskLost | Downloaded | DownloadFailed
         | RemoteDeleted | RemoteKept | Reopened)
