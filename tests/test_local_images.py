"""Local images: a folder in a manifest becomes jobs named by content, uploaded once, sent
as presigned URLs. The bucket is moto's S3 server on 127.0.0.1; the emulator fetches each
image_url at create (fetch_images), so a URL that does not work fails its task."""

from __future__ import annotations

import io
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asset_hosts import HTML, png

import batchgen
from batchgen.api import load
from batchgen.cli import main
from batchgen.errors import ManifestError
from batchgen.runner import EventKind, JobEvent

pytest.importorskip("obstore")
moto_server = pytest.importorskip("moto.server")

BUCKET = "batchgen-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """An S3 server on loopback with one bucket; the AWS_* environment to reach it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"))
    yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test-id",
           "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}
    server.stop()


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
