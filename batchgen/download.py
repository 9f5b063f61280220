"""Downloads: the only module that writes video files.

A file under its final name is always complete: the body streams to a hidden temporary
name in the same directory, is checked (Content-Length when sent, the MP4 ``ftyp``
signature), hashed (SHA-256), fsync'd, and only then renamed with `os.replace` (atomic on
one filesystem), after which the directory is fsync'd so the rename survives a power cut.
A crash at any instant leaves at worst a ``.part`` file, which the next run removes.
The temporary name carries its writer (``.<name>.<tag>.part``, the tag being the pid, or
a shared runner's id): with several runners on one output dir (a shared state), only
the files of runners that are gone are removed, never one a live runner is writing.
Deliberately not here: retries and URL refreshes (the runner decides), HTTP (client/).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Any

import aiofiles
import aiofiles.os

from batchgen.client import AkoolClient
from batchgen.errors import DownloadError, OutputNotWritable

PART_SUFFIX = ".part"
#: write errors that are the environment's, not the download's: the run stops (exit 73)
#: and the job stays ready to download, instead of failing every job one by one
_ENV_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A verified file under its final name."""

    path: Path
    bytes: int
    sha256: str


def render_filename(template: str, fields: dict[str, Any],
                    names: frozenset[str] | None = None) -> str:
    """Fill the `output.filename` template; the result never leaves the output dir.
    `names`: the template's fields (`template_fields`), when the caller parsed them."""
    if names is None:
        names = template_fields(template)
    name = template.format(**{k: ("" if fields.get(k) is None else fields[k]) for k in names})
    name = name.replace("/", "_").replace("\\", "_")
    if name in ("", ".", "..") or name.startswith("."):
        name = f"_{name}"
    return name


def template_fields(template: str) -> frozenset[str]:
    """The fields an `output.filename` template names."""
    return frozenset(f for _, f, _, _ in Formatter().parse(template) if f)


def is_mp4_head(head: bytes) -> bool:
    """True when the bytes start like an ISO-BMFF/MP4 file (a box whose type is `ftyp`)."""
    return len(head) >= 8 and head[4:8] == b"ftyp"


def part_tag(path: Path) -> str:
    """The writer's tag in a temporary name (``.<name>.<tag>.part``)."""
    return path.name[:-len(PART_SUFFIX)].rsplit(".", 1)[-1]


def clean_partials(directory: Path, only: Collection[str] | None = None) -> int:
    """Remove temporary files left by an interrupted run: all of them, or with `only`
    those whose writer's tag is in it (runners known to be gone). Returns how many."""
    n = 0
    if directory.is_dir():
        for p in directory.glob(f".*{PART_SUFFIX}"):
            if only is not None and part_tag(p) not in only:
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n


async def fetch_to(client: AkoolClient, url: str, final: Path, tag: str | None = None
                   ) -> Downloaded:
    """Stream `url` into `final` atomically; raise DownloadError when the body is wrong.
    `tag` names the writer in the temporary name (default: the pid).

    Transport errors from the client (RetryableApiError / FatalApiError) propagate as they
    are, so the runner can tell "try again" from "the URL is gone".
    """
    tmp = final.with_name(f".{final.name}.{tag or os.getpid()}{PART_SUFFIX}")
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        # "x": O_EXCL, so a file or symlink planted under the temporary name is never
        # written through (clean_partials removed our own leftovers before the run)
        async with client.stream(url) as (expected, chunks), aiofiles.open(tmp, "xb") as out:
            async for chunk in chunks:
                if len(head) < 8:
                    head += chunk[: 8 - len(head)]
                digest.update(chunk)
                size += len(chunk)
                await out.write(chunk)
            await out.flush()
            await aiofiles.os.wrap(os.fsync)(out.fileno())
        if expected is not None and size != expected:
            raise DownloadError(f"download truncated: {size} of {expected} bytes")
        if not is_mp4_head(head):
            raise DownloadError("download is not an MP4 file (no 'ftyp' box at the start)")
        await aiofiles.os.replace(tmp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno in _ENV_ERRNOS:
            raise OutputNotWritable(f"cannot write {final}: {exc.strerror or exc}; the state "
                                    "is intact — fix that, then run again to download it"
                                    ) from None
        raise DownloadError(f"cannot write {final}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    await asyncio.to_thread(_fsync_dir, final.parent)  # an fsync must not stall the loop
    return Downloaded(path=final, bytes=size, sha256=digest.hexdigest())


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
