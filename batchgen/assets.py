"""What an image or audio file is, from its first bytes, and whether the API can take it.

Owns the pure half of the pre-flight check: recognising a format by its signature (never
by a Content-Type header or a file extension, which lie), reading an image's dimensions
from its header, and the verdict on one asset given what its host answered
(`judge`). The limits are batchgen's own (`AssetLimits`): Akool documents none for the
OpenAPI (akool-api.md §7: "PNG or JPEG recommended"; size, dimensions and aspect are
UNKNOWN), so the bounds below are deliberately looser than anything reported, and only
what the API surely cannot use is refused.

Pure: bytes and numbers in, a `Check` out; no network, no disk, no clock. Deliberately not
here: fetching (asset_probe.py), the run's scheduling of checks (preflight.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

IMAGE = "image"
AUDIO = "audio"

#: image formats the API is known to take (PNG/JPEG recommended; the official demo also
#: allows WEBP and GIF)
IMAGE_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})
#: audio formats the API can be sent (MP3 in every example; the others are common)
AUDIO_FORMATS = frozenset({"mp3", "wav", "m4a", "aac", "ogg", "flac"})
#: how many first bytes a check reads: enough for a JPEG whose EXIF block comes first
HEAD_BYTES = 256 * 1024


class Verdict(StrEnum):
    """What a check concluded about one asset."""

    OK = "ok"                      #: the API can take it
    BAD = "bad"                    #: definitively unusable: the job must not be paid for
    #: this machine could not reach the host (the API's servers may): go on, warn once
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict on one asset URL and why, in words a user can act on."""

    verdict: Verdict
    reason: str = ""

    @property
    def bad(self) -> bool:
        return self.verdict is Verdict.BAD


@dataclass(frozen=True, slots=True)
class AssetLimits:
    """What batchgen refuses before paying (its own bounds; the API documents none)."""

    image_bytes: int = 50 * 1024 * 1024
    audio_bytes: int = 100 * 1024 * 1024
    min_side: int = 64             #: pixels, either side
    max_side: int = 10000          #: pixels, either side
    max_aspect: float = 5.0        #: the longer side over the shorter one


#: the default limits
LIMITS = AssetLimits()


@dataclass(frozen=True, slots=True)
class Sniffed:
    """A recognised file: its kind (image/audio/other), format and image dimensions."""

    kind: str
    format: str
    width: int | None = None
    height: int | None = None


def sniff(head: bytes) -> Sniffed | None:
    """The format of a file from its first bytes, or None when nothing is recognised."""
    for probe in (_png, _jpeg, _gif, _webp, _other_image, _audio, _text):
        found = probe(head)
        if found is not None:
            return found
    return None


def judge(kind: str, head: bytes, total: int | None, limits: AssetLimits | None = None
          ) -> Check:
    """The verdict on an asset the host served (status 2xx): its first bytes and, when
    the host said, its full size in bytes."""
    limits = limits or LIMITS
    cap = limits.image_bytes if kind == IMAGE else limits.audio_bytes
    if total is not None and total > cap:
        return Check(Verdict.BAD, f"{_size(total)}, over the {_size(cap)} batchgen allows "
                     f"for an {kind}")
    if not head:
        return Check(Verdict.BAD, "the host served an empty file")
    found = sniff(head)
    if found is None:
        return Check(Verdict.BAD, f"not an {kind}: its first bytes match no known format")
    if found.kind != kind:
        article = "an" if found.format[0] in "aefhilmnorsx" else "a"  # spelt out
        return Check(Verdict.BAD, f"not an {kind}: its first bytes are {article} "
                     f"{found.format.upper()} {found.kind}")
    allowed = IMAGE_FORMATS if kind == IMAGE else AUDIO_FORMATS
    if found.format not in allowed:
        return Check(Verdict.BAD, f"a {found.format.upper()} {kind}; the API takes "
                     f"{', '.join(sorted(f.upper() for f in allowed))}")
    if kind == IMAGE:
        return _dimensions(found, limits)
    return Check(Verdict.OK, found.format)


def _dimensions(found: Sniffed, limits: AssetLimits) -> Check:
    w, h = found.width, found.height
    if w is None or h is None:  # header past the bytes read: the format alone passes
        return Check(Verdict.OK, found.format)
    what = f"{found.format.upper()} {w}x{h}"
    if min(w, h) < limits.min_side:
        return Check(Verdict.BAD, f"{what}: smaller than {limits.min_side} px on a side")
    if max(w, h) > limits.max_side:
        return Check(Verdict.BAD, f"{what}: larger than {limits.max_side} px on a side")
    if max(w, h) / min(w, h) > limits.max_aspect:
        return Check(Verdict.BAD, f"{what}: longer than {limits.max_aspect:g}:1")
    return Check(Verdict.OK, what)


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n} bytes"


def host_of(url: str) -> str:
    """scheme://host[:port] of a URL: the unit an unreachable host is remembered by."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def shown(url: str) -> str:
    """A URL as messages show it: no password, no query (a presigned URL's signature)."""
    parts = urlsplit(url)
    path = parts.path if len(parts.path) <= 80 else parts.path[:77] + "..."
    return host_of(url) + path + ("?..." if parts.query else "")


# -- signatures -----------------------------------------------------------------------


def _png(b: bytes) -> Sniffed | None:
    if not b.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    if len(b) >= 24 and b[12:16] == b"IHDR":
        w, h = struct.unpack(">II", b[16:24])
        return Sniffed(IMAGE, "png", w, h)
    return Sniffed(IMAGE, "png")


#: JPEG start-of-frame markers (baseline, progressive, ...): they carry the dimensions
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(b: bytes) -> Sniffed | None:
    if not b.startswith(b"\xff\xd8\xff"):
        return None
    i = 2
    while i + 9 <= len(b):
        if b[i] != 0xFF:
            break
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            h, w = struct.unpack(">HH", b[i + 5:i + 9])
            return Sniffed(IMAGE, "jpeg", w, h)
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", b[i + 2:i + 4])
        i += 2 + length
    return Sniffed(IMAGE, "jpeg")


def _gif(b: bytes) -> Sniffed | None:
    if b[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    if len(b) >= 10:
        w, h = struct.unpack("<HH", b[6:10])
        return Sniffed(IMAGE, "gif", w, h)
    return Sniffed(IMAGE, "gif")


def _webp(b: bytes) -> Sniffed | None:
    if not (b[:4] == b"RIFF" and b[8:12] == b"WEBP"):
        return None
    chunk = b[12:16]
    if chunk == b"VP8 " and len(b) >= 30 and b[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", b[26:30])
        return Sniffed(IMAGE, "webp", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L" and len(b) >= 25 and b[20] == 0x2F:
        bits = int.from_bytes(b[21:25], "little")
        return Sniffed(IMAGE, "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(b) >= 30:
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return Sniffed(IMAGE, "webp", w, h)
    return Sniffed(IMAGE, "webp")


def _other_image(b: bytes) -> Sniffed | None:
    """Images the API is not known to take (named, so the message says what it is)."""
    if b.startswith(b"BM") and len(b) >= 26 and b[14] in (12, 40, 52, 56, 108, 124):
        return Sniffed(IMAGE, "bmp")
    if b[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed(IMAGE, "tiff")
    if b[4:8] == b"ftyp" and b[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"avis"):
        return Sniffed(IMAGE, "avif" if b[8:11] == b"avi" else "heic")
    return None


def _audio(b: bytes) -> Sniffed | None:
    if b.startswith(b"ID3"):
        return Sniffed(AUDIO, "mp3")
    if b[:4] == b"RIFF" and b[8:12] == b"WAVE":
        return Sniffed(AUDIO, "wav")
    if b.startswith(b"OggS"):
        return Sniffed(AUDIO, "ogg")
    if b.startswith(b"fLaC"):
        return Sniffed(AUDIO, "flac")
    if b[4:8] == b"ftyp":
        brand = b[8:12]
        if brand in (b"M4A ", b"M4B "):
            return Sniffed(AUDIO, "m4a")
        return Sniffed("video", "mp4")
    if len(b) >= 2 and b[0] == 0xFF and b[1] & 0xE0 == 0xE0:
        layer = (b[1] >> 1) & 0x3
        return Sniffed(AUDIO, "aac" if layer == 0 else "mp3")
    return None


def _text(b: bytes) -> Sniffed | None:
    """Text where a picture was expected: an HTML error or login page, JSON, SVG."""
    start = b[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return Sniffed("page", "html")
    if start.startswith(b"<svg") or (start.startswith(b"<?xml") and b"<svg" in start):
        return Sniffed(IMAGE, "svg")
    if start.startswith((b"{", b"[")):
        return Sniffed("document", "json")
    if start.startswith(b"<?xml"):
        return Sniffed("document", "xml")
    return None
