"""report.html from the state alone: posters made while downloading, the money audit, expiry.

The runs are real (the CLI in a subprocess against the emulator); where the emulator cannot
aim a failure at one add-audio task, the state is put where a real failure leaves it,
through the store's own API. The page itself is driven in a browser in
test_report_browser.py; here its content is read as text.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest
from cli_helpers import run_cli, write_manifest

from batchgen.posters import POSTER_DIR, extract_poster
from batchgen.store import JobState, Store

XSS = "<script>window.__xss = 1</script><img src=x onerror=alert(1)>"


def page_data(out: Path) -> list[dict]:
    """The job list embedded in report.html (what the page's script renders)."""
    text = (out / "report.html").read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="jobs-data">(.*?)</script>', text, re.S)
    assert found, "no job data in report.html"
    return json.loads(found.group(1))


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_run_writes_report_html_with_one_poster_per_downloaded_video(sandbox, tmp_path):
    sb = await sandbox(fail_prompts=["explode"])
    manifest = write_manifest(tmp_path, 4, base_url=sb.url)
    text = manifest.read_text().replace("prompt 3", "explode 3")
    manifest.write_text(text)
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 1, result.err  # one failed job
    out = tmp_path / "out"
    assert (out / "report.html").is_file() and (out / "report.csv").is_file()
    posters = sorted((out / POSTER_DIR).iterdir())
    assert len(posters) == 3  # one per completed job, none for the failed one
    for poster in posters:
        data = poster.read_bytes()
        assert data[:3] == b"\xff\xd8\xff" and len(data) < 50_000  # a small JPEG file
        with av.open(str(poster)) as container:
            frame = next(container.decode(video=0))
            assert 0 < frame.width <= 320
    jobs = {j["id"]: j for j in page_data(out)}
    assert {j["status"] for j in jobs.values()} == {"completed", "failed"}
    for job_id in ("job000", "job001", "job002"):
        assert jobs[job_id]["poster"].startswith(f"{POSTER_DIR}/")
        assert (out / jobs[job_id]["poster"]).is_file()
        assert jobs[job_id]["file"] == f"{job_id}.mp4"
    assert jobs["job003"]["poster"] is None and jobs["job003"]["file"] is None
    assert "base64" not in (out / "report.html").read_text()


@pytest.mark.slow
async def test_report_command_rewrites_the_page_without_extracting_posters(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    out = tmp_path / "out"
    for poster in (out / POSTER_DIR).iterdir():
        poster.unlink()
    (out / "report.html").unlink()
    result = await run_cli("report", str(manifest), cwd=tmp_path)
    assert result.code == 0, result.err
    assert "report.html" in result.out
    assert not list((out / POSTER_DIR).iterdir())  # posters come from downloads, not reports
    assert [j["poster"] for j in page_data(out)] == [None, None]  # a placeholder, no dead link
    # the next run makes the missing posters (as for videos fetched before posters existed)
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    assert sb.stats()["requests"]["download"] == 2  # from the files on disk, not downloads
    assert all(j["poster"] for j in page_data(out))


async def test_prompts_and_api_messages_are_escaped(sandbox, tmp_path):
    sb = await sandbox(fail_prompts=["onerror"])
    manifest = write_manifest(tmp_path, 1, base_url=sb.url, prompt=XSS)
    await run_cli("run", str(manifest), cwd=tmp_path)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>window.__xss" not in page and "<img src=x" not in page
    assert page_data(tmp_path / "out")[0]["prompt"] == f"{XSS} 0"  # kept whole, as data
    # an API's message is untrusted too: the audit renders it escaped, as text
    with Store.open(tmp_path / "out") as store:
        store.update([("job000", {"error": f"status 4: {XSS}"})])
    assert (await run_cli("report", str(manifest), cwd=tmp_path)).code == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>window.__xss" not in page and "<img src=x" not in page
    assert html.escape(f"status 4: {XSS}") in page.split('id="audit-charged_failed"')[1]


@pytest.mark.slow
async def test_money_audit_lists_failed_charges_differences_unknowns_and_repeated_steps(
        sandbox, tmp_path):
    # the API charges 25 per video where the manifest's table says 20: every job differs
    sb = await sandbox(prices={"720p": {"5": 25}}, fail_prompts=["explode"])
    manifest = write_manifest(tmp_path, 4, base_url=sb.url,
                              job_extra={"add_audio": {"audio_type": 1}})
    manifest.write_text(manifest.read_text().replace("prompt 1", "explode 1"))
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 1
    out = tmp_path / "out"
    with Store.open(out) as store:
        first = {r.job_id: r for r in store.rows()}
        # job002's add-audio task failed at the API (the emulator cannot aim at one)
        store.update([("job002", {
            "state": JobState.FAILED, "unknown_step": "add_audio", "video_url": None,
            "file": None,
            "error": "add-audio task failed at the API (status 4): audio source unreadable"})])
    result = await run_cli("run", str(manifest), "--retry-failed", cwd=tmp_path)
    assert result.code == 1, result.err  # job001 fails again: same prompt
    with Store.open(out) as store:
        # job003's create answer was lost in a later run: it may have been charged
        store.update([("job003", {"state": JobState.UNKNOWN, "unknown_step": "video",
                                  "error": "create sent, answer lost"})])
        abandoned = store.abandoned()
    assert {(a["job_id"], a["step"]) for a in abandoned} == {("job001", "video"),
                                                             ("job002", "add_audio")}
    assert (await run_cli("report", str(manifest), cwd=tmp_path)).code == 0
    page = (out / "report.html").read_text()
    audit = page.split('id="audit-text"')[1].split("</textarea>")[0]
    section = {key: page.split(f'id="audit-{key}"')[1].split("</table>")[0]
               for key in ("charged_failed", "charged_differs", "unknown", "charged_twice")}
    assert "job001" in section["charged_failed"] and "explode 1" not in section["charged_failed"]
    assert "status 4" in section["charged_failed"]
    assert "job000" in section["charged_differs"] and "+5 credits" in section["charged_differs"]
    assert "job003" in section["unknown"] and "answer lost" in section["unknown"]
    old_audio = first["job002"].audio_task_id
    assert old_audio and old_audio in section["charged_twice"]
    assert "audio source unreadable" in section["charged_twice"]
    assert first["job001"].task_id in section["charged_twice"]  # the abandoned failed video
    for needle in (old_audio, first["job001"].task_id, "job003", "job000"):
        assert needle in audit  # the copyable block holds every item


async def test_videos_finished_but_not_downloaded_expire_oldest_first(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 3, base_url=sb.url)
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 0
    out = tmp_path / "out"
    now = datetime.now(UTC)
    with Store.open(out) as store:  # as a run stopped between "done" and the download leaves
        store.update([
            ("job001", {"state": JobState.READY, "file": None,
                        "finished_at": iso(now - timedelta(days=2))}),
            ("job002", {"state": JobState.READY, "file": None,
                        "finished_at": iso(now - timedelta(days=6, hours=1))}),
        ])
    result = await run_cli("status", str(manifest), cwd=tmp_path)
    assert result.code == 0, result.err
    assert "2 video(s) finished at the API but not downloaded" in result.out
    assert "job002" in result.out and "22 h" in result.out.split("job002")[1]
    status = json.loads((await run_cli("status", str(manifest), "--json", cwd=tmp_path)).out)
    assert status["not_downloaded"] == 2
    assert (await run_cli("report", str(manifest), cwd=tmp_path)).code == 0
    expiry = (out / "report.html").read_text().split('id="h-expiry"')[1].split("</table>")[0]
    assert expiry.index("job002") < expiry.index("job001")  # oldest first
    assert "job000" not in expiry


def test_a_poster_is_never_made_from_a_file_that_is_not_a_video(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(4000))  # passes the download check
    target = tmp_path / POSTER_DIR / "x.jpg"
    assert extract_poster(fake, target) is False
    assert not target.exists() and not list(tmp_path.glob(f"{POSTER_DIR}/.*"))


def test_an_unknown_add_audio_step_is_audited_without_a_task_id_it_never_had():
    from batchgen.audit import money_audit
    from batchgen.store import JobRow

    row = JobRow(job_id="song", idx=0, fingerprint="f", request={"add_audio": {"audio_type": 1}},
                 state=JobState.UNKNOWN, credits_estimated=25, task_id="vid1",
                 credits_video=20, unknown_step="add_audio", error="answer lost",
                 submitted_at="2026-01-01T00:00:00Z")
    [item] = money_audit([row])["unknown"]
    assert item.step == "add_audio" and item.task_id is None  # not the video's task
    assert "video task vid1" in item.line() and "answer lost" in item.line()


async def test_a_decoder_that_crashes_or_hangs_costs_one_poster_never_the_run(tmp_path):
    """FFmpeg is C and the videos are untrusted: a crash (SIGABRT) or a hang in it ends the
    decoder's process, not the run; that poster is marked and never tried again (a run
    retrying it at every start-up would never finish), and the others are made."""

    from batchgen.poster_maker import PosterMaker
    from batchgen.posters import bad_marker, poster_path
    from batchgen.sandbox.video import mp4_bytes

    names = ["a.mp4", "crash.mp4", "b.mp4", "hang.mp4", "c.mp4"]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(mp4_bytes(f"video {i}", 0.5))
    shas = [f"{i:x}" * 64 for i in range(len(names))]
    maker = PosterMaker(tmp_path, work="poster_faults:crash_or_hang", seconds=2)
    assert maker.backfill(zip(names, shas, strict=True)) == 5
    await maker.finish()
    made = {n: poster_path(tmp_path, s).exists() for n, s in zip(names, shas, strict=True)}
    assert made == {"a.mp4": True, "crash.mp4": False, "b.mp4": True, "hang.mp4": False,
                    "c.mp4": True}
    assert maker.given_up == 2
    for name, sha in zip(names, shas, strict=True):
        assert bad_marker(poster_path(tmp_path, sha)).exists() is (name in ("crash.mp4",
                                                                            "hang.mp4"))
    again = PosterMaker(tmp_path, work="poster_faults:crash_or_hang", seconds=2)
    assert again.backfill(zip(names, shas, strict=True)) == 0  # nothing retried


async def test_the_reports_are_warmed_once_nothing_is_left_to_send_not_at_the_start(
        sandbox, tmp_path, monkeypatch):
    """The warm-up of the reports' modules and template (session._warm_reports) holds the
    interpreter for tens of ms: it must wait until the last creates are on their way. It
    used to begin before the runner had read the store, when its empty window looked like
    nothing left to send, so it ran under the first creates."""
    from cli_helpers import write_manifest

    import batchgen.report_html as report_html
    from batchgen import arun

    sb = await sandbox(processing_time=0.3)
    created_at_warm: list[int] = []
    real = report_html.warm

    def spy() -> None:
        created_at_warm.append(sb.state.ledger.tasks_created)
        real()

    monkeypatch.setattr(report_html, "warm", spy)
    manifest = write_manifest(tmp_path, 12, base_url=sb.url, concurrency=2)
    report = await arun(str(manifest), api_key="test-key-1234")
    assert report.counts["completed"] == 12
    # nothing was left to send: every create but the last wave (of 2) was made
    assert created_at_warm and created_at_warm[0] >= 10, created_at_warm
