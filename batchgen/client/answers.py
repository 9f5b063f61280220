"""Reading the API's answers, which are untrusted data: ids, statuses, URLs, times and
credits are checked before they leave the client; text is made fit for one line and
scrubbed of secrets.

A hostile or buggy server fails one request (or one job), never the run. Part of the
client package (batchgen/client/). Deliberately not here: sending (transport.py).
"""

from __future__ import annotations

import email.utils
import math
from typing import Any
from urllib.parse import urlsplit

from batchgen.client.wire import (
    _CONTROL,
    _TASK_ID,
    MAX_TEXT,
    MAX_URL_LENGTH,
    MIN_SECRET_LENGTH,
    TaskRecord,
    TaskStatus,
)
from batchgen.errors import FatalApiError, OutcomeUnknown


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
