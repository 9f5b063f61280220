"""Reports: `report.csv` and `summary.json`, built from the store alone.

Because both come from the state database, `batchgen report` can rebuild them after any
crash. Both are written atomically (temporary file + `os.replace`), so a reader never sees
half a report. The temporary file is created with O_EXCL|O_NOFOLLOW: a symlink planted in
the output dir can never make batchgen truncate or write a file elsewhere.

This module owns the files and the summary's figures (`Totals`); report.csv's columns
and cells are report_csv.py's (RFC 4180, safe to open in a spreadsheet).
Deliberately not here: terminal output (batchgen/cli/), the page (report_html.py).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from batchgen.errors import OutputNotWritable
from batchgen.report_csv import csv_chunks, render_csv, user_columns
from batchgen.store import JobRow, JobState, report_status


def charges(rows: Sequence[JobRow]) -> dict[str, int]:
    """What the API charged so far against the table's estimate for the same jobs."""
    charged = [r for r in rows if r.credits_deducted is not None]
    return {"jobs": len(charged),
            "estimated": sum(r.credits_estimated for r in charged),
            "deducted": sum(r.credits_deducted or 0 for r in charged),
            "differs": sum(1 for r in charged if r.credits_deducted != r.credits_estimated)}


def summarize(rows: Sequence[JobRow], *, wall_seconds: float | None = None,
              requests: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Totals for summary.json and the terminal."""
    totals = Totals()
    for row in rows:
        totals.add(row)
    return totals.summary(wall_seconds=wall_seconds, requests=requests)


class Totals:
    """`summarize`, fed one row at a time: `status` streams a million rows through it."""

    def __init__(self) -> None:
        self.jobs = self.estimated = self.estimated_submitted = self.deducted = 0
        self.differs = self.changed = 0
        self.states: Counter[str] = Counter()

    def add(self, r: JobRow) -> None:
        self.jobs += 1
        self.states[r.state.value] += 1
        self.estimated += r.credits_estimated
        if r.state.value != "pending" or r.task_id:
            self.estimated_submitted += r.credits_estimated
        deducted = r.credits_deducted
        if deducted is not None:
            self.deducted += deducted
            self.differs += deducted != r.credits_estimated
        self.changed += bool(r.changed)

    def summary(self, *, wall_seconds: float | None = None,
                requests: Mapping[str, int] | None = None) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        for state, n in self.states.items():
            counts[report_status(JobState(state))] += n
        return {
            "jobs": self.jobs,
            "status": {k: counts.get(k, 0) for k in ("completed", "failed", "pending", "unknown")},
            "states": dict(self.states),
            "credits_estimated": self.estimated,
            "credits_estimated_submitted": self.estimated_submitted,
            "credits_deducted": self.deducted,
            "charged_differently": self.differs,
            "manifest_changed": self.changed,
            "wall_seconds": round(wall_seconds, 3) if wall_seconds is not None else None,
            "requests": dict(sorted((requests or {}).items())),
            "requests_total": sum((requests or {}).values()),
        }


def add_history(summary: dict[str, Any], history: Mapping[str, Any]) -> dict[str, Any]:
    """Lay the figures of earlier runs (`Store.run_history`) beside this summary's.

    `all_runs` sums every run of this output dir (runs, wall time, requests by endpoint);
    `last_run_finished_at` says when the latest one ended. A summary built without a run
    (`batchgen report`) takes the latest run's wall time, requests and budget, so
    rewriting the report never blanks them.
    """
    last = _as_mapping(history.get("last"))
    every = _as_mapping(history.get("all"))
    if summary.get("wall_seconds") is None and last:
        requests = {k: v for k, v in _as_mapping(last.get("requests")).items()
                    if isinstance(v, int)}
        summary["wall_seconds"] = last.get("wall_seconds")
        summary["requests"] = requests
        summary["requests_total"] = sum(requests.values())
        summary.setdefault("budget", last.get("budget"))
    summary["all_runs"] = {"runs": every.get("runs", 0),
                           "wall_seconds": every.get("wall_seconds", 0),
                           "requests": dict(_as_mapping(every.get("requests"))),
                           "requests_total": every.get("requests_total", 0)}
    summary["last_run_finished_at"] = last.get("finished_at")
    return summary


def _as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old or the new file, never half."""
    write_atomic_chunks(path, (text,))


def write_atomic_chunks(path: Path, chunks: Iterable[str]) -> None:
    """`write_atomic` of the text the chunks make, written as they come.

    The temporary file is created, never opened: O_EXCL|O_NOFOLLOW refuse a file or a
    symlink planted under its name, so nothing outside the output dir is ever truncated.
    `os.replace` swaps the directory entry itself: a symlink at `path` is replaced, its
    target left alone. Any failure (read-only dir, full disk, or the chunks' own)
    removes the temporary file; the environment's is raised as `OutputNotWritable`. The
    previous report stays as it was.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = -1
    try:
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileExistsError:
            os.unlink(tmp)  # left by a crash, or planted: unlinking never follows a link
            fd = os.open(tmp, flags, 0o644)
        for chunk in chunks:
            view = memoryview(chunk.encode("utf-8"))
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if not isinstance(exc, OSError):
            raise  # the chunks' own failure (the state could not be read): no half file
        raise OutputNotWritable(
            f"cannot write {path}: {exc.strerror or exc}; the state is intact — free space "
            "or fix the permissions, then run `batchgen report` (or the run) again") from None


def stream_reports(directory: Path, report_name: str, rows: Iterable[JobRow],
                   extras: Iterable[JobRow],
                   summary_of: Callable[[Totals], dict[str, Any]],
                   holders: Mapping[str, str] | None = None) -> tuple[Path, dict[str, Any]]:
    """`write_reports` from a stream of rows (the store's cursor: a million rows are never
    held): report.csv as they come, counted on the way, then summary.json from the
    totals (`summary_of`); returns report.csv's path and the summary. `extras` are the
    rows that may carry the user's own columns (a superset will do), read first, since
    the header names them; `holders` as in `render_csv`."""
    _mkdir(directory)
    totals = Totals()

    def counted() -> Iterator[JobRow]:
        for row in rows:
            totals.add(row)
            yield row

    report = directory / report_name
    users = user_columns(extras, holder=holders is not None)
    write_atomic_chunks(report, csv_chunks(counted(), users, holders))
    summary_path = directory / "summary.json"
    summary = summary_of(totals)
    write_atomic(summary_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return report, summary


def _mkdir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritable(f"cannot create {directory}: {exc.strerror or exc}") from None


def write_reports(directory: Path, report_name: str, rows: Sequence[JobRow],
                  summary: Mapping[str, Any], holders: Mapping[str, str] | None = None
                  ) -> tuple[Path, Path]:
    """Write report.csv and summary.json into `directory`; returns both paths. `holders`:
    who holds what, with a shared state (`render_csv`)."""
    _mkdir(directory)
    report = directory / report_name
    write_atomic(report, render_csv(rows, holders))
    summary_path = directory / "summary.json"
    write_atomic(summary_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return report, summary_path
