"""Fake but well-formed MP4 files: `ftyp`, `moov` (with `mvhd`) and `mdat` boxes.

Bytes are derived from the task id alone, so a re-download gives the same file (a client can
compare hashes) and two tasks never share a file. Generated on demand, never cached: 100,000
finished tasks must not cost 100,000 files of memory. Not a playable video: no tracks.
"""

from __future__ import annotations

import hashlib
import random
import struct


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _mvhd(duration_ms: int) -> bytes:
    # version 0: flags, ctime, mtime, timescale, duration, rate, volume, reserved(10),
    # matrix(36), pre_defined(24), next_track_id -> 100 bytes of payload
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    payload = (
        struct.pack(">IIIII", 0, 0, 0, 1000, duration_ms)
        + struct.pack(">IH", 0x10000, 0x100)
        + bytes(10)
        + matrix
        + bytes(24)
        + struct.pack(">I", 2)
    )
    return _box(b"mvhd", payload)


def mp4_bytes(task_id: str, duration_s: float = 5.0) -> bytes:
    """A few KB of MP4 boxes, deterministic per `task_id` and different between ids."""
    digest = hashlib.sha256(task_id.encode()).digest()
    rng = random.Random(digest)
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    udta = _box(b"udta", _box(b"\xa9cmt", b"batchgen sandbox " + task_id.encode()))
    moov = _box(b"moov", _mvhd(int(duration_s * 1000)) + udta)
    mdat = _box(b"mdat", digest + rng.randbytes(2048 + digest[0] * 8))
    return ftyp + moov + mdat
