"""Small, real, playable H.264 MP4 files for the emulator's finished tasks (made with PyAV).

A new user's first `run --sandbox` should leave videos that open in any player, and a
gallery of them should not be one image repeated. So each task gets a *look* — a colour and
an animated pattern — derived from its id and prompt, encoded at 160x90, 2 frames/s, for
the record's `video_duration` rounded to half a second.

Encoding costs ~10 ms (mostly x264 start-up), far too slow to do per download at thousands
of requests/s over 100,000 tasks. Hence a bounded number of looks (`LOOKS`) whose encodings
are cached (LRU): the steady state is a dictionary hit. Each task still gets its own bytes
(a client compares hashes; two tasks must never share a file): a top-level MP4 `free` box
naming the task is appended after the media, which players skip by definition.
"""

from __future__ import annotations

import colorsys
import contextlib
import functools
import hashlib
import os
import struct
import tempfile

import av

WIDTH, HEIGHT = 160, 90
FPS = 2
#: the picture is drawn on a coarse grid of CELL x CELL pixel blocks, then scaled up
CELL = 10
COLS, ROWS = WIDTH // CELL, HEIGHT // CELL
HUES = 24
PATTERNS = 8
#: distinct pictures; every one is encoded at most once per length while cached
LOOKS = HUES * PATTERNS

RGB = tuple[int, int, int]


def look_of(task_id: str, prompt: str) -> int:
    """Which of the `LOOKS` pictures a task shows: a hash of its id and prompt."""
    digest = hashlib.sha256(f"{task_id}\n{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % LOOKS


def _colours(look: int) -> tuple[RGB, RGB]:
    hue = (look % HUES) / HUES

    def rgb(h: float, s: float, v: float) -> RGB:
        r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
        return round(r * 255), round(g * 255), round(b * 255)

    return rgb(hue, 0.7, 0.95), rgb(hue + 0.5, 0.8, 0.35)


def _cell_on(pattern: int, col: int, row: int, frame: int) -> bool:
    """Whether grid cell (col, row) shows the bright colour in `frame` (patterns move)."""
    c, r, f = col, row, frame
    if pattern == 0:  # vertical stripes scrolling right
        return (c - f) % 4 < 2
    if pattern == 1:  # horizontal stripes scrolling down
        return (r - f) % 4 < 2
    if pattern == 2:  # checkerboard drifting
        return (c // 2 + r // 2 + f) % 2 == 0
    if pattern == 3:  # diagonal stripes
        return (c + r - f) % 6 < 3
    if pattern == 4:  # squares growing from the centre
        return (max(abs(2 * c - COLS + 1), abs(2 * r - ROWS + 1)) // 2 - f) % 4 < 2
    if pattern == 5:  # a block bouncing left to right
        x = f % (2 * (COLS - 4))
        x = x if x < COLS - 4 else 2 * (COLS - 4) - x
        return x <= c < x + 4 and 2 <= r < ROWS - 2
    if pattern == 6:  # dots blinking
        return c % 3 == 1 and r % 3 == 1 and (c + r + f) % 2 == 0
    return (c < COLS // 2) == (f % 2 == 0)  # halves swapping


def _frame_rgb(look: int, frame: int) -> bytes:
    """One rgb24 picture: the look's pattern at `frame`, with a white bar sweeping down."""
    bright, dark = _colours(look)
    pattern = look // HUES
    white = bytes((250, 250, 250))
    on, off = bytes(bright) * CELL, bytes(dark) * CELL
    bar = frame % ROWS
    rows = []
    for r in range(ROWS):
        if r == bar:
            line = white * WIDTH
        else:
            line = b"".join(on if _cell_on(pattern, c, r, frame) else off for c in range(COLS))
        rows.append(line * CELL)
    return b"".join(rows)


@functools.lru_cache(maxsize=2 * LOOKS)
def encoded(look: int, frames: int) -> bytes:
    """The MP4 of one look lasting `frames` / `FPS` seconds (cached; ~10 ms on a miss)."""
    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="batchgen-sandbox-")
    os.close(fd)
    try:
        # a real file, not a BytesIO: +faststart (moov before mdat, so a player can start
        # before the end arrives) needs to re-open the output
        with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "30", "g": str(frames)}
            stream.codec_context.thread_count = 1
            for i in range(frames):
                picture = av.VideoFrame(WIDTH, HEIGHT, "rgb24")
                plane = picture.planes[0]
                data = _frame_rgb(look, i)
                if plane.line_size != WIDTH * 3:  # padded rows: copy line by line
                    padded = bytearray(plane.line_size * HEIGHT)
                    for y in range(HEIGHT):
                        start = y * plane.line_size
                        padded[start : start + WIDTH * 3] = data[y * WIDTH * 3 : (y + 1)
                                                                 * WIDTH * 3]
                    data = bytes(padded)
                plane.update(data)
                for packet in stream.encode(picture):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        with open(path, "rb") as f:
            return f.read()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def frames_for(duration_s: float) -> int:
    """Frames for a video of about `duration_s` seconds (half-second steps, at least 1 s)."""
    return max(FPS, round(duration_s * FPS))


def mp4_bytes(task_id: str, duration_s: float = 5.0, prompt: str = "") -> bytes:
    """A playable MP4 of about `duration_s` seconds, deterministic per task, unique per id."""
    media = encoded(look_of(task_id, prompt), frames_for(duration_s))
    note = b"batchgen sandbox task " + task_id.encode()
    return media + struct.pack(">I", 8 + len(note)) + b"free" + note
