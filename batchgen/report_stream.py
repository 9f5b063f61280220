"""report.html written from a stream of rows (issue 18): a million jobs' page without a
million rows, job dicts or bars in memory at once.

`write_html_stream` reads the rows once: the summary's counts and sums, the money audit
(only the items found), the videos waiting for download, the timeline's spans (six
numbers per job, in arrays) and the job list (each job's JSON written to an anonymous
temporary file as it comes). The page is then the template's, rendered with two markers
where the timeline's marks and the job list go, and written in pieces: the head, the
marks (a lane at a time, per status), the middle, the job list copied back, the tail.
It is the very text of `report_html.render_html` over the same rows (the tests compare
them byte for byte). Deliberately not here: the page's content (report_html.py, the
template), the audit's rules (audit.py).
"""

from __future__ import annotations

import heapq
import math
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

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
from batchgen.report_html import (
    _ENV,
    HTML_NAME,
    LANE_PX,
    MAX_LANES,
    PLOT_W,
    TOOLTIP_LIMIT,
    _duration,
    _job,
    _posters,
    timeline_ticks,
)
from batchgen.store import JobRow, JobState, report_status

#: where the timeline's marks and the job list go in the rendered page
_MARKS = "<!--batchgen:marks-->"
_DATA = "batchgen:jobs-data"
_OPEN = (JobState.RUNNING, JobState.AUDIO_RUNNING, JobState.AUDIO_PENDING)
_STATUS = ("completed", "failed", "pending", "unknown")
#: bytes of the job list copied at a time
_BLOCK = 1 << 20


#: an absent time among the spans' microseconds
_NONE = -(1 << 63)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Spans:
    """The timeline's spans, a few numbers a job (when it started, finished at the API and
    was downloaded: microseconds, as timedelta counts them), kept until the page is
    written; the tooltips' texts too while there may be few enough to show them."""

    def __init__(self, tips: bool) -> None:
        self.start: array[int] = array("q")
        self.fin: array[int] = array("q")
        self.dl: array[int] = array("q")
        self.open = bytearray()
        self.status = bytearray()
        self.tips: list[str] | None = [] if tips else None

    def add(self, r: JobRow, start: datetime) -> None:
        self.start.append(_micro(start))
        self.status.append(_STATUS.index(report_status(r.state)))
        self.open.append(r.state in _OPEN)
        self.fin.append(_micro(parse_iso(r.finished_at)))
        self.dl.append(_micro(parse_iso(r.completed_at) if r.file else None))
        if self.tips is not None:
            self.tips.append(f"{r.job_id}: submitted {r.submitted_at}, finished at the API "
                             f"{r.finished_at or '-'}, downloaded "
                             f"{r.completed_at if r.file else '-'}")


def _micro(at: datetime | None) -> int:
    if at is None:
        return _NONE
    delta = at - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds


def _secs(micro: int, t0: int) -> float | None:
    """`(at - t0).total_seconds()`, exactly as timedelta computes it."""
    return None if micro == _NONE else (micro - t0) / 10**6


class _Pass:
    """What one pass over the rows gathers for the page."""

    def __init__(self, posters: set[str], data: IO[bytes], tips: bool) -> None:
        self.posters = posters
        self.data = data
        #: jobs, estimated, deducted, estimated_charged, completed, held (credits)
        self.sums: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.audit: dict[str, list[AuditItem]] = {key: [] for key, _, _ in SECTIONS}
        self.waiting: list[Any] = []
        self.spans = _Spans(tips)
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
        tl, bars = _timeline(acc.spans, now)
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
        "counts": [(k, acc.counts.get(k, 0)) for k in _STATUS],
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


def _timeline(spans: _Spans, now: datetime) -> tuple[dict[str, Any] | None, Iterator[str]]:
    """`report_html.timeline` over the spans, and its marks as pieces of text."""
    n = len(spans.start)
    if not n:
        return None, iter(())
    t0 = min(spans.start)
    s = array("d", ((m - t0) / 10**6 for m in spans.start))
    e = array("d")
    dls = array("d")
    until_now = (_micro(now) - t0) / 10**6
    for i in range(n):
        fin, dl = _secs(spans.fin[i], t0), _secs(spans.dl[i], t0)
        end_api = fin if fin is not None else dl
        if end_api is None:
            end_api = until_now if spans.open[i] else s[i]
        e.append(max(s[i], end_api))
        dls.append(math.nan if dl is None else dl)
    total = max(max(max(e[i], 0.0 if math.isnan(dls[i]) else dls[i]) for i in range(n)), 1.0)
    order = sorted(range(n), key=e.__getitem__)
    order.sort(key=s.__getitem__)  # stable: by start, then end (report_html's order)
    scale = PLOT_W / total
    lane_of = array("H")
    free: list[tuple[float, int]] = []
    lanes = 0
    for i in order:
        if free and free[0][0] <= s[i]:
            _, lane = heapq.heappop(free)
        elif lanes < MAX_LANES:
            lane, lanes = lanes, lanes + 1
        else:
            _, lane = heapq.heappop(free)
        heapq.heappush(free, (max(e[i], s[i] + 1e-9), lane))
        lane_of.append(lane)
    lanes = max(lanes, 1)
    lane_px = max(LANE_PX, min(24, 240 // lanes))
    ticks = timeline_ticks(total, scale)
    start = (_EPOCH + timedelta(microseconds=t0)).strftime(ISO)
    tl = {"bars": (), "lanes": lanes, "height": lanes * lane_px, "bar": lane_px - 2,
          "width": PLOT_W, "ticks": ticks, "start": start, "total": _duration(total)}
    bars = _Bars(spans, order, lane_of, s, e, dls, scale, lane_px)
    return tl, bars.marks(lane_px - 2)


class _Bars:
    """The bars in the timeline's order, drawn as `report_html._marks` draws them."""

    def __init__(self, spans: _Spans, order: list[int], lane_of: array[int], s: array[float],
                 e: array[float], dls: array[float], scale: float, lane_px: int) -> None:
        self.spans, self.order, self.lane_of = spans, order, lane_of
        self.s, self.e, self.dls, self.scale, self.lane_px = s, e, dls, scale, lane_px

    def bar(self, k: int) -> tuple[float, int, float, float | None, int]:
        i = self.order[k]
        s, e, dl, scale = self.s[i], self.e[i], self.dls[i], self.scale
        return (round(s * scale, 1), int(self.lane_of[k]) * self.lane_px,
                round(max((e - s) * scale, 1.0), 1),
                None if math.isnan(dl) else round(dl * scale, 1), self.spans.status[i])

    def marks(self, h: int) -> Iterator[str]:
        half = h / 2
        tips = self.spans.tips
        if tips is not None:  # each bar its own element, with its tooltip
            for k in range(len(self.order)):
                x, y, w, dx, _ = self.bar(k)
                tip = tips[self.order[k]]
                cls = _STATUS[self.spans.status[self.order[k]]]
                yield (f'<rect class="{cls}" x="{x}" y="{y}" width="{w}" height="{h}">'
                       f"<title>{escape(tip)}</title></rect>")
                if dx is not None:
                    yield (f'<path class="wait" d="M{x + w} {y + half}H{dx}"></path>'
                           f'<circle class="dl" cx="{dx}" cy="{y + half}" r="{max(2, h / 3)}">'
                           "</circle>")
            return
        for code, cls in sorted(enumerate(_STATUS), key=lambda c: c[1]):
            if code in self.spans.status:
                yield f'<path class="{cls}" d="'
                yield from self._chunks(f"M{x} {y}h{w}v{h}h{-w}z"
                                        for x, y, w, _, c in self._all() if c == code)
                yield '"></path>'
        if any(not math.isnan(d) for d in self.dls):
            yield '<path class="wait" d="'
            yield from self._chunks(f"M{x + w} {y + half}H{dx}"
                                    for x, y, w, dx, _ in self._all() if dx is not None)
            yield '"></path><path class="dl-tick" d="'
            yield from self._chunks(f"M{dx} {y}v{h}"
                                    for _, y, _, dx, _ in self._all() if dx is not None)
            yield '"></path>'

    def _all(self) -> Iterator[tuple[float, int, float, float | None, int]]:
        return (self.bar(k) for k in range(len(self.order)))

    @staticmethod
    def _chunks(parts: Iterable[str]) -> Iterator[str]:
        buf: list[str] = []
        for part in parts:
            buf.append(part)
            if len(buf) >= 5000:
                yield "".join(buf)
                buf = []
        yield "".join(buf)
