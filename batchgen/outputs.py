"""Outputs in a bucket: `output.dir: s3://bucket/prefix` (or `--output s3://...`).

Owns where a bucket output's local side lives and how finished files reach the bucket.
The state, the lock and the staging of each download stay on this machine, in a
*working folder* beside the manifest: `<manifest folder>/.batchgen-work/<bucket>/<prefix>`
(so a cron run started elsewhere finds the same state, as with a local output dir). A
video is downloaded and verified there as today (length, MP4 signature, sha256), then
uploaded under `prefix/<file name>` — in parts when large — and checked (the object's
size); only then is the job recorded `downloaded`. An S3 object appears under its key
only when its upload completes (a multipart upload at CompleteMultipartUpload), so a
partial object never stands under a final key; a run killed mid-upload leaves the job
`ready`, and the next run uploads it again. Once recorded, the staged copy is deleted as
soon as its poster is made (poster_maker.PosterMaker with `discard`), so the working folder
holds only the videos in hand. report.csv, summary.json and report.html are uploaded at
the end of every run, after the posters report.html shows (those made since the last
upload).

Deliberately not here: the bucket protocol (objstore.py), downloading (download.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from batchgen.objstore import Bucket, S3Location, StorageError, is_s3_url

#: the posters folder in the output dir and under the prefix (posters.POSTER_DIR; that
#: module is not imported here: it loads PyAV)
POSTER_DIR = "posters"
#: in the local posters folder: its mtime is when the posters were last all uploaded
PUBLISHED_MARKER = ".published"

#: the working folder of bucket outputs, inside the manifest's folder
WORK_DIR = ".batchgen-work"


def work_dir(base: Path, url: str) -> Path:
    """The local working folder of an `s3://bucket/prefix` output, under `base`."""
    location = S3Location.parse(url)
    if location is None:
        raise ValueError(url)
    parts = [p for p in location.key.split("/") if p not in ("", ".", "..")]
    return base / WORK_DIR / location.bucket / Path(*parts) if parts else \
        base / WORK_DIR / location.bucket


class BucketOutput:
    """Publishes verified files under the output prefix."""

    def __init__(self, bucket: Bucket, prefix: str) -> None:
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self.uploaded_bytes = 0

    @classmethod
    def open(cls, url: str, env: Mapping[str, str]) -> BucketOutput:
        location = S3Location.parse(url)
        if location is None or not is_s3_url(url):
            raise StorageError(f"{url!r} is not an s3://bucket/prefix URL")
        return cls(Bucket.open(f"s3://{location.bucket}", env), location.key)

    def key(self, name: str) -> str:
        return f"{self._prefix}/{name}" if self._prefix else name

    def where(self, name: str) -> str:
        return f"s3://{self._bucket.location.bucket}/{self.key(name)}"

    async def check(self) -> None:
        """Before anything is paid: the store answers, lets these credentials in (a HEAD
        of summary.json; "no such object" is fine) and has the bucket (a listing: the HEAD
        of a missing bucket looks like that of a missing object). StorageUnavailable when
        it cannot be reached, StorageError when it refuses or there is no such bucket."""
        await self._bucket.size(self.key("summary.json"))
        await self._bucket.require(self.key("summary.json"))

    async def publish(self, path: Path, size: int) -> None:
        """Upload a verified local file under its name and check the object's size;
        StorageError when the bucket refused or the object is not the file."""
        key = self.key(path.name)
        await self._bucket.put_file(key, path, overwrite=True)
        stored = await self._bucket.size(key)
        if stored != size:
            raise StorageError(f"{self.where(path.name)}: holds {stored} bytes after the "
                               f"upload, not {size}")
        self.uploaded_bytes += size

    async def publish_reports(self, paths: Iterable[Path]) -> None:
        """report.csv, summary.json, report.html: replaced whole at the end of a run,
        after the posters report.html shows (`publish_posters`), so its pictures load."""
        paths = list(paths)
        if paths:
            await self.publish_posters(paths[0].parent / POSTER_DIR)
        for path in paths:
            if path.is_file():
                await self._bucket.put_file(self.key(path.name), path, overwrite=True)

    async def publish_posters(self, directory: Path, *, concurrency: int = 8) -> int:
        """Upload the posters made since the last upload (newer than the folder's
        `.published` marker, which is moved on only when all went up), 8 at a time; how
        many. report.html links them relatively, as `posters/<sha256>.jpg`."""
        marker = directory / PUBLISHED_MARKER
        try:
            since = marker.stat().st_mtime_ns
        except OSError:
            since = 0
        started = time.time_ns()
        try:
            todo = [p for p in directory.glob("*.jpg") if p.stat().st_mtime_ns >= since]
        except OSError:
            return 0
        gate = asyncio.Semaphore(concurrency)

        async def one(path: Path) -> None:
            async with gate:
                await self._bucket.put_file(self.key(f"{POSTER_DIR}/{path.name}"), path,
                                            overwrite=True)

        try:
            async with asyncio.TaskGroup() as group:
                for path in todo:
                    group.create_task(one(path))
        except* StorageError as failed:
            raise failed.exceptions[0] from None  # one line, as for any other upload
        with contextlib.suppress(OSError):
            marker.touch()
            os.utime(marker, ns=(started, started))  # posters made meanwhile go next time
        return len(todo)
