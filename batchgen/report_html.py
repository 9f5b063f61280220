"""report.html: the run as a page people look at, built from the state alone, like report.csv.

One self-contained file beside report.csv (no CDN, no network; opens from ``file://`` and on
a phone) plus the poster JPEGs that were extracted as videos were downloaded
(posters.py): a summary, the money audit, the jobs whose videos will expire at the API, a
timeline of the run, a gallery of the videos and a table of every job.

Rendered with a Jinja2 template with autoescaping: a prompt is untrusted text and must show
as text, whatever it holds. The job list goes into the page as JSON (Jinja's ``tojson``,
which escapes ``<``, ``>``, ``&`` and quotes for a ``<script>`` element) and the page's own
script renders only the rows and tiles of the current page, with ``textContent``: a report
of 10,000 jobs is written in well under a second and stays responsive.
Deliberately not here: the audit's rules (audit.py), report.csv and summary.json
(report.py), extracting posters (posters.py).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from batchgen.audit import (
    ISO,
    SECTIONS,
    Expiring,
    audit_text,
    money_audit,
    not_downloaded,
    parse_iso,
    utc_now,
)
from batchgen.posters import POSTER_DIR, PosterIndex, poster_name
from batchgen.report import write_atomic
from batchgen.store import JobRow, JobState, report_status

HTML_NAME = "report.html"
#: timeline drawing: thinnest lane and width of the plot, in SVG user units
LANE_PX = 6
PLOT_W = 1000
#: lanes drawn at most; more concurrent jobs share the last lanes
MAX_LANES = 200
#: per-job tooltips in the timeline only up to this many jobs (they weigh on big pages)
TOOLTIP_LIMIT = 2000
#: audit items per section and videos waiting for download listed in the page's tables
#: (the audit's text box holds every item; `status` counts the waiting videos)
AUDIT_SHOWN = 200
EXPIRING_SHOWN = 500

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("batchgen", "templates"),
    autoescape=True,  # every value is escaped, always: prompts and API messages are untrusted
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def _when(text: str | None) -> str:
    """A state timestamp for people: '2026-11-28 09:01:46' (UTC), or an em dash."""
    return text.replace("T", " ").removesuffix("Z") if text else "—"


_ENV.filters["when"] = _when


def warm() -> None:
    """Compile the page's template now (`_ENV` keeps it): a run calls this in a worker
    thread while it waits on the API, so its end does not pay for it."""
    _ENV.get_template("report.html.j2")


def _job(r: JobRow, posters: Container[str]) -> dict[str, Any]:
    req = r.request
    poster = poster_name(r.sha256) if r.sha256 else None
    return {
        "id": r.job_id,
        "status": report_status(r.state),
        "state": r.state.value,
        "prompt": req.get("prompt") or req.get("effect_code") or "",
        "res": req.get("resolution"),
        "len": req.get("video_length"),
        "est": r.credits_estimated,
        "chg": r.credits_deducted,
        "task": r.final_task_id or r.task_id,
        "sub": r.submitted_at,
        "fin": r.finished_at,
        "dl": r.completed_at if r.file else None,
        "err": r.error,
        "file": r.file if r.state is JobState.COMPLETED else None,
        "poster": f"{POSTER_DIR}/{poster}" if poster and poster in posters else None,
    }


def _seconds(start: datetime, text: str | None) -> float | None:
    at = parse_iso(text)
    return None if at is None else (at - start).total_seconds()


def timeline(rows: Sequence[JobRow], now: datetime) -> dict[str, Any] | None:
    """Bars for the SVG: each job in a lane from submitted to finished at the API, then to
    downloaded. Lanes are packed greedily, so their count is the concurrency the run had."""
    stamps = [parse_iso(r.submitted_at) for r in rows]
    starts = [s for s in stamps if s is not None]
    if not starts:
        return None
    t0 = min(starts)
    spans = []
    for r, start in zip(rows, stamps, strict=True):
        if start is None:
            continue
        s = (start - t0).total_seconds()
        fin = _seconds(t0, r.finished_at)
        dl = _seconds(t0, r.completed_at) if r.file else None
        end_api = fin if fin is not None else dl
        open_ended = end_api is None and r.state in (JobState.RUNNING, JobState.AUDIO_RUNNING,
                                                     JobState.AUDIO_PENDING)
        if end_api is None:
            end_api = (now - t0).total_seconds() if open_ended else s
        spans.append((s, max(s, end_api), dl, r))
    spans.sort(key=lambda x: (x[0], x[1]))
    total = max([max(e, d or 0) for _, e, d, _ in spans] + [1.0])
    scale = PLOT_W / total
    free: list[tuple[float, int]] = []  # (time the lane frees up, lane)
    lanes = 0
    bars: list[dict[str, Any]] = []
    tips = len(spans) <= TOOLTIP_LIMIT
    for s, e, dl, r in spans:
        if free and free[0][0] <= s:
            _, lane = heapq.heappop(free)
        elif lanes < MAX_LANES:
            lane, lanes = lanes, lanes + 1
        else:
            _, lane = heapq.heappop(free)
        heapq.heappush(free, (max(e, s + 1e-9), lane))
        status = report_status(r.state)
        bars.append({
            "x": round(s * scale, 1), "w": round(max((e - s) * scale, 1.0), 1),
            "y": lane, "cls": status,
            "dx": round(dl * scale, 1) if dl is not None else None,
            "tip": (f"{r.job_id}: submitted {r.submitted_at}, finished at the API "
                    f"{r.finished_at or '-'}, downloaded {r.completed_at if r.file else '-'}"
                    if tips else None),
        })
    lanes = max(lanes, 1)
    # a few slots get thick bars, a hundred thin ones: the plot stays 100-600 units tall
    lane_px = max(LANE_PX, min(24, 240 // lanes))
    for bar in bars:
        bar["y"] = int(bar["y"]) * lane_px
    return {"bars": bars, "lanes": lanes, "height": lanes * lane_px, "bar": lane_px - 2,
            "width": PLOT_W, "ticks": timeline_ticks(total, scale), "start": t0.strftime(ISO),
            "total": _duration(total)}


def _marks(tl: Mapping[str, Any]) -> Markup:
    """The bars of the timeline as SVG text, built here rather than in a template loop
    (10,000 bars cost 0.6 s through Jinja, 20 ms here). Only numbers and fixed class names
    go in unescaped; each tooltip (a job id and times) is escaped explicitly.

    Up to `TOOLTIP_LIMIT` jobs each bar is its own element with a tooltip; above, the bars
    of one status share one path, so the browser draws 4 elements instead of 30,000.
    """
    h = tl["bar"]
    half = h / 2
    out: list[str] = []
    if any(b["tip"] for b in tl["bars"]):
        for b in tl["bars"]:
            x, y, w, dx = b["x"], b["y"], b["w"], b["dx"]
            out.append(f'<rect class="{b["cls"]}" x="{x}" y="{y}" width="{w}" height="{h}">'
                       f"<title>{escape(b['tip'])}</title></rect>")
            if dx is not None:
                out.append(f'<path class="wait" d="M{x + w} {y + half}H{dx}"></path>'
                           f'<circle class="dl" cx="{dx}" cy="{y + half}" r="{max(2, h / 3)}">'
                           "</circle>")
        return Markup("".join(out))
    paths: dict[str, list[str]] = {}
    waits: list[str] = []
    dots: list[str] = []
    for b in tl["bars"]:
        x, y, w, dx = b["x"], b["y"], b["w"], b["dx"]
        paths.setdefault(b["cls"], []).append(f"M{x} {y}h{w}v{h}h{-w}z")
        if dx is not None:
            waits.append(f"M{x + w} {y + half}H{dx}")
            dots.append(f"M{dx} {y}v{h}")
    for cls, d in sorted(paths.items()):
        out.append(f'<path class="{cls}" d="{"".join(d)}"></path>')
    if waits:
        out.append(f'<path class="wait" d="{"".join(waits)}"></path>')
        out.append(f'<path class="dl-tick" d="{"".join(dots)}"></path>')
    return Markup("".join(out))


def timeline_ticks(total: float, scale: float) -> list[dict[str, Any]]:
    """The time axis's labelled ticks, at a round step (shared with the streamed report)."""
    ticks = []
    step = _tick_step(total)
    t = 0.0
    while t <= total + 1e-9:
        ticks.append({"x": round(t * scale, 1), "label": _duration(t)})
        t += step
    return ticks


def _tick_step(total: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400,
                 21600, 43200, 86400):
        if total / step <= 8:
            return float(step)
    return 86400.0 * max(1, round(total / 86400 / 8))


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d}"


def expiring_rows(items: Sequence[Expiring], now: datetime) -> list[dict[str, Any]]:
    """The table of videos waiting for download, as the template shows it."""
    return [{"job_id": e.job_id, "task_id": e.task_id, "finished_at": e.finished_at,
             "expires_at": e.expires_at.strftime(ISO), "left": e.left(now),
             "expired": e.expires_at <= now, "state": e.state} for e in items]


def _posters(directory: Path) -> PosterIndex:
    return PosterIndex(directory / POSTER_DIR)


def render_html(rows: Sequence[JobRow], *, name: str, output_dir: Path,
                summary: Mapping[str, Any] | None = None,
                abandoned: Sequence[Mapping[str, Any]] = (),
                budget: int | None = None, committed: int | None = None,
                now: datetime | None = None) -> str:
    """The whole page as text."""
    now = now or utc_now()
    stamp = now.strftime(ISO)
    posters = _posters(output_dir)
    counts = Counter(report_status(r.state) for r in rows)
    charged = [r for r in rows if r.credits_deducted is not None]
    deducted = sum(r.credits_deducted or 0 for r in charged)
    estimated_charged = sum(r.credits_estimated for r in charged)
    prior = sum(int(a.get("credits") or 0) for a in abandoned)
    if committed is None:
        committed = sum(r.committed_credits for r in rows)
    audit = money_audit(rows, abandoned)
    expiring = not_downloaded(rows)
    completed = sum(1 for r in rows if r.state is JobState.COMPLETED)
    tl = timeline(rows, now)
    context = {
        "name": name,
        "generated": stamp,
        "jobs": len(rows),
        "counts": [(k, counts.get(k, 0)) for k in ("completed", "failed", "pending", "unknown")],
        "estimated": sum(r.credits_estimated for r in rows),
        "deducted": deducted,
        "estimated_charged": estimated_charged,
        "difference": deducted - estimated_charged,
        "prior": prior,
        "budget": budget,
        "committed": committed,
        "left": None if budget is None else budget - committed,
        "wall": (summary or {}).get("wall_seconds"),
        "sections": [(key, title, meaning, audit[key][:AUDIT_SHOWN], len(audit[key]))
                     for key, title, meaning in SECTIONS],
        "audit_count": sum(len(v) for v in audit.values()),
        "audit_text": audit_text(audit, name=name, now=stamp),
        "expiring": expiring_rows(expiring[:EXPIRING_SHOWN], now),
        "expiring_count": len(expiring),
        "timeline": tl,
        "marks": _marks(tl) if tl else Markup(""),
        "completed": completed,
        "data": [_job(r, posters) for r in rows],
    }
    return _ENV.get_template("report.html.j2").render(context)


def write_html(directory: Path, rows: Sequence[JobRow], *, name: str,
               summary: Mapping[str, Any] | None = None,
               abandoned: Sequence[Mapping[str, Any]] = (),
               budget: int | None = None, committed: int | None = None) -> Path:
    """Write report.html into `directory` atomically; returns its path."""
    path = directory / HTML_NAME
    write_atomic(path, render_html(rows, name=name, output_dir=directory, summary=summary,
                                   abandoned=abandoned, budget=budget, committed=committed))
    return path
