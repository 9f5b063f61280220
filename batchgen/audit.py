"""What a run's state says about money and about videos at risk: pure functions over rows.

report.html shows these, and `status` warns about expiring videos, so they live here,
apart from the page (no template engine is imported by `status`). Everything is computed
from the state alone: job rows and the tasks `--retry-failed` abandoned.

* The **money audit** lists each way the API's charges can differ from what a user would
  expect: a job charged but failed, a job charged more or less than estimated, an unknown
  create that may have been charged, and a step paid again by `--retry-failed`.
* **Expiry**: Akool keeps a generated video for 7 days. A job whose task finished but whose
  file is not on disk loses its video then; the oldest is the most urgent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from batchgen.store import JobRow, JobState

#: how long the API keeps a finished video (akool-api.md: URLs are valid for 7 days)
RETENTION = timedelta(days=7)
ISO = "%Y-%m-%dT%H:%M:%SZ"


def parse_iso(text: str | None) -> datetime | None:
    """A state timestamp as an aware UTC datetime; None when absent or malformed."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)  # C-fast; reads the trailing Z since 3.11
    except (ValueError, TypeError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AuditItem:
    """One line of the money audit: which job and task, when, what it cost, and why."""

    kind: str
    job_id: str
    step: str
    task_id: str | None
    credits: int | None
    estimated: int | None
    submitted_at: str | None
    finished_at: str | None
    message: str

    def line(self) -> str:
        """The item as one line of plain text for a support request."""
        parts = [f"job {self.job_id}", f"step {self.step}",
                 f"task {self.task_id or '(no task id: answer lost)'}"]
        if self.credits is not None:
            parts.append(f"charged {self.credits}")
        if self.estimated is not None:
            parts.append(f"estimated {self.estimated}")
        parts.append(f"submitted {self.submitted_at or '-'}")
        parts.append(f"finished {self.finished_at or '-'}")
        return "; ".join(parts) + (f": {self.message}" if self.message else "")


#: audit sections in page order: key, title, what it means
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("charged_failed", "Charged but failed",
     "The API charged these tasks and they produced no video."),
    ("charged_differs", "Charged differently from the estimate",
     "The API's deduction differs from the price table's estimate for the job."),
    ("unknown", "Unknown: may have been charged",
     "A create was sent but its answer was lost; the task may exist and be charged. "
     "Ask support to look it up by the time it was sent."),
    ("charged_twice", "Steps paid again by --retry-failed",
     "A failed or unknown step was sent again; the earlier task's charge stays spent."),
)


def money_audit(rows: Sequence[JobRow],
                abandoned: Sequence[Mapping[str, Any]] = ()) -> dict[str, list[AuditItem]]:
    """Every audit item by section key (see `SECTIONS`); empty lists when all is well."""
    out: dict[str, list[AuditItem]] = {key: [] for key, _, _ in SECTIONS}
    for r in rows:
        charged = r.credits_deducted
        if r.state is JobState.FAILED and (r.credits_video or r.credits_audio):
            audio = r.unknown_step == "add_audio" or bool(r.audio_task_id and r.credits_audio)
            out["charged_failed"].append(AuditItem(
                "charged_failed", r.job_id, "add_audio" if audio else "video",
                r.audio_task_id if audio else r.task_id, charged, r.credits_estimated,
                r.submitted_at, r.finished_at, r.error or ""))
        if charged is not None and charged != r.credits_estimated and r.state in (
                JobState.COMPLETED, JobState.FAILED, JobState.READY):
            diff = charged - r.credits_estimated
            out["charged_differs"].append(AuditItem(
                "charged_differs", r.job_id, "video+audio" if r.request.get("add_audio")
                else "video", r.final_task_id or r.task_id, charged, r.credits_estimated,
                r.submitted_at, r.finished_at,
                f"{'+' if diff > 0 else ''}{diff} credits against the estimate"))
        if r.state is JobState.UNKNOWN:
            # the lost create's task id was never learnt; an add-audio step names its video
            on_video = (f" (add-audio step on video task {r.task_id})"
                        if r.unknown_step == "add_audio" and r.task_id else "")
            out["unknown"].append(AuditItem(
                "unknown", r.job_id, r.unknown_step or "video", None, None,
                r.credits_estimated, r.submitted_at, None,
                (r.error or "the create's answer was lost") + on_video))
    for a in abandoned:
        step = str(a.get("step") or "video")
        task_id = a.get("task_id")
        credits = a.get("credits")
        if task_id is None and credits is None:
            message = "an unknown create was sent again by --resubmit-unknown: may be paid twice"
        else:
            message = f"abandoned by --retry-failed: {a.get('error') or 'failed'}"
        item = AuditItem("charged_twice", str(a.get("job_id")), step, task_id, credits, None,
                         a.get("submitted_at"), a.get("finished_at"), message)
        out["charged_twice"].append(item)
    return out


def audit_text(audit: Mapping[str, Sequence[AuditItem]], *, name: str, now: str) -> str:
    """The whole audit as plain text, to paste into a support request."""
    return "".join(audit_text_parts(
        {key: len(items) for key, items in audit.items()},
        lambda key: (f"  {item.line()}\n" for item in audit.get(key, ())),
        name=name, now=now))


def audit_text_parts(counts: Mapping[str, int], lines: Callable[[str], Iterable[str]], *,
                     name: str, now: str) -> Iterator[str]:
    """`audit_text` in pieces: `counts` per section key, `lines(key)` the section's item
    lines ("  ...\n"), read only where the section has items (report_stream.py keeps
    them in a temporary file: 166,747 items at a million jobs were ~180 MB held)."""
    yield f"batchgen money audit for batch '{name}', {now}\n"
    empty = True
    for key, title, _ in SECTIONS:
        if counts.get(key, 0):
            empty = False
            yield f"\n{title} ({counts[key]}):\n"
            yield from lines(key)
    if empty:
        yield "nothing to report: every charge matches its estimate\n"


@dataclass(frozen=True, slots=True)
class Expiring:
    """A video finished at the API whose file is not on disk, and when the API drops it."""

    job_id: str
    task_id: str | None
    finished_at: str
    expires_at: datetime
    state: str

    def left(self, now: datetime) -> str:
        """'3 d 4 h left', '5 h left' or 'expired'."""
        seconds = (self.expires_at - now).total_seconds()
        if seconds <= 0:
            return "expired"
        days, rest = divmod(int(seconds), 86400)
        hours = rest // 3600
        return f"{days} d {hours} h left" if days else f"{hours} h {rest % 3600 // 60} min left"


def not_downloaded(rows: Sequence[JobRow]) -> list[Expiring]:
    """Jobs whose final video is done at the API but not on disk, oldest (most urgent) first.

    The finish time is the one the runner recorded; a state written before it was kept
    falls back to the submission time, which is earlier, so the warning is never late.
    """
    out = [e for e in map(expiring, rows) if e is not None]
    out.sort(key=_urgency)
    return out


class Oldest:
    """`not_downloaded` over a stream of rows, in bounded memory: how many there are and
    the `keep` most urgent, in order (what `status` and report.html show of them)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.count = 0
        self._items: list[Expiring] = []

    def add(self, row: JobRow) -> None:
        e = expiring(row)
        if e is None:
            return
        self.count += 1
        self._items.append(e)
        if len(self._items) >= 2 * self.keep:
            self._items.sort(key=_urgency)
            del self._items[self.keep:]

    @property
    def items(self) -> list[Expiring]:
        self._items.sort(key=_urgency)
        del self._items[self.keep:]
        return self._items


def _urgency(e: Expiring) -> tuple[datetime, str]:
    return e.expires_at, e.job_id


def expiring(r: JobRow) -> Expiring | None:
    """The job's video waiting at the API for download (see `not_downloaded`), or None."""
    waiting = r.state is JobState.READY or (
        r.state is JobState.FAILED and r.video_url and not r.file)
    if not waiting:
        return None
    stamp = r.finished_at or r.submitted_at
    at = parse_iso(stamp)
    if at is None or stamp is None:
        return None
    return Expiring(r.job_id, r.final_task_id, stamp, at + RETENTION, r.state.value)


def utc_now() -> datetime:
    """Now, aware, in UTC (one place to read the clock)."""
    return datetime.now(UTC)
