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


async def test_every_create_reaches_the_api_after_its_sent_mark_is_committed(
        sandbox, tmp_path, monkeypatch):
    """The journal's promise, seen from the server: when the k-th create arrives, k jobs
    are durably marked sent. Grouping the marks must never let a request overtake its
    own (a crash then would resume a paid job as never sent, and pay for it again). The
    marks are slowed down here, so a request not waiting for its mark would overtake it."""
    import sqlite3

    from batchgen.scheduler.state import RunState

    marking = RunState.sent

    async def slow_mark(self: RunState, job_id: str) -> None:
        await asyncio.sleep(0.05)
        await marking(self, job_id)

    monkeypatch.setattr(RunState, "sent", slow_mark)

    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from cli_helpers import write_manifest

    from batchgen import arun

    sb = await sandbox()
    arrived: list[int] = []  # marks committed when each create arrived
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.endswith("createBySourcePrompt"):
            db = next((tmp_path / "out" / ".batchgen").glob("*.db"))
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                (marked,) = conn.execute("SELECT count(*) FROM jobs WHERE sent=1").fetchone()
            arrived.append(marked)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("x-api-key", "authorization", "content-type")}
        async with session.request(request.method, sb.url + request.path_qs, data=body,
                                   headers=headers) as upstream:
            raw = await upstream.read()
            return web.Response(body=raw, status=upstream.status,
                                content_type=upstream.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    proxy = TestServer(app, host="127.0.0.1", port=0)
    await proxy.start_server()
    try:
        manifest = write_manifest(tmp_path, 12, base_url=str(proxy.make_url("")).rstrip("/"),
                                  concurrency=12)
        report = await arun(str(manifest), api_key="test-key-1234")
    finally:
        await proxy.close()
        await session.close()
    assert report.counts["completed"] == 12
    assert len(arrived) == 12
    assert all(marked >= k for k, marked in enumerate(arrived, start=1)), arrived


async def test_a_stop_while_the_sent_marks_are_being_written_leaves_no_unknown(
        sandbox, tmp_path, monkeypatch):
    """A stop can land while a create waits for its mark: no byte of it has left, so the
    job must come back pending (a staged mark that still reaches the disk is undone),
    not `unknown`, which would need --resubmit-unknown for a create never sent."""
    from cli_helpers import write_manifest

    from batchgen import arun
    from batchgen.scheduler.journal import GroupCommit
    from batchgen.store import JobState, Store

    waiting = asyncio.Event()
    stage = GroupCommit._wait

    def slow_commit(self: GroupCommit):
        if self._done is None:  # the commit of this turn is slow to reach the disk
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            loop.call_later(0.3, self.flush)
            waiting.set()
        return stage(self)

    monkeypatch.setattr(GroupCommit, "_wait", slow_commit)
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 3, base_url=sb.url, concurrency=3)
    run = asyncio.ensure_future(arun(str(manifest), api_key="test-key-1234"))
    await asyncio.wait_for(waiting.wait(), 10)
    run.cancel()
    await asyncio.sleep(0.05)
    run.cancel()  # a second stop cuts the creates' grace short: they end mid-mark
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sb.stats()["tasks_created"] == 0
    with Store.open(tmp_path / "out") as store:
        assert store.recover() == 0
        assert {r.state for r in store.rows()} == {JobState.PENDING}
