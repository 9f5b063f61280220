"""Streaming a manifest's jobs: data files read a line at a time, ids checked compactly.

Owns what lets a 1,000,000-job manifest load in flat memory (issue 18):
- `check_data_file` / `open_rows`: a `jobs_file` is checked (size, UTF-16, NUL bytes,
  UTF-8) in one pass over its bytes, then read as rows a line at a time; it is never
  held whole, as bytes or as text;
- `KeyLog`: one 8-byte key per job (its request digest, its id's hash) instead of a
  dict of full rows, looked at a 256th at a time; a clash between keys only makes the
  loader check again exactly;
- `Jobs`: the expanded job list as a sequence that replays the expansion each time it
  is iterated (the jobs are never all in memory), checking that the files still expand
  to what was validated.
Deliberately knows nothing of the schema or the rules (batchgen/manifest/ applies them).
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import os
import stat
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, overload

from batchgen.errors import Problem
from batchgen.jobs import AddAudio, Job
from batchgen.key_parts import key_parts
from batchgen.manifest_rows import CSV_EXTENSIONS, Row, csv_rows, jsonl_rows

_BLOCK = 1 << 20  # bytes read at once while checking a data file
_BOM = codecs.BOM_UTF8


def open_regular(path: Path) -> tuple[IO[bytes] | None, tuple[str, str] | None]:
    """An open binary file, or (what, fix) when it is missing, unreadable or not a file."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it would hang validate)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, (f"{path} does not exist", "check the path")
    except IsADirectoryError:
        return None, (f"{path} is a directory, not a file", "name the file itself")
    except PermissionError:
        return None, (f"{path} cannot be read: permission denied", "check its permissions")
    except OSError as exc:
        return None, (f"{path} cannot be read: {exc.strerror or exc}", "check the path")
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return os.fdopen(fd, "rb"), None
    os.close(fd)
    if stat.S_ISDIR(mode):
        return None, (f"{path} is a directory, not a file", "name the file itself")
    return None, (f"{path} is not a regular file (a pipe, socket or device)",
                  "name a file saved on disk")


def check_data_file(path: Path, display: str, limit: int
                    ) -> Problem | tuple[str, str] | None:
    """What makes a data file unreadable as UTF-8 text, found in one pass over its bytes.

    (what, fix) for the file itself (missing, too large...), a located Problem for its
    content, None when it can be read. A NUL byte anywhere wins over bad UTF-8 (a binary
    file), as when the file was read whole.
    """
    handle, trouble = open_regular(path)
    if handle is None:
        return trouble
    with handle:
        try:
            return _scan(handle, path, display, limit)
        except OSError as exc:
            return (f"{path} cannot be read: {exc.strerror or exc}", "check the path")


def _scan(handle: IO[bytes], path: Path, display: str, limit: int
          ) -> Problem | tuple[str, str] | None:
    if os.fstat(handle.fileno()).st_size > limit:
        return (f"{path} is larger than {limit // (1024 * 1024)} MB",
                "check that it is the right file; put long job lists in a jobs_file")
    head = handle.read(_BLOCK)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Problem(display, 1, "", "the file is UTF-16, not UTF-8", "save it as UTF-8")
    skip = len(_BOM) if head.startswith(_BOM) else 0
    offset, lines, carry, block = 0, 0, b"", head[skip:]
    bad: Problem | None = None
    while True:
        offset += len(block)
        if offset > limit:
            return (f"{path} is larger than {limit // (1024 * 1024)} MB",
                    "check that it is the right file; put long job lists in a jobs_file")
        nul = block.find(b"\x00")
        if nul >= 0:
            return Problem(display, lines + carry.count(b"\n") + block.count(b"\n", 0, nul) + 1,
                           "", "the file contains NUL bytes: it looks binary, not text",
                           "check that the path names the right file")
        data = carry + block
        more = handle.read(_BLOCK)
        cut = len(data) if not more else data.rfind(b"\n") + 1
        if bad is None:
            try:
                data[:cut].decode("utf-8")
            except UnicodeDecodeError as exc:
                at = offset - len(block) - len(carry) + exc.start
                bad = Problem(display, lines + data.count(b"\n", 0, exc.start) + 1, "",
                              f"not UTF-8 text (byte {at})", "save the file as UTF-8")
        lines += data.count(b"\n", 0, cut)
        carry, block = data[cut:], more
        if not more:
            return bad


def open_rows(path: Path, display: str, keep_extra: bool) -> Iterator[Row | Problem]:
    """The rows of a data file checked by `check_data_file`, read a line at a time."""
    csv = display.lower().endswith(CSV_EXTENSIONS)
    try:
        with open(path, encoding="utf-8-sig", newline="" if csv else "\n") as text:
            yield from csv_rows(text, display, keep_extra) if csv else jsonl_rows(text, display)
    except (OSError, UnicodeDecodeError) as exc:  # changed or vanished since the check
        yield Problem(display, 1, "", f"{display} could not be read to the end: {exc}",
                      "check that nothing rewrites the file while batchgen reads it")


class KeyLog:
    """Compact record of the jobs' request digests and ids (8 bytes each per job).

    A request key is 63 bits of the request's SHA-256 with a low bit saying "no explicit
    id"; an id key is the id's hash. Keys that clash name the suspects: the loader then
    checks those jobs again exactly (a clash of keys alone proves nothing).
    """

    def __init__(self) -> None:
        self.requests = array("q")
        self.ids = array("q")

    def add(self, digest: str, job_id: str, explicit: bool) -> None:
        self.requests.append(int(digest[:15], 16) << 1 | (not explicit))
        self.ids.append(hash(job_id))

    def suspects(self) -> tuple[set[int], set[int]]:
        """(request keys, id keys) that more than one job has, where it may matter:
        two jobs with one request are an error unless both have explicit ids (sorted,
        a tagged group ends with its jobs without one).

        A 256th of the keys at a time (split by their top bits, so equal keys meet): a
        set or a sorted list of a million keys held a million int objects at once,
        ~100 MB, the peak of `validate` at the manifest limit (issue 18)."""
        requests: set[int] = set()
        for part in key_parts(self.requests, 53):  # request keys are below 2^61
            if len({k >> 1 for k in part}) != len(part):
                ordered = sorted(part)
                requests |= {b >> 1 for a, b in itertools.pairwise(ordered)
                             if b & 1 and a >> 1 == b >> 1}
        ids: set[int] = set()
        for part in key_parts(self.ids, 56):  # id keys are any 64-bit hash
            if len(set(part)) != len(part):
                ordered = sorted(part)
                ids |= {b for a, b in itertools.pairwise(ordered) if a == b}
        return requests, ids


def request_key(digest: str) -> int:
    """The part of a request's digest that `KeyLog.suspects` names (without the tag)."""
    return int(digest[:15], 16)


class ExpansionDigest:
    """A running SHA-256 over what each job is: equal digests, equal expansions.

    A job's place is hashed as (origin, line), not as its `source`: the source names the
    file as the user typed the manifest's path (`m.yaml:7`, `/srv/x/m.yaml:7`), and the
    digest keys the state's sync and the load memo, which must not miss because a cron
    job spells the path from another folder. The line stays in: a moved job's `source`
    is rewritten by the next sync.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, origin: str, line: int, job_id: str, explicit: bool, fingerprint: str,
            extra: dict[str, str] | None) -> None:
        """One job, by what its `Job` is made from (every other field follows from them).

        `origin` names the job's file independently of how the manifest's path was
        spelled: "" for the manifest itself, the `jobs_file` as the manifest writes it
        (relative to the manifest's folder) for a data row."""
        self.count += 1
        self._hash.update(f"{origin}\x1f{line}\x1f{'e' if explicit else 'i'}{job_id}"
                          f"\x1f{fingerprint}\x1e{extra or ''}".encode())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


#: what a job's price depends on: resolution, video_length, model_name, count, and
#: whether it has an add-audio step (pricing.job_credits reads nothing else)
Shape = tuple[str, int, str | None, int | None, bool]


class Shapes:
    """The jobs' price shapes in manifest order, one byte per job (at most 256 kinds).

    Lets `plan` price a manifest with no state from the shape counts and this order,
    without expanding the jobs a second time.
    """

    LIMIT = 256

    def __init__(self) -> None:
        self.kinds: list[Shape] = []
        self.index: dict[Shape, int] = {}
        self.order = bytearray()
        self.usable = True

    def new(self, shape: Shape) -> int:
        """The number of a shape not seen before (0, and unusable, past the limit)."""
        if len(self.kinds) == self.LIMIT:
            self.usable = False
            return 0
        self.index[shape] = len(self.kinds)
        self.kinds.append(shape)
        return self.index[shape]

    def sample(self, kind: int) -> Job:
        """A job of this shape: what pricing needs, nothing else."""
        resolution, length, model, count, audio = self.kinds[kind]
        return Job(id="", index=0, image_url="", resolution=resolution, video_length=length,
                   audio_type=3, model_name=model, count=count,
                   add_audio=AddAudio(audio_type=1) if audio else None)


class Jobs(Sequence[Job]):
    """The manifest's jobs, in order, expanded again each time they are iterated.

    Holds only how to expand them, how many there are and the digest of the expansion
    that was validated. The replay raises ManifestError where it finds the manifest's
    files changed since (a problem, or at its end a different expansion): a caller
    writing the jobs somewhere does so in one transaction.
    """

    def __init__(self, replay: Callable[[], Iterator[Job]], count: int, digest: str,
                 shapes: Shapes | None = None) -> None:
        self._replay = replay
        #: each job's price shape, in order (None when there are too many kinds)
        self.shapes = shapes if shapes is not None and shapes.usable else None
        self._count = count
        #: SHA-256 over every job's id, fingerprint, place (file relative to the
        #: manifest's folder, and line) and extra columns, in order
        self.digest = digest

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Job]:
        return self._replay()

    @overload
    def __getitem__(self, index: int) -> Job: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Job]: ...

    def __getitem__(self, index: int | slice) -> Job | Sequence[Job]:
        """By position (expands up to it: fine for a few lookups, not for a loop)."""
        if isinstance(index, slice):
            return tuple(self)[index]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("job index out of range")
        return next(itertools.islice(iter(self), index, None))

    def __repr__(self) -> str:
        return f"Jobs({self._count} jobs, expansion {self.digest[:12]})"
