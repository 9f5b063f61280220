"""Local files into the bucket before the run, and presigned URLs at the moment of sending.

Owns the run's side of object-storage inputs: `upload_all` puts each local file the
pending jobs name under its content-hash key (a HEAD first: a key that exists holds the
same bytes, so a file is uploaded once, ever, whatever manifest or run names it), and
`Presigner.fields` swaps every `s3://` image/audio URL of a request for a presigned GET
URL made fresh just before the create is sent (never stored: the state keeps the
`s3://` URL, and a URL made at submit time is valid for the whole `url_lifetime`).

`bucket_probe` lets pre-flight check an `s3://` URL written in a manifest the way the
API will get it: presigned, then fetched like any URL.

Deliberately not here: which file is which object (local_assets.py), the bucket protocol
(objstore.py), when a create is sent (the runner).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from batchgen.assets import Check, Verdict
from batchgen.errors import RetryableApiError, UsageError
from batchgen.objstore import Bucket, S3Location, StorageError

#: request fields that may hold an s3:// URL to presign
SIGNED_FIELDS = ("image_url", "audio_url", "last_image_url")


@dataclass(frozen=True, slots=True)
class UploadStats:
    """What `upload_all` did: files put, files already there, bytes put, seconds taken."""

    uploaded: int
    present: int
    bytes: int
    seconds: float


class Buckets:
    """The buckets a run uses, opened once each, with credentials from `env`."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._open: dict[str, Bucket] = {}

    def of(self, url: str) -> tuple[Bucket, str]:
        """The bucket of an `s3://bucket/key` URL, and the key."""
        location = S3Location.parse(url)
        if location is None:
            raise StorageError(f"{url!r} is not an s3://bucket/key URL")
        bucket = self._open.get(location.bucket)
        if bucket is None:
            bucket = self._open[location.bucket] = Bucket.open(f"s3://{location.bucket}",
                                                               self._env)
        return bucket, location.key


def s3_urls(request: Mapping[str, Any]) -> list[str]:
    """The s3:// URLs a stored request makes the API fetch."""
    found = [request.get(k) for k in SIGNED_FIELDS]
    step = request.get("add_audio")
    if isinstance(step, Mapping):
        found.append(step.get("audio_url"))
    return [u for u in found if isinstance(u, str) and u.startswith("s3://")]


async def upload_all(buckets: Buckets, files: Mapping[str, Path], wanted: Iterable[str], *,
                     concurrency: int = 8) -> UploadStats:
    """Upload the local files behind the object URLs in `wanted` (others are left alone)."""
    todo = sorted({u for u in wanted if u in files})
    started = time.monotonic()
    counts = {"uploaded": 0, "present": 0, "bytes": 0}
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> None:
        bucket, key = buckets.of(url)
        async with gate:
            if await bucket.exists(key):
                counts["present"] += 1
                return
            await asyncio.to_thread(_same_content, files[url], key)
            if await bucket.put_file(key, files[url]):
                counts["uploaded"] += 1
                counts["bytes"] += files[url].stat().st_size
            else:
                counts["present"] += 1

    async with asyncio.TaskGroup() as group:
        for url in todo:
            group.create_task(one(url))
    return UploadStats(counts["uploaded"], counts["present"], counts["bytes"],
                       time.monotonic() - started)


def _same_content(path: Path, key: str) -> None:
    """Refuse to store a file under another content's name: its bytes must still hash to
    the key (`<sha256>.<ext>`) found when the manifest was loaded (a file edited since, or
    a stale file_hashes entry, would otherwise poison that key for every later run)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    expected = PurePosixPath(key).name.partition(".")[0]
    if digest.hexdigest() != expected:
        raise StorageError(f"{path}: changed since the manifest was read (its bytes no "
                           f"longer hash to {expected[:12]}...); run again to use the new "
                           "content")


class Presigner:
    """Presigns the s3:// URLs of a request just before it is sent."""

    def __init__(self, buckets: Buckets, lifetime: float) -> None:
        self._buckets = buckets
        self._lifetime = lifetime

    async def url(self, value: str) -> str:
        """A presigned GET URL for an s3:// URL (other values unchanged). A failure is
        retryable: nothing has been sent yet."""
        if not value.startswith("s3://"):
            return value
        try:
            bucket, key = self._buckets.of(value)
            return await bucket.sign_get(key, self._lifetime)
        except StorageError as exc:
            raise RetryableApiError(f"presigning failed: {exc}") from None

    async def fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`fields` with each s3:// image/audio URL presigned (a new dict)."""
        out = dict(fields)
        for key in SIGNED_FIELDS:
            value = out.get(key)
            if isinstance(value, str):
                out[key] = await self.url(value)
        return out


#: seconds a pre-flight check's presigned URL lives (it is fetched at once)
PROBE_URL_LIFETIME = 900


def bucket_probe(probe: Callable[[str, str], Awaitable[Check]], buckets: Buckets
                 ) -> Callable[[str, str], Awaitable[Check]]:
    """`probe` (asset_probe) that also checks s3:// URLs the way the API will get them:
    presigned, fetched without any other credential. An answer from the bucket is as
    definitive as a host's (404: no such object; 403: these AWS_* credentials cannot read
    it, so the URL sent would not work either); a URL that cannot be presigned is
    inconclusive (the submit will say why)."""

    async def check(url: str, kind: str) -> Check:
        if not url.startswith("s3://"):
            return await probe(url, kind)
        try:
            bucket, key = buckets.of(url)
            signed = await bucket.sign_get(key, PROBE_URL_LIFETIME)
        except (StorageError, UsageError) as exc:
            return Check(Verdict.INCONCLUSIVE, f"cannot be presigned here ({exc})")
        found = await probe(signed, kind)
        if found.bad and "HTTP 404" in found.reason:
            return Check(Verdict.BAD, "no such object in the bucket (HTTP 404)")
        if found.bad and ("HTTP 403" in found.reason or "HTTP 401" in found.reason):
            return Check(Verdict.BAD, "the bucket refused a presigned GET (HTTP 403): the "
                         "AWS_* credentials cannot read it, so the API could not either")
        return found

    return check
