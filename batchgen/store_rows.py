"""A job's row as the state database stores it: the columns, and the request JSON codec.

Owns the column list every `SELECT` of a whole row names (`COLUMNS`), turning a result row
into a `JobRow` (`row_from`), and the stored request JSON: only what the API is sent, plus
the typed values kept beside it under "_" keys (`HIDDEN`) that no other module sees
(`decode`/`encode`, and `job_request` for a job `Store.sync` writes). Pure: no connection,
no SQL statements.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from batchgen.jobs import Job, JobRow, JobState

COLUMNS = (
    "job_id, idx, fingerprint, request, state, credits_estimated, task_id, audio_task_id, "
    "credits_video, credits_audio, video_url, file, bytes, sha256, submitted_at, "
    "completed_at, attempts, error, changed, active, unknown_step, remote_deleted, parent, "
    "credits_prior, credits_lost, audio_held, credits_note, finished_at"
)


def row_from(r: sqlite3.Row | tuple[Any, ...]) -> JobRow:
    """The `JobRow` of one result row of `SELECT {COLUMNS}`."""
    return JobRow(
        job_id=r[0], idx=r[1], fingerprint=r[2], **decode(json.loads(r[3])), state=JobState(r[4]),
        credits_estimated=r[5], task_id=r[6], audio_task_id=r[7], credits_video=r[8],
        credits_audio=r[9], video_url=r[10], file=r[11], bytes=r[12], sha256=r[13],
        submitted_at=r[14], completed_at=r[15], attempts=r[16], error=r[17],
        changed=bool(r[18]), active=bool(r[19]), unknown_step=r[20], remote_deleted=bool(r[21]),
        parent=r[22], credits_prior=r[23], credits_lost=r[24], audio_held=bool(r[25]),
        credits_note=r[26], finished_at=r[27],
    )


#: what the stored request JSON carries beside the job's fields, and the typed `JobRow`
#: field each becomes on reading: only the store's modules see these keys
HIDDEN = {"_audio_estimate": "audio_estimate", "_source": "source", "_extra": "extra"}


def decode(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored request JSON as `JobRow` fields: the request (only what the API is
    sent) and the typed values the store keeps beside it."""
    fields: dict[str, Any] = {"request": {k: v for k, v in stored.items() if k not in HIDDEN}}
    estimate = stored.get("_audio_estimate", 0)
    fields["audio_estimate"] = estimate if isinstance(estimate, int) else 0
    fields["source"] = str(stored.get("_source") or "")
    extra = stored.get("_extra")
    fields["extra"] = extra if isinstance(extra, dict) else None
    return fields


def encode(row: JobRow) -> str:
    """The inverse of `decode`: a row's request JSON as stored."""
    stored = dict(row.request)
    if row.request.get("add_audio"):
        stored["_audio_estimate"] = row.audio_estimate
    stored["_source"] = row.source
    if row.extra:
        stored["_extra"] = row.extra
    return json.dumps(stored, sort_keys=True)


def stored_fields(job: Job, audio_estimate: int) -> dict[str, Any]:
    """The `JobRow` fields of a job as `sync` stores it: request, source, audio_estimate,
    extra (for a row of a job that never ran)."""
    return decode(job_request(job, audio_estimate))


def job_request(job: Job, audio_estimate: int) -> dict[str, Any]:
    """The request as stored: the job's fields plus what the report and runner need
    (read back as typed `JobRow` fields by `decode`; the keys never leave the store)"""
    req = job.request_fields()
    if job.add_audio is not None:
        req["add_audio"] = job.add_audio.as_dict()
        req["_audio_estimate"] = audio_estimate
    req["_source"] = job.source
    if job.extra:
        req["_extra"] = dict(job.extra)  # for report.csv only; "_" keys are never sent
    return req
