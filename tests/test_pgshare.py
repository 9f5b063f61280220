"""Several runners on one manifest (pgshare.py), at the store: claims under one
concurrency limit and one budget, leases, fenced writes, a dead runner's work adopted."""

from __future__ import annotations

import random
import threading
import time

import pytest

from batchgen import budget
from batchgen.errors import ClaimLost, OutputDirLocked
from batchgen.jobs import Job
from batchgen.pgshare import SharedPgStore
from batchgen.pgstore import PgStore
from batchgen.state_store import parse_state_url
from batchgen.store import JobState
from batchgen.transitions import Accepted, CreateRefused, FamilyAccepted, TaskDone

S = JobState


def job(i: int) -> Job:
    return Job(id=f"j{i:03d}", index=i, image_url=f"https://e.com/{i}.jpg", resolution="720p",
               video_length=5, audio_type=3, prompt=f"p{i}", fingerprint=f"fp{i}")


def seeded(url, n: int, scope: str = "m") -> None:
    with PgStore.open(url, scope, lock=False) as store:
        store.sync([job(i) for i in range(n)], [(20, 0)] * n)


def drain(url, *, runners: int, limit: int, cap: int | None, charge: int = 20,
          scope: str = "m") -> dict:
    """`runners` threads, each a runner: claim, send (mark), accept, finish a task."""
    lock = threading.Lock()
    seen = {"claimed": [], "in_flight": 0, "max": 0, "claims": [], "errors": []}

    def runner(k: int) -> None:
        rng = random.Random(k)
        store = SharedPgStore.join(url, scope, lease=10)
        running: list = []
        try:
            while True:
                t0 = time.perf_counter()
                got = store.claim(limit, limit, cap, "2026-01-01T00:00:00Z")
                with lock:
                    seen["claims"].append(time.perf_counter() - t0)
                    seen["claimed"] += [j for j, _ in got.sends]
                    seen["in_flight"] += len(got.sends)
                    seen["max"] = max(seen["max"], seen["in_flight"])
                for job_id, _ in got.sends:
                    store.mark_sent(job_id)
                    running.append(store.apply(got.rows[job_id],
                                               Accepted(f"task-{job_id}", charge), durable=True))
                if running:
                    done = running.pop(rng.randrange(len(running)))
                    with lock:  # the slot frees when the store says so, not before
                        store.apply(done, TaskDone(done.task_id, "http://v/x.mp4"))
                        seen["in_flight"] -= 1
                elif not got.sends:
                    return
        except BaseException as exc:
            seen["errors"].append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=runner, args=(k,)) for k in range(runners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["errors"] == []
    return seen


def test_three_runners_claim_each_job_once_never_over_the_limit(pg_url):
    url = parse_state_url(pg_url)
    seeded(url, 60)
    seen = drain(url, runners=3, limit=4, cap=None)
    assert sorted(seen["claimed"]) == [f"j{i:03d}" for i in range(60)]  # each exactly once
    assert seen["max"] <= 4
    with PgStore.open(url, "m", lock=False) as store:
        assert {r.state for r in store.rows()} == {S.READY}


def test_runners_together_never_commit_more_than_the_cap(pg_url):
    url = parse_state_url(pg_url)
    seeded(url, 30)
    # the API charges 25 where 20 was estimated: learned prices make later claims bigger
    seen = drain(url, runners=3, limit=5, cap=330, charge=25)
    with PgStore.open(url, "m", lock=False) as store:
        rows = store.rows()
    assert budget.committed(rows) <= 330
    sent = [r for r in rows if r.state is not S.PENDING]
    assert len(sent) == len(seen["claimed"]) >= 12  # spent up to the cap, then stopped
    # the budget keeps manifest order: what was sent is a prefix of the manifest
    assert sorted(r.job_id for r in sent) == [f"j{i:03d}" for i in range(len(sent))]


def test_a_runner_paused_past_its_lease_sends_nothing_another_took_over(pg_url):
    url = parse_state_url(pg_url)
    seeded(url, 4)
    paused = SharedPgStore.join(url, "m", lease=0.3)
    got = paused.claim(3, 3, None, "t")
    assert [j for j, _ in got.sends] == ["j000", "j001", "j002"]
    paused.mark_sent("j000")                     # on the wire, answer not yet in
    running = paused.apply(got.rows["j000"], Accepted("task-0", 20), durable=True)
    paused.mark_sent("j001")                     # sent, answer never comes
    time.sleep(0.4)                              # SIGSTOP past the lease
    other = SharedPgStore.join(url, "m", lease=10)
    try:
        taken = other.claim(4, 4, None, "t")
        # the unsent claim went back to the queue and was taken; the sent one is unknown
        assert [j for j, _ in taken.sends] == ["j002", "j003"]
        adopted = other.adopt()
        assert [r.job_id for r in adopted] == ["j000"]   # its task in flight: adopted
        with pytest.raises(ClaimLost, match="lease"):
            paused.mark_sent("j002")             # fenced: it must not send
        with pytest.raises(ClaimLost):
            paused.apply(running, TaskDone("task-0", "http://v/0.mp4"))
        with pytest.raises(ClaimLost):
            paused.heartbeat()
        states = {r.job_id: r.state for r in other.rows()}
        assert states == {"j000": S.RUNNING, "j001": S.UNKNOWN, "j002": S.SUBMITTING,
                          "j003": S.SUBMITTING}
        other.apply(adopted[0], TaskDone("task-0", "http://v/0.mp4"))  # the adopter may
        assert "lease" in other.get("j001").error
    finally:
        other.close()
        paused.close()


def test_a_runner_that_waited_out_a_frozen_claim_past_its_lease_goes_on(pg_url):
    """CI once saw this: a runner frozen (SIGSTOP) inside its claim's transaction held the
    claim lock until the server ended its session, one lease later; the runner waiting on
    that lock could not renew meanwhile, found its own lease run out, and gave up its run
    with jobs left pending. Nobody had reaped it, so nothing was taken from it: it goes on."""
    url = parse_state_url(pg_url)
    seeded(url, 3)
    frozen = SharedPgStore.join(url, "m", lease=10)
    waiting = SharedPgStore.join(url, "m", lease=0.3)
    try:
        with frozen._tx():
            frozen._lock_manifest()              # frozen here, holding the claim lock
            claim = threading.Thread(target=lambda: got.append(waiting.claim(2, 2, None, "t")))
            got: list = []
            claim.start()
            time.sleep(0.6)                      # the waiting runner's lease runs out
        claim.join(10)
        assert [j for j, _ in got[0].sends] == ["j000", "j001"]
        waiting.mark_sent("j000")                # renewed: its sent marks are current again
        waiting.heartbeat()
    finally:
        waiting.close()
        frozen.close()


def test_a_reaped_runner_cannot_renew_nor_adopt(pg_url):
    url = parse_state_url(pg_url)
    seeded(url, 1)
    gone = SharedPgStore.join(url, "m", lease=0.2)
    other = SharedPgStore.join(url, "m", lease=10)
    try:
        time.sleep(0.3)
        other.claim(1, 1, None, "t")             # reaps it
        for call in (gone.heartbeat, gone.adopt, lambda: gone.claim(1, 1, None, "t")):
            with pytest.raises(ClaimLost, match="lease"):
                call()
    finally:
        other.close()
        gone.close()


def test_a_heartbeat_keeps_the_lease_and_status_names_the_holder(pg_url):
    url = parse_state_url(pg_url)
    seeded(url, 2)
    store = SharedPgStore.join(url, "m", lease=0.3)
    try:
        store.claim(1, 5, None, "t")
        for _ in range(3):
            time.sleep(0.15)
            store.heartbeat()
        store.mark_sent("j000")                  # still ours after 0.45 s
        with PgStore.open(url, "m", lock=False) as reader:
            assert reader.holders() == {"j000": f"{store.host}:{store.pid}"}
    finally:
        store.close()
    with PgStore.open(url, "m", lock=False) as reader:  # a clean leave settles at once
        assert reader.get("j000").state is S.UNKNOWN and reader.holders() == {}


def test_shared_runners_and_a_single_runner_run_exclude_each_other(pg_url):
    url = parse_state_url(pg_url)
    seeded(url, 1)
    a = SharedPgStore.join(url, "m")
    b = SharedPgStore.join(url, "m")             # runners share
    with pytest.raises(OutputDirLocked):
        PgStore.open(url, "m")                   # an exclusive run waits for them
    a.close()
    b.close()
    single = PgStore.open(url, "m")
    with pytest.raises(OutputDirLocked):
        SharedPgStore.join(url, "m")
    single.close()


def test_an_open_claim_reserves_its_learned_price_for_every_runner(pg_url):
    """Runner A's claims, sent at the price the API was seen to charge (25, not the
    estimated 20) and not yet answered, count at 25 in runner B's claim."""
    url = parse_state_url(pg_url)
    seeded(url, 5)
    a = SharedPgStore.join(url, "m")
    b = SharedPgStore.join(url, "m")
    try:
        first = a.claim(1, 5, 120, "t")
        a.mark_sent("j000")
        a.apply(first.rows["j000"], Accepted("task-0", 25), durable=True)
        opened = a.claim(2, 5, 120, "t")
        assert opened.needs == {"j001": 25, "j002": 25}
        taken = b.claim(5, 5, 120, "t")
        assert [j for j, _ in taken.sends] == ["j003"] and taken.blocked == ("j004", 25)
        for store, claim in ((a, opened), (b, taken)):
            for job_id, _ in claim.sends:
                store.mark_sent(job_id)
                store.apply(claim.rows[job_id], Accepted(f"task-{job_id}", 25), durable=True)
        assert budget.committed(b.rows()) == 100 <= 120
    finally:
        a.close()
        b.close()


def test_status_shows_the_whole_manifest_and_which_runner_holds_what(pg_url, tmp_path):
    import io
    import json

    from cli_helpers import write_manifest

    from batchgen.api import load
    from batchgen.cli import main
    from batchgen.session_plan import estimates

    manifest = load(write_manifest(tmp_path, 4))
    url = parse_state_url(pg_url)
    a, b = SharedPgStore.join(url, manifest.name), SharedPgStore.join(url, manifest.name)
    try:
        a.sync(manifest.jobs, estimates(manifest))
        a.claim(1, 5, None, "t")
        b.claim(2, 5, None, "t")
        out = io.StringIO()
        assert main(["status", str(manifest.path), "--state", pg_url, "--json"], out,
                    io.StringIO()) == 0
        doc = json.loads(out.getvalue())
        assert [(r["pid"], r["jobs"], r["alive"]) for r in doc["runners"]] == [
            (a.pid, 1, True), (b.pid, 2, True)]
        held = {j["id"]: j["holder"] for j in doc["job_list"]}
        assert held == {"job000": f"{a.host}:{a.pid}", "job001": f"{b.host}:{b.pid}",
                        "job002": f"{b.host}:{b.pid}", "job003": None}
        text = io.StringIO()
        main(["status", str(manifest.path), "--state", pg_url], text, io.StringIO())
        assert f"runner {b.host}:{b.pid} holds 2 job(s)" in text.getvalue()
        assert "4 jobs in" in text.getvalue() and "state postgresql://" in text.getvalue()
    finally:
        a.close()
        b.close()


def test_a_task_id_read_after_the_lease_ran_out_is_recorded_never_lost(pg_url):
    """The create left, the runner stalled past its lease and was reaped (the job became
    `unknown`), then the answer came: the task is paid, so its id is recorded and the
    task left to a live runner to adopt, not rolled back (which lost a paid video and
    offered --resubmit-unknown, paying again)."""
    url = parse_state_url(pg_url)
    seeded(url, 2)
    slow = SharedPgStore.join(url, "m", lease=0.3)
    got = slow.claim(1, 1, None, "t")
    slow.mark_sent("j000")
    time.sleep(0.4)  # a blocked event loop, a VM pause, a slow answer
    other = SharedPgStore.join(url, "m", lease=10)
    try:
        other.claim(1, 1, None, "t")  # reaps the slow runner: j000 -> unknown
        assert other.get("j000").state is S.UNKNOWN
        slow.apply(got.rows["j000"], Accepted("task-late", 20), durable=True)
        row = other.get("j000")
        assert (row.state, row.task_id, row.error) == (S.RUNNING, "task-late", None)
        assert [r.job_id for r in other.adopt()] == ["j000"]  # a live runner takes it over
        with pytest.raises(ClaimLost):  # the slow runner's other writes stay fenced
            slow.apply(row, TaskDone("task-late", "http://v/0.mp4"))
    finally:
        other.close()
        slow.close()


async def test_a_count_jobs_later_videos_are_never_claimed_while_its_create_is_out(
        sandbox, tmp_path, pg_url):
    """Two runners, one `count: 3` job, a slow API: the second runner must not claim the
    videos riding on the first runner's batch create (5 tasks were made, 25 credits)."""
    import asyncio

    import batchgen

    def doc(concurrency: int) -> dict:
        return {"version": 1, "name": "fam",
                "api": {"concurrency": concurrency, "poll_interval": 0.05},
                "output": {"dir": "out"},
                "defaults": {"resolution": "720p", "video_length": 5, "audio_type": 3},
                "jobs": [{"id": "fam", "image_url": "https://e.com/a.png", "prompt": "p",
                          "count": 3}]}

    sb = await sandbox(latency=(0.6, 0.6))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = asyncio.create_task(batchgen.arun(doc(1), base_dir=tmp_path / "a", api_base=sb.url,
                                              api_key="test-key", env={}, state=pg_url))
    await asyncio.sleep(0.3)  # its batch create is on the wire
    second = asyncio.create_task(batchgen.arun(doc(3), base_dir=tmp_path / "b",
                                               api_base=sb.url, api_key="test-key", env={},
                                               state=pg_url))
    await asyncio.gather(first, second)
    assert sb.stats()["tasks_created"] == 3


async def test_pre_flight_holds_under_a_shared_state_too(sandbox, tmp_path, pg_url):
    """With --state the store claims (not the admission queue, which asks pre-flight):
    a claimed job still waits for its assets' verdict, and a bad one fails unsent."""
    from asset_hosts import HTML, asset_host, png
    from test_preflight import manifest

    import batchgen

    sb = await sandbox(fetch_images=True)
    async with asset_host({"0.png": png(), "page.png": HTML}) as host:
        urls = [host.url("0.png"), host.url("page.png"), host.url("missing.png")]
        report = await batchgen.arun(manifest(urls), base_dir=tmp_path, api_base=sb.url,
                                     api_key="test-key", env={}, preflight=True,
                                     state=pg_url)
    assert sb.stats()["tasks_created"] == 1 and sb.stats()["credits_charged"] == 20
    failed = {j.id: j.error for j in report.jobs if j.status == "failed"}
    assert set(failed) == {"job01", "job02"}
    assert all("pre-flight" in e and "nothing was sent or paid" in e for e in failed.values())


def test_a_partial_batch_answer_read_after_a_reap_keeps_its_paid_task_ids(pg_url):
    """A `count: 3` create's answer lists 2 videos and reaches its runner after it was
    reaped: the third video's refusal cannot be written (the job is no longer its), but the
    two paid task ids land all the same, for a live runner to adopt. Before, the refusal
    raised inside the transaction and rolled the two ids back: paid, recorded nowhere."""
    url = parse_state_url(pg_url)
    fam = Job(id="fam", index=0, image_url="https://e.com/0.jpg", resolution="720p",
              video_length=5, audio_type=3, prompt="p", fingerprint="fp0",
              model_name="AkoolImage2VideoFastV1", count=3)
    with PgStore.open(url, "m", lock=False) as store:
        store.sync([fam], [(20, 0)])
    slow = SharedPgStore.join(url, "m", lease=0.3)
    got = slow.claim(1, 1, None, "t")
    members = sorted(got.rows)                      # fam, fam#2, fam#3
    assert [j for j, _ in got.sends] == ["fam"] and len(members) == 3
    slow.mark_sent("fam")
    time.sleep(0.4)                                 # stalled past the lease
    other = SharedPgStore.join(url, "m", lease=10)
    try:
        other.claim(1, 1, None, "t")                # reaps the slow runner: fam unknown
        steps = [(got.rows["fam"], FamilyAccepted("task-a", 20, "t")),
                 (got.rows[members[1]], FamilyAccepted("task-b", 20, "t")),
                 (got.rows[members[2]], CreateRefused("the batch create returned 2 of 3"))]
        with pytest.raises(ClaimLost, match="lease"):
            slow.apply_many(steps, durable=True)
        recorded = {r.job_id: r.task_id for r in other.rows()}
        assert (recorded["fam"], recorded[members[1]]) == ("task-a", "task-b")
        assert sorted(r.job_id for r in other.adopt()) == members[:2]
    finally:
        other.close()
        slow.close()


def test_one_answer_that_cannot_land_does_not_roll_back_the_others(pg_url):
    """A reaped runner's group commit holds two answers; one job was since reopened and
    taken by another runner. The other job's paid task id still lands (before, both rolled
    back: that job went back to pending and the next claim paid for it again), and the
    id that cannot land is named in the error."""
    url = parse_state_url(pg_url)
    seeded(url, 2)
    slow = SharedPgStore.join(url, "m", lease=0.3)
    got = slow.claim(2, 2, None, "t")
    slow.mark_sent("j000")
    slow.mark_sent("j001")
    time.sleep(0.4)
    other = SharedPgStore.join(url, "m", lease=10)
    try:
        other.claim(0, 2, None, "t")                 # reaps: both unknown
        assert other.reopen(unknown=True, failed=False) == 2   # --resubmit-unknown
        assert [j for j, _ in other.claim(1, 2, None, "t").sends] == ["j000"]
        with pytest.raises(ClaimLost, match="task task-0 of job j000 was made and charged"):
            slow.apply_many([(got.rows["j001"], Accepted("task-1", 20)),
                             (got.rows["j000"], Accepted("task-0", 20))], durable=True)
        assert other.get("j001").task_id == "task-1"
        assert other.get("j001").state is S.RUNNING
    finally:
        other.close()
        slow.close()


def test_a_runner_whose_lease_lapsed_unreaped_may_still_mark_its_creates_sent(pg_url):
    """Its heartbeat waited behind a claim held up by a frozen runner: nobody reaped it,
    nothing was taken from it, so its sent marks are still its own to write."""
    url = parse_state_url(pg_url)
    seeded(url, 1)
    late = SharedPgStore.join(url, "m", lease=0.2)
    try:
        late.claim(1, 1, None, "t")
        time.sleep(0.3)                              # lapsed; no other runner reaped it
        late.mark_sent("j000")
        assert late.get("j000").state is S.SUBMITTING
    finally:
        late.close()
