"""Pricing: what a job is expected to cost, from the published table and overrides.

Pure functions of plain values. The API's `deduction_credit` is the truth once known; these
estimates exist to plan and to guard the budget *before* money is spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchgen.jobs import Job

#: Credits per video by resolution and length (akool-api.md §8.1).
PUBLISHED_VIDEO: Mapping[str, Mapping[int, int]] = {
    "720p": {5: 20, 10: 40},
    "1080p": {5: 25, 10: 50},
    "4k": {5: 30, 10: 60},
}
#: Credits of an updateVideoAudio step by video length (akool-api.md §8.1).
PUBLISHED_ADD_AUDIO: Mapping[int, int] = {5: 5, 10: 10}


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Effective prices: the published table with `budget.prices` merged over it."""

    video: Mapping[str, Mapping[int, int]] = field(default_factory=lambda: PUBLISHED_VIDEO)
    add_audio: Mapping[int, int] = field(default_factory=lambda: PUBLISHED_ADD_AUDIO)
    #: keys like "720p/5" or "add_audio/10" whose price came from the manifest
    overridden: frozenset[str] = frozenset()


def video_credits(table: PriceTable, job: Job) -> int:
    """Estimated credits of the job's generation step (all `count` videos)."""
    return table.video[job.resolution][job.video_length] * (job.count or 1)


def add_audio_credits(table: PriceTable, job: Job) -> int:
    """Estimated credits of the job's add-audio step; 0 when it has none."""
    if job.add_audio is None:
        return 0
    return table.add_audio[job.video_length] * (job.count or 1)


def job_credits(table: PriceTable, job: Job) -> int:
    """Estimated credits of everything the job will pay for."""
    return video_credits(table, job) + add_audio_credits(table, job)


def price_key(row: str, video_length: int) -> str:
    """Name of one price cell, as listed in `PriceTable.overridden`: "720p/5", "add_audio/10"."""
    return f"{row}/{video_length}"


def price_table(overrides: Mapping[str, Mapping[int | str, int]] | None = None) -> PriceTable:
    """The published table with `budget.prices` merged over it, cell by cell.

    `overrides` is the manifest's `budget.prices` as validated by the schema: rows
    "720p", "1080p", "4k", "add_audio"; keys 5 and 10 (as numbers or text, since YAML
    keys arrive as text). A row or cell that is not overridden keeps the published price,
    so `{"720p": {5: 18}}` changes exactly one cell.
    """
    video = {res: dict(row) for res, row in PUBLISHED_VIDEO.items()}
    add_audio = dict(PUBLISHED_ADD_AUDIO)
    overridden: set[str] = set()
    for row, cells in (overrides or {}).items():
        target = add_audio if row == "add_audio" else video.setdefault(row, {})
        for length, credits in cells.items():
            target[int(length)] = credits
            overridden.add(price_key(row, int(length)))
    return PriceTable(video=video, add_audio=add_audio, overridden=frozenset(overridden))


def is_published(table: PriceTable) -> bool:
    """True when every price comes from the published table (nothing overridden)."""
    return not table.overridden


def model_credits(models: Sequence[Mapping[str, Any]], job: Job) -> int | None:
    """Credits of a model job from the API's model list: unit_credit per video × count.

    The list prices the base length; a 10 s video is counted double (akool-api.md §8.2
    leaves the scaling unknown, so `plan --online` says it is an estimate). None when the
    list does not price this model and resolution.
    """
    model = next((m for m in models if m.get("value") == job.model_name), None)
    if model is None:
        return None
    unit = next((r.get("unit_credit") for r in model.get("resolutionList") or []
                 if r.get("value") == job.resolution), None)
    if not isinstance(unit, int | float):
        return None
    durations = sorted(d for d in model.get("durationList") or [] if isinstance(d, int))
    base = durations[0] if durations else 5
    return int(unit * max(1, job.video_length // base) * (job.count or 1))
