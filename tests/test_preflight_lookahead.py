"""Pre-flight in flat memory (issue 18): it reads the jobs in the order they will be sent,
a page at a time, holds at most its lookahead of them, and still checks every one.

The lookahead is made small (preflight.LOOKAHEAD) so a few hundred jobs are many
lookaheads; asset hosts are loopback aiohttp servers (tests/asset_hosts.py) and runs go
against the emulator in-process, so a test can look at both sides at one moment.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator

import pytest
import yaml
from asset_hosts import HTML, asset_host, png
from test_preflight import manifest

import batchgen
from batchgen import preflight
from batchgen.assets import IMAGE, Check, Verdict
from batchgen.cli import main
from batchgen.preflight import Asset, Cleared, Preflight

LOOKAHEAD = 10


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> list[Preflight]:
    """A lookahead of LOOKAHEAD jobs for every Preflight made; the list gets each one
    started (to sample what it holds)."""
    monkeypatch.setattr(preflight, "LOOKAHEAD", LOOKAHEAD)
    started: list[Preflight] = []
    start = Preflight.start

    def spy(self: Preflight, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        started.append(self)
        start(self, *args, **kwargs)

    monkeypatch.setattr(Preflight, "start", spy)
    return started


async def _answer(checks: Preflight, job_id: str) -> Cleared:
    """The submitter's wait: ask until the verdict is there."""
    for _ in range(5000):
        cleared = checks.verdict(job_id)
        if cleared is not None:
            return cleared
        await asyncio.sleep(0.001)
    raise AssertionError(f"no verdict for {job_id}")


def _queue(n: int, bad: int, read: list[int]) -> Iterator[tuple[str, list[Asset]]]:
    for i in range(n):
        read[0] += 1
        yield f"j{i}", [Asset("image_url", _url(i, bad), IMAGE)]


def _url(i: int, bad: int) -> str:
    return f"https://h.example/{i}.png" + ("?bad" if i == bad else "")


def _probe(probed: list[str]) -> Callable[[str, str], asyncio.Future[Check]]:
    async def probe(url: str, kind: str) -> Check:
        probed.append(url)
        await asyncio.sleep(0)
        return Check(Verdict.BAD, "not an image") if url.endswith("?bad") else \
            Check(Verdict.OK, "")
    return probe  # type: ignore[return-value]


async def test_the_queue_is_read_no_further_than_the_lookahead_ahead_of_the_answers():
    probed: list[str] = []
    read = [0]
    checks = Preflight(_probe(probed), lookahead=LOOKAHEAD, concurrency=4)
    checks.start(_queue(500, 450, read), lambda job_id: [])
    for _ in range(5000):  # the workers go as far as they may...
        if len(probed) >= LOOKAHEAD:
            break
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)  # ...and then wait
    assert read[0] == LOOKAHEAD and len(probed) == LOOKAHEAD
    assert checks.holding() == (LOOKAHEAD, LOOKAHEAD)
    for i in range(500):
        cleared = await _answer(checks, f"j{i}")
        jobs, urls = checks.holding()
        assert jobs <= LOOKAHEAD and urls <= 2 * LOOKAHEAD
        assert read[0] <= i + 1 + LOOKAHEAD  # never more than the lookahead ahead
        if i == 450:
            assert cleared == Cleared(False, "pre-flight: image_url https://h.example/450.png"
                                      "?...: not an image; nothing was sent or paid; fix the "
                                      "asset and re-run with --retry-failed (or "
                                      "--no-preflight to send it anyway)")
        else:
            assert cleared == Cleared(True)
    assert sorted(probed) == sorted(_url(i, 450) for i in range(500))  # each once
    assert checks.verdict("j499") == Cleared(True)  # asked again: still known


async def test_a_job_asked_out_of_order_is_read_alone_and_checked_first():
    """A job beyond the reader (another runner's claims went past), or asked again after
    its answer was forgotten, is looked up and checked: never cleared unchecked."""
    probed: list[str] = []
    read = [0]
    checks = Preflight(_probe(probed), lookahead=LOOKAHEAD, concurrency=2)
    looked: list[str] = []

    def lookup(job_id: str) -> list[Asset]:
        looked.append(job_id)
        i = int(job_id[1:])
        return [Asset("image_url", _url(i, 300), IMAGE)]

    checks.start(_queue(1000, 300, read), lookup)
    assert checks.verdict("j300") is None  # far beyond what is read
    cleared = await _answer(checks, "j300")
    assert not cleared.ok and "300.png" in cleared.error
    assert probed.index(_url(300, 300)) < 4 and read[0] <= LOOKAHEAD + 1
    for i in range(40):
        assert (await _answer(checks, f"j{i}")).ok
    assert checks.verdict("j0") is None and looked == ["j300", "j0"]  # answer forgotten
    assert (await _answer(checks, "j0")).ok and probed.count(_url(0, 300)) == 2
    await checks.close()


async def test_a_run_checks_every_job_staying_within_its_lookahead_of_the_creates(
        sandbox, tmp_path, small):
    """N >> lookahead jobs, each its own image on a loopback host: every image is fetched
    once, a bad one far down the list fails its job before a create for it, and no image
    is fetched more than the lookahead (plus the creates in flight) ahead of the creates.
    Before, every job's check was queued at start-up: all 120 fetched before ~10 creates."""
    n, bad, concurrency = 120, 110, 4
    sb = await sandbox(latency=(0.01, 0.01))
    ahead: list[int] = []  #: per image fetched: its job's place minus the creates made
    held: list[int] = []   #: per image fetched: the jobs pre-flight holds then

    def on_hit(path: str) -> None:
        ahead.append(int(path.split(".")[0]) - sb.stats()["tasks_created"])
        held.append(small[-1].holding()[0])

    files = {f"{i}.png": png() for i in range(n)} | {f"{bad}.png": HTML}
    async with asset_host(files, on_hit=on_hit) as host:
        doc = manifest([host.url(f"{i}.png") for i in range(n)])
        doc["api"]["concurrency"] = concurrency
        report = await batchgen.arun(doc, base_dir=tmp_path, api_base=sb.url,
                                     api_key="test-key", env={}, preflight=True)
    assert all(host.hits[f"{i}.png"] == 1 for i in range(n))
    assert len(ahead) == n and max(ahead) <= LOOKAHEAD + concurrency + 1, ahead
    assert max(held) <= LOOKAHEAD
    assert sb.stats()["tasks_created"] == n - 1
    assert not any(f"/{bad}.png" in k for k in sb.stats()["creates_by_fingerprint"])
    failed = {j.id: j.error for j in report.jobs if j.status == "failed"}
    assert list(failed) == [f"job{bad}"]
    assert failed[f"job{bad}"].startswith(f"pre-flight: image_url {host.url(f'{bad}.png')}")


async def test_validate_online_walks_every_job_in_the_lookahead_and_lists_every_bad_one(
        tmp_path, monkeypatch, small):
    monkeypatch.delenv("BATCHGEN_API_BASE", raising=False)
    held: list[int] = []
    bad = {3: "page.png", 25: "forbidden", 58: "missing.png"}
    async with asset_host({"ok.png": png(), "page.png": HTML},
                          on_hit=lambda path: held.append(small[-1].holding()[0])) as host:
        urls = [host.url(bad.get(i, f"ok.png?{i}")) for i in range(60)]
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump(manifest(urls), sort_keys=False))
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(main, ["validate", str(path), "--online", "--sandbox",
                                              "--preflight"], out, err)
    lines = [x for x in err.getvalue().splitlines() if "image_url" in x]
    assert code == 2 and len(lines) == 3, err.getvalue()
    assert all(f"(id job{i:02d})" in line for i, line in zip(sorted(bad), lines, strict=True))
    assert host.hits["ok.png"] == 57 and len(held) == 60 and max(held) <= LOOKAHEAD


async def test_checking_every_job_goes_past_a_lookahead_of_jobs_with_nothing_to_check():
    """validate --online over local files (nothing remote): no check lands to wake the
    walk, yet every job is given."""
    given: list[str] = []
    checks = Preflight(_probe([]), lookahead=LOOKAHEAD)
    jobs = [(f"j{i}", [] if i < 95 else [Asset("image_url", _url(i, 99), IMAGE)])
            for i in range(100)]
    checks.start(jobs)
    await asyncio.wait_for(checks.wait(lambda job_id, done: given.append(job_id)), 10)
    assert given == [job_id for job_id, _ in jobs]


async def test_waiting_on_a_slow_check_with_a_full_lookahead_does_not_spin():
    # validate/plan --online, 5,000 jobs of one image: the lookahead fills at once and
    # seven workers have nothing to do while the eighth checks the image. They and
    # `wait` once woke each other until it landed (40,000 wake-ups in 0.3 s, a core at
    # 100%); now a handful
    async def probe(url: str, kind: str) -> Check:
        await asyncio.sleep(0.3)
        return Check(Verdict.OK, "")

    checks = Preflight(probe)
    tells = 0

    def count() -> None:
        nonlocal tells
        tells += 1

    checks.listen(count)
    url = "https://img.example/one.png"
    seen: list[str] = []
    checks.start([(f"j{i}", [Asset("image_url", url, IMAGE)]) for i in range(5_000)])
    try:
        await asyncio.wait_for(checks.wait(lambda job_id, _: seen.append(job_id)), 10)
    finally:
        await checks.close()
    assert seen == [f"j{i}" for i in range(5_000)]
    assert tells < 50
