"""s3:// images and audio named directly in a manifest: pre-flight checks them as the API
will get them (a presigned GET), so a missing object or one that is no image fails its
job before it is paid. The bucket is moto's S3 server on 127.0.0.1; the emulator fetches
each image_url at create (fetch_images), as the real API would."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from asset_hosts import HTML, png
from s3_helpers import BUCKET, raw_store

import batchgen
from batchgen.cli import main

pytest.importorskip("obstore")
pytest.importorskip("moto.server")


def put(s3: dict[str, str], key: str, body: bytes) -> str:
    import obstore
    obstore.put(raw_store(s3, BUCKET), key, body)  # type: ignore[arg-type]
    return f"s3://{BUCKET}/{key}"


def direct_manifest(s3: dict[str, str]) -> dict[str, Any]:
    good = put(s3, "direct/good.png", png(320, 240))
    page = put(s3, "direct/login.png", HTML)
    missing = f"s3://{BUCKET}/direct/missing.png"
    return {"version": 1, "name": "direct", "api": {"concurrency": 4, "poll_interval": 0.05},
            "output": {"dir": "out"},
            "defaults": {"resolution": "720p", "video_length": 5, "audio_type": 3},
            "jobs": [{"id": "good", "image_url": good, "prompt": "a"},
                     {"id": "page", "image_url": page, "prompt": "b"},
                     {"id": "missing", "image_url": missing, "prompt": "c"}]}


async def test_s3_urls_in_a_manifest_are_checked_before_paying(sandbox, tmp_path,
                                                                s3):
    sb = await sandbox(fetch_images=True)
    report = await batchgen.arun(direct_manifest(s3), base_dir=tmp_path, api_base=sb.url,
                                 api_key="test-key", env=s3, preflight=True)
    jobs = {j.id: j for j in report.jobs}
    assert jobs["good"].status == "completed"  # presigned at the create, fetched by the API
    assert "pre-flight:" in (jobs["page"].error or "")
    assert "not an image" in (jobs["page"].error or "")
    assert "HTTP 404" in (jobs["missing"].error or "")
    assert "no such object" in (jobs["missing"].error or "")
    assert "X-Amz" not in str(jobs["missing"].error)  # never the signature
    # only the good image was created and charged: the 2 bad ones cost nothing
    assert sb.stats()["tasks_created"] == 1


async def test_validate_online_lists_bad_s3_objects_but_not_local_files_to_upload(
        tmp_path, s3, monkeypatch):
    import asyncio
    (tmp_path / "hero.png").write_bytes(png(200, 200))  # uploaded by `run`, not yet there
    doc = direct_manifest(s3)
    doc["storage"] = {"upload": f"s3://{BUCKET}/uploads"}
    doc["jobs"].append({"id": "local", "image_url": "hero.png", "prompt": "d"})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    argv = ["validate", "--online", "--sandbox", "--preflight", str(path)]
    code = await asyncio.to_thread(main, argv, out, err)
    assert code == 2, err.getvalue()
    text = err.getvalue()
    assert "direct/login.png" in text and "direct/missing.png" in text
    assert "direct/good.png" not in text and "uploads/" not in text
    assert Path(path).is_file()


async def test_a_file_edited_after_the_load_is_never_stored_under_its_old_hash(
        tmp_path, s3):
    from batchgen.local_assets import LocalAssets
    from batchgen.objstore import StorageError
    from batchgen.uploads import Buckets, upload_all
    (tmp_path / "a.png").write_bytes(png(100, 100))
    local = LocalAssets(tmp_path, f"s3://{BUCKET}/edited")
    url, problem = local.resolve("image_url", "a.png")
    assert url and problem is None
    (tmp_path / "a.png").write_bytes(png(120, 100))  # edited between load and upload
    with pytest.raises(ExceptionGroup) as caught:
        await upload_all(Buckets(s3), local.uploads, [url])
    assert caught.group_contains(StorageError, match="changed since the manifest was read")
    import obstore
    assert not list(obstore.list(raw_store(s3, BUCKET), prefix="edited"))  # type: ignore[arg-type]


async def test_an_unreachable_store_is_unavailable_and_a_refusal_says_why(tmp_path):
    from datetime import timedelta

    from asset_hosts import free_port
    from obstore.exceptions import GenericError, PermissionDeniedError
    from obstore.store import S3Store

    from batchgen.cli.exits import EXIT_CODES
    from batchgen.objstore import Bucket, S3Location, StorageError, StorageUnavailable
    store = S3Store("some-bucket", config={"endpoint": f"http://127.0.0.1:{free_port()}",
                                           "access_key_id": "AKIDSECRETISH",
                                           "secret_access_key": "very-secret-key",
                                           "region": "us-east-1"},
                    client_options={"allow_http": True},
                    retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=2),
                                  "backoff": {"init_backoff": timedelta(milliseconds=10),
                                              "max_backoff": timedelta(milliseconds=20),
                                              "base": 2}})
    bucket = Bucket(store, S3Location("some-bucket", ""))
    (tmp_path / "a.png").write_bytes(png())
    with pytest.raises(StorageUnavailable) as caught:
        await bucket.put_file("in/a.png", tmp_path / "a.png")
    text = str(caught.value)
    assert text.startswith("s3://some-bucket/in/a.png: upload failed: the store could not "
                           "be reached") and "run again later" in text
    assert "very-secret-key" not in text and "a.png: cannot be read" not in text
    # what a refusal says, from the S3 error code in the answer
    denied = bucket._error("upload", "k", GenericError(
        "Error performing PUT ... 403 Forbidden: <Error><Code>AccessDenied</Code></Error>"))
    assert "access denied" in str(denied) and not isinstance(denied, StorageUnavailable)
    assert "access denied" in str(bucket._error("HEAD", "k", PermissionDeniedError("403")))
    # exit codes: refused 73 (where files go cannot be written), unreachable 75 (later)
    code = {t: c for t, c in reversed(EXIT_CODES)}
    assert next(c for t, c in EXIT_CODES if isinstance(caught.value, t)) == 75
    assert next(c for t, c in EXIT_CODES if isinstance(denied, t)) == 73
    assert code[StorageError] == 73


async def test_a_missing_upload_bucket_exits_73_located_before_any_create(tmp_path,
                                                                          s3):
    from cli_helpers import cli_env, run_cli
    (tmp_path / "a.png").write_bytes(png(200, 200))
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1, "name": "nobucket", "output": {"dir": "out"},
        "storage": {"upload": "s3://no-such-bucket-here/in"},
        "jobs": [{"id": "a", "image_url": "a.png", "prompt": "p"}]}))
    result = await run_cli("run", str(path), "--sandbox", "--no-progress", cwd=tmp_path,
                           env=cli_env(**s3))
    assert result.code == 73, result.err
    assert "storage.upload: s3://no-such-bucket-here/in/" in result.err
    assert "the bucket does not exist" in result.err and "nothing was sent or paid" in result.err
    assert "Traceback" not in result.err and s3["AWS_SECRET_ACCESS_KEY"] not in result.err
