"""The one budget rule (budget.py), pure: rows built by hand, no I/O."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from manifest_helpers import HEAD, IMG, load

from batchgen import budget
from batchgen.planning import build_plan
from batchgen.store import JobRow, JobState

AUDIO = {"add_audio": {"audio_type": 1}, "_audio_estimate": 5}


def row(job_id: str = "a", state: JobState = JobState.PENDING, estimate: int = 20,
        **fields) -> JobRow:
    request = {"resolution": "720p", "video_length": 5, **fields.pop("request", {})}
    # the add-audio estimate is a typed field of the row (stored beside the request)
    fields.setdefault("audio_estimate", request.pop("_audio_estimate", 0))
    return JobRow(job_id=job_id, idx=0, fingerprint="f", request=request, state=state,
                  credits_estimated=estimate, **fields)


# -- the rule ---------------------------------------------------------------------------


def test_the_rule_stops_at_the_first_job_that_does_not_fit():
    # issue 11.4: 40, 60, 20 under a cap of 60 -> one job; the 20 waits behind the 60
    got = budget.admit(60, 0, [40, 60, 20])
    assert got == budget.Admission(admitted=1, held_back=2, needed=80)
    assert budget.admit(None, 10**9, [40, 60, 20]).admitted == 3
    assert budget.admit(100, 0, [40, 60, 20]).admitted == 2  # exactly at the cap fits
    assert budget.admit(60, 60, [0, 0]).admitted == 2  # already reserved: nothing new


def test_plan_counts_the_head_without_reading_past_the_first_send_held_back():
    read: list[int] = []

    def needs():
        for n in (40, 60, 20, 10):
            read.append(n)
            yield n

    assert budget.admitted_head(60, 0, needs()) == (1, 60)
    assert read == [40, 60]  # a million-job queue is not walked to its end
    assert budget.admitted_head(None, 10**9, [40, 60]) == (2, None)
    assert budget.admitted_head(100, 0, [40, 60, 20]) == (2, 20)


def test_plan_counts_with_the_rule(tmp_path):
    manifest = load(tmp_path, HEAD + f"""\
name: p
budget: {{max_credits: 60}}
defaults: {{image_url: '{IMG}'}}
jobs:
  - {{id: a, prompt: a, video_length: 10}}                 # 40
  - {{id: b, prompt: b, resolution: 4k, video_length: 10}} # 60
  - {{id: c, prompt: c}}                                   # 20
""")
    assert build_plan(manifest).jobs_within_budget == 1
    # a run's queue from state: (job, need) in sending order, and what the state holds
    plan = build_plan(manifest, {"a": "done"}, spent_credits=40, sends=[("b", 60), ("c", 20)])
    assert plan.jobs_within_budget == 0 and plan.to_submit_credits == 80


# -- what a job holds --------------------------------------------------------------------


def test_held_counts_charges_estimates_and_reservations():
    assert budget.held(row()) == 0
    assert budget.held(row(credits_prior=7, credits_lost=20)) == 27  # pending, spent before
    assert budget.held(row(state=JobState.SUBMITTING, request=AUDIO, estimate=25)) == 25
    running = row(state=JobState.RUNNING, request=AUDIO, estimate=25, task_id="t",
                  credits_video=30)
    assert budget.held(running) == 35  # the API's figure for the video, audio reserved
    refused = row(state=JobState.FAILED, request=AUDIO, estimate=25)
    assert budget.held(refused) == 0  # the create was refused: nothing made
    video_failed = replace(running, state=JobState.FAILED)
    assert budget.held(video_failed) == 30  # the add-audio step will never be sent
    unheld = replace(running, state=JobState.AUDIO_PENDING, audio_held=False)
    assert budget.held(unheld) == 30  # a repeated step is not reserved until admitted
    lost = row(state=JobState.UNKNOWN, request=AUDIO, estimate=25, unknown_step="video")
    assert budget.held(lost) == 25


def test_a_retried_add_audio_step_is_an_admission_that_needs_its_estimate():
    failed = row(state=JobState.FAILED, request=AUDIO, estimate=25, task_id="t",
                 audio_task_id="u", credits_video=20, credits_audio=5,
                 unknown_step="add_audio")
    before = budget.held(failed)
    changes = budget.reopened(failed, unknown=False, failed=True)
    assert changes is not None
    again = replace(failed, **changes)
    assert again.state is JobState.AUDIO_PENDING and again.credits_prior == 5
    assert budget.held(again) == before == 25  # nothing spent is forgotten...
    (send,) = budget.queue([again])
    assert send.admission and send.need == 5  # ...and the new step needs room of its own
    first_run = replace(again, audio_held=True)
    (send,) = budget.queue([first_run])
    assert not send.admission and send.need == 0  # reserved with its video


def test_a_resubmitted_lost_create_keeps_its_estimate_held():
    lost = row(state=JobState.UNKNOWN, request=AUDIO, estimate=25, unknown_step="video")
    changes = budget.reopened(lost, unknown=True, failed=False)
    assert changes is not None
    again = replace(lost, **changes)
    assert again.state is JobState.PENDING and again.credits_lost == 20
    assert budget.held(again) == 20  # the first create may have been charged
    (send,) = budget.queue([again])
    assert send.need == 25  # the second one needs room of its own
    lost_audio = row(state=JobState.UNKNOWN, request=AUDIO, estimate=25, task_id="t",
                     credits_video=20, unknown_step="add_audio")
    again = replace(lost_audio, **budget.reopened(lost_audio, unknown=True, failed=False))
    assert (again.state, again.credits_lost, budget.held(again)) == (
        JobState.AUDIO_PENDING, 5, 25)
    assert budget.queue([again])[0].need == 5


def test_reopen_repeats_only_what_failed_and_leaves_changed_jobs_alone():
    download = row(state=JobState.FAILED, task_id="t", credits_video=20, video_url="u")
    assert budget.reopened(download, unknown=False, failed=True) == {
        "state": JobState.READY, "error": None}
    assert budget.reopened(download, unknown=True, failed=False) is None
    assert budget.reopened(replace(download, changed=True), unknown=True, failed=True) is None
    status4 = row(state=JobState.FAILED, task_id="t")  # charge never reported
    again = replace(status4, **budget.reopened(status4, unknown=False, failed=True))
    assert (again.task_id, again.credits_lost, again.state) == (None, 20, JobState.PENDING)


def test_a_count_job_queues_one_create_for_its_pending_family():
    rows = [row("j", request={"count": 3}),
            row("j#2", parent="j", request={"count": 3}),
            row("j#3", parent="j", request={"count": 3}),
            row("k", state=JobState.COMPLETED, task_id="t", credits_video=30,
                request={"resolution": "1080p"})]
    assert [(s.job_id, s.need) for s in budget.queue(rows)] == [("j", 60)]
    # while the family's create is on the wire its videos are still riding on it: a
    # shared state rebuilds this queue mid-run, and must not send them again
    rows[0] = replace(rows[0], state=JobState.SUBMITTING)
    assert budget.queue(rows) == []
    # a video left to make on its own once its family's create was answered without it
    rows[0] = replace(rows[0], state=JobState.RUNNING, task_id="t1")
    assert [(s.job_id, s.need) for s in budget.queue(rows)] == [("j#2", 20), ("j#3", 20)]


def test_learned_prices_are_reserved_for_the_next_videos_of_the_kind():
    charged = row("x", state=JobState.COMPLETED, task_id="t", credits_video=35)
    (send,) = budget.queue([charged, row("y")])
    assert send.need == 35
    (send,) = budget.queue([charged, row("y", request={"resolution": "1080p"}, estimate=25)])
    assert send.need == 25  # another kind of video


def test_only_a_job_that_never_made_a_task_is_free_to_change():
    refused = row(state=JobState.FAILED, error="1003")
    assert budget.free_to_change(refused)
    assert not budget.free_to_change(replace(refused, task_id="t"))
    assert not budget.free_to_change(replace(refused, credits_prior=20))
    assert not budget.free_to_change(replace(refused, credits_lost=20))
    assert not budget.free_to_change(replace(refused, state=JobState.UNKNOWN))


# -- numbers from the API ----------------------------------------------------------------


@pytest.mark.parametrize("value", [-5, -0.5, math.nan, math.inf, -math.inf, 20.5, 1e300,
                                   10**30, 10**400, -10**400, "20", True, [20], {"n": 20}])
def test_an_unusable_charge_keeps_the_estimate(value):
    got = budget.charge(value, 20)
    assert got.credits is None and got.problem


def test_a_usable_charge_is_taken_as_the_api_said():
    assert budget.charge(35, 20) == budget.Charge(35, None)
    assert budget.charge(15.0, 20) == budget.Charge(15, None)
    assert budget.charge(None, 20) == budget.Charge(None, None)
    assert budget.charge(0, 20).credits is None  # zero for a paid task
    assert budget.charge(0, 0) == budget.Charge(0, None)
