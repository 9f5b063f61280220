"""The plan of a manifest as a value: `Plan`, its price lines and its state counts.

Owns the frozen values `build_plan` (planning.py) makes and `plan_render.py` formats, and
the names of the states a plan splits jobs into. Pure values, no behaviour beyond the
figures derived from the fields (what is left of the budget, where prices came from).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Job states a plan splits jobs into, in display order. "to_submit" is what a run
#: would pay for now; the others come from the local state of earlier runs.
STATES: tuple[str, ...] = ("to_submit", "done", "in_flight", "unknown", "failed")
STATE_LABELS = {"to_submit": "to submit", "done": "done", "in_flight": "in flight",
                "unknown": "unknown", "failed": "failed"}
ADD_AUDIO = "add_audio"


@dataclass(frozen=True, slots=True)
class PlanLine:
    """One price cell that has jobs: a video resolution x length, or add-audio x length."""

    row: str                #: "720p", "1080p", "4k" or "add_audio"
    video_length: int
    unit_credits: int       #: price per video in this cell
    overridden: bool        #: the price came from the manifest's budget.prices
    jobs: int
    videos: int             #: jobs x count (a job with count: 3 makes three videos)
    credits: int
    to_submit_jobs: int
    to_submit_credits: int
    #: the model whose listed price priced these jobs (`plan --online`); "" for the table
    model: str = ""


@dataclass(frozen=True, slots=True)
class StateCount:
    """Jobs in one state and their estimated credits."""

    state: str
    jobs: int
    credits: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything `plan` shows; see `plan_to_dict` for the JSON form."""

    name: str
    manifest: str
    output_dir: str
    jobs: int
    video_lines: tuple[PlanLine, ...]
    add_audio_lines: tuple[PlanLine, ...]
    video_credits: int
    add_audio_jobs: int
    add_audio_credits: int
    total_credits: int
    states: tuple[StateCount, ...]          #: one per STATES entry, in that order
    to_submit_jobs: int
    to_submit_credits: int                  #: what a run would spend now
    max_credits: int | None
    overridden_prices: tuple[str, ...]      #: sorted keys like "720p/5", "add_audio/10"
    price_table: Mapping[str, Mapping[int, int]]
    #: credits already deducted by earlier runs (from local state); 0 before any run
    spent_credits: int = 0
    #: to-submit jobs a run would send under the budget rule (budget.py): in manifest
    #: order, up to the first that does not fit; None without a cap
    jobs_within_budget: int | None = None

    @property
    def budget_left(self) -> int | None:
        """Credits left after this run would submit everything; None without a cap."""
        if self.max_credits is None:
            return None
        return self.max_credits - self.spent_credits - self.to_submit_credits

    @property
    def over_budget(self) -> bool:
        left = self.budget_left
        return left is not None and left < 0

    @property
    def prices_source(self) -> str:
        """"published" or "overridden" (some cells came from budget.prices)."""
        return "overridden" if self.overridden_prices else "published"

    def state(self, name: str) -> StateCount:
        return next(s for s in self.states if s.state == name)
