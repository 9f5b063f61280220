"""The state database: crash recovery, reopening, the lock, budget figures."""

from __future__ import annotations

import pytest

from batchgen.errors import OutputDirLocked
from batchgen.jobs import Job
from batchgen.store import JobState, Store


def job(i: int, **kw) -> Job:
    return Job(id=f"j{i}", index=i, image_url=f"https://e.com/{i}.jpg", resolution="720p",
               video_length=5, audio_type=3, prompt=f"p{i}", fingerprint=f"fp{i}", **kw)


def fresh(tmp_path, n: int = 3) -> Store:
    store = Store.open(tmp_path)
    store.sync([job(i) for i in range(n)], [(20, 0)] * n)
    return store


def test_a_create_that_never_left_goes_back_to_pending_one_that_left_is_unknown(tmp_path):
    with fresh(tmp_path) as store:
        store.begin_submit(["j0", "j1"], "2026-01-01T00:00:00Z")
        store.mark_sent("j1")
    with Store.open(tmp_path) as store:  # "after the crash"
        assert store.recover() == 1
        states = {r.job_id: r.state for r in store.rows()}
    assert states == {"j0": JobState.PENDING, "j1": JobState.UNKNOWN, "j2": JobState.PENDING}


def test_unknown_jobs_hold_their_estimate_against_the_budget(tmp_path):
    with fresh(tmp_path) as store:
        store.begin_submit(["j0", "j1"], "t")
        store.mark_sent("j0")
        store.mark_sent("j1")
        store.mark_accepted("j1", "task1", 25)
        store.recover()
        assert store.committed_credits() == 20 + 25


def test_reopen_unknown_and_failed_only_when_asked(tmp_path):
    with fresh(tmp_path) as store:
        store.begin_submit(["j0"], "t")
        store.mark_sent("j0")
        store.recover()
        store.update([("j1", {"state": JobState.FAILED, "error": "boom"}),
                      ("j2", {"state": JobState.FAILED, "error": "download",
                              "video_url": "http://x/v.mp4"})])
        assert store.reopen(unknown=False, failed=False) == 0
        assert store.reopen(unknown=True, failed=True) == 3
        states = {r.job_id: r.state for r in store.rows()}
    # a failed download is fetched again, never re-created
    assert states == {"j0": JobState.PENDING, "j1": JobState.PENDING, "j2": JobState.READY}


def test_a_changed_manifest_entry_is_flagged_not_resubmitted(tmp_path):
    with fresh(tmp_path) as store:
        store.begin_submit(["j0"], "t")
        store.mark_sent("j0")
        store.mark_accepted("j0", "task0", 20)
        changed = Job(id="j0", index=0, image_url="https://e.com/other.jpg",
                      resolution="720p", video_length=5, audio_type=3, prompt="new",
                      fingerprint="different")
        result = store.sync([changed, job(1), job(2)], [(20, 0)] * 3)
        assert result.changed == ("j0",)
        row = store.get("j0")
        assert row.state is JobState.RUNNING and row.changed
        assert row.request["image_url"] == "https://e.com/0.jpg"  # kept as sent


def test_the_lock_keeps_a_second_run_out_and_dies_with_its_holder(tmp_path):
    first = Store.open(tmp_path)
    with pytest.raises(OutputDirLocked, match="pid"):
        Store.open(tmp_path)
    first.close()
    Store.open(tmp_path).close()  # released
    Store.open(tmp_path, lock=False).close()  # readers never need it
