"""The SPEC §3 rules on one job's effective fields, and on the output names.

Owns what makes a URL acceptable, what makes an `output.filename` template or an
`output.report` name unsafe, and the rules a job must meet once `defaults` are merged
under it (`rule_problems`, which explains, and `quick_rule_check`, which only answers yes
or no, cheaply enough for a million jobs). Pure functions of values: no files, no state;
where a problem sits in the manifest is the loader's business.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from typing import Any

from batchgen.local_assets import is_local
from batchgen.manifest.messages import suggest
from batchgen.manifest.model import FILENAME_FIELDS, OWN_NAMES, UNIQUE_FILENAME_FIELDS
from batchgen.manifest_schema import SINGLE_RESOLUTIONS
from batchgen.objstore import is_s3_url

_SAMPLE_FIELDS = {"id": "a1b2c3d4e5f6", "name": "batch", "index": 0, "resolution": "720p",
                  "video_length": 5, "task_id": "689174694b4dbdd4ab3d28c9"}
#: the job fields that hold a URL (image and audio may name a local file or s3:// instead)
URL_FIELDS = ("image_url", "audio_url", "webhook_url")
#: a control character: never in a file name or a path
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HTTP_URL = re.compile(
    r"(?i:https?)://(?:[^\s/?#@]*@)?(?:[^\s/?#@:\[\]]+|\[[0-9A-Fa-f:.]+\])(?::\d*)?(?:[/?#]\S*)?")


def is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host and no whitespace (a regex: 100k rows)."""
    return _HTTP_URL.fullmatch(value) is not None


def is_url_or_file(name: str, value: str) -> bool:
    """An image/audio may also be an s3:// object or a local file (local_assets.py, which
    checks the file); other URL fields must be http(s)."""
    if name == "webhook_url":
        return is_http_url(value)
    return is_http_url(value) or is_local(value) or is_s3_url(value)


def filename_problems(template: str) -> list[tuple[str, str]]:
    """What is wrong with an `output.filename` template, as (what, fix) pairs."""
    name = f"output.filename {template!r}"
    if CONTROL.search(template):
        return [(f"{name} contains a control character (NUL, tab, newline...)",
                 "remove it; a file name needs none")]
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return [(f"{name} is not a valid template: {exc}",
                 "write fields as {id}; double a brace ({{ or }}) to keep it literal")]
    for f in fields:
        if f == "" or f.isdigit():
            return [(f"{name} has a field without a name", "name the field, e.g. {id}")]
        if f not in FILENAME_FIELDS:
            hint = suggest(f, FILENAME_FIELDS)
            return [(f"{name} uses the unknown field {{{f}}}",
                     hint or f"fields may be: {', '.join(FILENAME_FIELDS)}")]
    try:
        sample = template.format(**_SAMPLE_FIELDS)
    except (ValueError, TypeError) as exc:
        return [(f"{name} cannot be filled in: {exc}", "check the format after ':' in a field")]
    out = []
    if "/" in sample or "\\" in sample or sample in ("", ".", ".."):
        out.append((f"{name} leaves the output dir",
                    "give a plain file name; choose the folder with output.dir"))
    if not any(f in UNIQUE_FILENAME_FIELDS for f in fields):
        out.append((f"{name} gives every job the same file name",
                    "include {id}, {index} or {task_id}, e.g. \"{id}.mp4\""))
    return out


def filename_could_be(template: str, batch_name: str, name: str) -> bool:
    """True when `template` could give some job's video the file name `name`.

    Conservative: every field but {name} may stand for any text (ids come from
    spreadsheets, task ids from the API), and case is ignored (macOS and Windows file
    systems fold it). A template that cannot be parsed is reported elsewhere.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return False
    pattern = ""
    for literal, field_name, spec, conversion in parts:
        pattern += re.escape(literal)
        if field_name is None:
            continue
        if field_name == "name" and not spec and not conversion:
            pattern += re.escape(batch_name)
        else:
            pattern += ".*"
    # render_filename turns a leading '.' into '_.' and '/' into '_': never more names
    return re.fullmatch(pattern, name, re.IGNORECASE | re.DOTALL) is not None


def report_problems(report: str, template: str, batch_name: str) -> list[tuple[str, str]]:
    """What makes `output.report` unsafe: a name batchgen or a video also writes to."""
    name = f"output.report {report!r}"
    if CONTROL.search(report):
        return [(f"{name} contains a control character (NUL, tab, newline...)",
                 "give a plain file name such as report.csv")]
    if report.casefold() in OWN_NAMES:
        return [(f"{name} is a name batchgen writes itself",
                 "give another name such as report.csv")]
    if report.startswith(".") and report.endswith((".part", ".tmp")):
        return [(f"{name} looks like a temporary file that batchgen removes",
                 "give a plain file name such as report.csv")]
    if filename_could_be(template, batch_name, report):
        return [(f"{name} could also be the file name of a job's video (output.filename "
                 f"{template!r}): the report would overwrite it, or the video the report",
                 "end output.filename with .mp4, or name the report report.csv")]
    return []


def rule_problems(job: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """SPEC §3 rules on one effective job, as (field, what, fix)."""
    if "image_url" not in job:
        yield ("image_url", "missing image_url",
               "add image_url: https://... to the job (or to defaults)")
    prompt, effect = job.get("prompt"), job.get("effect_code")
    if prompt is None and effect is None:
        yield ("prompt", "missing prompt",
               "add prompt: <how to animate>, or effect_code: <code> to use an effect")
    for name in URL_FIELDS:
        value = job.get(name)
        if value is not None and not is_url_or_file(name, value):
            yield (name, f"{name} {value!r} is not an http(s) URL",
                   "use a public http:// or https:// URL the API can fetch")
    yield from _audio_rule("", job.get("audio_type"), job.get("audio_url"), "1 (AI) or 3 (none)")
    yield from _batch_rules(job)
    add_audio = job.get("add_audio")
    if add_audio is not None:
        url = add_audio.get("audio_url")
        if url is not None and not is_url_or_file("audio_url", url):
            yield ("add_audio", f"add_audio.audio_url {url!r} is not an http(s) URL",
                   "use a public http:// or https:// URL the API can fetch")
        yield from _audio_rule("add_audio.", add_audio.get("audio_type"), url, "1 (AI)")


def _batch_rules(job: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """Fields the endpoint a job goes to cannot take (akool-api.md E1/E2).

    A job with `model_name` or `count` goes to the batch endpoint, which takes no audio
    and no effect: sent anyway they were silently dropped and the video paid for without
    them. 480p exists only for some models, never at the single create endpoint.
    """
    uses = [k for k in ("model_name", "count") if job.get(k) is not None]
    if not uses:
        if job.get("resolution") not in SINGLE_RESOLUTIONS:
            yield ("resolution", f"resolution {job.get('resolution')} is offered only by "
                   "some models, not by the standard create endpoint",
                   "use 720p, 1080p or 4k, or set model_name to a model that lists it "
                   "(batchgen models)")
        return
    why = (f"a job with {' and '.join(uses)} goes through the batch endpoint, which takes "
           "no audio and no effect (the video would be made, and paid, without it)")
    if job.get("audio_type") in (1, 2):
        yield ("audio_type", f"audio_type {job['audio_type']} cannot be used here: {why}",
               "set audio_type: 3 and add sound as a second step with add_audio: "
               "{audio_type: 1} (or {audio_type: 2, audio_url: https://...})")
    if job.get("audio_url") is not None:
        yield ("audio_url", f"audio_url cannot be used here: {why}",
               "remove it and use add_audio: {audio_type: 2, audio_url: https://...}")
    if job.get("effect_code") is not None:
        yield ("effect_code", f"effect_code cannot be used here: {why}",
               "remove effect_code, or remove model_name and count to use the effect")


def quick_rule_check(job: Mapping[str, Any]) -> bool:
    """True when `rule_problems` would find something; cheap enough for every job."""
    if job.get("model_name") is not None or job.get("count") is not None:
        if job["audio_type"] != 3 or job.get("audio_url") is not None \
                or job.get("effect_code") is not None:
            return True
    elif job["resolution"] not in SINGLE_RESOLUTIONS:
        return True
    if "image_url" not in job or not is_url_or_file("image_url", job["image_url"]):
        return True
    if job.get("prompt") is None and job.get("effect_code") is None:
        return True
    audio_url = job.get("audio_url")
    if (job["audio_type"] == 2) != (audio_url is not None):
        return True
    if audio_url is not None and not is_url_or_file("audio_url", audio_url):
        return True
    webhook = job.get("webhook_url")
    if webhook is not None and not is_http_url(webhook):
        return True
    add_audio = job.get("add_audio")
    if add_audio is not None:
        url = add_audio.get("audio_url")
        if (add_audio["audio_type"] == 2) != (url is not None):
            return True
        if url is not None and not is_url_or_file("audio_url", url):
            return True
    return False


def _audio_rule(prefix: str, audio_type: Any, audio_url: Any, other: str
                ) -> Iterator[tuple[str, str, str]]:
    if audio_type == 2 and audio_url is None:
        yield (prefix.rstrip(".") or "audio_type",
               f"{prefix}audio_type is 2 (your own audio) but {prefix}audio_url is missing",
               f"add {prefix}audio_url: https://..., or use {prefix}audio_type {other}")
    elif audio_type != 2 and audio_url is not None:
        yield (prefix.rstrip(".") or "audio_url",
               f"{prefix}audio_url is set but {prefix}audio_type is {audio_type}, not 2",
               f"set {prefix}audio_type: 2 to use it, or remove {prefix}audio_url"
               + (" (null drops one inherited from defaults)" if not prefix else ""))
