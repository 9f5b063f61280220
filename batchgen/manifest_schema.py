"""The manifest's JSON Schema: loading it, a fast job check, and readable messages.

Owns `schemas/manifest.schema.json` as data (shipped in the wheel as
`batchgen/schemas/manifest.schema.json`), the hand-written `job_is_valid` that
accepts exactly what the schema's `job` definition accepts (so 100,000 data-file rows
are checked in well under a second; jsonschema runs only on rows that fail, to explain
them), and the translation of jsonschema errors into "what is wrong — what to do".
Deliberately knows nothing of YAML, files or line numbers: callers pass paths in and
get (path, what, fix) out.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from batchgen.manifest_yaml import JsonPath

SCHEMA_NAME = "manifest.schema.json"

RESOLUTIONS = ("480p", "720p", "1080p", "4k")
#: what the single create endpoint takes; 480p exists only for some models (batch endpoint)
SINGLE_RESOLUTIONS = ("720p", "1080p", "4k")
VIDEO_LENGTHS = (5, 10)
AUDIO_TYPES = (1, 2, 3)
ADD_AUDIO_TYPES = (1, 2)
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
ID_MAX_LENGTH = 128
POLL_BATCH_MAX = 100

#: Job fields a manifest may set, by kind. Kept equivalent to `$defs/jobFields`
#: (tests/test_manifest_schema.py checks this against the schema itself).
NULLABLE_TEXT = {"prompt": 1, "negative_prompt": 0, "audio_url": 1, "effect_code": 1,
                 "webhook_url": 1, "model_name": 1}  # field -> minLength
NULLABLE_BOOL = ("extend_prompt", "is_premium_model")
INT_FIELDS = ("video_length", "audio_type", "count")
BOOL_FIELDS = NULLABLE_BOOL
JOB_FIELDS: tuple[str, ...] = (
    "image_url", "prompt", "negative_prompt", "extend_prompt", "resolution", "video_length",
    "audio_type", "audio_url", "is_premium_model", "effect_code", "webhook_url", "model_name",
    "count", "add_audio",
)
JOB_KEYS = frozenset(("id", *JOB_FIELDS))


def load_schema() -> dict[str, Any]:
    """The manifest schema: from the installed package, else from the source tree."""
    try:
        text = (resources.files("batchgen") / "schemas" / SCHEMA_NAME).read_text("utf-8")
    except (FileNotFoundError, NotADirectoryError, OSError):
        text = (Path(__file__).resolve().parent.parent / "schemas" / SCHEMA_NAME).read_text(
            "utf-8")
    return json.loads(text)


class Validators:
    """Compiled validators for the whole document (jobs unchecked) and for one job.

    The document validator skips job items because those go through `job_is_valid`
    first; explaining a bad job is the job validator's work.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        doc = json.loads(json.dumps(schema))
        doc["properties"]["jobs"] = {**doc["properties"]["jobs"], "items": True}
        self.document = Draft202012Validator(doc)
        # The same rules as `$defs/job`, flattened: `$ref` + `unevaluatedProperties` costs
        # ~3x more per row in jsonschema, which shows when 100,000 rows are all wrong.
        defs = schema["$defs"]
        self.job = Draft202012Validator({
            "$defs": defs, "type": "object", "additionalProperties": False,
            "properties": {**defs["jobFields"]["properties"], **defs["job"]["properties"]}})


def _is_int(v: Any, low: int, high: int) -> bool:
    # jsonschema's integer and enum accept 5.0 as 5, but never True as 1.
    if v.__class__ is int:
        return low <= v <= high
    return v.__class__ is float and v.is_integer() and low <= v <= high


def _is_text(v: Any, min_length: int) -> bool:
    return v.__class__ is str and len(v) >= min_length


def job_is_valid(job: Any, *, with_id: bool = True) -> bool:
    """Exactly the schema's `job` (or `defaults` when `with_id` is false), fast."""
    if job.__class__ is not dict:
        return False
    for key, v in job.items():
        if key in NULLABLE_TEXT:
            if v is not None and not _is_text(v, NULLABLE_TEXT[key]):
                return False
        elif key == "image_url":
            if not _is_text(v, 1):
                return False
        elif key == "resolution":
            if v not in RESOLUTIONS or v.__class__ is not str:
                return False
        elif key == "video_length":
            if not (_is_int(v, 5, 10) and v in VIDEO_LENGTHS):
                return False
        elif key == "audio_type":
            if not _is_int(v, 1, 3):
                return False
        elif key == "count":
            if v is not None and not _is_int(v, 1, 10):
                return False
        elif key in NULLABLE_BOOL:
            if v is not None and v.__class__ is not bool:
                return False
        elif key == "add_audio":
            if v is not None and not _add_audio_is_valid(v):
                return False
        elif key == "id" and with_id:
            if not (v.__class__ is str and len(v) <= ID_MAX_LENGTH and ID_PATTERN.fullmatch(v)):
                return False
        else:
            return False
    return True


def _add_audio_is_valid(v: Any) -> bool:
    if v.__class__ is not dict or "audio_type" not in v:
        return False
    for key, item in v.items():
        if key == "audio_type":
            if not _is_int(item, 1, 2):
                return False
        elif key == "audio_url":
            if not _is_text(item, 1):
                return False
        else:
            return False
    return True


# --- messages --------------------------------------------------------------------------

_TYPE_WORDS = {"string": "text", "integer": "a whole number", "number": "a number",
               "boolean": "true or false", "object": "a mapping of keys", "array": "a list",
               "null": "null"}


def kind_of(value: Any) -> str:
    """How a value reads in YAML terms, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def show(value: Any) -> str:
    """A value as a user wrote it, shortened."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def dotted(path: JsonPath) -> str:
    """`jobs[3].add_audio.audio_type` style name of a path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def suggest(word: Any, choices: Any, memo: dict[tuple[str, str], str] | None = None) -> str:
    """'did you mean X?' hint, or '' when nothing is close.

    `memo` (one per load) keeps a file with the same typo on 100,000 rows from paying
    for difflib 100,000 times.
    """
    options = [str(c) for c in choices]
    key = (str(word), "\0".join(options))
    if memo is not None and key in memo:
        return memo[key]
    match = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    hint = f"did you mean {match[0]!r}?" if match else ""
    if memo is not None:
        memo[key] = hint
    return hint


def explain(validator: Draft202012Validator, instance: Any, subject: str = "",
            memo: dict[tuple[str, str], str] | None = None
            ) -> Iterator[tuple[JsonPath, str, str]]:
    """Every schema error of `instance` as (path of the offending key, what, fix).

    `subject` names the instance in messages ("" for the whole manifest, "the job"
    for a job, whose location already says which job).
    """
    for error in validator.iter_errors(instance):
        yield from _explain_one(validator, error, subject, memo)


def _properties_of(validator: Draft202012Validator, schema: Mapping[str, Any]) -> list[str]:
    """Keys a (sub)schema allows, following local `$ref`s."""
    keys = list(schema.get("properties", {}))
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = validator.schema
        for part in ref[2:].split("/"):
            target = target[part]
        keys += _properties_of(validator, target)
    return keys


def _explain_one(validator: Draft202012Validator, error: ValidationError, subject: str,
                 memo: dict[tuple[str, str], str] | None
                 ) -> Iterator[tuple[JsonPath, str, str]]:
    path: JsonPath = tuple(error.absolute_path)
    name = dotted(path) if path else (subject or "the manifest")
    v = error.instance
    kind = error.validator
    if "propertyNames" in error.schema_path:
        yield ((*path, str(v)), f"{name}: {show(v)} is not a video length",
               "use 5 or 10 (seconds) as keys")
    elif kind in ("additionalProperties", "unevaluatedProperties") and isinstance(v, dict):
        schema = error.schema
        allowed = _properties_of(validator, schema) if isinstance(schema, Mapping) else []
        for key in v:
            if key not in allowed:
                hint = suggest(key, allowed, memo) or f"allowed here: {', '.join(allowed)}"
                if key == "id" and path == ("defaults",):
                    hint = "ids belong on single jobs; defaults apply to every job"
                where = f" in {name}" if path else ""
                yield ((*path, key), f"unknown key {key!r}{where}", hint)
    elif kind == "required":
        for key in _keyword_list(error):
            if isinstance(v, dict) and key not in v:
                fix = {"version": "add `version: 1` as the first line",
                       "audio_type": "add audio_type: 1 (AI audio) or 2 (your audio_url)",
                       }.get(key, f"add {key}")
                where = f" in {name}" if path else ""
                yield path, f"missing {key!r}{where}", fix
    elif kind == "anyOf":
        yield from _explain_any_of(validator, error, subject, memo)
    else:
        yield path, *_explain_value(error, name, memo)


def _explain_any_of(validator: Draft202012Validator, error: ValidationError, subject: str,
                    memo: dict[tuple[str, str], str] | None
                    ) -> Iterator[tuple[JsonPath, str, str]]:
    """`anyOf`: a manifest with nothing to run, `jobs_file` (a path or a mapping), or
    `add_audio` (a mapping or null); the mapping branch is explained when it is one."""
    path: JsonPath = tuple(error.absolute_path)
    name = dotted(path) if path else (subject or "the manifest")
    v = error.instance
    if not path and not subject:
        yield (path, "nothing to run: the manifest has no jobs, matrix or jobs_file",
               "add at least one of them; see manifests/example.yaml")
        return
    mapping_branch = 1 if path == ("jobs_file",) else 0
    branch = [e for e in error.context or ()
              if e.schema_path and e.schema_path[0] == mapping_branch]
    if isinstance(v, dict) and branch:
        for sub in branch:
            yield from _explain_one(validator, sub, subject, memo)
    elif path != ("jobs_file",):
        yield (path, f"{name} must be a mapping like {{audio_type: 1}}, not {kind_of(v)}",
               "write add_audio: {audio_type: 1} or {audio_type: 2, audio_url: https://...}")
    elif isinstance(v, str):
        yield path, "jobs_file is empty", "name a .csv or .jsonl file, or remove the key"
    else:
        yield (path, f"jobs_file must be a file path or a mapping, not {kind_of(v)}",
               "write jobs_file: products.csv, or jobs_file: {path: products.csv, "
               "extra_columns: keep}")


def _explain_value(error: ValidationError, name: str,
                   memo: dict[tuple[str, str], str] | None) -> tuple[str, str]:
    """(what, fix) for a value that breaks one rule of its own key's schema."""
    v = error.instance
    kind = error.validator
    if kind == "type":
        wanted = _keyword_list(error)
        words = " or ".join(_TYPE_WORDS.get(w, w) for w in wanted if w != "null")
        fix = f"write {words} here"
        if "string" in wanted and isinstance(v, int | float | bool):
            fix = "put the value in quotes to make it text"
        return f"{name} must be {words}, not {kind_of(v)}", fix
    if kind == "enum":
        options = _keyword_list(error)
        hint = suggest(v, options, memo) if isinstance(v, str | int) else ""
        listed = ", ".join(str(o) for o in options)
        return f"{name} is {show(v)}, not one of {listed}", hint or f"use one of {listed}"
    if kind == "const":
        return f"{name} is {show(v)}; this batchgen reads version 1", "set `version: 1`"
    if kind in ("minimum", "exclusiveMinimum", "maximum"):
        return _range_message(name, tuple(error.absolute_path), v, kind,
                              error.validator_value)
    if kind == "pattern":
        return (f"{name} {show(v)} may only contain letters, digits, '.', '_' and '-'",
                "rename it, for example " + repr(re.sub(r"[^A-Za-z0-9._-]+", "-", str(v))))
    fixed = {
        "minLength": (f"{name} is empty", "give it a value or remove the key"),
        "maxLength": (f"{name} is longer than {error.validator_value} characters",
                      "shorten it"),
        "minItems": (f"{name} is an empty list", "list at least one value or remove the key"),
        "minProperties": (f"{name} has no keys", "list values for at least one job field"),
    }
    return fixed.get(str(kind), (f"{name}: {error.message}", "see schemas/manifest.schema.json"))


def _keyword_list(error: ValidationError) -> list[Any]:
    """The failing keyword's value as a list: `type` is one name or a list of names,
    `enum` and `required` are always lists (jsonschema types the value as possibly unset)."""
    rule = error.validator_value
    if isinstance(rule, list | tuple):
        return list(rule)
    return [rule] if isinstance(rule, str) else []


def _range_message(name: str, path: JsonPath, v: Any, kind: str, bound: Any
                   ) -> tuple[str, str]:
    if path == ("api", "poll_batch"):
        return (f"{name} is {show(v)}; it must be 1 to {POLL_BATCH_MAX}",
                f"use at most {POLL_BATCH_MAX} ids per results query (batchgen's cap)")
    if kind == "maximum":
        return f"{name} is {show(v)}, above the maximum {bound}", f"use at most {bound}"
    if kind == "exclusiveMinimum":
        return f"{name} is {show(v)}; it must be more than {bound}", \
            f"use a number above {bound}"
    return f"{name} is {show(v)}, below the minimum {bound}", f"use at least {bound}"
