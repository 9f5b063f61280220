"""The state database: crash recovery, reopening, the lock, budget figures."""

from __future__ import annotations

from dataclasses import replace

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


# -- one write path: store.apply -----------------------------------------------------------


def _column(store: Store, job_id: str, name: str):
    return store._conn.execute(f"SELECT {name} FROM jobs WHERE job_id=?", (job_id,)).fetchone()[0]


def test_apply_writes_exactly_the_changed_columns_and_returns_the_row_written(tmp_path):
    from batchgen.transitions import Accepted, Claimed

    with fresh(tmp_path) as store:
        row = store.get("j0")
        # a column the transition does not touch, changed behind the row's back, stays
        store.update([("j0", {"error": "written elsewhere"})])
        claimed = store.apply(row, Claimed("T1"), durable=True)
        assert (claimed.state, claimed.attempts, claimed.submitted_at) == (
            JobState.SUBMITTING, 1, "T1")
        assert _column(store, "j0", "error") == "written elsewhere"
        accepted = store.apply(claimed, Accepted("task0", 20), durable=True)
        # only what changed between the rows is written: the stale error is still there
        assert store.get("j0") == replace(accepted, error="written elsewhere")
        assert (accepted.state, accepted.task_id, accepted.credits_video) == (
            JobState.RUNNING, "task0", 20)


def test_apply_refuses_an_illegal_transition_and_writes_nothing(tmp_path):
    from batchgen.transitions import Accepted, Claimed, IllegalTransition

    with fresh(tmp_path) as store:
        before = [store.get(j) for j in ("j0", "j1")]
        with pytest.raises(IllegalTransition):  # j1 was never claimed
            store.apply_many([(before[0], Claimed("T")), (before[1], Accepted("t", 1))])
        assert [store.get(j) for j in ("j0", "j1")] == before


def test_a_claim_clears_the_sent_mark_so_an_unsent_retry_is_never_unknown(tmp_path):
    from batchgen.transitions import Claimed, Unsent

    with fresh(tmp_path) as store:
        row = store.apply(store.get("j0"), Claimed("T"), durable=True)
        store.mark_sent("j0")
        row = store.apply(row, Unsent(), durable=True)
        store.apply(row, Claimed("T2"), durable=True)  # sent again later: not yet left
        assert _column(store, "j0", "sent") == 0
    with Store.open(tmp_path) as store:
        assert store.recover() == 0
        assert store.get("j0").state is JobState.PENDING


def test_events_for_one_job_chain_in_one_write(tmp_path):
    from batchgen.transitions import Accepted, Charged, Claimed, TaskDone

    with fresh(tmp_path) as store:
        row = store.get("j0")
        rows = store.apply_many([(row, Claimed("T")), (row, Accepted("task0", None)),
                                 (row, Charged(18)), (row, TaskDone("task0", "http://v"))])
        assert [r.state for r in rows] == [JobState.SUBMITTING, JobState.RUNNING,
                                           JobState.RUNNING, JobState.READY]
        assert rows[2].credits_video == 18
        assert store.get("j0") == rows[-1]


def test_rows_carry_no_hidden_keys_the_store_keeps_them_as_typed_fields(tmp_path):
    from batchgen.jobs import AddAudio
    from batchgen.transitions import Claimed

    j = job(0, add_audio=AddAudio(audio_type=1), source="m.yaml:7",
            extra=(("sku", "A-1"), ("owner", "kim")))
    with Store.open(tmp_path) as store:
        store.sync([j], [(25, 5)])
        row = store.get("j0")
        assert not [k for k in row.request if k.startswith("_")]
        assert (row.source, row.audio_estimate, row.extra) == (
            "m.yaml:7", 5, {"sku": "A-1", "owner": "kim"})
        # a transition never loses them
        store.apply(row, Claimed("T"))
        again = store.get("j0")
        assert (again.request, again.source, again.audio_estimate, again.extra) == (
            row.request, "m.yaml:7", 5, {"sku": "A-1", "owner": "kim"})
