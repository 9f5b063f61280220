"""Jobs: the unit of work a manifest expands to, and how a job is identified.

Owns the `Job` value, the canonical request a job sends, its fingerprint, its stable
id and `JobState`, the names of where a job is in its life. Deliberately knows nothing
of YAML, HTTP, prices or the state database: it is the pure vocabulary the other stages
share.

Stable id recipe (documented in the README): take the job's *generation request* — the
API create fields that change what is generated and paid for (everything it sends except
`webhook_url`), plus `add_audio`, `model_name` and `count` — drop fields that are unset,
serialise it as JSON with sorted keys and no spaces, SHA-256 it, and keep the first 12
hex digits. Reordering, inserting or deleting other jobs therefore never changes which id
a job has, while changing what the job generates does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: Fields of a job that go to the create endpoint, in the API's order (akool-api.md E1).
REQUEST_FIELDS: tuple[str, ...] = (
    "image_url", "prompt", "negative_prompt", "extend_prompt", "resolution", "video_length",
    "audio_type", "audio_url", "is_premium_model", "effect_code", "webhook_url",
    "model_name", "count",
)

#: Values the API requires that a manifest may leave out; used when neither the job nor
#: `defaults` sets them. For `negative_prompt`, "" stands for "batchgen's default" in ids
#: and fingerprints (earlier versions sent it as is, and ids must not change): the single
#: create endpoint, which requires a non-empty one (akool-api.md E1, code 1003 "Parameter
#: cannot be empty"), is sent `DEFAULT_NEGATIVE_PROMPT`; the batch endpoint, where it is
#: optional, still gets "".
BUILTIN_DEFAULTS: dict[str, Any] = {
    "resolution": "720p",
    "video_length": 5,
    "audio_type": 3,
    "negative_prompt": "",
}

#: What the single create endpoint is sent when a job leaves `negative_prompt` unset.
DEFAULT_NEGATIVE_PROMPT = "blurry, distorted, low quality"

#: Fields that do not change the generated video, left out of the stable id.
NOT_IN_ID: frozenset[str] = frozenset({"webhook_url"})

ID_HEX_DIGITS = 12
#: the largest `api.concurrency` and `budget.max_credits` (schemas/manifest.schema.json),
#: which the command-line options and the Python API take too
MAX_CONCURRENCY = 1000
MAX_CREDITS = 10**12


@dataclass(frozen=True, slots=True)
class AddAudio:
    """The optional second step: add audio to the finished video (updateVideoAudio)."""

    audio_type: int
    audio_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"audio_type": self.audio_type}
        if self.audio_url is not None:
            d["audio_url"] = self.audio_url
        return d


@dataclass(frozen=True, slots=True)
class Job:
    """One video to generate: the effective request after defaults and expansion."""

    id: str
    index: int                       #: position in the manifest's final job list
    image_url: str
    resolution: str
    video_length: int
    audio_type: int
    prompt: str | None = None
    negative_prompt: str | None = None
    extend_prompt: bool | None = None
    audio_url: str | None = None
    is_premium_model: bool | None = None
    effect_code: str | None = None
    webhook_url: str | None = None
    model_name: str | None = None
    count: int | None = None
    add_audio: AddAudio | None = None
    explicit_id: bool = False
    source: str = ""                 #: "FILE:LINE" where the job was defined
    fingerprint: str = field(default="", compare=False)
    #: the user's own spreadsheet columns (jobs_file extra_columns: keep), in header
    #: order: carried to report.csv, never sent to the API, not part of the id
    extra: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def request_fields(self) -> dict[str, Any]:
        """The set job fields that map to the create request (manifest names)."""
        out: dict[str, Any] = {}
        for name in REQUEST_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def generation_request(fields: dict[str, Any], add_audio: dict[str, Any] | None) -> dict[str, Any]:
    """The canonical request that decides what is generated and paid for."""
    req = {k: v for k, v in fields.items() if v is not None and k in REQUEST_FIELDS
           and k not in NOT_IN_ID}
    if add_audio:
        req["add_audio"] = {k: v for k, v in add_audio.items() if v is not None}
    return req


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal requests give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_fingerprint(fields: dict[str, Any], add_audio: dict[str, Any] | None) -> str:
    """SHA-256 hex of everything the job would send (including webhook_url).

    The store keeps it per job so that a manifest entry changed after submission is
    noticed instead of silently resubmitted.
    """
    req = {k: v for k, v in fields.items() if v is not None and k in REQUEST_FIELDS}
    if add_audio:
        req["add_audio"] = {k: v for k, v in add_audio.items() if v is not None}
    return hashlib.sha256(canonical_json(req).encode()).hexdigest()


def stable_id(fields: dict[str, Any], add_audio: dict[str, Any] | None) -> str:
    """Short hash of the generation request; see the module docstring for the recipe."""
    digest = hashlib.sha256(canonical_json(generation_request(fields, add_audio)).encode())
    return digest.hexdigest()[:ID_HEX_DIGITS]


class JobState(StrEnum):
    """Where a job is. Stored as text; the order below is the normal path."""

    #: never sent, or allowed to be sent again
    PENDING = "pending"
    #: create journaled, request on the wire, answer not yet recorded
    SUBMITTING = "submitting"
    #: the API accepted the video task; polling it
    RUNNING = "running"
    #: the video is done; its add-audio step waits for a slot
    AUDIO_PENDING = "audio_pending"
    #: an updateVideoAudio create is journaled and on the wire
    AUDIO_SUBMITTING = "audio_submitting"
    #: the add-audio task was accepted; polling it
    AUDIO_RUNNING = "audio_running"
    #: the final task completed at the API; its file is to be downloaded
    READY = "ready"
    #: the file is on disk, verified, under its final name
    COMPLETED = "completed"
    #: a permanent fault; ``error`` says which
    FAILED = "failed"
    #: a create was sent but its answer was lost: it may exist and be charged
    UNKNOWN = "unknown"


#: states in which a task of the job occupies a slot at the API
IN_FLIGHT = frozenset({JobState.RUNNING, JobState.AUDIO_RUNNING})
#: states that mean "sent and maybe charged"
SUBMITTED = frozenset(JobState) - {JobState.PENDING}

#: report status for each state (SPEC §4: completed, failed, pending, unknown)
REPORT_STATUS = {
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.UNKNOWN: "unknown",
}


def report_status(state: JobState) -> str:
    """The SPEC §4 status of a job state."""
    return REPORT_STATUS.get(state, "pending")


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as the store knows it: a snapshot, never mutated."""

    job_id: str
    idx: int
    fingerprint: str
    request: dict[str, Any]
    state: JobState
    credits_estimated: int
    task_id: str | None = None
    audio_task_id: str | None = None
    credits_video: int | None = None
    credits_audio: int | None = None
    video_url: str | None = None
    file: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    submitted_at: str | None = None
    completed_at: str | None = None
    attempts: int = 0
    error: str | None = None
    changed: bool = False
    active: bool = True
    unknown_step: str | None = None
    remote_deleted: bool = False
    #: for video k>1 of a `count` job: the job row whose create made it
    parent: str | None = None
    #: credits the API charged for tasks this job abandoned on --retry-failed
    credits_prior: int = 0
    #: estimates of creates this job abandoned whose charge is unknown (a lost answer
    #: resubmitted with --resubmit-unknown): they may have been charged, so they stay held
    credits_lost: int = 0
    #: the job's add-audio step is reserved against the budget (with its video, or when
    #: a repeated step was admitted); False after --retry-failed reopened the step
    audio_held: bool = True
    #: what the API said about a charge when its figure could not be used (see budget.charge)
    credits_note: str | None = None
    #: when the job's last task reached status 3 or 4 at the API (its clock where it said)
    finished_at: str | None = None
    #: where the manifest defines the job ("FILE:LINE"), for the report
    source: str = ""
    #: estimated credits of the add-audio step, per video (0 without one)
    audio_estimate: int = 0
    #: the user's own spreadsheet columns (jobs_file extra_columns: keep), for report.csv
    extra: dict[str, Any] | None = None

    @property
    def credits_deducted(self) -> int | None:
        """What the API charged for this job so far (None when nothing is known)."""
        parts = [c for c in (self.credits_video, self.credits_audio) if c is not None]
        if self.credits_prior:
            parts.append(self.credits_prior)
        return sum(parts) if parts else None

    @property
    def committed_credits(self) -> int:
        """Credits this job holds against the budget (the one rule: `budget.held`)."""
        from batchgen import budget  # budget imports this module: import when used

        return budget.held(self)

    @property
    def final_task_id(self) -> str | None:
        """The task whose video becomes the job's file."""
        return self.audio_task_id if self.request.get("add_audio") else self.task_id
