"""The job's transitions (transitions.py), pure: every event in every state, no I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from batchgen import transitions as t
from batchgen.jobs import JobRow, JobState

S = JobState
AUDIO_REQ = {"add_audio": {"audio_type": 1}}


def row(state: JobState = S.PENDING, **fields) -> JobRow:
    request = {"resolution": "720p", "video_length": 5, **fields.pop("request", {})}
    return JobRow(job_id="a", idx=0, fingerprint="f", request=request, state=state,
                  credits_estimated=25, **fields)


#: every event, and the states it may happen in (every other state refuses it)
LEGAL: list[tuple[t.Event, frozenset[JobState]]] = [
    (t.Claimed("T"), frozenset({S.PENDING})),
    (t.Claimed("T", audio=True), frozenset({S.AUDIO_PENDING})),
    (t.Unsent(), frozenset({S.SUBMITTING})),
    (t.Unsent(audio=True), frozenset({S.AUDIO_SUBMITTING})),
    (t.Accepted("task", 20), frozenset({S.SUBMITTING})),
    (t.Accepted("atask", 5, audio=True), frozenset({S.AUDIO_SUBMITTING})),
    (t.FamilyAccepted("task", 20, "T"), frozenset({S.SUBMITTING, S.PENDING})),
    (t.AnswerLost("lost"), frozenset({S.SUBMITTING, S.AUDIO_SUBMITTING, S.PENDING})),
    (t.AnswerLost("lost", audio=True), frozenset({S.SUBMITTING, S.AUDIO_SUBMITTING})),
    (t.CreateRefused("no"), frozenset({S.SUBMITTING, S.AUDIO_SUBMITTING, S.PENDING})),
    (t.TaskDone("task", "http://v"), frozenset({S.RUNNING})),
    (t.TaskDone("atask", "http://v", audio=True), frozenset({S.AUDIO_RUNNING})),
    (t.TaskFailed("failed"), frozenset({S.RUNNING})),
    (t.TaskFailed("failed", audio=True), frozenset({S.AUDIO_RUNNING})),
    (t.TaskLost("gone"), frozenset({S.RUNNING, S.AUDIO_RUNNING})),
    (t.Downloaded("a.mp4", 10, "ab", "T", "http://v"), frozenset({S.READY})),
    (t.DownloadFailed("gone"), frozenset({S.READY})),
    (t.RemoteDeleted(), frozenset({S.COMPLETED})),
    (t.RemoteKept("kept"), frozenset({S.COMPLETED})),
    (t.Reopened(unknown=True, failed=False), frozenset({S.UNKNOWN})),
    (t.Reopened(unknown=False, failed=True), frozenset({S.FAILED})),
    (t.Reopened(unknown=True, failed=True), frozenset({S.UNKNOWN, S.FAILED})),
    (t.ChargeNoted("n"), frozenset(S)),
    (t.Held(1, 2, "n"), frozenset(S)),
]


def _case_id(value: object) -> str:
    """A stable test id: a frozenset's order changes with the hash seed, and pytest-xdist's
    workers must collect the same ids."""
    if isinstance(value, frozenset):
        return "+".join(sorted(state.value for state in value))
    return repr(value)[:40]


@pytest.mark.parametrize("event, states", LEGAL, ids=_case_id)
def test_every_event_in_every_state(event, states):
    for state in S:
        before = row(state)
        if state in states:
            after = t.advance(before, event)
            assert after.job_id == before.job_id
            assert t.allowed(before, event)
        else:
            with pytest.raises(t.IllegalTransition, match=f"state {state.value}"):
                t.advance(before, event)
            assert not t.allowed(before, event)


def test_the_table_names_every_event_kind():
    named = {type(e) for e, _ in LEGAL} | {t.Charged}
    assert named == set(t.Event.__args__) == set(t._RULES)


def test_claim_journals_an_attempt_and_keeps_the_first_submission_time():
    first = t.advance(row(), t.Claimed("T1"))
    assert (first.state, first.attempts, first.submitted_at, first.audio_held) == (
        S.SUBMITTING, 1, "T1", True)
    again = t.advance(replace(first, state=S.PENDING), t.Claimed("T2"))
    assert (again.attempts, again.submitted_at) == (2, "T1")
    step = t.advance(row(S.AUDIO_PENDING, audio_held=False, task_id="v"),
                     t.Claimed("T", audio=True))
    assert (step.state, step.audio_held) == (S.AUDIO_SUBMITTING, True)


def test_unsent_returns_the_create_to_its_queue():
    assert t.advance(row(S.SUBMITTING), t.Unsent()).state is S.PENDING
    assert t.advance(row(S.AUDIO_SUBMITTING), t.Unsent(audio=True)).state is S.AUDIO_PENDING


def test_accepted_records_the_task_and_its_charge():
    video = t.advance(row(S.SUBMITTING, error="earlier"), t.Accepted("task1", 20))
    assert (video.state, video.task_id, video.credits_video, video.error) == (
        S.RUNNING, "task1", 20, None)
    step = t.advance(row(S.AUDIO_SUBMITTING, task_id="task1"), t.Accepted("a1", None, True))
    assert (step.state, step.task_id, step.audio_task_id, step.credits_audio) == (
        S.AUDIO_RUNNING, "task1", "a1", None)


def test_a_family_video_gets_its_own_task():
    child = t.advance(row(S.PENDING, error="old"), t.FamilyAccepted("t2", 20, "T"))
    assert (child.state, child.task_id, child.credits_video, child.attempts,
            child.submitted_at, child.error) == (S.RUNNING, "t2", 20, 1, "T", None)


def test_a_lost_answer_names_its_step():
    lost = t.advance(row(S.SUBMITTING), t.AnswerLost("gone"))
    assert (lost.state, lost.error, lost.unknown_step) == (S.UNKNOWN, "gone", "video")
    step = t.advance(row(S.AUDIO_SUBMITTING), t.AnswerLost("gone", audio=True))
    assert step.unknown_step == "add_audio"


def test_a_refused_create_fails_and_an_add_audio_step_says_so():
    assert t.advance(row(S.SUBMITTING), t.CreateRefused("bad")).unknown_step is None
    failed = t.advance(row(S.AUDIO_SUBMITTING), t.CreateRefused("bad", audio=True))
    assert (failed.state, failed.error, failed.unknown_step) == (S.FAILED, "bad", "add_audio")


def test_a_finished_video_is_ready_or_waits_for_its_add_audio_step():
    ready = t.advance(row(S.RUNNING, task_id="t"), t.TaskDone("t", "http://v"))
    assert (ready.state, ready.video_url) == (S.READY, "http://v")
    waits = t.advance(row(S.RUNNING, task_id="t", request=AUDIO_REQ), t.TaskDone("t", None))
    assert (waits.state, waits.video_url) == (S.AUDIO_PENDING, None)
    final = t.advance(row(S.AUDIO_RUNNING, request=AUDIO_REQ), t.TaskDone("a", "http://w", True))
    assert (final.state, final.video_url) == (S.READY, "http://w")


def test_a_finished_or_failed_task_records_when():
    done = t.advance(row(S.RUNNING), t.TaskDone("t", "http://v", finished_at="T9"))
    assert (done.state, done.finished_at) == (S.READY, "T9")
    failed = t.advance(row(S.RUNNING), t.TaskFailed("x", finished_at="T8"))
    assert (failed.state, failed.finished_at) == (S.FAILED, "T8")
    assert t.advance(row(S.RUNNING), t.TaskFailed("gone")).finished_at is None


def test_a_finished_task_without_a_url_waits_ready_for_one_never_failed():
    # FAILED would let --retry-failed pay for a video that exists
    got = t.advance(row(S.RUNNING), t.TaskDone("t9", ""))
    assert (got.state, got.video_url) == (S.READY, None)
    assert got.error == "task t9 finished but the API gave no usable video_url yet"
    fetched = t.advance(got, t.Downloaded("f.mp4", 1, "ab", "T", "http://v"))
    assert (fetched.state, fetched.error) == (S.COMPLETED, None)


def test_a_failed_task_fails_the_job_and_names_the_step():
    assert t.advance(row(S.RUNNING), t.TaskFailed("x")).unknown_step is None
    step = t.advance(row(S.AUDIO_RUNNING), t.TaskFailed("x", audio=True))
    assert (step.state, step.error, step.unknown_step) == (S.FAILED, "x", "add_audio")


def test_a_vanished_task_fails_the_job_without_naming_a_step():
    got = t.advance(row(S.AUDIO_RUNNING), t.TaskLost("task a is no longer known to the API"))
    assert (got.state, got.error, got.unknown_step) == (
        S.FAILED, "task a is no longer known to the API", None)


def test_downloaded_records_the_file_and_clears_the_error():
    got = t.advance(row(S.READY, error="403 before"),
                    t.Downloaded("a.mp4", 123, "ff", "2026-01-01T00:00:00Z", "http://new"))
    assert (got.state, got.file, got.bytes, got.sha256, got.completed_at, got.video_url,
            got.error) == (S.COMPLETED, "a.mp4", 123, "ff", "2026-01-01T00:00:00Z",
                           "http://new", None)
    assert t.advance(row(S.READY), t.DownloadFailed("no")).state is S.FAILED


def test_remote_clean_up_marks_a_completed_job():
    assert t.advance(row(S.COMPLETED), t.RemoteDeleted()).remote_deleted is True
    kept = t.advance(row(S.COMPLETED), t.RemoteKept("not deleted"))
    assert (kept.state, kept.error) == (S.COMPLETED, "not deleted")


def test_charges_need_the_task_they_are_for():
    assert t.advance(row(S.RUNNING, task_id="t"), t.Charged(18)).credits_video == 18
    assert t.advance(row(S.AUDIO_RUNNING, audio_task_id="a"),
                     t.Charged(4, audio=True)).credits_audio == 4
    with pytest.raises(t.IllegalTransition):
        t.advance(row(S.RUNNING), t.Charged(18))
    with pytest.raises(t.IllegalTransition):
        t.advance(row(S.RUNNING, task_id="t"), t.Charged(4, audio=True))


def test_held_adds_to_what_the_job_holds():
    got = t.advance(row(S.RUNNING, credits_prior=3, credits_lost=1), t.Held(10, 20, "surplus"))
    assert (got.credits_prior, got.credits_lost, got.credits_note) == (13, 21, "surplus")
    assert t.advance(got, t.ChargeNoted("said -1")).credits_note == "said -1"


def test_reopened_repeats_only_the_step_that_went_wrong():
    download = t.advance(row(S.FAILED, task_id="t", video_url="http://v"),
                         t.Reopened(unknown=False, failed=True))
    assert (download.state, download.task_id) == (S.READY, "t")
    lost = t.advance(row(S.UNKNOWN, unknown_step="video"), t.Reopened(unknown=True, failed=False))
    assert (lost.state, lost.credits_lost, lost.unknown_step) == (S.PENDING, 25, None)
    with pytest.raises(t.IllegalTransition):  # a changed entry is never reopened
        t.advance(row(S.FAILED, changed=True), t.Reopened(unknown=False, failed=True))


def test_changed_columns_are_exactly_the_differences():
    before = row(S.SUBMITTING, error="x")
    after = t.advance(before, t.Accepted("task1", 20))
    assert t.changed_columns(before, after) == {
        "state": S.RUNNING, "task_id": "task1", "credits_video": 20, "error": None}
    assert t.changed_columns(after, after) == {}


def test_the_input_row_is_never_changed():
    before = row(S.SUBMITTING)
    t.advance(before, t.Accepted("task1", 20))
    assert (before.state, before.task_id) == (S.SUBMITTING, None)
