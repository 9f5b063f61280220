"""Many 64-bit keys looked at a 256th at a time (issue 18).

A set or a sorted list of a million keys holds a million int objects at once (~70-100
MB); split by eight of their bits into 256 arrays, equal keys still meet and each part is
sorted or deduplicated on its own, a few thousand objects at a time. Used by the
manifest's duplicate check (`manifest_stream.KeyLog`) and the posters folder's index
(`posters.PosterIndex`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable


def key_parts(keys: Iterable[int], shift: int, typecode: str = "q") -> list[array[int]]:
    """`keys` in 256 arrays of `typecode` by their bits `shift` to `shift + 7`."""
    parts = [array(typecode) for _ in range(256)]
    appends = [part.append for part in parts]
    for key in keys:
        appends[(key >> shift) & 0xFF](key)
    return parts
