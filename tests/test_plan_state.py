"""`plan` over a state counts jobs by (price shape, plan state) in flat memory
(plan_state.py): its figures are those of the job-by-job plan, from every state a run
leaves (jobs done, held back by the budget, a count job's family, add-audio steps),
whatever the budget."""

from __future__ import annotations

import pytest

import batchgen
from batchgen import plan_state

IMG = "https://example.com/i.jpg"


def doc(n: int) -> dict:  # type: ignore[type-arg]
    jobs = []
    for i in range(n):
        job: dict[str, object] = {"id": f"j{i}", "prompt": f"p{i}"}
        if i % 3 == 1:
            job["count"] = 2
            job["resolution"] = "4k"
        if i % 4 == 2:
            job["add_audio"] = {"audio_type": 1}
        if i % 5 == 3:
            job["video_length"] = 10
        jobs.append(job)
    return {"version": 1, "name": "ps", "output": {"dir": "out"},
            "defaults": {"image_url": IMG}, "jobs": jobs}


def both(tmp_path, monkeypatch, **kw):  # type: ignore[no-untyped-def]
    """(streamed, job by job) plans as plan --json's figures."""
    streamed = batchgen.plan(doc(30), base_dir=tmp_path, **kw).to_dict()
    with monkeypatch.context() as m:
        m.setattr(plan_state, "plan_over", lambda *a: None)
        exact = batchgen.plan(doc(30), base_dir=tmp_path, **kw).to_dict()
    return streamed, exact


@pytest.mark.parametrize("stopped_at", [150, 700])
def test_the_streamed_plan_is_the_job_by_job_plan(tmp_path, monkeypatch, stopped_at):
    for cap in (None, 100, 500, 2000):
        streamed, exact = both(tmp_path, monkeypatch, max_credits=cap)
        assert streamed == exact  # no state yet
    report = batchgen.run(doc(30), base_dir=tmp_path, sandbox=True, max_credits=stopped_at)
    assert report.counts["completed"] > 0 and report.counts["pending"] > 0
    for cap in (stopped_at, stopped_at + 40, stopped_at + 95, 3000, None):
        streamed, exact = both(tmp_path, monkeypatch, max_credits=cap)
        assert streamed == exact, cap
        streamed, exact = both(tmp_path, monkeypatch, max_credits=cap, retry_failed=True)
        assert streamed == exact, cap
