"""Plan numbers: cells, add-audio, totals, states, budget, prices; text and JSON agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from manifest_helpers import HEAD, IMG, load

from batchgen.manifest import BudgetSettings, Manifest, load_manifest
from batchgen.planning import STATES, build_plan, plan_to_dict, render_plan
from batchgen.pricing import price_table

MANIFEST = HEAD + f"""\
name: p
budget:
  max_credits: 200
  prices:
    720p: {{5: 18}}
defaults: {{image_url: '{IMG}'}}
jobs:
  - {{id: a, prompt: a}}                                   # 720p/5 at 18
  - {{id: b, prompt: b, video_length: 10}}                 # 720p/10 at 40
  - {{id: c, prompt: c, resolution: 4k, count: 2}}         # 4k/5 x2 = 60
  - {{id: d, prompt: d, add_audio: {{audio_type: 1}}}}     # 18 + add_audio/5 5
  - {{id: e, prompt: e, resolution: 1080p, video_length: 10,
      add_audio: {{audio_type: 2, audio_url: 'https://x.com/a.mp3'}}}}  # 50 + 10
"""


@pytest.fixture
def manifest(tmp_path) -> Manifest:
    return load(tmp_path, MANIFEST)


def test_cells_by_resolution_and_length(manifest):
    plan = build_plan(manifest)
    cells = {(x.row, x.video_length): (x.unit_credits, x.jobs, x.videos, x.credits, x.overridden)
             for x in plan.video_lines}
    assert cells == {("720p", 5): (18, 2, 2, 36, True), ("720p", 10): (40, 1, 1, 40, False),
                     ("1080p", 10): (50, 1, 1, 50, False), ("4k", 5): (30, 1, 2, 60, False)}
    assert [(x.row, x.video_length) for x in plan.video_lines] == [
        ("720p", 5), ("720p", 10), ("1080p", 10), ("4k", 5)]
    audio = {(x.video_length): (x.jobs, x.credits) for x in plan.add_audio_lines}
    assert audio == {5: (1, 5), 10: (1, 10)}
    assert (plan.add_audio_jobs, plan.add_audio_credits) == (2, 15)
    assert (plan.video_credits, plan.total_credits) == (186, 201)


def test_no_state_means_everything_is_to_submit_and_budget_left(manifest):
    plan = build_plan(manifest)
    assert (plan.to_submit_jobs, plan.to_submit_credits) == (5, 201)
    assert [s.state for s in plan.states] == list(STATES)
    assert plan.state("done").jobs == 0
    assert plan.max_credits == 200 and plan.budget_left == -1 and plan.over_budget
    assert plan.jobs_within_budget == 4            # a, b, c, d = 141; e (60) would exceed
    assert plan.prices_source == "overridden" and plan.overridden_prices == ("720p/5",)


def test_states_split_jobs_and_spent_credits_count_against_the_budget(manifest):
    plan = build_plan(manifest, {"a": "done", "b": "in_flight", "c": "unknown",
                                 "d": "failed", "zzz": "done"}, spent_credits=118)
    counts = {s.state: (s.jobs, s.credits) for s in plan.states}
    assert counts == {"to_submit": (1, 60), "done": (1, 18), "in_flight": (1, 40),
                      "unknown": (1, 60), "failed": (1, 23)}
    assert (plan.to_submit_jobs, plan.to_submit_credits) == (1, 60)
    assert plan.total_credits == 201                  # the manifest's whole estimate
    cell = next(x for x in plan.video_lines if x.row == "720p" and x.video_length == 5)
    assert (cell.jobs, cell.to_submit_jobs, cell.to_submit_credits) == (2, 0, 0)
    assert plan.spent_credits == 118 and plan.budget_left == 200 - 118 - 60
    assert plan.jobs_within_budget == 1 and not plan.over_budget


def test_unknown_state_is_a_programming_error(manifest):
    with pytest.raises(ValueError, match="unknown job state"):
        build_plan(manifest, {"a": "sleeping"})


def test_no_cap_means_no_budget_left(manifest):
    from dataclasses import replace
    uncapped = replace(manifest, budget=BudgetSettings(prices=price_table()))
    plan = build_plan(uncapped)
    assert plan.max_credits is None and plan.budget_left is None
    assert plan.jobs_within_budget is None and plan.prices_source == "published"
    assert "no cap" in render_plan(plan)
    assert plan_to_dict(plan)["budget"]["left"] is None


def test_dict_is_json_and_matches_the_plan(manifest):
    plan = build_plan(manifest, {"a": "done"})
    doc = json.loads(json.dumps(plan_to_dict(plan)))
    assert doc["jobs"] == 5 and doc["total_credits"] == 201
    assert doc["to_submit"] == {"jobs": 4, "credits": 183}
    assert doc["states"]["done"] == {"jobs": 1, "credits": 18}
    assert doc["budget"] == {"max_credits": 200, "spent_credits": 0, "to_submit_credits": 183,
                             "left": 17, "over_budget": False, "jobs_within_budget": 4}
    assert doc["prices"]["source"] == "overridden"
    assert doc["prices"]["overridden"] == ["720p/5"]
    assert doc["prices"]["table"]["720p"] == {"5": 18, "10": 40}
    assert doc["by_resolution_length"][0] == {
        "resolution": "720p", "video_length": 5, "price": 18, "price_overridden": True,
        "jobs": 2, "videos": 2, "credits": 36, "to_submit_jobs": 1, "to_submit_credits": 18}
    assert doc["add_audio"]["jobs"] == 2 and doc["add_audio"]["credits"] == 15
    assert doc["name"] == "p" and doc["output_dir"] == str(manifest.path.parent / "output/p")


def test_render_shows_cells_totals_budget_and_prices(manifest):
    text = render_plan(build_plan(manifest))
    lines = text.splitlines()
    assert lines[0].startswith("plan for p (")
    assert any(line.split()[:3] == ["720p", "5", "s"] and "18*" in line for line in lines)
    assert any(line.startswith("add audio") and line.split()[-1] == "10" for line in lines)
    total = next(line for line in lines if line.startswith("total"))
    assert total.split() == ["total", "5", "6", "201", "5", "201"]
    assert "over by 1" in text and "stop after 4 of 5 jobs" in text
    assert "720p/5 = 18" in text
    widths = {len(line) for line in lines[3:8]}
    assert max(widths) <= 82


def test_example_manifest_plan():
    example = Path(__file__).parent.parent / "manifests" / "example.yaml"
    plan = build_plan(load_manifest(example))
    assert plan.jobs == 6 and plan.total_credits == 5 * 20 + 25
    assert "the published table" in render_plan(plan)
