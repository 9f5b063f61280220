"""Pre-flight: a job whose image or audio is definitively bad is failed before it is paid.

Asset hosts are small aiohttp servers on 127.0.0.1 (tests/asset_hosts.py), some hostile;
runs go against the emulator in-process, and its ledger says what was really created.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
import yaml
from asset_hosts import HTML, MP3, asset_host, free_port, jpeg_header, png

import batchgen
from batchgen.asset_probe import AssetProber
from batchgen.assets import AUDIO, IMAGE, Sniffed, Verdict, judge, shown, sniff
from batchgen.cli import main
from batchgen.preflight import Asset, Cleared, Preflight, PreflightSettings, assets_of
from batchgen.runner import EventKind, JobEvent

# -- what a file is (pure) ---------------------------------------------------------------


def test_formats_and_dimensions_come_from_the_first_bytes():
    assert sniff(png(800, 600)) == Sniffed("image", "png", 800, 600)
    assert sniff(jpeg_header(1920, 1080, exif=65000)) == Sniffed("image", "jpeg", 1920, 1080)
    assert sniff(b"GIF89a" + bytes([0x40, 1, 0xF0, 0])) == Sniffed("image", "gif", 320, 240)
    assert sniff(MP3).format == "mp3" and sniff(b"RIFF\0\0\0\0WAVEfmt ").format == "wav"
    assert sniff(HTML).format == "html" and sniff(b"\0\1\2\3") is None


@pytest.mark.parametrize(("head", "total", "reason"), [
    (HTML, None, "not an image: its first bytes are an HTML page"),
    (png(20, 20), None, "smaller than 64 px"),
    (png(3000, 200), None, "longer than 5:1"),
    (png(), 10 * 1024 ** 3, "over the 50.0 MB"),
    (MP3, None, "not an image: its first bytes are an MP3 audio"),
    (b"II*\x00" + b"\0" * 16, None, "a TIFF image; the API takes GIF, JPEG, PNG, WEBP"),
    (b"", None, "empty file"),
])
def test_what_the_api_cannot_take_is_bad(head, total, reason):
    check = judge(IMAGE, head, total)
    assert check.verdict is Verdict.BAD and reason in check.reason


def test_a_good_image_and_audio_pass():
    assert judge(IMAGE, png(1024, 768), 5000).verdict is Verdict.OK
    assert judge(AUDIO, MP3, len(MP3)).verdict is Verdict.OK
    assert judge(AUDIO, png(), None).verdict is Verdict.BAD


def test_messages_never_show_a_query_or_password():
    assert shown("https://u:secret@h.example/a.png?X-Amz-Signature=abc") == \
        "https://h.example/a.png?..."


def test_the_assets_of_a_request():
    req = {"image_url": "https://h/a.png", "audio_type": 2, "audio_url": "https://h/a.mp3",
           "add_audio": {"audio_type": 2, "audio_url": "https://h/b.mp3"}}
    assert [a.field for a in assets_of(req)] == ["image_url", "audio_url",
                                                 "add_audio.audio_url"]
    assert [a.field for a in assets_of({**req, "audio_type": 3, "add_audio": None})] == \
        ["image_url"]


# -- the network half against hostile hosts ---------------------------------------------


async def test_hostile_hosts_get_the_right_verdicts():
    files = {"ok.png": png(), "page.png": HTML, "song.mp3": MP3}
    async with asset_host(files, slow=0.6) as host, \
            AssetProber.open(timeout=0.3, retries=1) as prober:
        async def verdict(path: str, kind: str = IMAGE) -> tuple[Verdict, str]:
            check = await prober.check(host.url(path), kind)
            return check.verdict, check.reason
        assert (await verdict("ok.png"))[0] is Verdict.OK
        assert (await verdict("moved/ok.png"))[0] is Verdict.OK
        assert (await verdict("song.mp3", AUDIO))[0] is Verdict.OK
        v, why = await verdict("page.png")
        assert v is Verdict.BAD and "HTML" in why and "served as image/png" in why
        v, why = await verdict("huge")
        assert v is Verdict.BAD and "10240.0 MB" in why
        v, why = await verdict("forbidden")
        assert v is Verdict.BAD and "HTTP 403" in why and "public" in why
        v, why = await verdict("missing.png")
        assert v is Verdict.BAD and "HTTP 404" in why
        v, why = await verdict("busy")
        assert v is Verdict.BAD and "kept answering HTTP 503" in why and host.hits["busy"] == 2
        assert (await verdict("loop"))[0] is Verdict.BAD
        assert (await verdict("empty"))[0] is Verdict.BAD
        started = time.monotonic()
        v, why = await verdict("slow")
        assert v is Verdict.INCONCLUSIVE and time.monotonic() - started < 0.55
        v, why = await prober.check(f"http://127.0.0.1:{free_port()}/a.png", IMAGE), ""
        assert v.verdict is Verdict.INCONCLUSIVE


async def test_each_url_is_checked_once_and_a_dead_host_once_and_verdicts_are_kept():
    kept: dict[str, str] = {}

    class Memory:
        def asset_check(self, key: str) -> str | None:
            return kept.get(key)

        def record_asset_check(self, key: str, value: str) -> None:
            kept[key] = value

    dead = f"http://127.0.0.1:{free_port()}"
    warnings: list[str] = []
    async with asset_host({"a.png": png()}) as host, AssetProber.open(timeout=1) as prober:
        jobs = [(f"j{i}", [Asset("image_url", host.url("a.png"), IMAGE)]) for i in range(5)]
        jobs += [(f"d{i}", [Asset("image_url", f"{dead}/{i}.png", IMAGE)]) for i in range(5)]
        checks = Preflight(prober.check, store=Memory(), warn=warnings.append)
        checks.start(jobs)
        await checks.wait()
        assert host.hits["a.png"] == 1 and checks.probes == 2
        assert len(warnings) == 1 and dead in warnings[0]
        assert all(checks.verdict(j) == Cleared(True) for j, _ in jobs)
        # a later run trusts the kept verdicts: nothing is fetched again
        again = Preflight(prober.check, store=Memory(), warn=warnings.append)
        again.start(jobs)
        await again.wait()
        assert again.probes == 0 and host.hits["a.png"] == 1 and len(warnings) == 2


# -- a run: bad assets cost nothing ----------------------------------------------------


def manifest(urls: list[str], **job: Any) -> dict[str, Any]:
    return {"version": 1, "name": "pre", "api": {"concurrency": 8, "poll_interval": 0.05},
            "output": {"dir": "out"},
            "defaults": {"resolution": "720p", "video_length": 5, "audio_type": 3},
            "jobs": [{"id": f"job{i:02d}", "image_url": u, "prompt": f"p {i}", **job}
                     for i, u in enumerate(urls)]}


async def test_a_bad_asset_is_failed_before_any_create_and_costs_nothing(sandbox, tmp_path):
    sb = await sandbox(fetch_images=True)  # the emulator fetches images as the API does
    bad_paths = ["page.png", "forbidden", "huge", "missing.png", "loop"]
    async with asset_host({f"{i}.png": png() for i in range(45)} | {"page.png": HTML}) as host:
        urls = [host.url(f"{i}.png") for i in range(45)] + [host.url(p) for p in bad_paths]
        events: list[JobEvent] = []
        report = await batchgen.arun(manifest(urls), base_dir=tmp_path, api_base=sb.url,
                                     api_key="test-key", env={}, preflight=True,
                                     on_event=events.append)
        stats = sb.stats()
        # the same manifest without pre-flight, in another output dir: the 5 are paid for
        # and their tasks fail at the API (what the check saves); the emulator reads only
        # the first bytes, so it takes the one that claims 10 GB: 4 fail there
        doc = manifest(urls) | {"output": {"dir": "unchecked"}}
        unchecked = await batchgen.arun(doc, base_dir=tmp_path, api_base=sb.url,
                                        api_key="test-key", env={}, preflight=False)
    assert sb.stats()["credits_charged"] - stats["credits_charged"] == 50 * 20
    assert unchecked.counts["failed"] == 4 and unchecked.credits_deducted == 50 * 20
    assert stats["tasks_created"] == 45 and stats["credits_charged"] == 45 * 20
    sent = {json.loads(k)["image_url"] if k.startswith("{") else k
            for k in stats["creates_by_fingerprint"]}
    assert not any(p in s for s in sent for p in bad_paths)
    failed = {j.id: j.error for j in report.jobs if j.status == "failed"}
    assert set(failed) == {f"job{i}" for i in range(45, 50)}
    assert all(e and e.startswith("pre-flight: image_url http://127.0.0.1:")
               and "nothing was sent or paid" in e for e in failed.values())
    assert all(j.credits_deducted is None for j in report.jobs if j.status == "failed")
    assert sum(1 for e in events if e.kind is EventKind.FAILED) == 5


async def test_an_unreachable_host_warns_once_and_the_jobs_go_on(sandbox, tmp_path):
    sb = await sandbox()
    dead = f"http://127.0.0.1:{free_port()}"
    events: list[JobEvent] = []
    report = await batchgen.arun(manifest([f"{dead}/{i}.png" for i in range(4)]),
                                 base_dir=tmp_path, api_base=sb.url, api_key="test-key",
                                 env={}, preflight=True, on_event=events.append)
    assert report.ok and sb.stats()["tasks_created"] == 4
    notices = [e.message for e in events if e.kind is EventKind.NOTICE and dead in e.message]
    assert len(notices) == 1 and "sent unchecked" in notices[0]


async def test_preflight_is_off_against_an_emulator_unless_asked(sandbox, tmp_path):
    assert PreflightSettings().on(False, "https://openapi.akool.com")
    assert not PreflightSettings().on(True, "https://openapi.akool.com")
    assert not PreflightSettings().on(False, "http://127.0.0.1:8080")
    assert PreflightSettings(enabled=True).on(True, "http://127.0.0.1:8080")
    assert not PreflightSettings(enabled=False).on(False, "https://openapi.akool.com")
    sb = await sandbox()
    async with asset_host() as host:
        report = await batchgen.arun(manifest([host.url("missing.png")]), base_dir=tmp_path,
                                     api_base=sb.url, api_key="test-key", env={})
        assert report.ok and host.hits["missing.png"] == 0


# -- validate --online lists every bad asset, located ---------------------------------


async def test_validate_online_lists_every_bad_asset_with_its_line(tmp_path, monkeypatch):
    monkeypatch.delenv("BATCHGEN_API_BASE", raising=False)
    async with asset_host({"ok.png": png(), "page.png": HTML}) as host:
        doc = manifest([host.url("ok.png"), host.url("page.png"), host.url("forbidden")])
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out, err = io.StringIO(), io.StringIO()
        import asyncio
        code = await asyncio.to_thread(main, ["validate", str(path), "--online", "--sandbox",
                                              "--preflight"], out, err)
    lines = [x for x in err.getvalue().splitlines() if "image_url" in x]
    assert code == 2 and len(lines) == 2, err.getvalue()
    assert lines[0].startswith(f"{path}:") and "(id job01)" in lines[0] and "HTML" in lines[0]
    assert "(id job02)" in lines[1] and "HTTP 403" in lines[1]


async def test_a_check_that_raises_never_holds_the_submitter():
    async def broken(url: str, kind: str):
        raise RuntimeError("a bug in a probe")

    checks = Preflight(broken)
    checks.start([("j", [Asset("image_url", "https://h.example/a.png", IMAGE)])])
    await checks.wait()
    assert checks.verdict("j") == Cleared(True)


def test_the_emulator_fetches_images_when_told_on_the_command_line():
    from batchgen.cli import build_parser
    from batchgen.sandbox.flags import config_from_args, knobs_given
    args = build_parser().parse_args(["run", "m.yaml", "--sandbox", "--fetch-images"])
    assert config_from_args(args).fetch_images and "--fetch-images" in knobs_given(args)
    assert not config_from_args(build_parser().parse_args(["run", "m.yaml"])).fetch_images


async def test_a_host_that_compresses_images_is_never_judged_by_compressed_bytes():
    """The API's fetcher decompresses; our first bytes must be the file's own, so the
    check asks for no encoding, and bytes sent encoded anyway are inconclusive."""
    async with asset_host({"a.png": png()}) as host, \
            AssetProber.open(timeout=1, retries=0) as prober:
        offered = await prober.check(host.url("gzip/a.png"), IMAGE)
        forced = await prober.check(host.url("always-gzip"), IMAGE)
    assert offered.verdict is Verdict.OK, offered
    assert forced.verdict is Verdict.INCONCLUSIVE and "encoded (gzip)" in forced.reason
