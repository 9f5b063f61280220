"""The runner's window (issue 18): a run holds only the jobs in play, reads its admission
queue from the store a page at a time, and starts its budget from the store's sum.

Each guarantee is checked against the rule it must equal: the store's SQL sums against
`budget.held`/`budget.learned_prices` row by row, the paged queue against `budget.queue`,
and whole runs with a page far smaller than the manifest against the emulator's ledger
(every job made once, the budget's prefix exactly, resume after a kill).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from batchgen import budget
from batchgen.client import AkoolClient, Credentials
from batchgen.jobs import Job, JobState
from batchgen.runner import EventKind, Runner, RunSettings
from batchgen.sandbox import Sandbox, SandboxConfig
from batchgen.scheduler import window as window_module
from batchgen.scheduler.window import Window
from batchgen.store import Store

S = JobState
_AUDIO_VALUES = [None, {"audio_type": 1}, {}, 0, 1, "", "x", [], [1], True, False]
_ESTIMATES = [None, 5, 0, -3, True, "7", 2.5]


def _random_row(rng: random.Random, i: int, parents: list[str]) -> dict:
    req = {"image_url": f"https://e.com/{i}.jpg", "prompt": f"p{i}",
           "resolution": rng.choice(["720p", "1080p", "4k"]),
           "video_length": rng.choice([5, 10, 5.0]), "_source": f"m.yaml:{i}"}
    if rng.random() < 0.3:
        req["model_name"] = rng.choice(["m1", "m2"])
    add_audio = rng.choice(_AUDIO_VALUES)
    if add_audio is not None:
        req["add_audio"] = add_audio
        estimate = rng.choice(_ESTIMATES)
        if estimate is not None:
            req["_audio_estimate"] = estimate
    state = rng.choice(list(S))
    parent = rng.choice(parents) if parents and rng.random() < 0.3 else None
    maybe = lambda v: v if rng.random() < 0.5 else None  # noqa: E731
    return {"job_id": f"{parent}#{i}" if parent else f"j{i:03d}",
            "idx": rng.randrange(0, 40), "fingerprint": "fp", "request": json.dumps(req),
            "state": state.value, "credits_estimated": rng.choice([20, 25, 40]),
            "task_id": maybe(f"t{i}"), "audio_task_id": maybe(f"a{i}"),
            "credits_video": maybe(rng.choice([0, 18, 20, 33])),
            "credits_audio": maybe(rng.choice([0, 5])), "parent": parent,
            "credits_prior": rng.choice([0, 0, 7]), "credits_lost": rng.choice([0, 0, 20]),
            "audio_held": rng.choice([0, 1]), "active": int(rng.random() < 0.85)}


def random_state(tmp_path: Path, seed: int, n: int = 120) -> Store:
    rng = random.Random(seed)
    store = Store.open(tmp_path)
    parents: list[str] = []
    rows = []
    for i in range(n):
        row = _random_row(rng, i, parents)
        if row["parent"] is None and rng.random() < 0.3:
            parents.append(row["job_id"])
        rows.append(row)
    names = list(rows[0])
    store._conn.executemany(
        f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [tuple(r[k] for k in names) for r in rows])
    return store


@pytest.mark.parametrize("seed", range(6))
def test_the_stores_sums_are_the_budget_rule_row_by_row(tmp_path, seed):
    with random_state(tmp_path, seed) as store:
        every = store.rows(active_only=False)
        assert store.committed_total() == budget.committed(every)
        assert store.learned() == budget.learned_prices(every)
        assert store.learned(active_only=True) == budget.learned_prices(store.rows())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("page", [1, 3, 50])
def test_the_paged_queue_is_budget_queue(tmp_path, seed, page):
    # the admissions a run reads a page at a time are budget.queue's, in its order, with
    # the same families (a count job's later videos still to make ride on its create)
    with random_state(tmp_path, seed) as store:
        active = store.rows()
        learned = budget.learned_prices(active)
        want = [(s.job_id, s.need) for s in budget.queue(active) if s.admission]
        paged = Window(store, page)
        got = []
        while batch := paged.read():
            got += [(row.job_id, budget.need(row, learned, 1 + len(family)))
                    for row, family in batch]
        assert got == want
        assert [(r.job_id) for r, _ in Window(store, page).rest()] == [j for j, _ in want]


def jobs(n: int) -> list[Job]:
    return [Job(id=f"j{i:03d}", index=i, image_url=f"https://e.com/{i}.jpg",
                resolution="720p", video_length=5, audio_type=3, prompt=f"p{i}",
                negative_prompt="blurry", fingerprint=f"fp{i}") for i in range(n)]


async def run_window(tmp_path: Path, sandbox: Sandbox, n: int, *, max_credits: int | None
                     = None, stop_after: int | None = None) -> tuple[object, int, int]:
    """A run of `n` jobs at concurrency 4; returns its outcome, the most rows its view
    held at once, and the committed credits the store sums."""
    with Store.open(tmp_path) as store:
        store.recover()
        store.sync(jobs(n), [(20, 0)] * n)
        settings = RunSettings(output_dir=tmp_path, name="t", concurrency=4,
                               poll_interval=0.01, max_credits=max_credits,
                               download_workers=2, outage_timeout=None)
        async with AkoolClient.open(sandbox.url, Credentials(api_key="test-key-123")) as c:
            most = 0
            submitted = 0

            def on_event(event) -> None:
                nonlocal most, submitted
                most = max(most, len(runner.state.rows))
                if event.kind is EventKind.SUBMITTED:
                    submitted += 1
                    if stop_after is not None and submitted >= stop_after:
                        task.cancel()  # a crash mid-run: no grace, creates on the wire cut

            runner = Runner(store, c, settings, on_event)
            task = asyncio.create_task(runner.run())
            try:
                outcome = await asyncio.wait_for(task, 60)
            except asyncio.CancelledError:
                outcome = None
        return outcome, most, store.committed_total()


def _config() -> SandboxConfig:
    return SandboxConfig(queue_time=(0.0, 0.0), processing_time=(0.0, 0.0))


def test_a_run_much_larger_than_its_window_makes_every_job_once(tmp_path, monkeypatch):
    monkeypatch.setattr(window_module, "PAGE", 5)

    async def scenario():
        async with Sandbox(_config()) as sandbox:
            outcome, most, committed = await run_window(tmp_path, sandbox, 60)
            return outcome, most, committed, sandbox.stats()

    outcome, most, committed, stats = asyncio.run(scenario())
    assert stats["tasks_created"] == 60 and stats["duplicate_fingerprints"] == 0
    with Store.open(tmp_path) as store:
        assert {r.state for r in store.rows()} == {S.COMPLETED}
    assert committed == 60 * 20 and not outcome.interrupted
    # the view held a page of admissions plus what was in play, never the manifest
    assert most <= 5 + 4 + 4


def test_the_budget_holds_across_window_refills(tmp_path, monkeypatch):
    # 37 jobs fit; the queue is read 5 at a time, so the head that does not fit is on a
    # later page than the first: still exactly the first 37 are made, none after them
    monkeypatch.setattr(window_module, "PAGE", 5)

    async def scenario():
        async with Sandbox(_config()) as sandbox:
            outcome, _, committed = await run_window(tmp_path, sandbox, 60, max_credits=745)
            return outcome, committed, sandbox.stats()

    outcome, committed, stats = asyncio.run(scenario())
    assert stats["tasks_created"] == 37 and stats["credits_charged"] == 740 <= 745
    assert committed == 740
    # every job the budget held back is counted, also those never read into the window
    assert (outcome.budget_blocked, outcome.budget_needed) == (23, 23 * 20)
    with Store.open(tmp_path) as store:
        states = [r.state for r in store.rows()]
    assert states == [S.COMPLETED] * 37 + [S.PENDING] * 23


def test_a_windowed_run_resumes_after_a_crash_and_pays_once(tmp_path, monkeypatch):
    monkeypatch.setattr(window_module, "PAGE", 4)

    async def scenario():
        async with Sandbox(_config()) as sandbox:
            first, _, _ = await run_window(tmp_path, sandbox, 40, max_credits=700,
                                           stop_after=9)
            second, _, committed = await run_window(tmp_path, sandbox, 40, max_credits=700)
            return first, second, committed, sandbox.stats()

    first, second, committed, stats = asyncio.run(scenario())
    assert first is None and not second.interrupted
    # 35 fit the budget in all (a create cut off by the crash is unknown and held): each
    # made at most once across both runs, never past the budget, the rest held back
    assert stats["duplicate_fingerprints"] == 0 and stats["credits_charged"] <= 700
    assert committed == 700
    with Store.open(tmp_path) as store:
        states = [r.state for r in store.rows()]
    assert set(states[:35]) <= {S.COMPLETED, S.UNKNOWN} and states[35:] == [S.PENDING] * 5
    assert (second.budget_blocked, second.budget_needed) == (5, 100)


def _finished_state(out: Path, n: int) -> None:
    """A state as a run leaves it: most jobs downloaded, some failed, lost, waiting for
    download or charged differently, a few never sent; times a second apart."""
    from datetime import UTC, datetime, timedelta
    iso = lambda at: at.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    t0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    with Store.open(out) as store:
        store.sync(jobs(n), [(20, 0)] * n)
        sent = [j.id for j in jobs(n) if j.index % 50 != 49]
        for start in range(0, len(sent), 25):
            store.begin_submit(sent[start:start + 25], iso(t0 + timedelta(seconds=start)))
        changes = []
        for i, job_id in enumerate(sent):
            kind, fin = i % 20, iso(t0 + timedelta(seconds=i + 40 + i % 7))
            if kind == 3:
                changes.append((job_id, {"state": S.UNKNOWN, "unknown_step": "video",
                                         "error": "answer lost <b>"}))
                continue
            store.mark_accepted(job_id, f"t{i}", 25 if kind == 5 else 20)
            if kind == 7:
                changes.append((job_id, {"state": S.FAILED, "finished_at": fin,
                                         "error": "status 4: policy"}))
            elif kind == 9:
                changes.append((job_id, {"state": S.READY, "video_url": "https://c/v.mp4",
                                         "finished_at": fin}))
            elif kind != 11:  # 11: still running
                changes.append((job_id, {"state": S.COMPLETED, "file": f"{job_id}.mp4",
                                         "bytes": 9, "sha256": f"{i:064x}", "finished_at": fin,
                                         "completed_at": iso(t0 + timedelta(seconds=i + 60))}))
        store.update(changes)


@pytest.mark.parametrize("n", [30, 2_100])
def test_report_html_streamed_is_the_page_rendered_from_every_row(tmp_path, n):
    # the same text byte for byte, with per-job tooltips (few jobs) and without (many)
    from datetime import UTC, datetime

    from batchgen.report_html import render_html
    from batchgen.report_stream import write_html_stream
    _finished_state(tmp_path, n)
    now = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    abandoned = [{"job_id": "j001", "step": "video", "task_id": "t-old", "credits": 20,
                  "error": "failed", "submitted_at": None, "finished_at": None}]
    with Store.open(tmp_path) as store:
        rows = store.rows()
        want = render_html(rows, name="t", output_dir=tmp_path, summary={"wall_seconds": 3},
                           abandoned=abandoned, budget=9_999, committed=None, now=now)
        path = write_html_stream(tmp_path, store.iter_rows(), name="t",
                                 summary={"wall_seconds": 3}, abandoned=abandoned,
                                 budget=9_999, now=now)
    assert path.read_text(encoding="utf-8") == want


def test_report_html_streamed_merges_sorted_runs_and_finds_posters(tmp_path, monkeypatch):
    # the timeline's order built from runs of 7 jobs merged (ties in start: 25 jobs are
    # sent together) is the page's order over every row; the compact poster index links
    # exactly the posters on disk (and not a bad marker's video)
    from datetime import UTC, datetime

    from batchgen import report_timeline
    from batchgen.posters import POSTER_DIR, bad_marker, poster_path
    from batchgen.report_html import render_html
    from batchgen.report_stream import write_html_stream
    monkeypatch.setattr(report_timeline, "_RUN", 7)
    _finished_state(tmp_path, 300)
    (tmp_path / POSTER_DIR).mkdir()
    with Store.open(tmp_path) as store:  # names apart (the fixture's share 32 zeros)
        store.update([(r.job_id, {"sha256": hashlib.sha256(r.job_id.encode()).hexdigest()})
                      for r in store.rows() if r.sha256])
        done = [r for r in store.rows() if r.sha256]
    made = {r.job_id for r in done[::3]}
    for r in done:
        if r.job_id in made:
            poster_path(tmp_path, r.sha256).write_bytes(b"jpg")
        elif r.idx % 2:
            bad_marker(poster_path(tmp_path, r.sha256)).write_bytes(b"")
    now = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    with Store.open(tmp_path) as store:
        want = render_html(store.rows(), name="t", output_dir=tmp_path, now=now)
        path = write_html_stream(tmp_path, store.iter_rows(), name="t", now=now)
    page = path.read_text(encoding="utf-8")
    assert page == want
    data = json.loads(re.search(r'id="jobs-data">(.*?)</script>', page, re.S).group(1))
    linked = {j["id"] for j in data if j["poster"]}
    assert linked == made and len(made) > 20


def test_report_html_streamed_spools_the_audit_and_keeps_the_oldest_waiting(
        tmp_path, monkeypatch):
    # past the tables' limits the page is still the one rendered from every row: the
    # first items of each audit section, the most urgent waiting videos, and every audit
    # item in the support text (spooled to a file as the rows go, not held)
    import html
    from datetime import UTC, datetime

    from batchgen import report_html, report_stream
    from batchgen.report_html import render_html
    from batchgen.report_stream import write_html_stream
    for module in (report_html, report_stream):
        monkeypatch.setattr(module, "AUDIT_SHOWN", 3)
        monkeypatch.setattr(module, "EXPIRING_SHOWN", 4)
    _finished_state(tmp_path, 300)
    now = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    abandoned = [{"job_id": "j001", "step": "video", "task_id": "t-old", "credits": 20,
                  "error": "failed <i>", "submitted_at": None, "finished_at": None}]
    with Store.open(tmp_path) as store:
        want = render_html(store.rows(), name="t&", output_dir=tmp_path, now=now,
                           abandoned=abandoned)
        path = write_html_stream(tmp_path, store.iter_rows(), name="t&", now=now,
                                 abandoned=abandoned)
    page = path.read_text(encoding="utf-8")
    assert page == want
    text = html.unescape(re.search(r'<textarea id="audit-text"[^>]*>(.*?)</textarea>', page,
                                   re.S).group(1))
    items = [line for line in text.splitlines() if line.startswith("  job ")]
    assert len(items) == 15 * 3 + 1 and "failed <i>" in text  # failed, differs, unknown, twice
    assert "… and 12 more, all in the text below." in page
    assert "These 15 video(s)" in page and "… and 11 more;" in page
    assert not list(tmp_path.glob(".report-*"))  # the spools are gone


def test_report_html_streamed_keeps_a_carriage_return_in_the_audit_text(tmp_path):
    # an API's error with CR or CRLF in it: the spool gives it back as written (found in
    # review: a text file's universal newlines made it LF)
    from datetime import UTC, datetime

    from batchgen.jobs import JobRow
    from batchgen.report_html import render_html
    from batchgen.report_stream import write_html_stream
    rows = [JobRow(job_id=job_id, idx=i, fingerprint="f",
                   request={"resolution": "720p", "video_length": 5}, state=S.FAILED,
                   credits_estimated=20, credits_video=20, task_id=f"t{i}",
                   submitted_at="2026-11-20T09:00:00Z", finished_at="2026-11-20T09:05:00Z",
                   error=error)
            for i, (job_id, error) in enumerate([("j1", "bad\rline"), ("j2", "crlf\r\nend")])]
    now = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    want = render_html(rows, name="t", output_dir=tmp_path, now=now)
    got = write_html_stream(tmp_path, iter(rows), name="t", now=now).read_bytes().decode()
    assert got == want and "bad\rline" in got


def test_poster_index_holds_a_folders_names(tmp_path):
    from batchgen.posters import PosterIndex
    names = [f"{i:032x}.jpg" for i in range(2_000)] + [".x.jpg.bad", "caf\udce9.jpg"]
    for name in names[::2] + names[-2:]:
        (tmp_path / name).write_bytes(b"")
    index = PosterIndex(tmp_path)
    assert len(index) == 1_002
    assert all(name in index for name in names[::2] + names[-2:])
    assert not any(name in index for name in names[1:-2:2])
    assert 5 not in index and "" not in index
    assert len(PosterIndex(tmp_path / "absent")) == 0


@pytest.mark.parametrize(("n", "shared"), [(0, False), (40, False), (40, True)])
def test_status_json_streamed_is_the_document_dumped_whole(tmp_path, n, shared):
    import io

    from batchgen.cli.local import _job_dict, _stream_totals, _write_status_json
    _finished_state(tmp_path, max(n, 1))
    with Store.open(tmp_path) as store:
        rows = store.rows()[:n]
        summary, spent, waiting = _stream_totals(rows)
        holders = {r.job_id: "h:1" for r in rows[::3]}
        out = io.StringIO()
        _write_status_json(out, summary, spent, True, waiting,
                           ([{"host": "h"}], holders) if shared else None, iter(rows))
    doc = json.loads(out.getvalue())
    jobs = [{**_job_dict(r), **({"holder": holders.get(r.job_id)} if shared else {})}
            for r in rows]
    assert doc["job_list"] == jobs and len(jobs) == n
    assert out.getvalue() == json.dumps(doc, indent=2) + "\n"


def _state_for(store: Store, template: str):
    import time as _time

    from batchgen.scheduler.state import Ports, RunState
    settings = RunSettings(output_dir=store.path.parent.parent, name="t", filename=template)
    return RunState(store, settings, Ports(emit=lambda e: None, clock=_time.monotonic,
                                           now_iso=lambda: "", sleep=asyncio.sleep,
                                           rng=random.Random()))


def test_two_jobs_named_alike_are_refused_by_the_digest_check(tmp_path):
    from batchgen.errors import UsageError
    from batchgen.scheduler.startup import NAMES_KEY, check_filenames
    with Store.open(tmp_path) as store:
        store.sync(jobs(3), [(20, 0)] * 3, key="k1")
        check_filenames(_state_for(store, "{id}.mp4"))  # distinct: passes, remembered
        assert store.meta_value(NAMES_KEY) is not None
        with pytest.raises(UsageError, match=re.escape(
                "would write job j001 to '720p.mp4', which belongs to job j000")):
            check_filenames(_state_for(store, "{resolution}.mp4"))
        # a recorded file of an earlier run counts too (the check is not skipped: the
        # template differs from the one that passed)
        store.update([("j000", {"file": "j001.5.mp4"})])
        with pytest.raises(UsageError,
                           match=re.escape("j001 to 'j001.5.mp4', which belongs to job j000")):
            check_filenames(_state_for(store, "{id}.{video_length}.mp4"))
