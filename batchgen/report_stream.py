"""report.html written from a stream of rows (issue 18): a million jobs' page without a
million rows, job dicts or bars in memory at once.

`write_html_stream` reads the rows once: the summary's counts and sums, the money audit
(only the items found), the videos waiting for download, the timeline's spans (six
numbers per job, in arrays: report_timeline.py, which also lays them out and draws
their marks) and the job list (each job's JSON written to an anonymous
temporary file as it comes). The page is then the template's, rendered with two markers
where the timeline's marks and the job list go, and written in pieces: the head, the
marks (a lane at a time, per status), the middle, the job list copied back, the tail.
It is the very text of `report_html.render_html` over the same rows (the tests compare
them byte for byte). Deliberately not here: the page's content (report_html.py, the
template), the audit's rules (audit.py).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

from batchgen.audit import (
    ISO,
    SECTIONS,
    AuditItem,
    Oldest,
    audit_text_parts,
    money_audit,
    parse_iso,
    utc_now,
)
from batchgen.report import write_atomic_chunks
from batchgen.report_html import (
    _ENV,
    AUDIT_SHOWN,
    EXPIRING_SHOWN,
    HTML_NAME,
    TOOLTIP_LIMIT,
    _job,
    _posters,
    expiring_rows,
)
from batchgen.report_timeline import STATUS, Spans, timeline
from batchgen.store import JobRow, JobState, report_status

#: where the audit's text, the timeline's marks and the job list go in the rendered page
_AUDIT = "<!--batchgen:audit-->"
_MARKS = "<!--batchgen:marks-->"
_DATA = "batchgen:jobs-data"
#: bytes of the job list copied at a time
_BLOCK = 1 << 20


class _Pass:
    """What one pass over the rows gathers for the page."""

    def __init__(self, posters: Container[str], data: IO[bytes], audit: _AuditSpool,
                 tips: bool) -> None:
        self.posters = posters
        self.data = data
        #: jobs, estimated, deducted, estimated_charged, completed, held (credits)
        self.sums: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.audit = audit
        self.waiting = Oldest(EXPIRING_SHOWN)
        self.spans = Spans(tips)
        self._buf: list[str] = []

    def add(self, r: JobRow) -> None:
        sums = self.sums
        sums["jobs"] += 1
        self.counts[report_status(r.state)] += 1
        sums["estimated"] += r.credits_estimated
        sums["held"] += r.committed_credits
        deducted = r.credits_deducted
        if deducted is not None:
            sums["deducted"] += deducted
            sums["estimated_charged"] += r.credits_estimated
        sums["completed"] += r.state is JobState.COMPLETED
        if r.state in (JobState.FAILED, JobState.UNKNOWN) or (
                deducted is not None and deducted != r.credits_estimated):
            self.audit.add(money_audit([r]))
        self.waiting.add(r)
        start = parse_iso(r.submitted_at)
        if start is not None:
            self.spans.add(r, start)
        self._buf.append(htmlsafe_json_dumps(_job(r, self.posters), sort_keys=True))
        if len(self._buf) >= 2000:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self.data.write(((", " if self.data.tell() else "")
                             + ", ".join(self._buf)).encode())
            self._buf = []


class _AuditSpool:
    """The money audit from a stream: each section's count, its first `AUDIT_SHOWN` items
    (the page's tables) and every item's line of the support text, spooled to a temporary
    file per section (a million jobs can have a hundred thousand items)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.counts: Counter[str] = Counter()
        self.shown: dict[str, list[AuditItem]] = {key: [] for key, _, _ in SECTIONS}
        self._files: dict[str, IO[str]] = {}
        self._open = contextlib.ExitStack()

    def add(self, audit: Mapping[str, Sequence[AuditItem]]) -> None:
        for key, items in audit.items():
            if not items:
                continue
            self.counts[key] += len(items)
            shown = self.shown[key]
            shown += items[:AUDIT_SHOWN - len(shown)]
            spool = self._files.get(key)
            if spool is None:
                spool = self._files[key] = self._open.enter_context(
                    tempfile.TemporaryFile(  # noqa: SIM115 - closed by the ExitStack
                        "w+", encoding="utf-8", newline="", dir=self._directory,
                        prefix=".report-audit-"))  # newline="": an API's CR kept as sent
            spool.writelines(f"  {item.line()}\n" for item in items)

    def text(self, *, name: str, now: str) -> Iterator[str]:
        """`audit.audit_text`, escaped for the page's text box, in pieces."""
        return (str(escape(part)) for part in audit_text_parts(
            self.counts, self._lines, name=name, now=now))

    def _lines(self, key: str) -> Iterator[str]:
        spool = self._files[key]
        spool.seek(0)
        while block := spool.read(_BLOCK):
            yield block

    def close(self) -> None:
        self._open.close()


def write_html_stream(directory: Path, rows: Iterable[JobRow], *, name: str,
                      summary: Mapping[str, Any] | None = None,
                      abandoned: Sequence[Mapping[str, Any]] = (),
                      budget: int | None = None, committed: int | None = None,
                      now: datetime | None = None, tips: bool | None = None) -> Path:
    """`report_html.write_html` from a stream of rows (read once, never all held).
    `tips`: whether the timeline has per-job tooltips, i.e. whether there are at most
    `TOOLTIP_LIMIT` submitted jobs (None: learnt from the rows, which keeps their
    stamps until the limit is passed)."""
    now = now or utc_now()
    path = directory / HTML_NAME
    spool = _AuditSpool(directory)
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".report-data-") as data:
            acc = _Pass(_posters(directory), data, spool, True if tips is None else tips)
            for row in rows:
                acc.add(row)
                kept = acc.spans.tips
                if tips is None and kept is not None and len(kept) > TOOLTIP_LIMIT:
                    acc.spans.tips = None  # too many for tooltips: drop the texts kept
            acc.flush()
            spool.add(money_audit([], abandoned))
            tl, bars = timeline(acc.spans, now)
            context = _context(acc, name=name, now=now, summary=summary,
                               abandoned=abandoned, budget=budget, committed=committed, tl=tl)
            page = _ENV.get_template("report.html.j2").render(context)
            data.seek(0)
            pieces = [(_AUDIT, spool.text(name=name, now=now.strftime(ISO))),
                      *([(_MARKS, bars)] if tl else []),
                      (str(htmlsafe_json_dumps(_DATA)), _job_list(data))]
            write_atomic_chunks(path, _splice(page, pieces))
    finally:
        spool.close()
    return path


def _splice(page: str, pieces: Sequence[tuple[str, Iterable[str]]]) -> Iterator[str]:
    """The rendered page with each marker, in page order, replaced by its pieces (every
    value in the page is escaped: no marker can come from the data)."""
    rest = page
    for marker, parts in pieces:
        before, found, rest = rest.partition(marker)
        if not found:
            raise RuntimeError(f"report.html: the template lost its {marker!r}")
        yield before
        yield from parts
    yield rest


def _job_list(data: IO[bytes]) -> Iterator[str]:
    yield "["
    while block := data.read(_BLOCK):
        yield block.decode()  # whole JSON texts of ASCII (htmlsafe): no split characters
    yield "]"


def _context(acc: _Pass, *, name: str, now: datetime, summary: Mapping[str, Any] | None,
             abandoned: Sequence[Mapping[str, Any]], budget: int | None,
             committed: int | None, tl: dict[str, Any] | None) -> dict[str, Any]:
    """`render_html`'s context, from the pass's figures."""
    stamp = now.strftime(ISO)
    sums, audit = acc.sums, acc.audit
    if committed is None:
        committed = sums["held"]
    prior = sum(int(a.get("credits") or 0) for a in abandoned)
    return {
        "name": name, "generated": stamp, "jobs": sums["jobs"],
        "counts": [(k, acc.counts.get(k, 0)) for k in STATUS],
        "estimated": sums["estimated"], "deducted": sums["deducted"],
        "estimated_charged": sums["estimated_charged"],
        "difference": sums["deducted"] - sums["estimated_charged"], "prior": prior,
        "budget": budget, "committed": committed,
        "left": None if budget is None else budget - committed,
        "wall": (summary or {}).get("wall_seconds"),
        "sections": [(key, title, meaning, audit.shown[key], audit.counts[key])
                     for key, title, meaning in SECTIONS],
        "audit_count": sum(audit.counts.values()),
        "audit_text": Markup(_AUDIT),
        "expiring": expiring_rows(acc.waiting.items, now),
        "expiring_count": acc.waiting.count,
        "timeline": tl, "marks": Markup(_MARKS) if tl else Markup(""),
        "completed": sums["completed"], "data": _DATA,
    }
