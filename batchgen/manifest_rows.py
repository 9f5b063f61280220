"""Job rows from a `jobs_file`: CSV or JSON Lines in, (line, fields) out.

Owns the data-file formats. CSV: the header row names job fields, matched without regard
to case (an unknown or repeated column is an error, unless the manifest keeps extra
columns: then a column that is no job field is carried along as text, for the report
only); `add_audio` is written as two columns,
`add_audio.audio_type` and `add_audio.audio_url`; cells are trimmed; an empty cell leaves
the field unset (so `defaults` apply); integer and boolean fields are converted (`5`,
`true`/`false`/`yes`/`no`/`1`/`0`), other cells stay text. JSONL (`.jsonl`, `.ndjson`):
one JSON object per line; blank lines are skipped. A bad header does not hide the rows:
its problems come first, then every row is still read with the good columns (rows are
meaningless only when no column names a job field, or the file is semicolon-separated).
Deliberately does not validate the fields (the schema does) and reads no YAML.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Iterable, Iterator
from itertools import repeat
from typing import Any, NamedTuple

from batchgen.errors import Problem
from batchgen.manifest_schema import BOOL_FIELDS, INT_FIELDS, JOB_FIELDS

#: Largest data file read; the manifest itself has a smaller limit (manifest/model.py).
MAX_DATA_BYTES = 256 * 1024 * 1024
CSV_EXTENSIONS = (".csv",)
JSONL_EXTENSIONS = (".jsonl", ".ndjson")
_JSONL_CHUNK = 4096  # lines parsed at once: fast, yet little held in memory

_ADD_AUDIO_COLUMNS = ("add_audio.audio_type", "add_audio.audio_url")
CSV_COLUMNS: tuple[str, ...] = (
    "id", *(f for f in JOB_FIELDS if f != "add_audio"), *_ADD_AUDIO_COLUMNS)
_INT_COLUMNS = frozenset((*INT_FIELDS, "add_audio.audio_type"))
_BOOL_COLUMNS = frozenset(BOOL_FIELDS)
_TRUE = frozenset(("true", "yes", "y", "on", "1"))
_FALSE = frozenset(("false", "no", "n", "off", "0"))
_INT_TEXT = re.compile(r"[+-]?\d+")


class Row(NamedTuple):
    """One job as written in the data file, with the line it starts on (a named tuple:
    made a million times, it costs a third of a frozen dataclass)."""

    line: int
    fields: dict[str, Any]
    #: the user's own columns (extra_columns: keep), by header name, as text
    extra: dict[str, str] | None = None
    #: fields a bad header column probably meant (a typo): "missing" them is not news
    unsure: frozenset[str] = frozenset()


def decode(data: bytes, file: str) -> str | Problem:
    """UTF-8 text (a BOM is accepted), or a located problem explaining why not."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Problem(file, 1, "", "the file is UTF-16, not UTF-8", "save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        return Problem(file, data.count(b"\n", 0, nul) + 1, "",
                       "the file contains NUL bytes: it looks binary, not text",
                       "check that the path names the right file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return Problem(file, line, "", f"not UTF-8 text (byte {exc.start})",
                       "save the file as UTF-8")


def iter_rows(text: str, file: str, keep_extra: bool = False) -> Iterator[Row | Problem]:
    """Rows of a data file by its extension (`file` is also the name used in problems).

    `keep_extra`: CSV columns that name no job field are carried in `Row.extra` instead of
    being errors (JSONL keys are sorted out by the loader, which knows the schema).
    """
    if file.lower().endswith(CSV_EXTENSIONS):
        return csv_rows(io.StringIO(text, newline=""), file, keep_extra)
    return jsonl_rows(text.split("\n"), file)


def jsonl_rows(lines: Iterable[str], file: str) -> Iterator[Row | Problem]:
    """JSONL rows from its lines (split at "\n" only; a trailing "\n" is ignored), parsed
    a chunk at a time so that a file read line by line is never held whole."""
    chunk: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if line and not line.isspace():  # as line.strip(), without a copy of each line
            chunk.append((number, line))  # its "\n" is whitespace to JSON
            if len(chunk) == _JSONL_CHUNK:
                yield from _jsonl_chunk(chunk, file)
                chunk = []
    if chunk:
        yield from _jsonl_chunk(chunk, file)


def _jsonl_chunk(lines: list[tuple[int, str]], file: str) -> list[Row | Problem]:
    """Parse a chunk of (line number, line) in one C-level call (~3x faster than
    json.loads per line), into a list (not a generator: one less resume per row).

    Only when every line looks like one object and the parse yields one value per line;
    otherwise the per-line path finds and names the bad line.
    """
    chunk = [line.strip() for _, line in lines]
    values = None
    # map over the C methods: no Python frame per line
    if all(map(str.startswith, chunk, repeat("{"))) and \
            all(map(str.endswith, chunk, repeat("}"))):
        try:
            values = json.loads("[" + ",".join(chunk) + "]")
        except (ValueError, RecursionError):  # the per-line path names the line
            values = None
    if values is None or len(values) != len(lines):
        return list(_jsonl_rows_one_by_one(lines, file))
    return [Row(number, value) if value.__class__ is dict else
            _not_an_object(file, number, value)
            for (number, _), value in zip(lines, values, strict=True)]


def _jsonl_rows_one_by_one(lines: list[tuple[int, str]], file: str
                           ) -> Iterator[Row | Problem]:
    for number, line in lines:
        try:  # without its "\n": an error at the line's end is in its last column
            value = json.loads(line[:-1] if line.endswith("\n") else line)
        except ValueError as exc:
            msg = getattr(exc, "msg", str(exc))
            col = getattr(exc, "colno", 0)
            yield Problem(file, number, "", f"not valid JSON: {msg} (column {col})",
                          "write one JSON object per line")
            continue
        except RecursionError:  # nested thousands deep: json's C parser gives up
            yield Problem(file, number, "", "the JSON is nested too deeply to read",
                          "write one flat object per line, like {\"image_url\": ...}")
            continue
        if value.__class__ is not dict:
            yield _not_an_object(file, number, value)
            continue
        yield Row(number, value)


def _not_an_object(file: str, number: int, value: Any) -> Problem:
    return Problem(file, number, "", f"a JSON {_json_kind(value)}, not an object",
                   'write one object per line, like {"image_url": "https://..."}')


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def csv_rows(source: Iterable[str], file: str, keep_extra: bool) -> Iterator[Row | Problem]:
    """CSV rows from text lines (a file opened with newline="", or a StringIO of one)."""
    reader = csv.reader(source)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield Problem(file, 1, "", f"not valid CSV: {exc}", "fix the header row")
        return
    if not header or not any(h.strip() for h in header):
        yield Problem(file, 1, "", "no header row",
                      "start with a header naming the fields, e.g. image_url,prompt")
        return
    names = [h.strip() for h in header]
    semicolons = _semicolon_problem(names, file)
    if semicolons is not None:
        yield semicolons  # every row would be one cell: nothing more to say about them
        return
    columns, problems, unsure = _header(names, file, keep_extra)
    yield from problems
    if not any(kind == "field" for kind, _ in columns):
        return  # no column names a job field: each row would only repeat that
    width = len(names)
    last = reader.line_num
    while True:
        start = last + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Problem(file, start, "", f"not valid CSV: {exc}",
                          "check the quotes on this row")
            return
        last = reader.line_num
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) != width:
            yield Problem(file, start, "",
                          f"row has {len(cells)} cells but the header has {width}",
                          "put cells that contain commas in double quotes, and give every "
                          "row one cell per column (empty cells are fine)")
            continue
        fields, extra = _convert(columns, cells)
        yield Row(start, fields, extra if keep_extra else None, unsure)


def _semicolon_problem(names: list[str], file: str) -> Problem | None:
    """A header like `image_url;prompt`: the file was saved with semicolons (Excel does, in
    many countries), so every row would arrive as one cell."""
    for name in names:
        parts = [p.strip().lower() for p in name.split(";")]
        if len(parts) > 1 and any(p in CSV_COLUMNS for p in parts):
            return Problem(file, 1, "", f"the header {name!r} is separated by semicolons, "
                           "not commas", "save the file as comma-separated CSV (in Excel: "
                           "Save As > CSV UTF-8 (Comma delimited)), or as .jsonl")
    return None


#: a header column: ("field", job field name), ("extra", the user's name) or ("skip", "")
Column = tuple[str, str]


def _header(names: list[str], file: str, keep_extra: bool
            ) -> tuple[list[Column], list[Problem], frozenset[str]]:
    """What each column holds, the header's problems, and the fields typos probably meant."""
    columns: list[Column] = []
    problems = []
    unsure: set[str] = set()
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        key = name.lower()
        if key in seen:
            problems.append(Problem(file, 1, "", f"column {name!r} appears twice",
                                    "keep one of them"))
            columns.append(("skip", ""))
            continue
        seen.add(key)
        if key in CSV_COLUMNS:
            columns.append(("field", key))
        elif keep_extra and name:
            columns.append(("extra", name))
        else:
            columns.append(("skip", ""))
            label = repr(name) if name else f"number {position} (empty name)"
            match = difflib.get_close_matches(key, CSV_COLUMNS, n=1, cutoff=0.6) if name else []
            hint = f"did you mean {match[0]!r}?" if match else ""
            unsure.update(m.split(".")[0] for m in match)
            if key == "add_audio":
                hint = "write add_audio as two columns: add_audio.audio_type, add_audio.audio_url"
            elif not hint and name:
                hint = ("columns may be: " + ", ".join(CSV_COLUMNS) + "; to keep columns of "
                        "your own, write jobs_file: {path: ..., extra_columns: keep}")
            problems.append(Problem(file, 1, "", f"unknown column {label}",
                                    hint or f"columns may be: {', '.join(CSV_COLUMNS)}"))
    return columns, problems, frozenset(unsure)


def _convert(columns: list[Column], cells: list[str]
             ) -> tuple[dict[str, Any], dict[str, str]]:
    fields: dict[str, Any] = {}
    extra: dict[str, str] = {}
    add_audio: dict[str, Any] = {}
    for (kind, name), raw in zip(columns, cells, strict=True):
        cell = raw.strip()
        if kind == "extra":
            extra[name] = cell
            continue
        if kind == "skip" or not cell:
            continue
        value: Any = cell
        if name in _INT_COLUMNS:
            if _INT_TEXT.fullmatch(cell):
                value = int(cell)
        elif name in _BOOL_COLUMNS:
            low = cell.lower()
            value = True if low in _TRUE else False if low in _FALSE else cell
        if name.startswith("add_audio."):
            add_audio[name.removeprefix("add_audio.")] = value
        else:
            fields[name] = value
    if add_audio:
        fields["add_audio"] = add_audio
    return fields, extra
