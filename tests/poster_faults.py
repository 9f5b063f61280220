"""Decoders that misbehave, for tests/test_report_html.py: they run in the poster process
(named "module:function", so they live in a module of their own, not in a test)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from batchgen.posters import extract_poster


def crash_or_hang(video: Path, target: Path) -> bool:
    """FFmpeg dying on a hostile file (`crash` in its name) or stuck in it (`hang`)."""
    if "crash" in video.name:
        os.abort()
    if "hang" in video.name:
        time.sleep(600)
    return extract_poster(video, target)
