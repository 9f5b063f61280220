"""The typed values the public API hands back: a run's report and a manifest's plan.

Owns `RunReport` (with each job's `JobResult` and the run's `Outcome`), `RunPlan` (with
the `Charges` an output dir already paid) and the two mappings from the run's own values:
`outcome_of` (SPEC §6's order) and `job_result` (a state row as report.csv shows it).
Frozen values; every name is public through `batchgen` (and `batchgen.api`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.plan_model import Plan
from batchgen.plan_render import plan_to_dict

if TYPE_CHECKING:
    from batchgen.runner import RunOutcome
    from batchgen.store import JobRow


class Outcome(StrEnum):
    """How a run ended; the CLI's exit code is a function of it (SPEC §6)."""

    COMPLETED = "completed"            #: every job completed and downloaded (exit 0)
    FAILED = "failed"                  #: some jobs failed, are unknown or pending (exit 1)
    BUDGET_STOPPED = "budget_stopped"  #: the budget or the account's credit stopped it (3)
    INTERRUPTED = "interrupted"        #: stopped on request; state saved (exit 130)
    #: the API stayed unavailable (the outage timeout passed, or creates kept failing);
    #: state saved, nothing lost: run again later (exit 75)
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class JobResult:
    """One job of the run, as its row in report.csv."""

    id: str
    status: str                  #: completed | failed | pending | unknown (SPEC §4)
    task_id: str | None
    file: Path | None            #: absolute path of the finished video, when there is one
    bytes: int | None
    sha256: str | None
    credits_estimated: int
    credits_deducted: int | None  #: what the API charged, once it said so
    error: str | None
    state: str                   #: the finer state behind `status` (report.csv `state`)
    #: with an s3:// output: the video's object (`file` is then its staged copy, deleted
    #: once uploaded); None otherwise
    url: str | None = None


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a run did: its outcome, every job, and the figures of summary.json."""

    name: str
    output_dir: Path
    outcome: Outcome
    jobs: tuple[JobResult, ...]
    #: jobs per status: completed, failed, pending, unknown
    counts: Mapping[str, int]
    credits_estimated: int
    credits_deducted: int
    credits_committed: int       #: held by everything sent from this output dir, all runs
    max_credits: int | None
    budget_blocked: int          #: jobs the budget kept back
    budget_needed: int           #: credits those jobs would need
    out_of_credit: str | None    #: the API refused for lack of credit (why)
    api_unavailable: str | None  #: the API stayed unreachable; pending jobs left (why)
    abandoned: int               #: tasks left at the API too long; the next run polls them
    requests: int
    wall_seconds: float
    report_file: Path            #: report.csv
    summary: Mapping[str, Any]   #: the content of summary.json
    #: the API answered nothing usable for the outage timeout (why), when that ended the run
    outage: str | None = None
    #: finished videos whose host could not be reached: kept for the next run
    kept_ready: int = 0

    @property
    def ok(self) -> bool:
        """Every job completed and downloaded."""
        return self.outcome is Outcome.COMPLETED


@dataclass(frozen=True, slots=True)
class Charges:
    """What the API charged so far (earlier runs) against the table's estimate."""

    jobs: int
    estimated: int
    deducted: int
    differs: int                 #: jobs charged differently from the table


@dataclass(frozen=True, slots=True)
class RunPlan(Plan):
    """The plan of `batchgen plan`; `to_dict()` is exactly the `plan --json` document."""

    #: None while the output dir holds no state yet
    charged_so_far: Charges | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `plan --json` document (without `--online`'s `model_prices`)."""
        doc = plan_to_dict(self)
        c = self.charged_so_far
        doc["charged_so_far"] = {} if c is None else {
            "jobs": c.jobs, "estimated": c.estimated, "deducted": c.deducted,
            "differs": c.differs}
        return doc


def outcome_of(outcome: RunOutcome, status: Mapping[str, int]) -> Outcome:
    """SPEC §6's order: a stop request first, then the budget, then unfinished jobs."""
    if outcome.interrupted:
        return Outcome.INTERRUPTED
    if outcome.budget_blocked or outcome.out_of_credit:
        return Outcome.BUDGET_STOPPED
    if outcome.outage or outcome.api_unavailable:
        return Outcome.UNAVAILABLE
    if status["failed"] or status["unknown"] or status["pending"]:
        return Outcome.FAILED
    return Outcome.COMPLETED


def job_result(row: JobRow, output_dir: Path, output_url: str | None = None) -> JobResult:
    from batchgen.store import report_status
    url = f"{output_url.rstrip('/')}/{row.file}" if output_url and row.file else None
    return JobResult(
        id=row.job_id, status=report_status(row.state), task_id=row.task_id,
        file=(output_dir / row.file).absolute() if row.file else None, bytes=row.bytes,
        sha256=row.sha256, credits_estimated=row.credits_estimated,
        credits_deducted=row.credits_deducted, error=row.error, state=row.state.value,
        url=url)
