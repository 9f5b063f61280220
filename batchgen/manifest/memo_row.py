"""What a row of the load memo (memo.py) may hold, checked value by value as it is read.

The memo is a cache in a folder that anyone may edit, copy from another machine or
damage. A row whose JSON parses can still hold a list where a mapping belongs, a price
shape of 4 fields, or an order longer than the count; used as it is, it crashed `run`,
`plan`, `status` and `report` later on (an internal error, until loads.db was deleted),
or gave `plan` other prices. So every value is checked here, and any doubt raises
ValueError, which `LoadMemo.recall` takes as "not remembered": a full load. A row also
carries a seal, the SHA-256 of the memo key and of every value as written: a row edited
or damaged as a whole (well-formed shapes that are not this load's) does not match it.
(The seal is no signature: anyone who may write loads.db may as well edit the manifest.)

Deliberately not here: where the memo lives, how it is keyed, what an input is (memo.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchgen.file_hashes import Signature
from batchgen.manifest_stream import Shape, Shapes


@dataclass(frozen=True, slots=True)
class Remembered:
    """What a validated load produced, besides its settings (read again from the YAML)."""

    count: int
    digest: str
    #: Shapes' kinds and order (None: too many kinds to keep)
    kinds: list[Shape] | None
    order: bytes
    uploads: dict[str, str]

    def values(self) -> tuple[int, str, str, bytes, str]:
        """The row's columns for these (count, digest, shapes_kinds, shapes_order, uploads)."""
        return (self.count, self.digest, json.dumps(self.kinds), self.order,
                json.dumps(self.uploads))


def seal(key: str, values: Sequence[Any]) -> str:
    """The SHA-256 of the memo key and a row's values, each with its type (5 is not "5")."""
    h = hashlib.sha256(key.encode())
    for value in values:
        h.update(b"\x1e" + value if isinstance(value, bytes)
                 else b"\x1f" + json.dumps(value).encode())
    return h.hexdigest()


def decode(key: str, row: Sequence[Any]) -> tuple[Remembered, str]:
    """(the remembered load, its inputs' JSON) of a row (its 6 values and its seal)."""
    *values, sealed = row
    need(len(values) == 6 and sealed == seal(key, values), "the row's seal does not match")
    count, digest, kinds_text, order, uploads_text, inputs_text = values
    need(type(count) is int and count >= 0 and isinstance(digest, str)
         and isinstance(order, bytes) and isinstance(inputs_text, str), "a column's type")
    kinds = json.loads(kinds_text)
    shapes = None if kinds is None else [shape(k) for k in _list(kinds)]
    if shapes is None:
        need(order == b"", "an order without shapes")
    else:
        need(len(shapes) <= Shapes.LIMIT and len(order) == count
             and not order.translate(None, bytes(range(len(shapes)))), "the shapes' order")
    return Remembered(count, digest, shapes, order, _strings(json.loads(uploads_text))), \
        inputs_text


def shape(value: Any) -> Shape:
    """A price shape: (resolution, video_length, model or None, count or None, audio)."""
    need(isinstance(value, list) and len(value) == 5, "a shape's length")
    resolution, length, model, count, audio = value
    need(isinstance(resolution, str) and _int(length) and (model is None or isinstance(
        model, str)) and (count is None or _int(count)) and isinstance(audio, bool),
         "a shape's fields")
    return (resolution, length, model, count, audio)


def inputs(text: str) -> tuple[dict[str, Signature], dict[str, str],
                               dict[tuple[str, str], list[str]]]:
    """(files, contents, globs) of an `Inputs.to_json` text."""
    data = json.loads(text)
    need(isinstance(data, dict), "inputs: not a mapping")
    files: dict[str, Signature] = {}
    for path, sig in _mapping(data["files"]).items():
        need(isinstance(sig, list) and len(sig) == 5 and all(_int(n) for n in sig),
             "a file's signature")
        files[str(path)] = (sig[0], sig[1], sig[2], sig[3], sig[4])
    globs = {}
    for entry in _list(data["globs"]):
        need(isinstance(entry, list) and len(entry) == 3, "a glob")
        base, pattern, found = entry
        need(isinstance(base, str) and isinstance(pattern, str), "a glob's pattern")
        globs[(base, pattern)] = list(_list(found))
        need(all(isinstance(f, str) for f in found), "a glob's files")
    return files, _strings(data["contents"]), globs


def need(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"load memo row: {what}")


def _int(value: Any) -> bool:
    return type(value) is int


def _list(value: Any) -> list[Any]:
    need(isinstance(value, list), "not a list")
    return value


def _mapping(value: Any) -> dict[Any, Any]:
    need(isinstance(value, dict), "not a mapping")
    return value


def _strings(value: Any) -> dict[str, str]:
    """A mapping of strings to strings (json keys are always strings)."""
    need(all(isinstance(v, str) for v in _mapping(value).values()), "not a mapping of text")
    return dict(value)
