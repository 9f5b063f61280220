"""The run's side of the posters: `PosterMaker` hands each downloaded video to a child
process (`python -m batchgen.posters`, posters.py; a fresh one every `RECYCLE` posters)
and never waits for it.

The child decodes untrusted files with FFmpeg's C code, so a crash or a hang in it costs
one poster, never the run. Requests are pipelined (`PIPELINE` at once, answered in order)
so a run whose event loop is busy with downloads still keeps the child busy, and the
queue is bounded (`WAITING`): a poster is never worth a million-entry queue. Deliberately
not here: decoding and the poster files' names (posters.py), the page (report_html.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from batchgen.posters import (
    DEFAULT_WORK,
    POSTER_DIR,
    POSTER_SECONDS,
    PosterIndex,
    bad_marker,
    poster_name,
    poster_path,
)

log = logging.getLogger(__name__)

#: posters asked of the child at once (answered in order): a busy run's event loop then
#: costs one turn per batch; one at a time, a 1,000,000-video run made 95 posters/s
#: while it downloaded 375 videos/s, and its queue grew by 280 a second
PIPELINE = 32
#: videos that may wait for their poster; past that the next run's backfill makes them
WAITING = 20_000
#: posters one child makes before a fresh one takes over. FFmpeg's opens and closes leave
#: the C heap fragmented (~250 bytes a video that glibc keeps, given back by no free):
#: one child over a 1,000,000-video run grew to ~315 MB, the run's peak (issue 18). A new
#: child costs its start-up (~0.2 s, 0.02 ms a poster at this count)
RECYCLE = 10_000


class PosterMaker:
    """Makes a run's posters in a child process, while the downloads go on.

    A download hands its verified file over (`add`) and moves on: awaiting ~1.5 ms of
    decoding per video would cap a fast run's downloads at the decoder's pace. The file is
    untrusted and FFmpeg is C: decoding in a process of its own (`python -m
    batchgen.posters`, one line per poster on its stdin and stdout) means a crash or a
    hang in it (killed after `seconds`) costs that one poster — marked, so no later run
    tries it again — never the run, and never every later run retrying it at start-up.
    A plain child process rather than multiprocessing: spawn would re-run the caller's
    own script (a pipeline calling `batchgen.run` at top level) inside the child. One
    process makes `RECYCLE` posters, reusing its scaler and encoder, `PIPELINE` asked at
    once, then a fresh one takes over.
    `finish` waits for what is left when the run ends and stops the child (a stopped run
    drops the posters not yet
    started; the next run makes them, as it makes those of videos downloaded before
    posters existed: `backfill`).

    With `discard` (a bucket output, outputs.py), the videos are staged copies already
    uploaded, verified and recorded: each is deleted once its poster is made or given
    up, so a long run does not fill the working folder's disk.
    """

    def __init__(self, output_dir: Path, *, work: str = DEFAULT_WORK,
                 seconds: int = POSTER_SECONDS, discard: bool = False) -> None:
        self.output_dir = output_dir
        self.discard = discard
        self._work = work
        self._seconds = seconds
        #: videos waiting for their poster: (file, sha256), at most `WAITING`
        self._queue: deque[tuple[str, str]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._child: asyncio.subprocess.Process | None = None
        #: posters asked of the current child (it is replaced past `RECYCLE`)
        self._asked = 0
        #: posters given up because the decoder died or hung on them (this run)
        self.given_up = 0
        #: posters left to the next run because `WAITING` videos already waited
        self.left = 0
        #: the run stopped (`finish(drop_waiting=True)`): no poster begins any more
        self._stopping = False

    def add(self, video: Path, sha256: str) -> bool:
        """Queue the poster of a verified video (returns at once; needs a running loop).
        Past `WAITING` videos the poster is left to the next run's `backfill` (False): a
        poster is never worth a million-entry queue, nor a staged copy of a bucket
        output's video kept for it (that video gets no poster)."""
        if len(self._queue) >= WAITING:
            self.left += 1
            self._drop(video)  # a staged copy (bucket output) is not kept for a poster
            return False
        self._queue.append((str(video), sha256))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        return True

    def backfill(self, rows: Iterable[tuple[str, str]]) -> int:
        """Queue posters missing for downloaded videos: (file name, sha256) pairs. With
        `discard`, a staged copy whose poster is already there (the run that made it
        stopped before deleting it) is deleted now."""
        have = PosterIndex(self.output_dir / POSTER_DIR)
        n = 0
        for file, sha256 in rows:
            name = poster_name(sha256)
            made = name in have or bad_marker(Path(name)).name in have
            if made and not self.discard:
                continue  # no file to look at: a re-run of a million done jobs stats none
            video = self.output_dir / file
            if not video.is_file():
                continue
            if not made:
                if not self.add(video, sha256):
                    break  # the queue is full: the next run goes on from here
                n += 1
            else:
                self._drop(video)
        return n

    def _drop(self, video: Path) -> None:
        """Delete a staged copy (discard mode) once nothing here needs it."""
        if self.discard:
            with contextlib.suppress(OSError):
                video.unlink()

    async def _drain(self) -> None:
        while self._queue and not self._stopping:
            batch: list[tuple[str, str]] = []
            while self._queue and len(batch) < PIPELINE:
                file, sha256 = self._queue.popleft()
                if poster_path(self.output_dir, sha256).exists():
                    self._drop(Path(file))
                else:
                    batch.append((file, sha256))
            if batch:
                await self._make_batch(batch)

    async def _make_batch(self, batch: list[tuple[str, str]]) -> None:
        """Posters of `batch`, sent to the child together and answered in order; the one
        the child died on is marked, the ones after it go back to the front."""
        jobs = [(Path(file), poster_path(self.output_dir, sha)) for file, sha in batch]
        try:
            answers = await self._make(jobs)
        except OSError as exc:  # no child process at all: no posters, never a failed run
            log.debug("no posters: %s", exc)
            answers = [False] * len(jobs)
        for (video, target), made in zip(jobs, answers, strict=False):
            self._drop(video)
            if made is None:
                self.given_up += 1
                log.warning("no poster for %s: the decoder died or hung on it", video.name)
                with contextlib.suppress(OSError):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    bad_marker(target).touch()
        if not self._stopping:  # those after the one it died on, unless the run stopped
            self._queue.extendleft(reversed(batch[len(answers):]))

    async def _make(self, batch: list[tuple[Path, Path]]) -> list[bool | None]:
        """Send `batch` to the child and read its answers, one line each, in order: a
        pipeline, so a busy event loop costs one turn per batch, not one per poster. The
        list ends with None where the child died (it is restarted for the rest)."""
        if self._asked >= RECYCLE:
            await self._retire()
            if self._stopping:  # stopped meanwhile: no new child for this batch (its
                return []        # posters are the next run's, as the queue's are)
        child = self._child
        if child is None or child.returncode is not None:
            child = self._child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "batchgen.posters", self._work, str(self._seconds),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
            self._asked = 0
        self._asked += len(batch)
        assert child.stdin is not None and child.stdout is not None
        answers: list[bool | None] = []
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            child.stdin.write(b"".join(json.dumps([str(v), str(t)]).encode() + b"\n"
                                       for v, t in batch))
            await child.stdin.drain()
        # a child that died while we wrote answered those before: read them all
        with contextlib.suppress(ConnectionResetError):
            while len(answers) < len(batch):
                answer = await child.stdout.readline()
                if not answer:
                    break
                answers.append(answer.strip() == b"1")
        if len(answers) < len(batch):
            await child.wait()
            self._child = None
            answers.append(None)
        return answers

    async def finish(self, *, drop_waiting: bool = False) -> None:
        """Wait for the posters in the making, then stop the child; with `drop_waiting`,
        skip those not begun."""
        if drop_waiting:  # a stop: the batch in the making ends, nothing more begins
            self._stopping = True
            self._queue.clear()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._retire()

    async def _retire(self) -> None:
        """Stop the child once it has answered everything: end of input, it exits (killed
        if it does not within 5 s)."""
        child, self._child = self._child, None
        if child is not None and child.returncode is None:
            assert child.stdin is not None
            child.stdin.close()  # end of input: the child exits
            try:
                await asyncio.wait_for(child.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    child.kill()
                await child.wait()
