"""The manifest's JSON Schema: loading it, and a fast job check.

Owns `schemas/manifest.schema.json` as data (shipped in the wheel as
`batchgen/schemas/manifest.schema.json`), and the hand-written `job_is_valid` that
accepts exactly what the schema's `job` definition accepts (so 100,000 data-file rows
are checked in well under a second; jsonschema runs only on rows that fail, to explain
them: batchgen/manifest/messages.py turns its errors into "what is wrong — what to do").
Deliberately knows nothing of YAML, files or line numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

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
