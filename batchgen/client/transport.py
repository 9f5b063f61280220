"""Sending one request: the session, authentication, and every translation of what comes
back — aiohttp's exceptions (exceptions.py's `map_aiohttp_errors`), HTTP statuses and
business codes (`_code_error`) — into the `errors` hierarchy.

The distinction that matters for money is made here: a failure that proves the server
never acted (connection refused, an error answer) is a plain `RetryableApiError`; a
failure after a *create* may have reached the server (disconnect, read timeout, 504) is
`OutcomeUnknown`. API calls never follow redirects, and answers are read up to
`Limits.answer_bytes`. Part of the client package; `AkoolClient` (calls.py) adds the
endpoints to `Transport`. Deliberately not here: what an answer's fields mean (answers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, NoReturn, Self
from urllib.parse import urlsplit

import aiohttp

from batchgen.client.answers import _as_dict, _whole, clean_text, parse_retry_after, scrub
from batchgen.client.exceptions import _about_to_send, map_aiohttp_errors
from batchgen.client.wire import (
    _HEADER_SAFE,
    CODE_CREATE_ERROR,
    CODE_OK,
    CODE_TOO_FREQUENT,
    CODES_NO_CREDIT,
    CREDENTIAL_CODES,
    HTTP_TRANSIENT,
    MAX_REFRESHES,
    PREFIX_V3,
    Credentials,
    Limits,
    OnSend,
    Timeouts,
)
from batchgen.errors import (
    AccountBusy,
    ApiError,
    CredentialsError,
    FatalApiError,
    InsufficientCredits,
    OutcomeUnknown,
    RetryableApiError,
)


class Transport:
    """One API account over one shared `aiohttp.ClientSession`: requests, translated.

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
                   ) -> AsyncIterator[Self]:
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
