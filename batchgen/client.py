"""HTTP client of Akool's image-to-video API: the only module that knows aiohttp, URLs,
headers, HTTP statuses and business codes.

Every aiohttp exception and every non-1000 answer is translated here, at the one point
where it enters, into the `errors` hierarchy (the httpx ``map_httpcore_exceptions`` idea).
The distinction that matters for money is made here too: a failure that proves the server
never acted (connection refused, an error answer) is a plain `RetryableApiError`; a failure
after the request may have reached the server (disconnect, read timeout, 504) is
`OutcomeUnknown`, which the runner never retries for a create.

Secrets: messages are built from the endpoint name and the API's own `msg`; aiohttp's
exception text (which can echo URLs and headers) is never passed on, and `scrub` removes
every known secret from any text that leaves this module. Deliberately not here: retries
(`retry.py`), files (`download.py`), scheduling (`runner.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from batchgen.errors import (
    ApiError,
    CredentialsError,
    FatalApiError,
    InsufficientCredits,
    OutcomeUnknown,
    RetryableApiError,
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
CODE_TOO_FREQUENT = 1005
#: new tokens fetched in a row, with no success between, before credentials count as bad
MAX_REFRESHES = 3
CODE_CREATE_ERROR = 1015
CODES_NO_CREDIT = {1006, 1104}

#: manifest job field -> create request field (the API's casing quirk: `webhookurl`)
WIRE_NAMES = {"webhook_url": "webhookurl"}


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


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """The part of an API task record the runner uses."""

    task_id: str
    status: int
    credits: int | None
    video_url: str | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    read: float = 30.0
    total: float = 60.0
    download_total: float = 600.0


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
        return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every secret in `text` by a marker."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


async def _about_to_send(session: aiohttp.ClientSession, ctx: Any, params: Any) -> None:
    """aiohttp trace hook: a connection is in hand and the request is about to be written.

    Runs after connecting and before a single byte of the request leaves, so a caller's
    `on_send` marks the exact moment from which the server may have seen the request.
    """
    request_ctx = getattr(ctx, "trace_request_ctx", None)
    if isinstance(request_ctx, dict) and (on_send := request_ctx.get("on_send")) is not None:
        on_send()


def _as_dict(value: Any) -> dict[str, Any]:
    """`data` of an answer as a mapping; anything else reads as empty (never a crash)."""
    return value if isinstance(value, dict) else {}


def _task(record: dict[str, Any]) -> TaskRecord:
    credits = record.get("deduction_credit")
    status = record.get("status")
    return TaskRecord(
        task_id=str(record.get("_id", "")),
        status=status if isinstance(status, int) else 0,
        credits=int(credits) if isinstance(credits, int | float) else None,
        video_url=record.get("video_url") or None,
        raw=record,
    )


class AkoolClient:
    """One API account over one shared `aiohttp.ClientSession`.

    Open with ``async with AkoolClient.open(...) as client``; the session, its connection
    pool (bounded by `max_connections`) and its timeouts live exactly as long as the block.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, creds: Credentials,
                 timeouts: Timeouts) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._creds = creds
        self._timeouts = timeouts
        self._token: str | None = None
        self._refreshes = 0  # tokens fetched again since the last successful answer
        self._token_lock = asyncio.Lock()
        #: requests made, by endpoint name (for summary.json)
        self.requests: Counter[str] = Counter()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, base_url: str, creds: Credentials, *, max_connections: int = 64,
                   timeouts: Timeouts | None = None) -> AsyncIterator[AkoolClient]:
        """A client with its own session; closed (connections too) when the block ends."""
        timeouts = timeouts or Timeouts()
        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
        timeout = aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect,
                                        sock_read=timeouts.read)
        tracing = aiohttp.TraceConfig()
        tracing.on_connection_create_end.append(_about_to_send)
        tracing.on_connection_reuseconn.append(_about_to_send)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         raise_for_status=False,
                                         trace_configs=[tracing]) as session:
            yield cls(session, base_url, creds, timeouts)

    # -- authentication ---------------------------------------------------------------

    async def authenticate(self) -> None:
        """Exchange clientId/clientSecret for a token once per run (no-op for an API key)."""
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
                       on_send: Callable[[], None] | None = None) -> dict[str, Any]:
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
            code = body.get("code")
            if code == 1000:
                if auth and token_used is not None and token_used == self._token:
                    self._refreshes = 0
                return body
            if code == 1101 and auth and self._creds.uses_token:
                async with self._token_lock:
                    if self._token != token_used:
                        continue  # another request already fetched a new token
                    if self._refreshes < MAX_REFRESHES:
                        try:
                            await self.authenticate()
                        except OutcomeUnknown as exc:
                            # getToken creates nothing: a lost answer is just a failure
                            raise RetryableApiError(str(exc)) from None
                        self._refreshes += 1
                        continue
            raise self._code_error(name, code, body.get("msg"), creates)

    def _code_error(self, name: str, code: Any, msg: Any, creates: bool
                    ) -> ApiError | CredentialsError:
        text = scrub(str(msg or "no message"), self._secrets())
        message = f"{name}: API code {code}: {text}"
        if code in CREDENTIAL_CODES or name == "getToken":
            what = CREDENTIAL_CODES.get(code, "the credentials were refused")
            return CredentialsError(
                f"{name}: API code {code}: {what} ({text}); check AKOOL_API_KEY or "
                "AKOOL_CLIENT_ID/AKOOL_CLIENT_SECRET")
        if code == CODE_TOO_FREQUENT or (code == CODE_CREATE_ERROR and not creates):
            return RetryableApiError(message, code=code)
        if code in CODES_NO_CREDIT:
            return InsufficientCredits(message, code=code)
        return FatalApiError(message, code=code if isinstance(code, int) else None)

    async def _send(self, name: str, method: str, path: str, json_body: dict[str, Any] | None,
                    params: dict[str, str] | None, auth: bool, creates: bool,
                    on_send: Callable[[], None] | None = None) -> dict[str, Any]:
        self.requests[name] += 1
        headers = self._auth_headers() if auth else {}
        trace_ctx = {"on_send": on_send} if on_send is not None else None
        try:
            async with self._session.request(method, self._base + path, json=json_body,
                                             params=params, headers=headers,
                                             trace_request_ctx=trace_ctx) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # the connection was never established: the server cannot have acted
            raise RetryableApiError(f"{name}: cannot connect to the API "
                                    f"({type(exc).__name__})") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # the request may have reached the server; we do not know what it did
            raise OutcomeUnknown(f"{name}: no answer from the API ({type(exc).__name__})"
                                 ) from None
        if status == 429 or status >= 500:
            kind = OutcomeUnknown if (creates and status == 504) else RetryableApiError
            raise kind(f"{name}: HTTP {status} from the API", http_status=status,
                       retry_after=retry_after)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if creates and 200 <= status < 300:
                raise OutcomeUnknown(f"{name}: HTTP {status} with an unreadable body",
                                     http_status=status)
            raise FatalApiError(f"{name}: HTTP {status} with an unreadable body",
                                http_status=status)
        if status >= 400 and "code" not in body:
            text = scrub(str(body.get("msg") or body.get("message") or ""), self._secrets())
            if name == "getToken":
                raise CredentialsError(f"getToken: HTTP {status} ({text}); check "
                                       "AKOOL_CLIENT_ID and AKOOL_CLIENT_SECRET")
            raise FatalApiError(f"{name}: HTTP {status}: {text}", http_status=status)
        return body

    # -- endpoints ---------------------------------------------------------------------

    async def create(self, fields: dict[str, Any],
                     on_send: Callable[[], None] | None = None) -> TaskRecord:
        """createBySourcePrompt: one video task. Charged at creation.

        `on_send` is called right before the request is written (see `_about_to_send`).
        """
        body = {WIRE_NAMES.get(k, k): v for k, v in fields.items()}
        data = (await self._request("createBySourcePrompt", "POST",
                                    f"{PREFIX_I2V}/createBySourcePrompt", json_body=body,
                                    creates=True, on_send=on_send)).get("data")
        if not isinstance(data, dict) or not data.get("_id"):
            raise OutcomeUnknown("createBySourcePrompt: answer without a task id")
        return _task(data)

    async def create_batch(self, fields: dict[str, Any],
                           on_send: Callable[[], None] | None = None) -> list[TaskRecord]:
        """createBySourcePrompt/batch: `count` videos of one request, model selectable."""
        body = {WIRE_NAMES.get(k, k): v for k, v in fields.items()}
        data = _as_dict((await self._request("createBySourcePrompt/batch", "POST",
                                    f"{PREFIX_I2V}/createBySourcePrompt/batch", json_body=body,
                                    creates=True, on_send=on_send)).get("data"))
        tasks = [_task(r) for r in data.get("successList") or [] if isinstance(r, dict)]
        if not tasks:
            errors = scrub(repr(data.get("errorList") or []), self._secrets())
            raise FatalApiError(f"createBySourcePrompt/batch: no task created: {errors:.200}")
        return tasks

    async def update_audio(self, pre_video_id: str, audio_type: int, audio_url: str | None,
                           on_send: Callable[[], None] | None = None) -> TaskRecord:
        """updateVideoAudio: a new task that adds audio to a completed video."""
        body: dict[str, Any] = {"pre_video_id": pre_video_id, "audio_type": audio_type}
        if audio_url:
            body["audio_url"] = audio_url
        data = (await self._request("updateVideoAudio", "POST", f"{PREFIX_I2V}/updateVideoAudio",
                                    json_body=body, creates=True, on_send=on_send)).get("data")
        if not isinstance(data, dict) or not data.get("_id"):
            raise OutcomeUnknown("updateVideoAudio: answer without a task id")
        return _task(data)

    async def results(self, task_ids: list[str]) -> list[TaskRecord]:
        """resultsByIds for up to a batch of ids, sent as one comma-joined string."""
        data = _as_dict((await self._request("resultsByIds", "POST", f"{PREFIX_I2V}/resultsByIds",
                                    json_body={"_ids": ",".join(task_ids)})).get("data"))
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise RetryableApiError("resultsByIds: answer without a result list")
        return [_task(r) for r in result if isinstance(r, dict)]

    async def delete(self, task_ids: list[str]) -> tuple[list[str], dict[str, str]]:
        """delbyids: returns (deleted ids, {id: reason} for those refused)."""
        data = _as_dict((await self._request("delbyids", "POST", f"{PREFIX_I2V}/delbyids",
                                    json_body={"_ids": ",".join(task_ids)})).get("data"))
        refused = {str(i.get("_id")): str(i.get("msg", "")) for i in
                   data.get("noPermissionItems") or [] if isinstance(i, dict)}
        return [str(i) for i in data.get("successIds") or []], refused

    async def effects(self) -> list[dict[str, Any]]:
        body = await self._request("effects", "GET", f"{PREFIX_I2V}/effects")
        data = _as_dict(body.get("data"))
        return [r for r in data.get("result") or [] if isinstance(r, dict)]

    async def models(self) -> list[dict[str, Any]]:
        data = (await self._request("models", "GET", "/api/open/v4/aigModel/list",
                                    params={"types[]": "1501"})).get("data")
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []

    # -- downloads ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def stream(self, url: str, chunk_size: int = 256 * 1024
                     ) -> AsyncIterator[tuple[int | None, AsyncIterator[bytes]]]:
        """GET a video: yields (Content-Length or None, async iterator of chunks).

        Raises `FatalApiError` with `http_status` 403/404/410 when the URL is gone (expired
        or deleted), `RetryableApiError` for anything that may work on a second try.
        """
        self.requests["download"] += 1
        timeout = aiohttp.ClientTimeout(total=self._timeouts.download_total,
                                        sock_connect=self._timeouts.connect,
                                        sock_read=self._timeouts.read)
        try:
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status in (403, 404, 410):
                    raise FatalApiError(f"download: HTTP {resp.status} (the video URL is gone)",
                                        http_status=resp.status)
                if resp.status != 200:
                    raise RetryableApiError(f"download: HTTP {resp.status}",
                                            http_status=resp.status)

                async def chunks() -> AsyncIterator[bytes]:
                    try:
                        async for chunk in resp.content.iter_chunked(chunk_size):
                            yield chunk
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        raise RetryableApiError(f"download: interrupted "
                                                f"({type(exc).__name__})") from None

                yield resp.content_length, chunks()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableApiError(f"download: {type(exc).__name__}") from None
