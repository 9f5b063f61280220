"""Outputs in a bucket: a staged video is uploaded (in parts when large), verified and
recorded, and only then deleted from the working folder, once its poster is made; the
bucket is moto's S3 server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from s3_helpers import BUCKET, bucket_objects, raw_store

import batchgen
from batchgen.poster_maker import PosterMaker
from batchgen.posters import POSTER_DIR, poster_path

pytest.importorskip("obstore")
pytest.importorskip("moto.server")


def outputs_manifest(prefix: str, n: int) -> dict[str, Any]:
    return {"version": 1, "name": "bucket-out",
            "api": {"concurrency": 10, "poll_interval": 0.05},
            "output": {"dir": f"s3://{BUCKET}/{prefix}"},
            "defaults": {"resolution": "720p", "video_length": 5, "audio_type": 3},
            "jobs": [{"id": f"v{i}", "image_url": f"https://example.com/{i}.png",
                      "prompt": f"p{i}"} for i in range(n)]}


def staged(tmp_path: Path, prefix: str) -> Path:
    return tmp_path / ".batchgen-work" / BUCKET / prefix


async def test_staged_videos_are_deleted_once_uploaded_and_postered(sandbox, tmp_path,
                                                                   s3):
    sb = await sandbox()
    report = await batchgen.arun(outputs_manifest("staged", 4), base_dir=tmp_path,
                                 api_base=sb.url, api_key="test-key", env=s3)
    assert report.ok
    work = staged(tmp_path, "staged")
    objects = bucket_objects(s3, BUCKET, "staged")
    for job in report.jobs:
        assert len(objects[f"staged/{job.id}.mp4"]) == job.bytes  # in the bucket, whole
        assert job.url == f"s3://{BUCKET}/staged/{job.id}.mp4"
        assert job.sha256 and poster_path(work, job.sha256).is_file()  # poster made first
    # ... and the working folder keeps no video: a long run does not fill the disk
    assert sorted(p.name for p in work.glob("*.mp4")) == []
    # the posters report.html shows are in the bucket beside it, once
    html = objects["staged/report.html"].decode()
    for job in report.jobs:
        name = poster_path(work, job.sha256 or "").name
        assert f"{POSTER_DIR}/{name}" in html and f"staged/{POSTER_DIR}/{name}" in objects
    from batchgen.outputs import BucketOutput
    again = BucketOutput.open(f"s3://{BUCKET}/staged", s3)
    assert await again.publish_posters(work / POSTER_DIR) == 0  # none new since the run


async def test_a_staged_copy_left_by_a_stopped_run_is_postered_then_deleted(tmp_path):
    """A run stopped after recording a video `downloaded` but before its poster (or
    before deleting it) leaves the staged copy: the next run's backfill finishes the job."""
    from batchgen.sandbox.video import mp4_bytes
    shas = ["a" * 64, "b" * 64]
    for sha in shas:
        (tmp_path / f"{sha[:4]}.mp4").write_bytes(mp4_bytes(sha[:4], 0.5))
    poster_path(tmp_path, shas[1]).parent.mkdir()
    poster_path(tmp_path, shas[1]).write_bytes(b"jpeg")  # made, then the run stopped
    keep = PosterMaker(tmp_path)  # a local output dir: its videos are the product
    assert keep.backfill([(f"{shas[1][:4]}.mp4", shas[1])]) == 0
    assert (tmp_path / f"{shas[1][:4]}.mp4").is_file()
    posters = PosterMaker(tmp_path, discard=True)
    assert posters.backfill([(f"{s[:4]}.mp4", s) for s in shas]) == 1
    await posters.finish()
    assert poster_path(tmp_path, shas[0]).is_file()
    assert not list(tmp_path.glob("*.mp4"))
    assert sorted(p.name for p in (tmp_path / POSTER_DIR).iterdir()) == sorted(
        poster_path(tmp_path, s).name for s in shas)


async def test_a_video_over_5_mb_goes_up_in_parts_and_is_checked(tmp_path, s3):
    import obstore

    from batchgen.outputs import BucketOutput
    video = tmp_path / "big.mp4"
    size = 12 * 1024 * 1024 + 17
    video.write_bytes(b"\0\0\0\x18ftypmp42" + b"x" * (size - 12))
    out = BucketOutput.open(f"s3://{BUCKET}/large", s3)
    await out.publish(video, size)
    meta = await obstore.head_async(raw_store(s3, BUCKET), "large/big.mp4")  # type: ignore[arg-type]
    assert meta["size"] == size
    # a multipart upload's ETag is "<md5 of the parts' md5s>-<parts>": 3 parts of 5 MB
    assert str(meta["e_tag"]).strip('"').endswith("-3")
    assert out.uploaded_bytes == size


async def test_an_unreachable_output_bucket_stops_the_run_before_any_create(sandbox,
                                                                            tmp_path, s3):
    from asset_hosts import free_port

    from batchgen.objstore import StorageUnavailable
    sb = await sandbox()
    env = s3 | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
                "BATCHGEN_STORAGE_RETRIES": "0"}
    with pytest.raises(StorageUnavailable, match=r"^output.dir: s3://batchgen-test/"
                       r"dead/summary.json: HEAD failed: the store could not be reached"):
        await batchgen.arun(outputs_manifest("dead", 2), base_dir=tmp_path, api_base=sb.url,
                            api_key="test-key", env=env)
    assert sb.stats()["tasks_created"] == 0  # nothing paid for a place it cannot go


def test_storage_retries_must_be_a_small_whole_number():
    from batchgen.errors import UsageError
    from batchgen.objstore import Bucket
    with pytest.raises(UsageError, match="BATCHGEN_STORAGE_RETRIES='many'"):
        Bucket.open("s3://some-bucket/x", {"BATCHGEN_STORAGE_RETRIES": "many"})
    assert Bucket.open("s3://some-bucket/x", {"BATCHGEN_STORAGE_RETRIES": "2"})
