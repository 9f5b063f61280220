"""HTTP client of Akool's image-to-video API: the only package that knows aiohttp, URLs,
headers, HTTP statuses and business codes.

    wire.py       endpoints, codes, statuses; TaskStatus, TaskRecord, Credentials, Limits
    answers.py    reading untrusted answers (ids, URLs, times, credits), scrub, clean_text
    exceptions.py map_aiohttp_errors: the one place aiohttp's exceptions enter
    transport.py  Transport: session, auth, one request, statuses and codes translated
    calls.py      AkoolClient(Transport): the endpoints and downloads

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

from batchgen.client.answers import (
    check_models,
    clean_text,
    parse_retry_after,
    scrub,
    task_id_of,
    video_url_of,
)
from batchgen.client.calls import AkoolClient
from batchgen.client.exceptions import BAD_URL, MAYBE_SENT, NOT_SENT, map_aiohttp_errors
from batchgen.client.wire import (
    CODE_OK,
    CODE_TOO_FREQUENT,
    CREDENTIAL_CODES,
    HTTP_GONE,
    HTTP_TRANSIENT,
    MAX_TEXT,
    MAX_URL_LENGTH,
    MIN_SECRET_LENGTH,
    PREFIX_I2V,
    PREFIX_V3,
    WIRE_NAMES,
    BatchTasks,
    Credentials,
    Limits,
    OnSend,
    TaskRecord,
    TaskStatus,
    Timeouts,
)

__all__ = ["BAD_URL", "CODE_OK", "CODE_TOO_FREQUENT", "CREDENTIAL_CODES", "HTTP_GONE",
           "HTTP_TRANSIENT", "MAX_TEXT", "MAX_URL_LENGTH", "MAYBE_SENT", "MIN_SECRET_LENGTH",
           "NOT_SENT", "PREFIX_I2V", "PREFIX_V3", "WIRE_NAMES", "AkoolClient", "BatchTasks",
           "Credentials", "Limits", "OnSend", "TaskRecord", "TaskStatus", "Timeouts",
           "check_models", "clean_text", "map_aiohttp_errors", "parse_retry_after", "scrub",
           "task_id_of", "video_url_of"]
