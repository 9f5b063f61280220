"""Plan: what a run of a manifest would do now, and what it is expected to cost.

Owns the numbers behind `batchgen plan` (and `run --dry-run`): jobs and credits by
resolution x length, add-audio steps, the total, the budget and what is left of it,
which prices were used, and the split of jobs into states once local state exists.
`build_plan` is pure (values in, a frozen `Plan` out, plan_model.py); `render_plan` and
`plan_to_dict` (plan_render.py, importable from here) only format it. Deliberately reads
no state database and prints nothing: the caller passes each job's state and the credits
already spent, and prints the result.

All figures are estimates from the price table; the API's `deduction_credit` is the
truth once known (akool-api.md §8.4), which is why the plan says which prices it used.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence

from batchgen import budget
from batchgen.jobs import Job
from batchgen.manifest import Manifest
from batchgen.manifest_stream import Shapes
from batchgen.plan_model import ADD_AUDIO as ADD_AUDIO
from batchgen.plan_model import STATE_LABELS as STATE_LABELS
from batchgen.plan_model import STATES as STATES
from batchgen.plan_model import Plan as Plan
from batchgen.plan_model import PlanLine as PlanLine
from batchgen.plan_model import StateCount as StateCount
from batchgen.plan_render import plan_to_dict as plan_to_dict
from batchgen.plan_render import render_plan as render_plan
from batchgen.pricing import (
    FALLBACK_RESOLUTION,
    PUBLISHED_VIDEO,
    PriceTable,
    add_audio_credits,
    model_video_credits,
    price_key,
    video_credits,
)


def bucket(state: str, *, retry_failed: bool = False, resubmit_unknown: bool = False) -> str:
    """The plan state (one of STATES) of a job in store state `state` (a JobState value):
    what a run with these flags would do with it. `session.plan_now` passes states after
    the run's own preparation (the flags already applied) and marks jobs with a create in
    the run's queue "to_submit" itself."""
    if state == "pending":
        return "to_submit"
    if state == "completed":
        return "done"
    if state == "failed":
        return "to_submit" if retry_failed else "failed"
    if state == "unknown":
        return "to_submit" if resubmit_unknown else "unknown"
    return "in_flight"


def build_plan(manifest: Manifest, states: Mapping[str, str] | None = None, *,
               spent_credits: int = 0,
               sends: Sequence[tuple[str, int]] | None = None,
               jobs: Sequence[tuple[Job, int]] | None = None,
               admitted: int | None = None) -> Plan:
    """What a run would do now. Pure.

    `states` maps job id -> one of STATES (ids not in it are "to_submit"; None means
    every job is). `spent_credits` is what the state already holds against the budget
    (`budget.committed`); it counts against `budget.max_credits` together with what this
    run would submit. `sends` is the queue a run would start from, as (job id, credits
    it reserves) in sending order (from `budget.queue` over the state); None means every
    to-submit job at its estimate, in manifest order, which is what a run without state
    sends. The budget rule applied to it is `budget.fits` (through
    `budget.admitted_head`), the runner's own.

    Without states or sends, the jobs are priced from their shapes (`Jobs.shapes`: a few
    kinds, one byte per job) instead of being expanded again; the figures are the same.
    `jobs` gives (job, how many such jobs) instead of the manifest's jobs, and `admitted`
    the jobs within the budget, when the caller counted them (plan_state.py: a state of a
    million rows counted by price shape and state).
    """
    table = manifest.budget.prices
    states = states or {}
    max_credits = manifest.budget.max_credits
    shapes = getattr(manifest.jobs, "shapes", None) if not states and sends is None else None
    weighted: Iterable[tuple[Job, int]] = jobs if jobs is not None else (
        ((job, 1) for job in manifest.jobs) if shapes is None else
        [(shapes.sample(k), shapes.order.count(k)) for k in range(len(shapes.kinds))])
    video, audio, buckets, costs = _tally(weighted, table, states, sends)
    within: int | None = None
    if max_credits is not None:
        within = admitted if admitted is not None else _within(
            max_credits, spent_credits, sends, costs, shapes)
    video_lines = _lines(video, table.video, table.overridden, table)
    audio_lines = _lines(audio, {ADD_AUDIO: table.add_audio}, table.overridden, table)
    video_total = sum(line.credits for line in video_lines)
    audio_total = sum(line.credits for line in audio_lines)
    return Plan(
        name=manifest.name, manifest=str(manifest.path), output_dir=str(manifest.output.dir),
        jobs=len(manifest.jobs), video_lines=video_lines, add_audio_lines=audio_lines,
        video_credits=video_total, add_audio_jobs=sum(line.jobs for line in audio_lines),
        add_audio_credits=audio_total, total_credits=video_total + audio_total,
        states=tuple(StateCount(s, *buckets[s]) for s in STATES),
        to_submit_jobs=buckets["to_submit"][0], to_submit_credits=buckets["to_submit"][1],
        max_credits=max_credits, overridden_prices=tuple(sorted(table.overridden)),
        price_table={**{row: dict(cells) for row, cells in table.video.items()},
                     ADD_AUDIO: dict(table.add_audio)},
        spent_credits=spent_credits, jobs_within_budget=within)


def _tally(weighted: Iterable[tuple[Job, int]], table: PriceTable,
           states: Mapping[str, str], sends: Sequence[tuple[str, int]] | None
           ) -> tuple[dict[tuple[str, int, str], list[int]],
                      dict[tuple[str, int, str], list[int]], dict[str, list[int]], array[int]]:
    """Count the jobs (each `n` times) into the plan's lines and state buckets.

    Returns the video and add-audio lines ((row, length, model) -> [jobs, videos,
    credits, to-submit jobs, to-submit credits]), each state's [jobs, credits], and the
    credits of each to-submit job in manifest order (used when `sends` is None).
    """
    video: dict[tuple[str, int, str], list[int]] = {}
    audio: dict[tuple[str, int, str], list[int]] = {}
    buckets = {s: [0, 0] for s in STATES}
    needs: dict[str, int] = {}
    for job_id, need in sends or ():
        needs[job_id] = needs.get(job_id, 0) + need
    costs = array("q")
    for job, n in weighted:
        state = states.get(job.id, "to_submit")
        if state not in buckets:
            raise ValueError(f"unknown job state {state!r} for {job.id}; expected one of "
                             f"{', '.join(STATES)}")
        count = job.count or 1
        submit = state == "to_submit"
        v = video_credits(table, job)
        by_model = job.model_name if model_video_credits(table, job) is not None else ""
        _add(video, (job.resolution, job.video_length, by_model or ""), count, v, submit, n)
        a = 0
        if job.add_audio is not None:
            a = add_audio_credits(table, job)
            _add(audio, (ADD_AUDIO, job.video_length, ""), count, a, submit, n)
        bucket = buckets[state]
        bucket[0] += n
        if submit and sends is not None:
            bucket[1] += needs.get(job.id, 0)  # what the run reserves (a repeated step...)
        else:
            bucket[1] += (v + a) * n
            if submit:
                costs.append(v + a)
    return video, audio, buckets, costs


def _within(max_credits: int, spent: int, sends: Sequence[tuple[str, int]] | None,
            costs: array[int], shapes: Shapes | None) -> int:
    """To-submit jobs the budget rule (`budget.admitted_head`) lets a run send, in its order.

    With `sends`, a job whose later send is stopped is not counted; without, each job is
    one send at its estimate (ids are unique), so the count is what is admitted.
    """
    if sends is not None:
        admitted, _ = budget.admitted_head(max_credits, spent, (n for _, n in sends))
        stopped = {j for j, _ in sends[admitted:]}
        return len({j for j, _ in sends[:admitted]} - stopped)
    if shapes is None:
        return budget.admitted_head(max_credits, spent, costs)[0]
    kinds = costs  # one per kind, in kind order (every job is to submit)
    return budget.admitted_head(max_credits, spent, map(kinds.__getitem__, shapes.order))[0]


def _add(cells: dict[tuple[str, int, str], list[int]], key: tuple[str, int, str], count: int,
         credits: int, submit: bool, jobs: int = 1) -> None:
    cell = cells.get(key)
    if cell is None:
        cell = cells[key] = [0, 0, 0, 0, 0]
    cell[0] += jobs
    cell[1] += count * jobs
    cell[2] += credits * jobs
    if submit:
        cell[3] += jobs
        cell[4] += credits * jobs


def _lines(cells: dict[tuple[str, int, str], list[int]],
           prices: Mapping[str, Mapping[int, int]], overridden: frozenset[str],
           table: PriceTable) -> tuple[PlanLine, ...]:
    order = {row: i for i, row in enumerate(("480p", *PUBLISHED_VIDEO, ADD_AUDIO))}
    keys = sorted(cells, key=lambda k: (order.get(k[0], len(order)), k[0], k[1], k[2]))

    def unit(row: str, length: int, model: str) -> int:
        listed = table.models.get(model) if model else None
        price = None if listed is None else listed.credits(row, length)
        if price is not None:
            return price
        return (prices.get(row) or prices[FALLBACK_RESOLUTION])[length]

    return tuple(
        PlanLine(row=row, video_length=length, unit_credits=unit(row, length, model),
                 overridden=not model and price_key(row, length) in overridden, jobs=c[0],
                 videos=c[1], credits=c[2], to_submit_jobs=c[3], to_submit_credits=c[4],
                 model=model)
        for row, length, model in keys for c in [cells[(row, length, model)]])
