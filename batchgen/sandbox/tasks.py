"""One emulated task: its record as the API would show it, derived lazily from the clock.

Owns `Task` (a generated video whose status, times and record are computed from its
creation time when read, so 100,000 tasks cost no timer), the fingerprint a create is
recognised by, and the check that a task read back from a journal is one an emulator
wrote. Knows nothing about HTTP or the emulator's other state (state.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

#: constant account identity echoed in records, shaped like akool-api.md E1
UID = 101400
TEAM_ID = "6805fb69e92d9edc7ca0b409"
SUB_TYPE = 1501


def fingerprint(endpoint: str, body: dict[str, Any]) -> str:
    """sha256 of "<endpoint>:<canonical JSON of body without webhookurl>".

    The webhook is left out because a client may legitimately change it between attempts
    while still asking for the same paid video.
    """
    payload = {k: v for k, v in body.items() if k != "webhookurl"}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{endpoint}:{canonical}".encode()).hexdigest()


@dataclass(slots=True)
class Task:
    """One generated video; everything time-dependent is derived from `created`.

    The request-dependent fields are kept as a pre-encoded JSON fragment: polling renders
    thousands of records per second, and splicing text is several times cheaper than
    building and encoding a dict each time (and a str is smaller than a dict in memory).
    """

    id: str
    created: float  # time.monotonic() at creation
    create_ms: int  # wall clock, ms
    queue_s: float
    processing_s: float
    outcome: int  # 3 or 4, decided at creation
    video_length: int
    duration: float  # video_duration once completed
    deduction_credit: int
    only_add_audio: bool
    static_json: str  # the echoed request fields: JSON object text without its braces

    @property
    def fields(self) -> dict[str, Any]:
        """The echoed request fields as a dict (slow path: creates, updateVideoAudio)."""
        return json.loads("{" + self.static_json + "}")

    @property
    def done_at(self) -> float:
        """Monotonic time at which the task reaches its terminal status."""
        return self.created + self.queue_s + self.processing_s

    def status(self, now: float) -> int:
        """1 queueing, 2 processing, then the outcome (3 completed / 4 failed)."""
        elapsed = now - self.created
        if elapsed < self.queue_s:
            return 1
        if elapsed < self.queue_s + self.processing_s:
            return 2
        return self.outcome

    def update_ms(self, status: int) -> int:
        """Wall-clock ms of the last status change, consistent with `create_ms`."""
        if status == 1:
            return self.create_ms
        if status == 2:
            return self.create_ms + int(self.queue_s * 1000)
        return self.create_ms + int((self.queue_s + self.processing_s) * 1000)

    def created_record(self) -> dict[str, Any]:
        """The record a create answers with (akool-api.md E1/E2): status 1, charged."""
        record = {
            "_id": self.id,
            "create_time": self.create_ms,
            "uid": UID,
            "team_id": TEAM_ID,
            "status": 1,
            **self.fields,
            "deduction_credit": self.deduction_credit,
        }
        if self.only_add_audio:
            record["only_add_audio"] = True
        return record

    def result_json(self, now: float, video_prefix: str) -> str:
        """The resultsByIds record (akool-api.md E3) as JSON text; `video_url` only at 3.

        `video_prefix` is the JSON-escaped start of the URL, e.g. `"http://h:1/videos/`.
        """
        status = self.status(now)
        duration = self.duration if status == 3 else 0
        audio = "true" if self.only_add_audio else "false"
        url = f',"video_url":{video_prefix}{self.id}.mp4"' if status == 3 else ""
        return (
            f'{{"_id":"{self.id}","create_time":{self.create_ms},"uid":{UID},'
            f'"team_id":"{TEAM_ID}","update_time":{self.update_ms(status)},'
            f'"video_duration":{duration},"sub_type":{SUB_TYPE},"status":{status},'
            f'{self.static_json},"deduction_credit":{self.deduction_credit},'
            f'"only_add_audio":{audio}{url}}}'
        )


def well_formed(task: Task) -> bool:
    """A task read back from a journal has the types an emulator wrote."""
    numbers = (task.created, task.queue_s, task.processing_s, task.duration)
    whole = (task.create_ms, task.video_length, task.deduction_credit)
    return (isinstance(task.id, str) and isinstance(task.static_json, str)
            and isinstance(task.only_add_audio, bool) and task.outcome in (3, 4)
            and all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in whole))


def encode_fields(fields: dict[str, Any]) -> str:
    """JSON object text of `fields` without the outer braces, for `Task.static_json`."""
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))[1:-1]
