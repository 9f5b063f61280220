"""report.csv's format: its columns, its cells and its rows, from the store's rows.

report.csv is for spreadsheets and scripts alike, so it is RFC 4180 CSV (CRLF between
rows: a bare CR or LF inside a prompt is quoted, never splits a row, and every row reads
back exactly with Python's csv module), and text cells are neutralised against CSV
injection the way OWASP recommends: a text cell that begins with `=`, `+`, `-`, `@`, a
tab or a CR gets a leading `'` (a spreadsheet then shows it as text instead of running
it as a formula). A cell that is a plain number (`-5`, `+1.5`) is left as it is.

Pure text, no I/O. Deliberately not here: writing the file (report.py, atomically), the
summary's figures (report.py), the page (report_html.py).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from batchgen.store import JobRow, report_status

#: with a PostgreSQL state (--state), the last column: the runner (host:pid) holding the
#: job, empty when none does; never written for SQLite (one run per output dir)
HOLDER_COLUMN = "holder"
#: SPEC §4 columns, in this order; extra columns follow them.
COLUMNS: tuple[str, ...] = (
    "job_id", "status", "task_id", "image_url", "prompt", "resolution", "video_length",
    "audio_type", "effect_code", "credits_estimated", "credits_deducted", "video_url", "file",
    "bytes", "sha256", "submitted_at", "completed_at", "attempts", "error",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "state", "audio_task_id", "file_task_id", "credits_video", "credits_audio",
    "manifest_changed", "remote_deleted", "source",
)


#: first characters that make a spreadsheet treat a cell as a formula (OWASP)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def csv_safe(text: str) -> str:
    """A text cell that a spreadsheet shows as text, never runs as a formula (OWASP).

    Text that cannot be encoded as UTF-8 (a lone surrogate from a JSON answer) is
    replaced with U+FFFD rather than crash the report.
    """
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        text = "'" + text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # only lone surrogates cannot be
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def csv_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """A report row as written to report.csv: text cells made safe by `csv_safe`."""
    return {k: csv_safe(v) if isinstance(v, str) else v for k, v in values.items()}


def report_row(row: JobRow) -> dict[str, Any]:
    """One CSV row of a job."""
    req = row.request
    values = {
        "job_id": row.job_id,
        "status": report_status(row.state),
        "task_id": row.task_id,
        "image_url": req.get("image_url"),
        "prompt": req.get("prompt"),
        "resolution": req.get("resolution"),
        "video_length": req.get("video_length"),
        "audio_type": req.get("audio_type"),
        "effect_code": req.get("effect_code"),
        "credits_estimated": row.credits_estimated,
        "credits_deducted": row.credits_deducted,
        "video_url": row.video_url,
        "file": row.file,
        "bytes": row.bytes,
        "sha256": row.sha256,
        "submitted_at": row.submitted_at,
        "completed_at": row.completed_at,
        "attempts": row.attempts,
        "error": row.error,
        "state": row.state.value,
        "audio_task_id": row.audio_task_id,
        "file_task_id": row.final_task_id if row.file else None,
        "credits_video": row.credits_video,
        "credits_audio": row.credits_audio,
        "manifest_changed": row.changed,
        "remote_deleted": row.remote_deleted,
        "source": row.source,
    }
    return {k: _cell(v) for k, v in values.items()}


def user_columns(rows: Iterable[JobRow], *, holder: bool = False) -> dict[str, str]:
    """The user's own spreadsheet columns (jobs_file extra_columns: keep), in order of
    first appearance: header name -> report column. A name the report already uses gets
    the prefix `extra.` so that no column of SPEC §4 is ever shadowed (nor `holder`,
    when the report has it)."""
    taken = {c.lower() for c in (*COLUMNS, *EXTRA_COLUMNS, *([HOLDER_COLUMN] * holder))}
    out: dict[str, str] = {}
    for row in rows:
        extra = row.extra
        if not isinstance(extra, dict):
            continue
        for name in extra:
            if name not in out:
                out[name] = f"extra.{name}" if str(name).lower() in taken else str(name)
    return out


def render_csv(rows: Sequence[JobRow], holders: Mapping[str, str] | None = None) -> str:
    """The whole report as CSV text: SPEC columns, ours, then the user's own; with
    `holders` (a shared state: job id -> the runner holding it), a last `holder` column."""
    return "".join(csv_chunks(rows, user_columns(rows, holder=holders is not None), holders))


#: rows of report.csv rendered at a time by `csv_chunks`
CSV_CHUNK = 2_000


def csv_chunks(rows: Iterable[JobRow], users: Mapping[str, str],
               holders: Mapping[str, str] | None = None) -> Iterator[str]:
    """report.csv a few thousand rows at a time (a million rows are never one string):
    the header, then the rows, exactly the text of `render_csv`. `users` is
    `user_columns` of the same rows (a pass of its own: the header comes first)."""
    buf = io.StringIO()
    # the user's header names come from a spreadsheet too: made safe like any cell
    safe = {name: csv_safe(column) for name, column in users.items()}
    # CRLF (RFC 4180): the csv module quotes a cell holding any character of the line
    # terminator, so with "\r\n" a bare CR is quoted too ("\n" alone let it split a row)
    writer = csv.DictWriter(buf, fieldnames=[*COLUMNS, *EXTRA_COLUMNS, *safe.values(),
                                             *([HOLDER_COLUMN] if holders is not None else [])],
                            lineterminator="\r\n")
    writer.writeheader()
    for n, row in enumerate(rows, 1):
        values = report_row(row)
        extra = row.extra
        if users and isinstance(extra, dict):
            values.update({safe[k]: _cell(v) for k, v in extra.items() if k in users})
        if holders is not None:
            values[HOLDER_COLUMN] = holders.get(row.job_id, "")
        writer.writerow(csv_row(values))
        if n % CSV_CHUNK == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
