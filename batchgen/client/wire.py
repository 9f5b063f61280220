"""The wire's values: endpoints, business codes, HTTP statuses the client acts on, and the
typed values callers get instead of raw JSON (TaskStatus, TaskRecord, BatchTasks) or
give (Credentials, Timeouts, Limits).

Part of the client package (batchgen/client/): nothing outside it knows a code or a key
of the API's JSON. Deliberately not here: reading answers (answers.py), sending
(transport.py), the endpoints (calls.py).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from batchgen.errors import CredentialsError

PREFIX_V3 = "/api/open/v3"
PREFIX_I2V = "/api/open/v4/image2Video"

#: codes that end the run with exit 4 (SPEC §2)
CREDENTIAL_CODES = {
    1101: "the token is invalid or has expired",
    1102: "no credentials were sent",
    1109: "the API key matches no account",
    1200: "the account has been banned",
}
CODE_OK = 1000
CODE_TOO_FREQUENT = 1005
#: new tokens fetched in a row, with no success between, before credentials count as bad
MAX_REFRESHES = 3
CODE_CREATE_ERROR = 1015
CODES_NO_CREDIT = {1006, 1104}
#: HTTP statuses that say "try again" (the request was not acted on)
HTTP_TRANSIENT = {408, 429}
#: HTTP statuses of a video URL that is gone for good (expired or deleted)
HTTP_GONE = {403, 404, 410}

#: manifest job field -> create request field (the API's casing quirk: `webhookurl`)
WIRE_NAMES = {"webhook_url": "webhookurl"}

#: a task id we can poll, store and put in a comma-joined list or a file name
_TASK_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: what may go in an HTTP header value and a credential (printable ASCII, no space)
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
#: shortest credential accepted: shorter ones are typos, and scrubbing them from text
#: would also erase innocent words
MIN_SECRET_LENGTH = 8
MAX_URL_LENGTH = 8192
MAX_TEXT = 300  # characters of an API message kept in an error
#: called once a create's connection is in hand, before a byte of it leaves; an awaitable
#: it returns is awaited first (the caller's durable "sent" mark)
OnSend = Callable[[], Awaitable[None] | None]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class TaskStatus(IntEnum):
    """Where a task is at the API (akool-api.md §4)."""

    QUEUED = 1      #: waiting at the API
    PROCESSING = 2  #: being generated
    DONE = 3        #: finished; `video_url` is set
    FAILED = 4      #: the API gave up on it (charged or refunded: the API decides)
    UNREADABLE = 0  #: the answer's status was missing or not one of the above

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.DONE, TaskStatus.FAILED)


@dataclass(frozen=True, slots=True)
class Credentials:
    """How to authenticate. Secrets are kept out of repr so they never reach a log."""

    api_key: str | None = field(default=None, repr=False)
    client_id: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)

    @property
    def uses_token(self) -> bool:
        return bool(self.client_id and self.client_secret)

    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.client_secret) if s]

    def check(self) -> None:
        """Refuse credentials that cannot work before anything is sent or marked sent.

        A value with a newline or another character that cannot go in an HTTP header
        would make every request fail *after* it was journaled as sent; a secret of a few
        characters is a typo (and could not be scrubbed from text safely).
        """
        named = [("AKOOL_CLIENT_ID", self.client_id), ("AKOOL_CLIENT_SECRET", self.client_secret)
                 ] if self.uses_token else [("AKOOL_API_KEY", self.api_key)]
        for name, value in named:
            if not value:
                raise CredentialsError(f"{name} is empty")
            if not _HEADER_SAFE.fullmatch(value):
                raise CredentialsError(
                    f"{name} contains a space, a line break or another character that "
                    "cannot be sent in an HTTP header; copy it again from the Akool console")
            if name != "AKOOL_CLIENT_ID" and len(value) < MIN_SECRET_LENGTH:
                raise CredentialsError(
                    f"{name} is {len(value)} characters long; a real one is much longer "
                    f"(at least {MIN_SECRET_LENGTH}): copy it again from the Akool console")


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task as the API described it, already checked: the only view callers get."""

    task_id: str
    status: TaskStatus
    credits: int | None
    video_url: str | None
    #: the record as the API sent it, for diagnostics only: callers use the checked fields
    raw: dict[str, Any]
    #: why the API failed the task (status 4), when it said
    reason: str | None = None
    #: the API's own clock, Unix ms (akool-api.md E3), when given as sane numbers
    create_time: int | None = None
    update_time: int | None = None
    #: `deduction_credit` exactly as the API sent it: `budget.charge` judges whether it can
    #: be a real charge (`credits` above is only its finite number, for display)
    charged: object = None


class BatchTasks(list[TaskRecord]):
    """The usable tasks of a batch create's answer, in video order.

    `unusable` counts the videos it listed under an id we cannot use: they exist and are
    charged, but cannot be polled, so they may be neither forgotten nor made again.
    """

    def __init__(self, tasks: list[TaskRecord], *, unusable: int = 0) -> None:
        super().__init__(tasks)
        self.unusable = unusable


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    read: float = 30.0
    total: float = 60.0
    download_total: float = 600.0


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the network may send us. Checked while reading, not after."""

    #: one API answer (JSON); a results answer for 50 tasks is ~50 KB
    answer_bytes: int = 4 * 1024 * 1024
    #: one downloaded video (BATCHGEN_MAX_VIDEO_BYTES); a 10 s 4k MP4 is ~50 MB
    video_bytes: int = 4 * 1024 ** 3
