"""Pricing: what a job is expected to cost, from the published table and overrides.

Pure functions of plain values. The API's `deduction_credit` is the truth once known; these
estimates exist to plan and to guard the budget *before* money is spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchgen.jobs import Job
from batchgen.models import ModelInfo, parse_models

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
    #: the API's model list, when fetched (`plan --online`): a model job is priced by it
    models: Mapping[str, ModelInfo] = field(default_factory=dict)


#: 480p has no published price (only some models make it): it is estimated as 720p, an
#: upper bound, unless budget.prices or the model list says otherwise
FALLBACK_RESOLUTION = "720p"


def model_video_credits(table: PriceTable, job: Job) -> int | None:
    """Credits of one video of a model job from the model list; None when not listed."""
    model = table.models.get(job.model_name) if job.model_name else None
    return None if model is None else model.credits(job.resolution, job.video_length)


def video_credits(table: PriceTable, job: Job) -> int:
    """Estimated credits of the job's generation step (all `count` videos)."""
    unit = model_video_credits(table, job)
    if unit is None:
        row = table.video.get(job.resolution) or table.video[FALLBACK_RESOLUTION]
        unit = row[job.video_length]
    return unit * (job.count or 1)


def with_models(table: PriceTable, records: Sequence[Mapping[str, Any]]) -> PriceTable:
    """The table with the API's model list laid over it for model jobs."""
    from dataclasses import replace
    return replace(table, models=parse_models(records))


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
    model = parse_models(models).get(job.model_name or "")
    unit = None if model is None else model.credits(job.resolution, job.video_length)
    return None if unit is None else unit * (job.count or 1)
