"""Poster frames for report.html: one small JPEG per downloaded video, made with PyAV.

A report of 10,000 videos must open quickly and be written in seconds, so posters are
files (never base64 in the page) and are extracted once, as each video is downloaded,
never all at report time. A poster is named after the video's SHA-256, which the state
already holds: the report finds it without any new bookkeeping, a re-download of the same
bytes reuses it, and no job id (which may hold `#`) ever becomes part of a URL.

A downloaded file is untrusted: the decoder reads at most a few hundred packets, refuses
absurd dimensions, and any failure only means "no poster" — never a failed job or run.
Deliberately not here: downloading (download.py), the page (report_html.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter

#: folder of the posters, inside the output dir (report.html links to it relatively)
POSTER_DIR = "posters"
#: widest poster in pixels (about two gallery tiles on a phone's high-DPI screen)
MAX_WIDTH = 320
#: dimensions a decoder is allowed to open; a hostile header cannot ask for more memory
MAX_SIDE = 8192
#: packets read looking for the first picture before giving up
MAX_PACKETS = 400

log = logging.getLogger(__name__)
#: the poster thread's scaler and encoders (see `_jpeg`)
_local = threading.local()
_pool: ThreadPoolExecutor | None = None


def poster_name(sha256: str) -> str:
    """The poster's file name for a video with this SHA-256 (hex)."""
    return f"{sha256[:32]}.jpg"


def poster_path(output_dir: Path, sha256: str) -> Path:
    """Where the poster of a video with this SHA-256 lives."""
    return output_dir / POSTER_DIR / poster_name(sha256)


def _first_frame(video: Path) -> av.VideoFrame | None:
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

    The scaler and the JPEG encoder are kept between posters (per thread, per size): made
    afresh they cost 3 of a poster's 3.5 ms, and a run of 10,000 short videos would pay it
    10,000 times. MJPEG frames are independent, so one encoder serves every poster.
    """
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


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchgen-posters")
    return _pool


class PosterMaker:
    """Makes a run's posters in one background thread while the downloads go on.

    A download hands its verified file over (`add`) and moves on: awaiting ~1.5 ms of
    decoding per video would cap a fast run's downloads at the poster thread's pace. One
    thread makes every poster, so at high concurrency one decoder is in memory, not one
    per download, and its scaler and encoder are reused. `finish` waits for what is left
    when the run ends (a stopped run drops the posters not yet started; the next run makes
    them, as it makes those of videos downloaded before posters existed: `backfill`).
    """

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self._pending: set[Future[bool]] = set()

    def add(self, video: Path, sha256: str) -> None:
        """Queue the poster of a verified video (returns at once)."""
        future = _executor().submit(extract_poster, video, poster_path(self.output_dir, sha256))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def backfill(self, rows: Iterable[tuple[str, str]]) -> int:
        """Queue posters missing for downloaded videos: (file name, sha256) pairs."""
        try:
            have = set(os.listdir(self.output_dir / POSTER_DIR))
        except OSError:
            have = set()
        n = 0
        for file, sha256 in rows:
            if poster_name(sha256) not in have and (self.output_dir / file).is_file():
                self.add(self.output_dir / file, sha256)
                n += 1
        return n

    async def finish(self, *, drop_waiting: bool = False) -> None:
        """Wait for the posters in the making; with `drop_waiting`, skip those not begun."""
        pending = list(self._pending)
        if drop_waiting:
            for future in pending:
                future.cancel()
        waits = [asyncio.wrap_future(f) for f in pending if not f.cancelled()]
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
