"""Group commit of the submit path's durable records (scheduler/journal.py), on a real
SQLite store: records staged in one turn of the event loop share one durable commit, and
nobody goes on before their own record is written."""

from __future__ import annotations

import asyncio

import pytest
from test_store import fresh

from batchgen.scheduler.journal import GroupCommit
from batchgen.store import JobState, Store
from batchgen.transitions import Accepted, Claimed


def _group(store: Store, log: list[tuple[int, int]]) -> GroupCommit:
    def write(steps, sent):
        log.append((len(steps), len(sent)))
        return store.apply_many(steps, durable=True, sent=sent)
    return GroupCommit(write)


async def test_sent_marks_of_one_tick_share_one_commit_and_are_durable_when_awaited(tmp_path):
    log: list[tuple[int, int]] = []
    with fresh(tmp_path) as store:
        store.begin_submit(["j0", "j1", "j2"], "T")
        group = _group(store, log)
        await asyncio.gather(*(group.sent(j) for j in ("j0", "j1", "j2")))
        assert log == [(0, 3)]
        assert (group.commits, group.records) == (1, 3)
    with Store.open(tmp_path) as store:  # "after a crash": every one of them may exist
        assert store.recover() == 3
        assert {r.state for r in store.rows()} == {JobState.UNKNOWN}


async def test_accepted_rows_come_back_to_each_writer_in_order(tmp_path):
    log: list[tuple[int, int]] = []
    with fresh(tmp_path) as store:
        claimed = store.apply_many([(store.get(j), Claimed("T")) for j in ("j0", "j1")],
                                   durable=True)
        group = _group(store, log)
        a, b = await asyncio.gather(
            group.apply([(claimed[0], Accepted("t-a", 20))]),
            group.apply([(claimed[1], Accepted("t-b", 30))]))
        assert [r.task_id for r in a] == ["t-a"] and [r.task_id for r in b] == ["t-b"]
        assert log == [(2, 0)]
        assert store.get("j1").task_id == "t-b"


async def test_a_writer_cancelled_while_waiting_leaves_the_others_commit_alone(tmp_path):
    with fresh(tmp_path) as store:
        store.begin_submit(["j0", "j1"], "T")
        group = _group(store, [])
        first = asyncio.ensure_future(group.sent("j0"))
        second = asyncio.ensure_future(group.sent("j1"))
        await asyncio.sleep(0)  # both staged
        first.cancel()
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
    with Store.open(tmp_path) as store:
        # staged before the cancel: written all the same (safe side: unknown, not resent)
        assert store.recover() == 2


async def test_a_failed_commit_fails_every_writer_and_nothing_goes_on(tmp_path):
    def write(steps, sent):
        raise OSError(28, "No space left on device")

    group = GroupCommit(write)
    results = await asyncio.gather(group.sent("a"), group.sent("b"), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert group.commits == 0


async def test_flush_writes_at_once_so_other_writes_keep_their_order(tmp_path):
    log: list[tuple[int, int]] = []
    with fresh(tmp_path) as store:
        store.begin_submit(["j0"], "T")
        group = _group(store, log)
        waiter = asyncio.ensure_future(group.sent("j0"))
        await asyncio.sleep(0)
        group.flush()  # say, before the poller's own write
        assert log == [(0, 1)]
        await waiter
        group.flush()  # nothing staged: no commit
        assert log == [(0, 1)]
