"""jsonschema's errors as "what is wrong — what to do", in YAML's words.

Owns the messages of a manifest that breaks `schemas/manifest.schema.json`: `explain`
walks a validator's errors (the most useful one of an `anyOf`, a typo's likely meaning
via `suggest`) and yields (path, what, fix), with values shown as the user wrote them.
Knows nothing of files or lines: the loader locates each path.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from batchgen.manifest_schema import POLL_BATCH_MAX
from batchgen.manifest_yaml import JsonPath

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
