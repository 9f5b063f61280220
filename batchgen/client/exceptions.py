"""The one place aiohttp's exceptions enter batchgen (the httpx ``map_httpcore_exceptions``
idea): `map_aiohttp_errors` translates them into the `errors` hierarchy, most specific
category first, and never passes aiohttp's own text on (it can echo URLs and headers).

Also the trace hook that tells a create's caller the moment its request is about to
leave (`_about_to_send`). Part of the client package (batchgen/client/).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from batchgen.errors import FatalApiError, OutcomeUnknown, RetryableApiError


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
