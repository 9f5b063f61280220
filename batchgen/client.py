"""HTTP client of Akool's image-to-video API: the only module that knows aiohttp, URLs,
headers, HTTP statuses and business codes.

Every aiohttp exception is translated in one place, `map_aiohttp_errors` (the httpx
``map_httpcore_exceptions`` idea), and every non-1000 answer in `_code_error`, into the
`errors` hierarchy. The distinction that matters for money is made here too: a failure that
proves the server never acted (connection refused, an error answer) is a plain
`RetryableApiError`; a failure after a *create* may have reached the server (disconnect,
read timeout, 504) is `OutcomeUnknown`, which is not retryable unless a caller opts in.
Reads never raise `OutcomeUnknown`: asking again is always safe for them.

The wire stops here: callers see `TaskStatus`, `TaskRecord` (with a failure reason),
`AccountBusy` (1005) and `UrlGone` (403/404/410), never codes, statuses or raw JSON keys.

Answers are untrusted data. Each is read up to `Limits.answer_bytes`; ids, statuses, URLs
and times are checked before they leave this module, so a hostile or buggy server fails one
request (or one job), never the run. API calls never follow redirects: a credential sent
to the API's origin never reaches another host or port.

Secrets: messages are built from the endpoint name and the API's own `msg`; aiohttp's
exception text (which can echo URLs and headers) is never passed on, and `scrub` removes
every known secret from any text that leaves this module. Deliberately not here: retries
(`retry.py`), files (`download.py`), scheduling (`runner.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import inspect
import json
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from batchgen.errors import (
    AccountBusy,
    ApiError,
    CredentialsError,
    FatalApiError,
    InsufficientCredits,
    OutcomeUnknown,
    RetryableApiError,
    UrlGone,
)

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


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - now) if when is not None else None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every secret in `text` by a marker.

    Values shorter than `MIN_SECRET_LENGTH` are refused as credentials at start-up and are
    not replaced here: replacing a one-letter "secret" would garble every word holding it.
    """
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "[redacted]")
    return text


def clean_text(value: Any, limit: int = MAX_TEXT) -> str:
    """Server text made fit for one line of a terminal or a report cell: control
    characters shown escaped, length capped."""
    text = value if isinstance(value, str) else repr(value)
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= limit else text[:limit] + "…"


# -- the one place aiohttp's exceptions enter --------------------------------------------


def _classes(*names: str) -> tuple[type[BaseException], ...]:
    """aiohttp exception classes by name; ones an older aiohttp lacks are skipped."""
    found = (getattr(aiohttp, n, None) for n in names)
    return tuple(c for c in found if isinstance(c, type))


#: the connection was never established: the server cannot have seen the request
NOT_SENT: tuple[type[BaseException], ...] = _classes(
    "ClientConnectorError", "ConnectionTimeoutError", "ServerFingerprintMismatch")
#: the URL itself cannot be fetched (a bad video URL, a redirect to one): trying again
#: will not help, and nothing was sent
BAD_URL: tuple[type[BaseException], ...] = _classes(
    "InvalidURL", "NonHttpUrlClientError", "RedirectClientError", "TooManyRedirects")
#: anything else from aiohttp (or its parser, or the total timeout): the request may have
#: reached the server and we do not know what it did
MAYBE_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientError, HttpProcessingError, TimeoutError,
    *_classes("WebSocketError", "WSMessageTypeError", "EofStream"))


@contextlib.contextmanager
def map_aiohttp_errors(name: str, *, creates: bool = False) -> Iterator[None]:
    """Translate aiohttp's exceptions raised in the block into `errors` (and nothing else).

    The most specific category wins: NOT_SENT -> `RetryableApiError`; BAD_URL ->
    `FatalApiError`; MAYBE_SENT -> `OutcomeUnknown` for a create (it may have made a paid
    task), `RetryableApiError` for anything else. aiohttp's own text (which can echo
    URLs and headers) is never passed on: only the class name.
    """
    try:
        yield
    except NOT_SENT as exc:
        raise RetryableApiError(f"{name}: cannot connect to the API "
                                f"({type(exc).__name__})") from exc
    except BAD_URL as exc:
        raise FatalApiError(f"{name}: the URL cannot be fetched ({type(exc).__name__})"
                            ) from exc
    except MAYBE_SENT as exc:
        kind = OutcomeUnknown if creates else RetryableApiError
        raise kind(f"{name}: no answer from the API ({type(exc).__name__})") from exc


async def _about_to_send(session: aiohttp.ClientSession, ctx: Any, params: Any) -> None:
    """aiohttp trace hook: a connection is in hand and the request is about to be written.

    Runs after connecting and before a single byte of the request leaves, so a caller's
    `on_send` marks the exact moment from which the server may have seen the request.
    """
    request_ctx = getattr(ctx, "trace_request_ctx", None)
    if isinstance(request_ctx, dict) and (on_send := request_ctx.get("on_send")) is not None:
        marked = on_send()
        if inspect.isawaitable(marked):
            # the caller's journal write (say, one fsync shared by every create leaving
            # now): the request waits for it, so nothing leaves before it is durable
            await marked


# -- reading answers -------------------------------------------------------------------


def _as_dict(value: Any) -> dict[str, Any]:
    """`data` of an answer as a mapping; anything else reads as empty (never a crash)."""
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    """A list from an answer; anything else (a string, a number, null) reads as empty."""
    return value if isinstance(value, list) else []


def _whole(value: Any) -> int | None:
    """An int from JSON (not a bool, not a float with a fraction), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def task_id_of(value: Any) -> str | None:
    """The task id in an answer if it is one we can use, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and _TASK_ID.fullmatch(value) else None


def video_url_of(value: Any) -> str | None:
    """A video URL we may fetch: an absolute http(s) URL of sane length, no spaces or
    control characters. Anything else is None."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        return None
    if _CONTROL.search(value) or " " in value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError:
        return None
    return value if parts.scheme in ("http", "https") and parts.hostname else None


def _finite(value: int | float) -> bool:
    """math.isfinite that never raises: a JSON integer may be too large for a float (it
    raised OverflowError), and every int is finite."""
    return isinstance(value, int) or math.isfinite(value)


def _credits(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not _finite(value):
        return None
    return int(value)


def _millis(value: Any) -> int | None:
    ms = _whole(value)
    return ms if ms is not None and 0 <= ms < 10 ** 14 else None


def _task(record: dict[str, Any]) -> TaskRecord | None:
    """A checked `TaskRecord`, or None when the record has no usable task id."""
    task_id = task_id_of(record.get("_id"))
    if task_id is None:
        return None
    status = _whole(record.get("status"))
    try:
        checked = TaskStatus(status) if status else TaskStatus.UNREADABLE
    except ValueError:
        checked = TaskStatus.UNREADABLE
    reason = record.get("error_msg") or record.get("msg")
    return TaskRecord(
        task_id=task_id,
        status=checked,
        credits=_credits(record.get("deduction_credit")),
        video_url=video_url_of(record.get("video_url")),
        raw=record,
        reason=clean_text(reason) if reason else None,
        create_time=_millis(record.get("create_time")),
        update_time=_millis(record.get("update_time")),
        charged=record.get("deduction_credit"),
    )


def _created(name: str, data: Any) -> TaskRecord:
    """The record a create answered with; `OutcomeUnknown` when no usable id came back
    (the task may exist and be charged, but we cannot poll it)."""
    record = _task(data) if isinstance(data, dict) else None
    if record is None:
        got = data.get("_id") if isinstance(data, dict) else None
        what = "without a task id" if not got else f"with an unusable task id {clean_text(got, 40)}"
        raise OutcomeUnknown(f"{name}: the API answered {what}; the task may exist and be "
                             "charged")
    return record


def check_models(models: Any) -> list[dict[str, Any]]:
    """The model list (aigModel/list), checked: raise `FatalApiError` naming the first
    malformed model so `models` and `plan --online` never compute with nonsense."""
    if not isinstance(models, list):
        raise FatalApiError("models: the API's model list is not a list")
    checked: list[dict[str, Any]] = []
    for i, model in enumerate(models):
        if not isinstance(model, dict):
            raise FatalApiError(f"models: entry {i} of the API's model list is not an object")
        label = model.get("value")
        if not isinstance(label, str) or not label:
            raise FatalApiError(f"models: entry {i} of the API's model list has no name")
        where = f"models: model {clean_text(label, 80)}"
        resolutions = model.get("resolutionList", [])
        if resolutions is None:
            resolutions = []
        if not isinstance(resolutions, list):
            raise FatalApiError(f"{where}: resolutionList is not a list")
        for r in resolutions:
            unit = r.get("unit_credit") if isinstance(r, dict) else None
            if not isinstance(r, dict) or not isinstance(r.get("value"), str) or (
                    unit is not None and (isinstance(unit, bool)
                                          or not isinstance(unit, int | float)
                                          or not _finite(unit) or unit < 0)):
                raise FatalApiError(f"{where}: resolutionList has a malformed entry "
                                    f"{clean_text(r, 80)}")
        durations = model.get("durationList", [])
        if durations is None:
            durations = []
        if not isinstance(durations, list) or not all(
                _whole(d) is not None and 0 < d <= 3600 for d in durations):
            raise FatalApiError(f"{where}: durationList must be a list of positive whole "
                                f"seconds, got {clean_text(durations, 80)}")
        count = model.get("maxCount")
        if count is not None and (_whole(count) is None or count < 1):
            raise FatalApiError(f"{where}: maxCount must be a positive whole number")
        checked.append(model)
    return checked


class AkoolClient:
    """One API account over one shared `aiohttp.ClientSession`.

    Open with ``async with AkoolClient.open(...) as client``; the session, its connection
    pool (bounded by `max_connections`) and its timeouts live exactly as long as the block.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, creds: Credentials,
                 timeouts: Timeouts, limits: Limits | None = None) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._creds = creds
        self._timeouts = timeouts
        self._limits = limits or Limits()
        self._token: str | None = None
        self._refreshes = 0  # tokens fetched again since the last successful answer
        self._token_lock = asyncio.Lock()
        #: requests made, by endpoint name (for summary.json)
        self.requests: Counter[str] = Counter()
        #: usable answers so far (code 1000, or video bytes): an outage watchdog samples it
        self.answers_ok = 0
        #: requests that got nothing usable (transport errors, 5xx, unreadable answers)
        self.answers_failed = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, base_url: str, creds: Credentials, *, max_connections: int = 64,
                   timeouts: Timeouts | None = None, limits: Limits | None = None
                   ) -> AsyncIterator[AkoolClient]:
        """A client with its own session; closed (connections too) when the block ends."""
        timeouts = timeouts or Timeouts()
        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
        timeout = aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect,
                                        sock_read=timeouts.read)
        tracing = aiohttp.TraceConfig()
        tracing.on_connection_create_end.append(_about_to_send)
        tracing.on_connection_reuseconn.append(_about_to_send)
        # no cookie jar: nothing an answer sets travels with later requests
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         raise_for_status=False,
                                         cookie_jar=aiohttp.DummyCookieJar(),
                                         trace_configs=[tracing]) as session:
            yield cls(session, base_url, creds, timeouts, limits)

    # -- authentication ---------------------------------------------------------------

    async def authenticate(self) -> None:
        """Exchange clientId/clientSecret for a token once per run (no-op for an API key).

        Transient failures (1005, HTTP 429/5xx, a lost answer) raise `RetryableApiError`
        like any call; only a refusal of the id/secret is a `CredentialsError`.
        """
        if not self._creds.uses_token:
            if not self._creds.api_key:
                raise CredentialsError("no credentials")
            return
        body = await self._request("getToken", "POST", f"{PREFIX_V3}/getToken",
                                   json_body={"clientId": self._creds.client_id,
                                              "clientSecret": self._creds.client_secret},
                                   auth=False)
        token = body.get("token") or _as_dict(body.get("data")).get("token")
        if not isinstance(token, str) or not token:
            raise CredentialsError("getToken answered without a token; check "
                                   "AKOOL_CLIENT_ID and AKOOL_CLIENT_SECRET")
        if not _HEADER_SAFE.fullmatch(token) or len(token) > 8192:
            raise CredentialsError("getToken answered with a token that cannot be sent in a "
                                   "header; check AKOOL_CLIENT_ID and AKOOL_CLIENT_SECRET")
        self._token = token

    def _auth_headers(self) -> dict[str, str]:
        if self._creds.uses_token:
            return {"Authorization": f"Bearer {self._token}"} if self._token else {}
        if self._creds.api_key:
            return {"x-api-key": self._creds.api_key}
        return {}

    def _secrets(self) -> list[str]:
        return [*self._creds.secrets(), *([self._token] if self._token else [])]

    # -- one request, all translation ------------------------------------------------

    async def _request(self, name: str, method: str, path: str, *,
                       json_body: dict[str, Any] | None = None,
                       params: dict[str, str] | None = None, auth: bool = True,
                       creates: bool = False,
                       on_send: OnSend | None = None) -> dict[str, Any]:
        """Send one request; return the body of a code-1000 answer or raise a typed error.

        A 1101 on a token means it expired: a new token is fetched (once, however many
        requests saw the 1101) and the request sent again — the first was refused, so
        nothing was created. Tokens refused again and again with no success in between
        mean the credentials themselves are bad: after `MAX_REFRESHES` that ends the run.
        """
        while True:
            token_used = self._token
            body = await self._send(name, method, path, json_body, params, auth, creates,
                                    on_send)
            code = _whole(body.get("code"))
            if code == CODE_OK:
                if auth and token_used is not None and token_used == self._token:
                    self._refreshes = 0
                self.answers_ok += 1
                return body
            if code == 1101 and auth and self._creds.uses_token:
                async with self._token_lock:
                    if self._token != token_used:
                        continue  # another request already fetched a new token
                    if self._refreshes < MAX_REFRESHES:
                        await self.authenticate()
                        self._refreshes += 1
                        continue
            raise self._code_error(name, code, body.get("msg"), creates)

    def _code_error(self, name: str, code: int | None, msg: Any, creates: bool
                    ) -> ApiError | CredentialsError:
        text = clean_text(scrub(str(msg or "no message"), self._secrets()))
        message = f"{name}: API code {code}: {text}"
        if code in CREDENTIAL_CODES:
            return CredentialsError(
                f"{name}: API code {code}: {CREDENTIAL_CODES[code]} ({text}); check "
                "AKOOL_API_KEY or AKOOL_CLIENT_ID/AKOOL_CLIENT_SECRET")
        if code == CODE_TOO_FREQUENT:
            return AccountBusy(message, code=code)
        if code == CODE_CREATE_ERROR and not creates:
            return RetryableApiError(message, code=code)
        if name == "getToken":
            return CredentialsError(
                f"getToken: API code {code}: the client id/secret were refused ({text}); "
                "check AKOOL_CLIENT_ID and AKOOL_CLIENT_SECRET")
        if code is None and creates:
            # a success-looking answer we cannot read: the task may have been made
            return OutcomeUnknown(f"{name}: answer without a readable code", code=None)
        if code in CODES_NO_CREDIT:
            return InsufficientCredits(message, code=code)
        return FatalApiError(message, code=code)

    async def _send(self, name: str, method: str, path: str, json_body: dict[str, Any] | None,
                    params: dict[str, str] | None, auth: bool, creates: bool,
                    on_send: OnSend | None = None) -> dict[str, Any]:
        self.requests[name] += 1
        headers = self._auth_headers() if auth else {}
        trace_ctx = {"on_send": on_send} if on_send is not None else None
        try:
            with map_aiohttp_errors(name, creates=creates):
                # never follow a redirect: the credential in the headers (or the secret in
                # the body) must not travel to whatever address a 3xx names
                async with self._session.request(method, self._base + path, json=json_body,
                                                 params=params, headers=headers,
                                                 allow_redirects=False,
                                                 trace_request_ctx=trace_ctx) as resp:
                    status = resp.status
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"),
                                                    time.time())
                    if 300 <= status < 400:
                        self._redirected(name, status, resp.headers.get("Location"))
                    raw = await self._read_capped(name, resp, creates)
        except (RetryableApiError, OutcomeUnknown):
            self.answers_failed += 1
            raise
        if status in HTTP_TRANSIENT or status >= 500:
            self.answers_failed += 1
            kind = OutcomeUnknown if (creates and status == 504) else RetryableApiError
            raise kind(f"{name}: HTTP {status} from the API", http_status=status,
                       retry_after=retry_after)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            self.answers_failed += 1
            if 200 <= status < 300:
                if creates:
                    raise OutcomeUnknown(f"{name}: HTTP {status} with an unreadable body",
                                         http_status=status)
                # a proxy's error page or a truncated answer: asking again is safe
                raise RetryableApiError(f"{name}: HTTP {status} with an unreadable body",
                                        http_status=status)
            raise FatalApiError(f"{name}: HTTP {status} with an unreadable body",
                                http_status=status)
        if status >= 400 and "code" not in body:
            text = clean_text(scrub(str(body.get("msg") or body.get("message") or ""),
                                    self._secrets()))
            if name == "getToken":
                raise CredentialsError(f"getToken: HTTP {status} ({text}); check "
                                       "AKOOL_CLIENT_ID and AKOOL_CLIENT_SECRET")
            raise FatalApiError(f"{name}: HTTP {status}: {text}", http_status=status)
        return body

    def _redirected(self, name: str, status: int, location: str | None) -> NoReturn:
        where = ""
        with contextlib.suppress(ValueError):
            parts = urlsplit(location or "")
            if parts.hostname:
                where = f" to {clean_text(parts.hostname, 100)}"
        raise FatalApiError(
            f"{name}: the API answered HTTP {status} (a redirect{where}); API calls never "
            "follow redirects, so credentials never leave the API's address: check "
            "--api-base / api.base_url (scheme, host and port)", http_status=status)

    async def _read_capped(self, name: str, resp: aiohttp.ClientResponse, creates: bool
                           ) -> bytes:
        """The body, or a typed error as soon as it passes `Limits.answer_bytes`."""
        limit = self._limits.answer_bytes
        size = resp.content_length
        buf = bytearray()
        if size is None or size <= limit:
            async for chunk in resp.content.iter_chunked(64 * 1024):
                buf += chunk
                if len(buf) > limit:
                    break
            else:
                return bytes(buf)
        message = f"{name}: the API's answer is larger than {limit} bytes"
        if creates and 200 <= resp.status < 300:
            raise OutcomeUnknown(message + "; the task may exist and be charged",
                                 http_status=resp.status)
        raise RetryableApiError(message, http_status=resp.status)

    # -- endpoints ---------------------------------------------------------------------

    async def create(self, fields: dict[str, Any],
                     on_send: OnSend | None = None) -> TaskRecord:
        """createBySourcePrompt: one video task. Charged at creation.

        `on_send` is called right before the request is written (see `_about_to_send`).
        """
        body = {WIRE_NAMES.get(k, k): v for k, v in fields.items()}
        data = (await self._request("createBySourcePrompt", "POST",
                                    f"{PREFIX_I2V}/createBySourcePrompt", json_body=body,
                                    creates=True, on_send=on_send)).get("data")
        return _created("createBySourcePrompt", data)

    async def create_batch(self, fields: dict[str, Any],
                           on_send: OnSend | None = None) -> BatchTasks:
        """createBySourcePrompt/batch: `count` videos of one request, model selectable.

        Videos listed under an id we cannot use were made (and charged) all the same: they
        are counted in `BatchTasks.unusable`, so the caller never takes them for videos
        the API refused to make.
        """
        name = "createBySourcePrompt/batch"
        body = {WIRE_NAMES.get(k, k): v for k, v in fields.items()}
        data = _as_dict((await self._request(name, "POST", f"{PREFIX_I2V}/{name}",
                                             json_body=body, creates=True,
                                             on_send=on_send)).get("data"))
        listed = [r for r in _as_list(data.get("successList")) if isinstance(r, dict)]
        tasks = [t for t in map(_task, listed) if t is not None]
        if not tasks:
            if listed:  # tasks were made, but we cannot tell which
                raise OutcomeUnknown(f"{name}: the API answered with unusable task ids; "
                                     "the tasks may exist and be charged")
            errors = clean_text(scrub(repr(_as_list(data.get("errorList"))), self._secrets()),
                                200)
            raise FatalApiError(f"{name}: no task created: {errors}")
        return BatchTasks(tasks, unusable=len(listed) - len(tasks))

    async def update_audio(self, pre_video_id: str, audio_type: int, audio_url: str | None,
                           on_send: OnSend | None = None) -> TaskRecord:
        """updateVideoAudio: a new task that adds audio to a completed video."""
        body: dict[str, Any] = {"pre_video_id": pre_video_id, "audio_type": audio_type}
        if audio_url:
            body["audio_url"] = audio_url
        data = (await self._request("updateVideoAudio", "POST", f"{PREFIX_I2V}/updateVideoAudio",
                                    json_body=body, creates=True, on_send=on_send)).get("data")
        return _created("updateVideoAudio", data)

    async def results(self, task_ids: list[str]) -> list[TaskRecord]:
        """resultsByIds for up to a batch of ids, sent as one comma-joined string.

        Records with an unusable id are left out (they cannot be ours: we only ask about
        ids that passed the same check).
        """
        data = _as_dict((await self._request("resultsByIds", "POST", f"{PREFIX_I2V}/resultsByIds",
                                    json_body={"_ids": ",".join(task_ids)})).get("data"))
        result = data.get("result")
        if not isinstance(result, list):
            self.answers_ok -= 1  # a code-1000 answer without the list is no answer
            self.answers_failed += 1
            raise RetryableApiError("resultsByIds: answer without a result list")
        return [t for t in (_task(r) for r in result if isinstance(r, dict)) if t is not None]

    async def delete(self, task_ids: list[str]) -> tuple[list[str], dict[str, str]]:
        """delbyids: returns (deleted ids, {id: reason} for those refused)."""
        data = _as_dict((await self._request("delbyids", "POST", f"{PREFIX_I2V}/delbyids",
                                    json_body={"_ids": ",".join(task_ids)})).get("data"))
        refused: dict[str, str] = {}
        for item in _as_list(data.get("noPermissionItems")):
            if isinstance(item, dict) and (tid := task_id_of(item.get("_id"))) is not None:
                refused[tid] = clean_text(item.get("msg", ""))
        deleted = [t for t in map(task_id_of, _as_list(data.get("successIds"))) if t]
        return deleted, refused

    async def effects(self) -> list[dict[str, Any]]:
        body = await self._request("effects", "GET", f"{PREFIX_I2V}/effects")
        data = _as_dict(body.get("data"))
        return [r for r in _as_list(data.get("result")) if isinstance(r, dict)]

    async def models(self) -> list[dict[str, Any]]:
        """aigModel/list, checked by `check_models` (a malformed list is a FatalApiError)."""
        data = (await self._request("models", "GET", "/api/open/v4/aigModel/list",
                                    params={"types[]": "1501"})).get("data")
        return check_models(data if data is not None else [])

    # -- downloads ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def stream(self, url: str, chunk_size: int = 256 * 1024
                     ) -> AsyncIterator[tuple[int | None, AsyncIterator[bytes]]]:
        """GET a video: yields (Content-Length or None, async iterator of chunks).

        No credential is sent (a video URL is signed on its own), so following a CDN's
        redirects is safe here. Raises `UrlGone` for 403/404/410 (expired or deleted),
        `FatalApiError` for a video over `Limits.video_bytes` (announced or streamed: the
        count is kept while reading) or an unusable URL, `RetryableApiError` for anything
        that may work on a second try.
        """
        self.requests["download"] += 1
        limit = self._limits.video_bytes
        if video_url_of(url) is None:
            raise FatalApiError(f"download: the video URL is unusable: {clean_text(url, 80)}")
        timeout = aiohttp.ClientTimeout(total=self._timeouts.download_total,
                                        sock_connect=self._timeouts.connect,
                                        sock_read=self._timeouts.read)
        with map_aiohttp_errors("download"):
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status in HTTP_GONE:
                    raise UrlGone(f"download: HTTP {resp.status} (the video URL is gone)",
                                  http_status=resp.status)
                if resp.status != 200:
                    raise RetryableApiError(f"download: HTTP {resp.status}",
                                            http_status=resp.status)
                if resp.content_length is not None and resp.content_length > limit:
                    raise FatalApiError(f"download: the video is {resp.content_length} bytes, "
                                        f"over the limit of {limit} (BATCHGEN_MAX_VIDEO_BYTES)")

                async def chunks() -> AsyncIterator[bytes]:
                    seen = 0
                    with map_aiohttp_errors("download"):
                        async for chunk in resp.content.iter_chunked(chunk_size):
                            seen += len(chunk)
                            if seen > limit:
                                raise FatalApiError(
                                    f"download: the video passed the limit of {limit} bytes "
                                    "(BATCHGEN_MAX_VIDEO_BYTES); stopped reading")
                            self.answers_ok += 1
                            yield chunk

                yield resp.content_length, chunks()
