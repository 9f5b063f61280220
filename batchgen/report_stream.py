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

import tempfile
from collections import Counter
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from batchgen.audit import (
    ISO,
    SECTIONS,
    AuditItem,
    audit_text,
    expiring,
    money_audit,
    parse_iso,
    utc_now,
)
from batchgen.report import write_atomic_chunks
from batchgen.report_html import _ENV, HTML_NAME, TOOLTIP_LIMIT, _job, _posters
from batchgen.report_timeline import STATUS, Spans, timeline
from batchgen.store import JobRow, JobState, report_status

#: where the timeline's marks and the job list go in the rendered page
_MARKS = "<!--batchgen:marks-->"
_DATA = "batchgen:jobs-data"
#: bytes of the job list copied at a time
_BLOCK = 1 << 20


class _Pass:
    """What one pass over the rows gathers for the page."""

    def __init__(self, posters: Container[str], data: IO[bytes], tips: bool) -> None:
        self.posters = posters
        self.data = data
        #: jobs, estimated, deducted, estimated_charged, completed, held (credits)
        self.sums: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.audit: dict[str, list[AuditItem]] = {key: [] for key, _, _ in SECTIONS}
        self.waiting: list[Any] = []
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
            for key, items in money_audit([r]).items():
                self.audit[key] += items
        soon = expiring(r)
        if soon is not None:
            self.waiting.append(soon)
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
    with tempfile.TemporaryFile(dir=directory, prefix=".report-data-") as data:
        acc = _Pass(_posters(directory), data, True if tips is None else tips)
        for row in rows:
            acc.add(row)
            kept = acc.spans.tips
            if tips is None and kept is not None and len(kept) > TOOLTIP_LIMIT:
                acc.spans.tips = None  # too many for tooltips: drop the texts kept
        acc.flush()
        for key, items in money_audit([], abandoned).items():
            acc.audit[key] += items
        tl, bars = timeline(acc.spans, now)
        context = _context(acc, name=name, now=now, summary=summary, abandoned=abandoned,
                           budget=budget, committed=committed, tl=tl)
        page = _ENV.get_template("report.html.j2").render(context)
        head, _, rest = page.partition(_MARKS) if tl else ("", "", page)
        middle, found, tail = rest.rpartition(str(htmlsafe_json_dumps(_DATA)))
        if not found:
            raise RuntimeError("report.html: the template lost its job list")
        data.seek(0)
        write_atomic_chunks(path, _pieces(head, bars, middle, data, tail))
    return path


def _pieces(head: str, bars: Iterable[str], middle: str, data: IO[bytes], tail: str
            ) -> Iterator[str]:
    yield head
    yield from bars
    yield middle + "["
    while block := data.read(_BLOCK):
        yield block.decode()  # whole JSON texts of ASCII (htmlsafe): no split characters
    yield "]" + tail


def _context(acc: _Pass, *, name: str, now: datetime, summary: Mapping[str, Any] | None,
             abandoned: Sequence[Mapping[str, Any]], budget: int | None,
             committed: int | None, tl: dict[str, Any] | None) -> dict[str, Any]:
    """`render_html`'s context, from the pass's figures."""
    stamp = now.strftime(ISO)
    sums = acc.sums
    if committed is None:
        committed = sums["held"]
    waiting = sorted(acc.waiting, key=lambda e: (e.expires_at, e.job_id))
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
        "sections": [(key, title, meaning, acc.audit[key]) for key, title, meaning in SECTIONS],
        "audit_count": sum(len(v) for v in acc.audit.values()),
        "audit_text": audit_text(acc.audit, name=name, now=stamp),
        "expiring": [{"job_id": e.job_id, "task_id": e.task_id, "finished_at": e.finished_at,
                      "expires_at": e.expires_at.strftime(ISO), "left": e.left(now),
                      "expired": e.expires_at <= now, "state": e.state} for e in waiting],
        "timeline": tl, "marks": Markup(_MARKS) if tl else Markup(""),
        "completed": sums["completed"], "data": _DATA,
    }
