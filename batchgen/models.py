"""The API's model list (aigModel/list) as values: what each model makes and costs.

Owns reading the list, which is untrusted data (a record with a missing or odd field is
skipped or ignored, never a crash), and checking a job against the model it names: a
model decides which resolutions and lengths are valid, not the published table (the
batch endpoint refuses the others, akool-api.md E2). Pure: the caller fetches the list
(client/) and decides what to do with the problems (cli, session).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchgen.errors import Problem
from batchgen.jobs import Job


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model of the list: credits per video by resolution, and the lengths it makes."""

    name: str
    #: resolution -> credits per video of the model's shortest length (`unit_credit`)
    unit_credits: Mapping[str, float]
    #: video lengths in seconds (`durationList`); empty when the list does not say
    durations: tuple[int, ...]

    def credits(self, resolution: str, video_length: int) -> int | None:
        """Credits of one video; None when the model does not price this resolution.

        The list prices the shortest length; a longer video is counted as a multiple of it
        (akool-api.md §8.2 leaves the scaling unknown: an estimate, as plan says).
        """
        unit = self.unit_credits.get(resolution)
        if unit is None:
            return None
        base = self.durations[0] if self.durations else 5
        return math.ceil(unit * max(1, video_length // base))


def parse_models(records: Iterable[Any]) -> dict[str, ModelInfo]:
    """model name -> ModelInfo from the API's records; malformed parts are left out."""
    out: dict[str, ModelInfo] = {}
    for record in records:
        if not isinstance(record, Mapping):
            continue
        name = record.get("value")
        if not isinstance(name, str) or not name:
            continue
        units: dict[str, float] = {}
        resolutions = record.get("resolutionList")
        for item in resolutions if isinstance(resolutions, list) else ():
            if not isinstance(item, Mapping):
                continue
            value, unit = item.get("value"), item.get("unit_credit")
            if isinstance(value, str) and isinstance(unit, int | float) \
                    and not isinstance(unit, bool) and 0 <= unit < 1e9:
                units[value] = unit
        raw = record.get("durationList")
        durations = sorted({d for d in (raw if isinstance(raw, list) else ())
                            if isinstance(d, int) and not isinstance(d, bool) and d > 0})
        out[name] = ModelInfo(name=name, unit_credits=units, durations=tuple(durations))
    return out


@dataclass(frozen=True, slots=True)
class ModelProblem:
    """A job the model it names cannot make: located by the job's source."""

    job: Job
    field: str
    what: str
    fix: str

    def problem(self) -> Problem:
        """As a located manifest problem: the job's file and line, its index and id."""
        file, _, line = self.job.source.rpartition(":")
        return Problem(file, int(line) if line.isdigit() else 1,
                       f"jobs[{self.job.index}] (id {self.job.id})", self.what, self.fix)


def model_problems(jobs: Sequence[Job], models: Mapping[str, ModelInfo]
                   ) -> tuple[list[ModelProblem], list[ModelProblem]]:
    """(errors, warnings) of model jobs against the list.

    Errors: a listed model that does not offer the job's resolution or length (the API
    would refuse the create). Warnings: a model the list does not name (it may be
    missing from the list, so this alone does not stop a run).
    """
    errors: list[ModelProblem] = []
    warnings: list[ModelProblem] = []
    for job in jobs:
        if not job.model_name:
            continue
        model = models.get(job.model_name)
        if model is None:
            warnings.append(ModelProblem(
                job, "model_name", f"model_name {job.model_name!r} is not in the API's "
                "model list", "pick one from `batchgen models`"))
            continue
        if model.unit_credits and job.resolution not in model.unit_credits:
            offered = ", ".join(model.unit_credits)
            errors.append(ModelProblem(
                job, "resolution", f"resolution {job.resolution} is not offered by model "
                f"{job.model_name} (it offers {offered})",
                f"use one of {offered}, or a model that offers {job.resolution} "
                "(batchgen models)"))
        if model.durations and job.video_length not in model.durations:
            lengths = ", ".join(str(d) for d in model.durations)
            errors.append(ModelProblem(
                job, "video_length", f"video_length {job.video_length} is not offered by "
                f"model {job.model_name} (it makes {lengths} s)",
                f"use one of {lengths}, or another model (batchgen models)"))
    return errors, warnings
