"""Local images: a folder in a manifest becomes jobs named by content, uploaded once, sent
as presigned URLs. The bucket is moto's S3 server on 127.0.0.1; the emulator fetches each
image_url at create (fetch_images), so a URL that does not work fails its task."""

from __future__ import annotations

import io
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from asset_hosts import HTML, png
from s3_helpers import BUCKET, bucket_objects, make_bucket

import batchgen
from batchgen.api import load
from batchgen.cli import main
from batchgen.errors import ManifestError
from batchgen.runner import EventKind, JobEvent

pytest.importorskip("obstore")
pytest.importorskip("moto.server")

def folder(root: Path, n: int) -> Path:
    """n distinct PNGs in root/images."""
    images = root / "images"
    images.mkdir(parents=True)
    for i in range(n):
        (images / f"img{i:03d}.png").write_bytes(png(96 + i, 96))
    return images


def manifest(**extra: Any) -> dict[str, Any]:
    return {"version": 1, "name": "local", "api": {"concurrency": 10, "poll_interval": 0.05},
            "output": {"dir": "out"},
            "storage": {"upload": f"s3://{BUCKET}/inputs", "url_lifetime": 3600},
            "defaults": {"resolution": "720p", "video_length": 5, "audio_type": 3},
            **extra}


def test_a_glob_makes_one_job_per_file_with_ids_from_the_content(tmp_path):
    folder(tmp_path / "a", 3)
    doc = manifest(matrix={"image_url": ["images/*.png"], "prompt": ["zoom", "pan"]})
    first = load(doc, tmp_path / "a")
    jobs = list(first.jobs)  # jobs are expanded again on each iteration: keep these
    assert len(jobs) == 6
    assert all(j.image_url.startswith(f"s3://{BUCKET}/inputs/") and
               j.image_url.endswith(".png") for j in jobs)
    assert len(first.uploads) == 3
    # moving and renaming the folder makes no new jobs
    shutil.move(tmp_path / "a" / "images", tmp_path / "a" / "renamed")
    doc["matrix"]["image_url"] = ["renamed/*.png"]
    moved = load(doc, tmp_path / "a")
    assert [j.id for j in moved.jobs] == [j.id for j in jobs]


def test_validate_refuses_missing_unreadable_and_non_images_located(tmp_path):
    images = folder(tmp_path, 1)
    (images / "page.png").write_bytes(HTML)
    (images / "secret.png").write_bytes(png())
    (images / "secret.png").chmod(0)
    doc = manifest(jobs=[{"image_url": "images/img000.png", "prompt": "ok"},
                         {"image_url": "images/missing.png", "prompt": "a"},
                         {"image_url": "images/page.png", "prompt": "b"},
                         {"image_url": "images/secret.png", "prompt": "c"}])
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    err = io.StringIO()
    assert main(["validate", str(path)], io.StringIO(), err) == 2
    lines = err.getvalue().splitlines()
    assert any("jobs[1]" in x and "images/missing.png" in x and "no such file" in x
               for x in lines), lines
    assert any("jobs[2]" in x and "HTML" in x for x in lines), lines
    import os
    if os.geteuid() != 0:  # root reads anything
        assert any("jobs[3]" in x and "cannot be read" in x for x in lines), lines
    assert all(x.startswith(f"{path}:") for x in lines[:-1])


def test_a_local_file_without_storage_upload_is_refused(tmp_path):
    folder(tmp_path, 1)
    doc = manifest(jobs=[{"image_url": "images/img000.png", "prompt": "a"}])
    del doc["storage"]
    with pytest.raises(ManifestError, match=re.escape("add storage: {upload: s3://bucket/prefix}")):
        load(doc, tmp_path)


async def test_a_folder_is_uploaded_once_and_sent_as_presigned_urls(sandbox, tmp_path, s3):
    folder(tmp_path, 50)
    doc = manifest(matrix={"image_url": ["images/*.png"], "prompt": ["slow zoom in"]})
    sb = await sandbox(fetch_images=True)
    notes: list[str] = []

    def note(ev: JobEvent) -> None:
        if ev.kind is EventKind.NOTICE:
            notes.append(ev.message)

    report = await batchgen.arun(doc, base_dir=tmp_path, api_base=sb.url, api_key="test-key",
                                 env=s3, on_event=note)
    # the emulator fetched every presigned URL: a URL that did not work fails its task
    assert report.ok and report.counts["completed"] == 50, report.jobs[0].error
    assert any("50 uploaded" in n and "0 already" in n for n in notes), notes
    # another manifest over the same files, in another output dir: nothing uploaded again
    doc["matrix"]["prompt"] = ["pan left"]
    doc["output"] = {"dir": "out2"}
    notes.clear()
    again = await batchgen.arun(doc, base_dir=tmp_path, api_base=sb.url, api_key="test-key",
                                env=s3, on_event=note)
    assert again.ok and any("0 uploaded" in n and "50 already" in n for n in notes), notes
    assert sb.stats()["tasks_created"] == 100


async def test_without_presigning_the_api_could_not_fetch_the_image(sandbox, tmp_path, s3):
    """The guarantee above is real: the bucket is private, an unsigned URL fails."""
    folder(tmp_path, 1)
    doc = manifest(jobs=[{"image_url": "images/img000.png", "prompt": "a"}])
    loaded = load(doc, tmp_path)
    (url,) = loaded.uploads
    from batchgen.sandbox.fetch import image_fails
    unsigned = f"{s3['AWS_ENDPOINT_URL']}/{url.removeprefix('s3://')}"
    sb = await sandbox(fetch_images=True)
    await batchgen.arun(doc, base_dir=tmp_path, api_base=sb.url, api_key="test-key", env=s3)
    assert await image_fails(unsigned)


def test_a_glob_in_a_jobs_file_row_makes_one_job_per_file(tmp_path):
    folder(tmp_path, 3)
    (tmp_path / "jobs.csv").write_text("image_url,prompt\nimages/img00[01].png,hello\n"
                                       "images/img002.png,bye\n")
    loaded = load(manifest(jobs_file="jobs.csv"), tmp_path)
    assert [j.prompt for j in loaded.jobs] == ["hello", "hello", "bye"]
    assert len({j.image_url for j in loaded.jobs}) == 3


# -- outputs in a bucket --------------------------------------------------------------




def outputs_manifest(bucket: str, n: int) -> dict[str, Any]:
    doc = manifest(jobs=[{"id": f"v{i}", "image_url": f"https://example.com/{i}.png",
                          "prompt": f"p{i}"} for i in range(n)])
    doc["output"] = {"dir": f"s3://{bucket}/videos/run1"}
    return doc


async def test_videos_and_reports_land_in_the_bucket_verified(sandbox, tmp_path, s3):
    import hashlib
    sb = await sandbox()
    report = await batchgen.arun(outputs_manifest(BUCKET, 3), base_dir=tmp_path,
                                 api_base=sb.url, api_key="test-key", env=s3)
    assert report.ok
    objects = bucket_objects(s3, BUCKET, "videos/run1")
    for job in report.jobs:
        body = objects[f"videos/run1/{job.id}.mp4"]
        assert len(body) == job.bytes and hashlib.sha256(body).hexdigest() == job.sha256
        assert body[4:8] == b"ftyp"
    assert {"videos/run1/report.csv", "videos/run1/summary.json",
            "videos/run1/report.html"} <= set(objects)
    # the state stays on this machine, in the working folder beside the manifest
    assert (tmp_path / ".batchgen-work" / BUCKET / "videos" / "run1" / ".batchgen"
            / "state.db").is_file()


async def test_a_missing_output_bucket_stops_the_run_before_any_create(sandbox, tmp_path,
                                                                      s3):
    """S3 answers the HEAD of an object in a missing bucket as for a missing object: the
    check lists too, so nothing is paid for videos that could not be stored."""
    from batchgen.objstore import StorageError
    sb = await sandbox()
    with pytest.raises(StorageError, match=r"^output.dir: s3://no-bucket-yet/videos/run1/"
                       r"summary.json: listing failed: the bucket does not exist .*"
                       r"nothing was sent or paid"):
        await batchgen.arun(outputs_manifest("no-bucket-yet", 2), base_dir=tmp_path,
                            api_base=sb.url, api_key="test-key", env=s3)
    assert sb.stats()["tasks_created"] == 0


async def test_a_missing_output_bucket_exits_73_with_no_traceback(tmp_path, s3):
    from cli_helpers import cli_env, run_cli
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(outputs_manifest("no-bucket-cli", 1)))
    result = await run_cli("run", str(path), "--sandbox", "--no-progress", cwd=tmp_path,
                           env=cli_env(**s3))
    code, err = result.code, result.err
    assert code == 73, err
    assert "the bucket does not exist (create it, or fix the s3:// URL)" in err
    assert "Traceback" not in err and s3["AWS_SECRET_ACCESS_KEY"] not in err


async def test_a_failed_upload_keeps_the_video_for_the_next_run_paid_once(sandbox, tmp_path,
                                                                          s3):
    sb = await sandbox()
    make_bucket(s3, "later-bucket")
    gone: list[str] = []

    def drop_the_bucket(event: JobEvent) -> None:
        """The bucket disappears once the first task is paid: every upload then fails."""
        if event.kind is EventKind.SUBMITTED and not gone:
            gone.append(event.job_id)
            urllib.request.urlopen(urllib.request.Request(
                f"{s3['AWS_ENDPOINT_URL']}/later-bucket", method="DELETE"))

    doc = outputs_manifest("later-bucket", 2)
    first = await batchgen.arun(doc, base_dir=tmp_path, api_base=sb.url, api_key="test-key",
                                env=s3, on_event=drop_the_bucket)
    assert gone and not first.ok
    assert first.counts["completed"] == 0 and first.kept_ready == 2
    make_bucket(s3, "later-bucket")
    assert bucket_objects(s3, "later-bucket", "videos") == {}  # nothing half-written
    second = await batchgen.arun(doc, base_dir=tmp_path, api_base=sb.url,
                                 api_key="test-key", env=s3)
    assert second.ok and sb.stats()["tasks_created"] == 2  # resumed, never paid twice
    assert {"videos/run1/v0.mp4", "videos/run1/v1.mp4"} <= set(
        bucket_objects(s3, "later-bucket", "videos"))


async def test_a_large_video_goes_up_in_parts_and_is_checked(tmp_path, s3):
    from batchgen.outputs import BucketOutput
    from batchgen.session import resolve
    video = tmp_path / "big.mp4"
    video.write_bytes(b"\0\0\0\x18ftypmp42" + b"x" * (12 * 1024 * 1024))
    out = BucketOutput.open(f"s3://{BUCKET}/large", s3)
    await out.publish(video, video.stat().st_size)
    assert len(bucket_objects(s3, BUCKET, "large")["large/big.mp4"]) == video.stat().st_size
    # --output s3://... : the files go there, the state to the manifest's working folder
    resolved = resolve(load(outputs_manifest(BUCKET, 1), tmp_path), {},
                       output=f"s3://{BUCKET}/other")
    assert resolved.output_url == f"s3://{BUCKET}/other"
    assert resolved.output_dir == tmp_path / ".batchgen-work" / BUCKET / "other"


async def test_kill_9_during_a_video_upload_leaves_no_object_and_resume_completes(
        sandbox, tmp_path, s3):
    """The run is killed while a video's upload is on the wire (an S3 proxy holds it): no
    object stands under its key, the job is not recorded downloaded, and the next run
    uploads it, with no second create."""
    import asyncio

    from aiohttp import ClientSession, web
    from cli_helpers import cli_env, run_cli, start_cli

    held = asyncio.Event()

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "PUT" and request.path.endswith(".mp4"):
            held.set()
            await asyncio.sleep(60)  # the upload never completes: the run is killed here
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with ClientSession() as session, session.request(
                request.method, s3["AWS_ENDPOINT_URL"] + request.path_qs, headers=headers,
                data=body) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(),
                                headers={k: v for k, v in upstream.headers.items()
                                         if k.lower() not in ("content-length",
                                                              "transfer-encoding")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app, handler_cancellation=True)  # a held PUT dies with the run
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sb = await sandbox()
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(outputs_manifest(BUCKET, 1) | {
        "output": {"dir": f"s3://{BUCKET}/killed"}}))
    env = cli_env(BATCHGEN_API_BASE=sb.url, **s3)
    try:
        proc = await start_cli("run", str(path), "--no-progress", cwd=tmp_path,
                               env=env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
        await asyncio.wait_for(held.wait(), 30)
        proc.kill()
        await proc.wait()
    finally:
        await runner.cleanup()
    assert "killed/v0.mp4" not in bucket_objects(s3, BUCKET, "killed")
    result = await run_cli("run", str(path), "--no-progress", cwd=tmp_path, env=env)
    assert result.code == 0, result.err
    assert "killed/v0.mp4" in bucket_objects(s3, BUCKET, "killed")
    assert sb.stats()["tasks_created"] == 1


async def test_report_uploads_the_reports_of_a_bucket_output(sandbox, tmp_path, s3,
                                                              monkeypatch):
    import asyncio
    sb = await sandbox()
    doc = outputs_manifest(BUCKET, 1) | {"output": {"dir": f"s3://{BUCKET}/rep"}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    await batchgen.arun(path, api_base=sb.url, api_key="test-key", env=s3)
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    (tmp_path / ".batchgen-work" / BUCKET / "rep" / "report.csv").unlink()
    out = io.StringIO()
    assert await asyncio.to_thread(main, ["report", str(path)], out, io.StringIO()) == 0
    assert f"uploaded them to s3://{BUCKET}/rep" in out.getvalue()
    assert b"job_id" in bucket_objects(s3, BUCKET, "rep")["rep/report.csv"]


def test_a_wrong_storage_upload_is_told_once_not_once_per_file(tmp_path):
    folder(tmp_path, 3)
    doc = manifest(matrix={"image_url": ["images/*.png"], "prompt": ["a"]})
    doc["storage"]["upload"] = "s3://b/p"  # a bucket name has 3 to 63 characters
    with pytest.raises(ManifestError) as caught:
        load(doc, tmp_path)
    (problem,) = caught.value.problems
    assert "storage.upload" in problem.what and "3-63" in problem.fix
    del doc["storage"]
    with pytest.raises(ManifestError) as caught:
        load(doc, tmp_path)
    (problem,) = caught.value.problems  # one matrix line: one problem for its 3 files
    assert "names a local file" in problem.what


async def test_a_bucket_that_refuses_uploads_stops_the_run_before_any_create(
        sandbox, tmp_path, s3):
    folder(tmp_path, 2)
    doc = manifest(matrix={"image_url": ["images/*.png"], "prompt": ["a"]})
    doc["storage"]["upload"] = "s3://no-such-bucket/in"
    sb = await sandbox()
    from batchgen.objstore import StorageError
    with pytest.raises(StorageError, match="nothing was sent or paid"):
        await batchgen.arun(doc, base_dir=tmp_path, api_base=sb.url, api_key="test-key",
                            env=s3)
    assert sb.stats()["tasks_created"] == 0


def test_without_the_s3_extra_the_message_says_what_to_install(monkeypatch):
    import sys

    from batchgen.errors import UsageError
    from batchgen.objstore import Bucket
    monkeypatch.setitem(sys.modules, "obstore.store", None)
    with pytest.raises(UsageError, match=r"pip install 'batchgen\[s3\]'"):
        Bucket.open("s3://some-bucket/x", {})
