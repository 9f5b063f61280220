"""The emulated API's HTTP shapes: its envelopes, request bodies and a streamed download.

Owns what every handler of api.py answers with (`ok`, `fail`: HTTP 200 with `{code,
msg, data}`, as the real API answers; `drop`: a hang-up), reading a JSON body and the
comma-joined `_ids` quirk, and `stream` (a video sent in chunks, slowly or cut short, for
the download faults). Knows nothing of tasks or balances (state.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from batchgen.sandbox.state import CODE_OK, MESSAGES


def ok(data: Any, msg: str = "OK") -> web.Response:
    """The success envelope."""
    return web.json_response({"code": CODE_OK, "msg": msg, "data": data})


def fail(code: int, msg: str | None = None) -> web.Response:
    """A business error: HTTP 200, non-1000 code."""
    return web.json_response({"code": code, "msg": msg or MESSAGES[code], "data": None})


def drop(request: web.Request) -> web.Response:
    """Close the client's connection without answering.

    aiohttp then fails to write the returned response (the transport is closing) and
    swallows that `ConnectionError`, so the client sees a disconnect and nothing else.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


def base_url(request: web.Request) -> str:
    """Root URL as the client reached us (Host header), so video URLs work from its side."""
    return f"{request.scheme}://{request.host}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def split_ids(body: dict[str, Any] | None) -> list[str] | None:
    """The comma-joined `_ids` string split, or None when it isn't a string (the quirk)."""
    value = None if body is None else body.get("_ids")
    if not isinstance(value, str):
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


async def stream(
    request: web.Request, body: bytes, *, truncate: bool, seconds: float
) -> web.StreamResponse:
    """Send `body` in chunks over `seconds`; when truncating, stop halfway and hang up."""
    response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
    response.content_length = len(body)
    await response.prepare(request)
    sent = body[: len(body) // 2] if truncate else body
    chunks = 8 if seconds > 0 else 1
    size = -(-len(sent) // chunks)
    for start in range(0, len(sent), size):
        await response.write(sent[start : start + size])
        if seconds > 0:
            await asyncio.sleep(seconds / chunks)
    if truncate:
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
