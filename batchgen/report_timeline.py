"""report.html's timeline drawn from a stream of rows: a few numbers a job, never a bar
object per job (issue 18).

`Spans` keeps, per submitted job, when it started, finished at the API and was downloaded
(microseconds, in arrays) and its status; `timeline` lays them out in lanes and returns
the timeline's figures for the template with its marks as pieces of SVG text, a lane of
a status at a time: the very marks `report_html.timeline` draws over a list of rows (the
tests compare the pages byte for byte). Pure: the caller passes `now`.

Deliberately not here: reading the rows and writing the page (report_stream.py), the
page's other content (report_html.py, the template).
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import escape

from batchgen.audit import ISO, parse_iso
from batchgen.report_html import LANE_PX, MAX_LANES, PLOT_W, _duration, timeline_ticks
from batchgen.store import JobRow, JobState, report_status

#: the report's statuses, in the order the page lists them (a job's status is its index)
STATUS = ("completed", "failed", "pending", "unknown")
_OPEN = (JobState.RUNNING, JobState.AUDIO_RUNNING, JobState.AUDIO_PENDING)


#: jobs sorted at a time by `_order` before the runs are merged
_RUN = 1 << 16
#: an absent time among the spans' microseconds
_NONE = -(1 << 63)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Spans:
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
        self.status.append(STATUS.index(report_status(r.state)))
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


def timeline(spans: Spans, now: datetime) -> tuple[dict[str, Any] | None, Iterator[str]]:
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
    order = _order(s, e)
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


def _order(s: array[float], e: array[float]) -> array[int]:
    """The jobs' indices by start, then end, ties in index order (report_html's order):
    `sorted(range(n), key=...)` without a million int and key objects at once (~70 MB):
    runs of `_RUN` sorted, then merged (heapq.merge keeps ties in the runs' order)."""
    def key(i: int) -> tuple[float, float]:
        return s[i], e[i]
    runs = [array("q", sorted(range(lo, min(lo + _RUN, len(s))), key=key))
            for lo in range(0, len(s), _RUN)]
    return runs[0] if len(runs) == 1 else array("q", heapq.merge(*runs, key=key))


class _Bars:
    """The bars in the timeline's order, drawn as `report_html._marks` draws them."""

    def __init__(self, spans: Spans, order: array[int], lane_of: array[int], s: array[float],
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
                cls = STATUS[self.spans.status[self.order[k]]]
                yield (f'<rect class="{cls}" x="{x}" y="{y}" width="{w}" height="{h}">'
                       f"<title>{escape(tip)}</title></rect>")
                if dx is not None:
                    yield (f'<path class="wait" d="M{x + w} {y + half}H{dx}"></path>'
                           f'<circle class="dl" cx="{dx}" cy="{y + half}" r="{max(2, h / 3)}">'
                           "</circle>")
            return
        for code, cls in sorted(enumerate(STATUS), key=lambda c: c[1]):
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
