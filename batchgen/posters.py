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

import contextlib
import hashlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen.key_parts import key_parts

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


class PosterIndex:
    """Which names a posters folder holds, in 8 bytes a name: the report and a run's
    backfill ask it of every downloaded video. A set of the names took ~120 MB over a
    million posters (issue 18); this is a sorted array of 64-bit BLAKE2b digests of the
    names, built a 256th at a time (never a million int objects at once). A name absent
    from the folder is taken for present only if its digest equals one of the n present
    (n / 2^64: 5e-14 a lookup at a million), and then only a poster link is wrong."""

    def __init__(self, folder: Path) -> None:
        self._keys = array("Q")
        for part in key_parts(map(_name_key, _names(folder)), 56, "Q"):
            self._keys.extend(sorted(part))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _name_key(name)
        at = bisect_left(self._keys, key)
        return at < len(self._keys) and self._keys[at] == key

    def __len__(self) -> int:
        return len(self._keys)


def _names(folder: Path) -> Iterator[str]:
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                yield entry.name
    except OSError:
        return  # no folder (yet): no posters


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogateescape"),
                                          digest_size=8).digest(), "big")


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
