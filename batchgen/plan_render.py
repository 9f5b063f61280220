"""A plan as people and programs read it: the `plan --json` document and the table.

Owns `plan_to_dict` (the JSON document, the same content as the table) and `render_plan`
(the fixed-width table `batchgen plan` prints, with its budget and prices lines). Only
formats a `Plan`; computes no figure and prints nothing.
"""

from __future__ import annotations

from typing import Any

from batchgen.plan_model import ADD_AUDIO, STATE_LABELS, Plan, PlanLine


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as one JSON-ready document (`plan --json`); same content as the table."""
    def line(item: PlanLine) -> dict[str, Any]:
        out: dict[str, Any] = {"resolution": item.row} if item.row != ADD_AUDIO else {}
        if item.model:
            out["model"] = item.model  # priced from the API's model list (--online)
        return {**out, "video_length": item.video_length, "price": item.unit_credits,
                "price_overridden": item.overridden, "jobs": item.jobs, "videos": item.videos,
                "credits": item.credits, "to_submit_jobs": item.to_submit_jobs,
                "to_submit_credits": item.to_submit_credits}

    return {
        "name": plan.name,
        "manifest": plan.manifest,
        "output_dir": plan.output_dir,
        "jobs": plan.jobs,
        "by_resolution_length": [line(x) for x in plan.video_lines],
        "video_credits": plan.video_credits,
        "add_audio": {"jobs": plan.add_audio_jobs, "credits": plan.add_audio_credits,
                      "by_length": [line(x) for x in plan.add_audio_lines]},
        "total_credits": plan.total_credits,
        "states": {s.state: {"jobs": s.jobs, "credits": s.credits} for s in plan.states},
        "to_submit": {"jobs": plan.to_submit_jobs, "credits": plan.to_submit_credits},
        "budget": {"max_credits": plan.max_credits, "spent_credits": plan.spent_credits,
                   "to_submit_credits": plan.to_submit_credits, "left": plan.budget_left,
                   "over_budget": plan.over_budget,
                   "jobs_within_budget": plan.jobs_within_budget},
        "prices": {"source": plan.prices_source, "overridden": list(plan.overridden_prices),
                   "table": {row: {str(k): v for k, v in sorted(cells.items())}
                             for row, cells in plan.price_table.items()}},
    }


_COLUMNS = (("resolution", 10, "<"), ("length", 6, ">"), ("price", 6, ">"), ("jobs", 8, ">"),
            ("videos", 8, ">"), ("credits", 10, ">"), ("to submit", 10, ">"),
            ("credits", 10, ">"))


def _row(values: tuple[Any, ...]) -> str:
    cells = [f"{v!s:{align}{width}}" for v, (_, width, align) in zip(values, _COLUMNS,
                                                                          strict=True)]
    return "  ".join(cells).rstrip()


def render_plan(plan: Plan) -> str:
    """A fixed-width table for the terminal (`batchgen plan`)."""
    out = [f"plan for {plan.name} ({plan.manifest})", f"output dir: {plan.output_dir}", ""]
    out.append(_row(tuple(c[0] for c in _COLUMNS)))
    for item in (*plan.video_lines, *plan.add_audio_lines):
        label = "add audio" if item.row == ADD_AUDIO else item.row
        if item.model:
            label = f"{label} {item.model}"
        price = f"{item.unit_credits}*" if item.overridden else str(item.unit_credits)
        out.append(_row((label, f"{item.video_length} s", price, f"{item.jobs:,}",
                         f"{item.videos:,}", f"{item.credits:,}", f"{item.to_submit_jobs:,}",
                         f"{item.to_submit_credits:,}")))
    rule = "-" * len(_row(tuple("x" * c[1] for c in _COLUMNS)))
    out.append(rule)
    videos = sum(x.videos for x in plan.video_lines)
    out.append(_row(("total", "", "", f"{plan.jobs:,}", f"{videos:,}",
                     f"{plan.total_credits:,}", f"{plan.to_submit_jobs:,}",
                     f"{plan.to_submit_credits:,}")))
    out.append("")
    states = ", ".join(
        f"{s.jobs:,} {STATE_LABELS[s.state]}"
        + (f" ({s.credits:,} credits)" if s.state == "to_submit" else "")
        for s in plan.states)
    out.append(f"jobs: {states}")
    out.append(_budget_line(plan))
    out.append(_prices_line(plan))
    out.append("note: estimates from the price table; the API's deduction_credit at creation "
               "is what is really charged")
    return "\n".join(out)


def _budget_line(plan: Plan) -> str:
    if plan.max_credits is None:
        spent = f"; {plan.spent_credits:,} already spent" if plan.spent_credits else ""
        return (f"budget: no cap (set budget.max_credits); this run {plan.to_submit_credits:,} "
                f"credits{spent}")
    text = (f"budget: max {plan.max_credits:,} credits, {plan.spent_credits:,} already spent, "
            f"this run {plan.to_submit_credits:,}")
    left = plan.budget_left
    if left is not None and left >= 0:
        return f"{text}, {left:,} left after it"
    return (f"{text}: over by {-(left or 0):,}; submissions would stop after "
            f"{plan.jobs_within_budget:,} of {plan.to_submit_jobs:,} jobs")


def _prices_line(plan: Plan) -> str:
    if not plan.overridden_prices:
        return "prices: the published table (Akool's image2video pricing)"
    cells = ", ".join(f"{key} = {_price(plan, key)}" for key in plan.overridden_prices)
    return f"prices: published table with budget.prices overrides (* above): {cells}"


def _price(plan: Plan, key: str) -> int:
    row, length = key.split("/")
    return plan.price_table[row][int(length)]
