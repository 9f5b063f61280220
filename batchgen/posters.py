"""Poster frames for report.html: one small JPEG per downloaded video, made with PyAV.

A report of 10,000 videos must open quickly and be written in seconds, so posters are
files (never base64 in the page) and are extracted once, as each video is downloaded,
never all at report time. A poster is named after the video's SHA-256, which the state
already holds: the report finds it without any new bookkeeping, a re-download of the same
bytes reuses it, and no job id (which may hold `#`) ever becomes part of a URL.

A downloaded file is untrusted: the decoder runs in a child process (a crash or hang in
FFmpeg's C code costs one poster), reads at most a few hundred packets, refuses absurd
dimensions, and any failure only means "no poster" — never a failed job or run.
Deliberately not here: downloading (download.py), the page (report_html.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # PyAV is imported where a poster is made, in the child process only:
    import av  # the run that hands videos over never decodes (~0.1-0.2 s of start-up)

#: folder of the posters, inside the output dir (report.html links to it relatively)
POSTER_DIR = "posters"
#: widest poster in pixels (about two gallery tiles on a phone's high-DPI screen)
MAX_WIDTH = 320
#: dimensions a decoder is allowed to open; a hostile header cannot ask for more memory
MAX_SIDE = 8192
#: packets read looking for the first picture before giving up
MAX_PACKETS = 400
#: seconds one poster may take before its decoder process is killed (~3 ms is usual)
POSTER_SECONDS = 20

log = logging.getLogger(__name__)
#: the poster thread's scaler and encoders (see `_jpeg`)
_local = threading.local()
#: what makes one poster in the child, as "module:function" ((video, target) -> made)
DEFAULT_WORK = "batchgen.posters:extract_poster"


def poster_name(sha256: str) -> str:
    """The poster's file name for a video with this SHA-256 (hex)."""
    return f"{sha256[:32]}.jpg"


def poster_path(output_dir: Path, sha256: str) -> Path:
    """Where the poster of a video with this SHA-256 lives."""
    return output_dir / POSTER_DIR / poster_name(sha256)


def _first_frame(video: Path) -> av.VideoFrame | None:
    import av
    with av.open(str(video), options={"probesize": "1000000"}) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = 1  # one picture: decoder threads cost more to start than they save
        if not (0 < ctx.width <= MAX_SIDE and 0 < ctx.height <= MAX_SIDE):
            return None
        for n, packet in enumerate(container.demux(stream)):
            if n >= MAX_PACKETS:
                return None
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    return frame
    return None


def _jpeg(frame: av.VideoFrame) -> bytes:
    """The frame scaled to at most `MAX_WIDTH` and encoded as one JPEG.

    The scaler and the JPEG encoder are kept between posters (per process, per size): made
    afresh they cost 3 of a poster's 3.5 ms, and a run of 10,000 short videos would pay it
    10,000 times. MJPEG frames are independent, so one encoder serves every poster.
    """
    import av
    from av.video.reformatter import VideoReformatter
    width = min(MAX_WIDTH, frame.width - frame.width % 2)
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    tools = getattr(_local, "tools", None)
    if tools is None:
        tools = _local.tools = {"scaler": VideoReformatter(), "encoders": {}, "pts": 0}
    picture = tools["scaler"].reformat(frame, width=width, height=height, format="yuvj420p")
    encoders = tools["encoders"]
    encoder = encoders.get((width, height))
    if encoder is None:
        if len(encoders) >= 8:  # videos of many shapes: keep the memory bounded
            encoders.clear()
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
        encoder.time_base = Fraction(1, 25)
        encoder.options = {"qscale": "5"}
        encoders[(width, height)] = encoder
    tools["pts"] += 1  # an encoder wants rising timestamps, even for stills
    picture.pts, picture.time_base = tools["pts"], encoder.time_base
    return b"".join(bytes(p) for p in encoder.encode(picture))


def extract_poster(video: Path, target: Path) -> bool:
    """Write the first picture of `video` to `target` as a small JPEG; False if none.

    Written to a temporary name and renamed, so a poster is whole or absent. Never raises
    for a bad video: a missing poster is shown as a placeholder in the report.
    """
    import av
    if target.exists():
        return True
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        frame = _first_frame(video)
        if frame is None:
            return False
        data = _jpeg(frame)
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, target)
        return True
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        log.debug("no poster for %s: %s", video, exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False


def bad_marker(target: Path) -> Path:
    """The file that says a video's poster killed or hung the decoder: never tried again."""
    return target.with_name(f".{target.name}.bad")


class PosterMaker:
    """Makes a run's posters, one at a time, in a child process, while the downloads go on.

    A download hands its verified file over (`add`) and moves on: awaiting ~1.5 ms of
    decoding per video would cap a fast run's downloads at the decoder's pace. The file is
    untrusted and FFmpeg is C: decoding in a process of its own (`python -m
    batchgen.posters`, one line per poster on its stdin and stdout) means a crash or a
    hang in it (killed after `seconds`) costs that one poster — marked, so no later run
    tries it again — never the run, and never every later run retrying it at start-up.
    A plain child process rather than multiprocessing: spawn would re-run the caller's
    own script (a pipeline calling `batchgen.run` at top level) inside the child. One
    process makes every poster, reusing its scaler and encoder. `finish` waits for what is
    left when the run ends and stops the child (a stopped run drops the posters not yet
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
        self._queue: deque[tuple[Path, Path]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._child: asyncio.subprocess.Process | None = None
        #: posters given up because the decoder died or hung on them (this run)
        self.given_up = 0

    def add(self, video: Path, sha256: str) -> None:
        """Queue the poster of a verified video (returns at once; needs a running loop)."""
        self._queue.append((video, poster_path(self.output_dir, sha256)))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    def backfill(self, rows: Iterable[tuple[str, str]]) -> int:
        """Queue posters missing for downloaded videos: (file name, sha256) pairs. With
        `discard`, a staged copy whose poster is already there (the run that made it
        stopped before deleting it) is deleted now."""
        try:
            have = set(os.listdir(self.output_dir / POSTER_DIR))
        except OSError:
            have = set()
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
                self.add(video, sha256)
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
        while self._queue:
            video, target = self._queue.popleft()
            if target.exists():
                self._drop(video)
                continue
            try:
                made = await self._make(video, target)
            except OSError as exc:  # no child process at all: no posters, never a failed run
                log.debug("no poster for %s: %s", video, exc)
                self._drop(video)
                continue
            self._drop(video)
            if made is None:
                self.given_up += 1
                log.warning("no poster for %s: the decoder died or hung on it", video.name)
                with contextlib.suppress(OSError):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    bad_marker(target).touch()

    async def _make(self, video: Path, target: Path) -> bool | None:
        """One poster in the child; None when the child died on it (it is restarted)."""
        child = self._child
        if child is None or child.returncode is not None:
            child = self._child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "batchgen.posters", self._work, str(self._seconds),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(json.dumps([str(video), str(target)]).encode() + b"\n")
            await child.stdin.drain()
            answer = await child.stdout.readline()
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        if not answer:
            await child.wait()
            self._child = None
            return None
        return answer.strip() == b"1"

    async def finish(self, *, drop_waiting: bool = False) -> None:
        """Wait for the posters in the making, then stop the child; with `drop_waiting`,
        skip those not begun."""
        if drop_waiting:
            self._queue.clear()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        child, self._child = self._child, None
        if child is not None and child.returncode is None:
            assert child.stdin is not None
            child.stdin.close()  # end of input: the child exits
            try:
                await asyncio.wait_for(child.wait(), 5)
            except TimeoutError:
                child.kill()
                await child.wait()


def _serve(work_name: str, seconds: int) -> None:
    """The child's loop: a JSON [video, target] per line in, "1" or "0" per line out.

    Each poster is bounded by SIGALRM (default action: the process ends, and the parent
    marks that poster); a decoder that crashes ends it the same way."""
    module, _, attr = work_name.partition(":")
    work = getattr(importlib.import_module(module), attr)
    for line in sys.stdin:
        video, target = json.loads(line)
        signal.alarm(seconds)
        made = work(Path(video), Path(target))
        signal.alarm(0)
        sys.stdout.write("1\n" if made else "0\n")
        sys.stdout.flush()


if __name__ == "__main__":
    import av  # before the first line: a child started early is ready for it
    _serve(sys.argv[1], int(sys.argv[2]))
