"""Fetching the first bytes of an asset the way the API will: the network half of pre-flight.

Owns the one HTTP conversation with *asset hosts* (the user's image and audio servers,
never the API): a GET without credentials or cookies, asking for the first `HEAD_BYTES`
only (`Range`), following at most a few redirects, reading no more than that, within a
time limit. It translates what happened into a `Check` at this boundary, so no caller
sees aiohttp:

* the host answered an HTTP error (4xx; 5xx/429 that stay after two retries), redirected
  in circles or to something that is not http(s), or served bytes `assets.judge`
  refuses -> BAD (definitive: the API would get the same);
* the host could not be reached from here (name not resolved, refused, reset, timeout)
  -> INCONCLUSIVE: the API's servers may reach what this machine cannot.

It is an edge of its own, beside client/, because it talks to other hosts with other
rules (no API key may ever go there). Deliberately not here: what a format is (assets.py)
and which job waits for which check (preflight.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

from batchgen.assets import HEAD_BYTES, IMAGE, LIMITS, AssetLimits, Check, Verdict, judge

#: statuses a host may answer for a moment (retried before they count as definitive)
_PASSING = frozenset({408, 425, 429, 500, 502, 503, 504})
_TOTAL = re.compile(r"bytes\s+\d+-\d+/(\d+)")
MAX_REDIRECTS = 5


class _Passing(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class AssetProber:
    """Checks asset URLs over one connection pool; open with `AssetProber.open()`."""

    def __init__(self, session: aiohttp.ClientSession, *, limits: AssetLimits = LIMITS,
                 timeout: float = 10.0, retries: int = 2, head_bytes: int = HEAD_BYTES,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._session = session
        self.limits = limits
        self.timeout = timeout
        self.retries = retries
        self.head_bytes = head_bytes
        self._sleep = sleep

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, *, limits: AssetLimits = LIMITS, timeout: float = 10.0,
                   retries: int = 2, connections: int = 16,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
                   ) -> AsyncIterator[AssetProber]:
        """A prober with its own session (no cookies, no proxy settings from the
        environment, no credentials), closed on exit."""
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=8)
        async with aiohttp.ClientSession(connector=connector,
                                         cookie_jar=aiohttp.DummyCookieJar(),
                                         headers={"User-Agent": "batchgen-preflight"}) as s:
            yield cls(s, limits=limits, timeout=timeout, retries=retries, sleep=sleep)

    async def check(self, url: str, kind: str) -> Check:
        """The verdict on one asset URL (`kind` is assets.IMAGE or assets.AUDIO)."""
        status = 0
        for attempt in range(self.retries + 1):
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._once(url, kind)
            except _Passing as exc:
                status = exc.status
                if attempt < self.retries:
                    await self._sleep(0.25 * 2 ** attempt)
            except TimeoutError:
                return Check(Verdict.INCONCLUSIVE, f"no answer within {self.timeout:g} s")
            except aiohttp.TooManyRedirects:
                return Check(Verdict.BAD, f"redirected more than {MAX_REDIRECTS} times")
            except (aiohttp.InvalidURL, aiohttp.NonHttpUrlRedirectClientError):
                return Check(Verdict.BAD, "redirected to a URL that is not http(s)")
            except aiohttp.ClientConnectorError as exc:
                why = exc.os_error.strerror or type(exc.os_error).__name__
                return Check(Verdict.INCONCLUSIVE, f"cannot connect from here ({why})")
            except (aiohttp.ClientError, OSError) as exc:
                return Check(Verdict.INCONCLUSIVE,
                             f"the connection failed ({type(exc).__name__})")
        return Check(Verdict.BAD, f"the host kept answering HTTP {status} "
                     f"({self.retries + 1} tries)")

    async def _once(self, url: str, kind: str) -> Check:
        # identity: the first bytes must be the file's own (aiohttp would otherwise offer
        # gzip, and a host that takes it up sends bytes no sniffer recognises)
        headers = {"Range": f"bytes=0-{self.head_bytes - 1}", "Accept-Encoding": "identity",
                   "Accept": "image/*,*/*;q=0.8" if kind == IMAGE else "audio/*,*/*;q=0.8"}
        async with self._session.get(url, headers=headers, max_redirects=MAX_REDIRECTS,
                                     auto_decompress=False) as resp:
            if resp.status in _PASSING:
                raise _Passing(resp.status)
            if resp.status >= 400:
                return Check(Verdict.BAD, _http_error(resp.status, resp.reason))
            if resp.status not in (200, 203, 206):
                return Check(Verdict.BAD, f"the host answered HTTP {resp.status}, not a file")
            if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
                # encoded anyway: these bytes say nothing about the file the API will get
                return Check(Verdict.INCONCLUSIVE, "the host sent the file encoded "
                             f"({resp.headers['Content-Encoding']}); not checked")
            total = _total(resp)
            cap = self.limits.image_bytes if kind == IMAGE else self.limits.audio_bytes
            head = b"" if total is not None and total > cap else await _read(resp,
                                                                              self.head_bytes)
            if not resp.content.at_eof():
                resp.close()  # the rest of the body is never read
            check = judge(kind, head, total, self.limits)
            served = resp.headers.get("Content-Type", "")
            if check.bad and served:
                return Check(check.verdict, f"{check.reason} (served as {served[:60]})")
            return check


def _http_error(status: int, reason: str | None) -> str:
    text = f"the host answered HTTP {status}" + (f" {reason}" if reason else "")
    if status in (401, 403):
        text += " (the API fetches it without credentials: it must be public)"
    return text


def _total(resp: aiohttp.ClientResponse) -> int | None:
    """The whole file's size: Content-Range's total for a 206, else Content-Length."""
    if resp.status == 206:
        m = _TOTAL.match(resp.headers.get("Content-Range", ""))
        return int(m.group(1)) if m else None
    return resp.content_length


async def _read(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the body (a host that ignores Range sends everything)."""
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        chunk = await resp.content.read(limit - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
