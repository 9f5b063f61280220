"""Manifest loading: YAML in, validated frozen dataclasses out.

Owns reading a manifest (and its `jobs_file`), checking it against
`schemas/manifest.schema.json` and the rules of SPEC §3, and expanding it into the final,
ordered list of `Job`s: `jobs`, then `matrix` combinations, then `jobs_file` rows, each
with `defaults` merged under it and `jobs.BUILTIN_DEFAULTS` under those. Every problem is
collected and raised at once as a `ManifestError`, located by file and line (the data
file and its line for `jobs_file` rows), so one run of `validate` shows everything to fix.

Reading files is the only I/O here; there is no clock, no network and no state between
calls. Deliberately does not price, plan or touch the output dir.

Limits (documented in the README): a manifest file may be at most 20 MB (long job lists
belong in a `jobs_file`, which may be up to 256 MB); a manifest expands to at most
1,000,000 jobs.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import itertools
import json
import json.encoder
import math
import os
import re
import stat
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any

from batchgen.errors import ManifestError, Problem
from batchgen.jobs import (
    BUILTIN_DEFAULTS,
    DEFAULT_NEGATIVE_PROMPT,
    ID_HEX_DIGITS,
    AddAudio,
    Job,
    request_fingerprint,
)
from batchgen.local_assets import (
    DEFAULT_URL_LIFETIME,
    LOCAL_FIELDS,
    LocalAssets,
    StorageSettings,
    is_local,
)
from batchgen.manifest_rows import (
    CSV_EXTENSIONS,
    JSONL_EXTENSIONS,
    MAX_DATA_BYTES,
    Row,
    decode,
)
from batchgen.manifest_schema import (
    ID_PATTERN,
    INT_FIELDS,
    JOB_KEYS,
    SINGLE_RESOLUTIONS,
    Validators,
    explain,
    job_is_valid,
    load_schema,
    suggest,
)
from batchgen.manifest_stream import (
    ExpansionDigest,
    Jobs,
    KeyLog,
    Shapes,
    check_data_file,
    open_rows,
    request_key,
)
from batchgen.manifest_yaml import MAX_DEPTH, JsonPath, ParsedYaml, parse_yaml
from batchgen.objstore import is_s3_url
from batchgen.outputs import work_dir
from batchgen.pricing import PriceTable, price_table
from batchgen.redact import redact_url

DEFAULT_BASE_URL = "https://openapi.akool.com"
DEFAULT_FILENAME = "{id}.mp4"
DEFAULT_REPORT = "report.csv"
MAX_MANIFEST_BYTES = 20 * 1024 * 1024
MAX_JOBS = 1_000_000
FILENAME_FIELDS = ("id", "name", "index", "resolution", "video_length", "task_id")
#: At least one of these makes every job's file name different.
UNIQUE_FILENAME_FIELDS = ("id", "index", "task_id")
_SAMPLE_FIELDS = {"id": "a1b2c3d4e5f6", "name": "batch", "index": 0, "resolution": "720p",
                  "video_length": 5, "task_id": "689174694b4dbdd4ab3d28c9"}
_URL_FIELDS = ("image_url", "audio_url", "webhook_url")
#: what batchgen itself writes in the output dir: never a report's or a video's name
SUMMARY_NAME = "summary.json"
STATE_DIR_NAME = ".batchgen"
#: every other name batchgen writes in the output dir: report.html (report_html.HTML_NAME)
#: and the posters folder (posters.POSTER_DIR); neither module is imported here (Jinja2,
#: PyAV), so tests/test_manifest_settings.py pins that the names agree
OWN_NAMES = (SUMMARY_NAME, STATE_DIR_NAME, "report.html", "posters")
#: the smallest first poll wait: anything shorter only hammers the API
MIN_POLL_INTERVAL = 0.01
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HTTP_URL = re.compile(
    r"(?i:https?)://(?:[^\s/?#@]*@)?(?:[^\s/?#@:\[\]]+|\[[0-9A-Fa-f:.]+\])(?::\d*)?(?:[/?#]\S*)?")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    base_url: str = DEFAULT_BASE_URL
    concurrency: int = 5
    poll_interval: float = 5.0
    #: ids per results query; the schema caps it at 100 (the API documents no maximum)
    poll_batch: int = 50


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    max_credits: int | None = None
    prices: PriceTable = field(default_factory=PriceTable)


@dataclass(frozen=True, slots=True)
class OutputSettings:
    dir: Path = Path("output")
    filename: str = DEFAULT_FILENAME
    report: str = DEFAULT_REPORT
    delete_remote: bool = False
    #: output.dir as s3://bucket/prefix: files go there and `dir` is the local working
    #: folder (state, lock, staging; outputs.py)
    bucket: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    name: str
    api: ApiSettings
    budget: BudgetSettings
    output: OutputSettings
    #: expanded again on each iteration (never all in memory); len() is free
    jobs: Jobs
    storage: StorageSettings = field(default_factory=StorageSettings)
    #: object URL (s3://...) -> the local file the run uploads there (local_assets.py)
    uploads: Mapping[str, Path] = field(default_factory=dict)


def load_manifest(path: str | Path) -> Manifest:
    """Load, validate and expand a manifest; raise ManifestError with every problem."""
    # A 100,000-job manifest allocates a few hundred thousand small containers and no
    # cycles; the cyclic collector would rescan them again and again (a third of the
    # time). Pause it for the load and restore it whatever happens.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(Path(path))
    finally:
        if was_enabled:
            gc.enable()


#: how problems in a manifest given as a mapping name their file
MAPPING_FILE = "<mapping>"


def load_manifest_data(doc: Mapping[str, Any], base_dir: str | Path | None = None
                       ) -> Manifest:
    """Validate and expand a manifest given as a mapping (a pipeline builds jobs in code).

    The same schema and rules as a YAML file apply. `base_dir` stands for the folder a
    manifest file would sit in: relative paths in it (`jobs_file`, `output.dir`) are taken
    from there; the current directory when None. A mapping has no file name to default
    `name` from, so it needs `name:`. Problems are located as `<mapping>:1: WHERE: ...`
    (there are no lines; WHERE names the job). Values must be what YAML could hold:
    mappings with text keys, lists/tuples, text, numbers, booleans, None (paths become
    text).
    """
    problems: list[Problem] = []
    value = _plain(doc, "", 0, problems)
    if problems:
        raise ManifestError(problems)
    if not isinstance(value, dict):
        raise ManifestError([Problem(MAPPING_FILE, 1, "", "the manifest is not a mapping",
                                     "pass a dict such as {'version': 1, 'name': ..., "
                                     "'jobs': [...]}")])
    if value.get("name") is None:
        raise ManifestError([Problem(MAPPING_FILE, 1, "", "a manifest given as a mapping "
                                     "has no file name to take its name from",
                                     "add 'name': 'my-batch' (letters, digits, '.', '_', '-')")])
    base = Path.cwd() if base_dir is None else Path(base_dir).absolute()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        manifest = _Loader(base / MAPPING_FILE, ParsedYaml(value, {}),
                           Validators(load_schema()), [], file=MAPPING_FILE).load()
    finally:
        if was_enabled:
            gc.enable()
    if manifest.output.dir.is_absolute():
        return manifest
    # output.dir, like jobs_file, is relative to where the manifest "sits": base_dir
    return replace(manifest, output=replace(manifest.output, dir=base / manifest.output.dir))


def _plain(value: Any, where: str, depth: int, problems: list[Problem]) -> Any:
    """A copy of `value` made of the types a YAML document yields, or problems."""
    if depth > MAX_DEPTH:
        problems.append(Problem(MAPPING_FILE, 1, where, f"nested more than {MAX_DEPTH} levels "
                                "deep", "a manifest needs only a few levels"))
        return None
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(Problem(MAPPING_FILE, 1, where, f"key {key!r} is not text",
                                        "use text keys, as in YAML"))
                continue
            out[key] = _plain(item, f"{where}.{key}" if where else key, depth + 1, problems)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]", depth + 1, problems)
                for i, item in enumerate(value)]
    problems.append(Problem(MAPPING_FILE, 1, where, f"a {type(value).__name__} is not a "
                            "manifest value", "use text, numbers, booleans, lists and dicts"))
    return None


def _load(path: Path) -> Manifest:
    file = str(path)
    data, problem = read_limited(path, MAX_MANIFEST_BYTES)
    if problem is not None:
        raise ManifestError([Problem(file, 1, "", *problem)])
    text = decode(data, file)
    if isinstance(text, Problem):
        raise ManifestError([text])
    parsed, problems = parse_yaml(text, file)
    if parsed is None:
        raise ManifestError(problems)
    if not isinstance(parsed.value, dict):
        kind = "a list" if isinstance(parsed.value, list) else "a single value"
        raise ManifestError([*problems, Problem(
            file, 1, "", f"the manifest is {kind}, not a mapping of keys",
            "start with `version: 1` and put jobs under `jobs:`; see manifests/example.yaml")])
    return _Loader(path, parsed, Validators(load_schema()), problems).load()


def read_limited(path: Path, limit: int) -> tuple[bytes, tuple[str, str] | None]:
    """A file's bytes, or (what, fix) when it is missing, unreadable or over `limit`."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it would hang validate)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                return b"", (f"{path} is not a regular file (a pipe, socket or device)",
                             "name a file saved on disk")
            data = handle.read(limit + 1)
    except FileNotFoundError:
        return b"", (f"{path} does not exist", "check the path")
    except IsADirectoryError:
        return b"", (f"{path} is a directory, not a file", "name the file itself")
    except PermissionError:
        return b"", (f"{path} cannot be read: permission denied", "check its permissions")
    except OSError as exc:
        return b"", (f"{path} cannot be read: {exc.strerror or exc}", "check the path")
    if len(data) > limit:
        return b"", (f"{path} is larger than {limit // (1024 * 1024)} MB",
                     "check that it is the right file; put long job lists in a jobs_file")
    return data, None


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
    if _CONTROL.search(template):
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
    if _CONTROL.search(report):
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
    for name in _URL_FIELDS:
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


class _Loader:
    """One load of one manifest: collects problems, expands jobs in order."""

    def __init__(self, path: Path, parsed: ParsedYaml, validators: Validators,
                 problems: list[Problem], file: str | None = None, *,
                 exact: tuple[set[int], set[int]] | None = None, build: bool = False,
                 local: LocalAssets | None = None) -> None:
        self.path = path
        #: local files named by jobs, hashed once per load (shared with the replays)
        self.local = local or LocalAssets(path.parent, None)
        self.shared_local = local is not None
        self.storage_settings = StorageSettings()
        self.storage_broken = False  #: storage.upload is set but wrong (reported once)
        #: the problems found before (YAML), for a second, exact pass
        self.before = list(problems)
        #: None: log compact keys (first pass); else the suspect (request, id) keys to
        #: check exactly
        self.exact = exact
        #: build `Job`s (a replay for a consumer) instead of only checking them
        self.build = build
        self.file = str(path) if file is None else file
        self.parsed = parsed
        self.doc: dict[str, Any] = parsed.value
        self.validators = validators
        self.problems = problems
        self.bad_sections: set[str] = set()
        #: paths the document schema found wrong (to salvage what `defaults` got right)
        self.bad_paths: list[JsonPath] = []
        #: keys left out of `defaults` because they broke the schema (and the fields typos
        #: there probably meant): a job missing them is not news
        self.defaults_dropped: frozenset[str] = frozenset()
        #: jobs_file: {extra_columns: keep}: columns/keys that are no job field are kept
        self.keep_extra = False
        self.count = 0                 # job entries seen, valid or not: the next index
        self.keys = KeyLog()
        self.log_request, self.log_id = self.keys.requests.append, self.keys.ids.append
        self.shapes = Shapes()
        self.log_shape = self.shapes.order.append
        self.expansion = ExpansionDigest()
        #: first suspect job per request digest / per id: (index, explicit id?, "FILE:LINE")
        self.by_request: dict[str, tuple[int, bool, str]] = {}
        self.by_id: dict[str, tuple[int, bool, str]] = {}
        self.defaults: dict[str, Any] = {}
        self.builtin_and_defaults: dict[str, Any] = dict(BUILTIN_DEFAULTS)
        self.encode = _canonical_encoder()  # == jobs.canonical_json
        self.expand = True             # false when defaults are broken: rules would mislead
        self.suggestions: dict[tuple[str, str], str] = {}  # difflib results, this load only
        #: (line, what, fix) -> [first index, jobs]: one matrix line makes many jobs
        self.matrix_problems: dict[tuple[int, str, str], list[int]] = {}

    # -- driver ----------------------------------------------------------------------

    def load(self) -> Manifest:
        """Check everything in one streaming pass; the jobs are replayed when used."""
        name, api, budget, output = self.prepare()
        for _ in self.expand_jobs():
            pass
        self.report_matrix_problems()
        if self.exact is None:
            requests, ids = self.keys.suspects()
            if requests or ids:  # maybe the same request or id twice: look exactly
                return _Loader(self.path, self.parsed, self.validators, self.before,
                               self.file, exact=(requests, ids), local=self.local).load()
        if self.problems:
            raise ManifestError(self.problems)
        path, parsed, validators, file = self.path, self.parsed, self.validators, self.file
        local = self.local
        count, digest = self.expansion.count, self.expansion.hexdigest()

        def replay() -> Iterator[Job]:
            loader = _Loader(path, parsed, validators, [], file, build=True, local=local)
            return loader.replay(count, digest)

        jobs = Jobs(replay, count, digest, self.shapes)
        return Manifest(path=self.path, name=name, api=api, budget=budget, output=output,
                        jobs=jobs, storage=self.storage_settings, uploads=local.uploads)

    def prepare(self) -> tuple[str, ApiSettings, BudgetSettings, OutputSettings]:
        """The document's checks and settings, and the defaults merged under each job."""
        self.check_document()
        name = self.name()
        settings = name, self.api(), self.budget(), self.output(name)
        self.storage_settings = self.storage()
        if not self.shared_local:
            self.local = LocalAssets(self.path.parent, self.storage_settings.upload,
                                     upload_broken=self.storage_broken)
        self.defaults = self.section("defaults") or {}
        self.expand = "defaults" not in self.bad_sections
        self.salvage_defaults()
        self.builtin_and_defaults = {**BUILTIN_DEFAULTS, **self.defaults}
        self.check_defaults()
        return settings

    def expand_jobs(self) -> Iterator[Job | None]:
        """Every job entry in order: a Job when building, else None once checked."""
        yield from self.add_inline_jobs()
        yield from self.add_matrix()
        yield from self.add_jobs_file()

    def replay(self, count: int, digest: str) -> Iterator[Job]:
        """The jobs again, for a consumer; a problem now, or another expansion than the
        `count` jobs of `digest` that were validated, means the files changed."""
        self.prepare()
        for job in self.expand_jobs():
            if self.problems:
                break
            if job is not None:
                yield job
        self.report_matrix_problems()
        if self.problems:
            raise ManifestError(self.problems)
        if self.expansion.count != count or self.expansion.hexdigest() != digest:
            raise ManifestError([Problem(
                self.file, 1, "", "the manifest's files changed while batchgen read them",
                "run the command again once nothing edits them")])

    def problem(self, path: JsonPath, what: str, fix: str, where: str = "") -> None:
        self.problems.append(Problem(self.file, self.parsed.line_of(path), where, what, fix))

    def check_document(self) -> None:
        for path, what, fix in explain(self.validators.document, self.doc):
            self.bad_sections.add(str(path[0]) if path else "")
            self.bad_paths.append(path)
            self.problem(path, what, fix)

    def salvage_defaults(self) -> None:
        """Keep the good keys of a `defaults` whose other keys break the schema.

        So that its errors do not hide the jobs' own: the jobs are still checked, with the
        broken keys left out, and a rule about a left-out key is not reported again.
        """
        doc = self.doc.get("defaults")
        bad = [p for p in self.bad_paths if p and p[0] == "defaults"]
        if not bad or not isinstance(doc, dict) or any(len(p) < 2 for p in bad):
            return
        dropped = {str(p[1]) for p in bad}
        self.defaults = {k: v for k, v in doc.items() if k not in dropped}
        self.defaults_dropped = frozenset(dropped | _meant(dropped))
        self.expand = True

    def section(self, key: str) -> Any:
        """A top-level value, or None when absent or broken (already reported)."""
        return None if key in self.bad_sections else self.doc.get(key)

    # -- settings --------------------------------------------------------------------

    def name(self) -> str:
        name = self.section("name")
        if name is None:
            name = self.path.stem
            if not ID_PATTERN.fullmatch(name) or name in (".", ".."):
                self.problem((), f"no name given, and the file name {name!r} cannot be one",
                             "add `name: my-batch` (letters, digits, '.', '_', '-')")
        elif name in (".", ".."):
            self.problem(("name",), f"name {name!r} would leave the output folder",
                         "choose a name with letters or digits")
        return name

    def api(self) -> ApiSettings:
        api = self.section("api") or {}
        base_url = api.get("base_url", DEFAULT_BASE_URL)
        if not is_http_url(base_url):
            shown = redact_url(str(base_url))
            self.problem(("api", "base_url"), f"api.base_url {shown!r} is not an http(s) URL",
                         f"use the API's root, e.g. {DEFAULT_BASE_URL}")
        defaults = ApiSettings()
        interval = api.get("poll_interval", defaults.poll_interval)
        if not math.isfinite(interval):
            self.problem(("api", "poll_interval"),
                         f"api.poll_interval is {interval}, not a finite number of seconds",
                         "use a number of seconds such as 5")
            interval = defaults.poll_interval
        elif 0 < interval < MIN_POLL_INTERVAL:
            self.problem(("api", "poll_interval"),
                         f"api.poll_interval is {interval}, below {MIN_POLL_INTERVAL} s",
                         "use a number of seconds such as 5; the runner adapts it later")
        return ApiSettings(base_url=base_url.rstrip("/"),
                           concurrency=int(api.get("concurrency", defaults.concurrency)),
                           poll_interval=float(interval),
                           poll_batch=int(api.get("poll_batch", defaults.poll_batch)))

    def budget(self) -> BudgetSettings:
        budget = self.section("budget") or {}
        max_credits = budget.get("max_credits")
        return BudgetSettings(max_credits=None if max_credits is None else int(max_credits),
                              prices=price_table(budget.get("prices")))

    def output(self, name: str) -> OutputSettings:
        output = self.section("output") or {}
        filename = output.get("filename", DEFAULT_FILENAME)
        for what, fix in filename_problems(filename):
            self.problem(("output", "filename"), what, fix)
        report = output.get("report", DEFAULT_REPORT)
        if "/" in report or "\\" in report or report in (".", ".."):
            self.problem(("output", "report"), f"output.report {report!r} leaves the output dir",
                         "give a plain file name such as report.csv")
        else:
            for what, fix in report_problems(report, filename, name):
                self.problem(("output", "report"), what, fix)
        for own in OWN_NAMES:
            if filename_could_be(filename, name, own):
                self.problem(("output", "filename"),
                             f"output.filename {filename!r} could name a video {own}, a "
                             "name batchgen writes itself (its totals, state, HTML report or "
                             "posters)", "end the template with .mp4, e.g. \"{id}.mp4\"")
                break
        if is_s3_url(str(output.get("dir", ""))):
            return OutputSettings(dir=work_dir(self.path.parent, output["dir"]),
                                  filename=filename, report=report,
                                  delete_remote=bool(output.get("delete_remote", False)),
                                  bucket=output["dir"])
        out_dir = Path(output["dir"]) if "dir" in output else Path("output") / name
        if _CONTROL.search(str(out_dir)):
            self.problem(("output", "dir"), f"output.dir {str(out_dir)!r} contains a control "
                         "character (NUL, tab, newline...)", "remove it")
            out_dir = Path("output") / name
        # like docker compose and terraform: relative to the manifest, not to the working
        # directory, so cron (started elsewhere) finds the same state and pays nothing twice
        out_dir = self.path.parent / out_dir
        return OutputSettings(dir=out_dir, filename=filename, report=report,
                              delete_remote=bool(output.get("delete_remote", False)))

    def storage(self) -> StorageSettings:
        storage = self.section("storage") or {}
        upload = storage.get("upload")
        if upload is not None and not is_s3_url(upload):
            self.problem(("storage", "upload"), f"storage.upload {upload!r} is not an "
                         "s3://bucket/prefix URL", "a bucket name has 3-63 lowercase letters, "
                         "digits, '.' or '-', e.g. upload: s3://my-bucket/batchgen")
            self.storage_broken = True
            upload = None
        return StorageSettings(upload=upload, url_lifetime=int(storage.get(
            "url_lifetime", DEFAULT_URL_LIFETIME)))

    def check_defaults(self) -> None:
        """URLs in defaults are checked once here, not once per job that inherits them."""
        for name in _URL_FIELDS:
            value = self.defaults.get(name)
            if value is not None and not is_url_or_file(name, value):
                self.problem(("defaults", name), f"defaults.{name} {value!r} is not an http(s) URL",
                             "use a public http:// or https:// URL the API can fetch")
        add_audio = self.defaults.get("add_audio") or {}
        url = add_audio.get("audio_url")
        if url is not None and not is_url_or_file("audio_url", url):
            self.problem(("defaults", "add_audio", "audio_url"),
                         f"defaults.add_audio.audio_url {url!r} is not an http(s) URL",
                         "use a public http:// or https:// URL the API can fetch")

    # -- job sources -----------------------------------------------------------------

    def add_inline_jobs(self) -> Iterator[Job | None]:
        jobs = self.section("jobs")
        if not isinstance(jobs, list):
            return
        for i, item in enumerate(jobs):
            index = self.next_index()
            where = _where(index, item)
            line = self.parsed.line_of(("jobs", i))

            def locate(key: str, i: int = i, line: int = line) -> int:
                return self.parsed.lines.get(("jobs", i, key), line)

            if not job_is_valid(item):
                before = len(self.problems)
                paths = []
                for sub, what, fix in explain(self.validators.job, item, "the job",
                                              self.suggestions):
                    self.problem(("jobs", i, *sub), what, fix, where)
                    paths.append(sub)
                if len(self.problems) == before:  # pragma: no cover - fast check disagrees
                    self.problem(("jobs", i), "not a valid job", "see manifests/example.yaml",
                                 where)
                self.rules_despite_schema(item, paths, index, self.file, line, locate)
                continue
            yield self.add_job(item, index, self.file, line, locate)

    def add_matrix(self) -> Iterator[Job | None]:
        matrix = self.section("matrix")
        if not matrix:
            return
        matrix = {k: self.matrix_files(k, v) for k, v in matrix.items()}
        keys = list(matrix)
        total = math.prod(len(matrix[k]) for k in keys)
        if not total:
            return
        line = self.parsed.line_of(("matrix",))
        if self.count + total > MAX_JOBS:
            self.problem(("matrix",), f"the matrix expands to {total:,} jobs, more than "
                         f"batchgen's limit of {MAX_JOBS:,} per manifest",
                         "split the batch into several manifests")
            return
        for combo in itertools.product(*(matrix[k] for k in keys)):
            index = self.next_index()
            item = dict(zip(keys, combo, strict=True))

            def locate(key: str) -> int:
                return self.parsed.lines.get(("matrix", key), line)

            yield self.add_job(item, index, self.file, line, locate, matrix=True)

    def add_jobs_file(self) -> Iterator[Job | None]:
        jobs_file = self.section("jobs_file")
        if jobs_file is None:
            return
        where: JsonPath = ("jobs_file",)
        if isinstance(jobs_file, dict):  # {path: ..., extra_columns: keep}
            self.keep_extra = jobs_file.get("extra_columns") == "keep"
            where, jobs_file = ("jobs_file", "path"), jobs_file["path"]
        data_path = self.path.parent / jobs_file
        display = str(data_path)
        if not jobs_file.lower().endswith(CSV_EXTENSIONS + JSONL_EXTENSIONS):
            self.problem(where, f"jobs_file {jobs_file!r} is neither .csv, .jsonl nor .ndjson",
                         "name a CSV (.csv) or JSON Lines (.jsonl) file")
            return
        trouble = check_data_file(data_path, display, MAX_DATA_BYTES)
        if isinstance(trouble, Problem):
            self.problems.append(trouble)
            return
        if trouble is not None:
            what, fix = trouble
            if what.endswith("does not exist"):
                fix = "the path is relative to the manifest's folder"
            self.problem(where, f"jobs_file: {what}", fix)
            return
        for row in open_rows(data_path, display, self.keep_extra):
            if isinstance(row, Problem):
                self.problems.append(row)
                continue
            if self.count >= MAX_JOBS:
                self.problems.append(Problem(
                    display, row.line, "", f"more than {MAX_JOBS:,} jobs in this manifest",
                    "split the batch into several manifests"))
                return
            image = row.fields.get("image_url")
            # a URL is never a glob: skip the call for it (once per row)
            files = None if image.__class__ is str and "://" in image else \
                self.local.expand(image)
            if files is None:
                yield self.add_row(row, display)
            else:  # a glob: one job per file
                yield from self.glob_rows(row, display, files)

    def glob_rows(self, row: Row, display: str, files: list[str]) -> Iterator[Job | None]:
        if not files:
            self.problems.append(Problem(display, row.line, _where(self.count, row.fields),
                                         f"image_url {row.fields['image_url']!r} matches no "
                                         "file", "the pattern is relative to the manifest's "
                                         "folder"))
        for name in files:
            yield self.add_row(row._replace(fields={**row.fields, "image_url": name}), display)

    def matrix_files(self, key: str, values: list[Any]) -> list[Any]:
        """A matrix column with each glob (`images/*.png`) replaced by its files."""
        if key not in LOCAL_FIELDS:
            return values
        out: list[Any] = []
        for value in values:
            files = self.local.expand(value)
            if files is None:
                out.append(value)
            elif not files:
                self.problem(("matrix", key), f"matrix.{key} {value!r} matches no file",
                             "the pattern is relative to the manifest's folder")
            else:
                out.extend(files)
        return out

    def localize(self, eff: dict[str, Any], item: dict[str, Any], index: int, file: str,
                 line: int, locate: Callable[[str], int] | None, matrix: bool
                 ) -> dict[str, Any] | None:
        """The job with its local files replaced by their object URLs; None when a file is
        missing, unreadable or not an image/audio (reported, located)."""
        add_audio = eff.get("add_audio") or {}
        image, audio, extra = eff.get("image_url"), eff.get("audio_url"), \
            add_audio.get("audio_url")
        if not (is_local(image) or is_local(audio) or is_local(extra)):
            return eff  # the usual case, once per job: no list, no generator
        named = [("image_url", image), ("audio_url", audio), ("add_audio.audio_url", extra)]
        eff = dict(eff)
        ok = True
        for name, value in named:
            if not isinstance(value, str) or not is_local(value):
                continue
            url, trouble = self.local.resolve(name, value)
            if trouble is not None:
                key = name.split(".")[0]
                at = locate(key) if locate is not None and key in item else line
                self.job_problem(file, at, _where(index, item), *trouble, index, matrix)
                ok = False
            elif url is None:  # storage.upload is wrong: told once, not once per file
                ok = False
            elif name == "add_audio.audio_url":
                eff["add_audio"] = {**add_audio, "audio_url": url}
            else:
                eff[name] = url
        return eff if ok else None

    def add_row(self, row: Row, display: str) -> Job | None:
        index = self.next_index()
        item, extra = row.fields, row.extra
        if self.keep_extra and extra is None and not JOB_KEYS.issuperset(item):
            # JSONL keys that are no job field: the user's own, kept as text for the report
            extra = {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                     for k, v in item.items() if k not in JOB_KEYS}
            item = {k: v for k, v in item.items() if k in JOB_KEYS}
        if not job_is_valid(item):
            where = _where(index, item)
            paths = []
            for sub, what, fix in explain(self.validators.job, item, "the job",
                                          self.suggestions):
                self.problems.append(Problem(display, row.line, where, what, fix))
                paths.append(sub)
            if not paths:  # pragma: no cover - job_is_valid and the schema disagree
                self.problems.append(Problem(display, row.line, where, "not a valid job",
                                             "see schemas/manifest.schema.json"))
            self.rules_despite_schema(item, paths, index, display, row.line, None,
                                      skip=row.unsure)
            return None
        return self.add_job(item, index, display, row.line, None, extra=extra,
                            skip=row.unsure)

    def rules_despite_schema(self, item: Any, paths: list[JsonPath], index: int, file: str,
                             line: int, locate: Callable[[str], int] | None,
                             skip: frozenset[str] = frozenset()) -> None:
        """Check the rules of a job that breaks the schema, without the keys that do.

        One pass then shows every error of the job: a wrong resolution no longer hides a
        missing prompt. Rules about a broken key (or the field a typo probably meant)
        are left out: the schema's message already covers them.
        """
        if not isinstance(item, dict) or not self.expand or any(not p for p in paths):
            return
        broken = {str(p[0]) for p in paths}
        broken |= _meant(broken - JOB_KEYS) | skip
        clean = {k: v for k, v in item.items() if k not in broken}
        eff, explicit = self.effective(clean)
        self.rule_failures(eff, clean, explicit, index, file, line, locate, False,
                           skip=frozenset(broken))

    def next_index(self) -> int:
        self.count += 1
        return self.count - 1

    # -- one job ---------------------------------------------------------------------

    def effective(self, item: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """The job with defaults merged under it (numbers made whole), and its explicit id."""
        eff = {**self.builtin_and_defaults, **item}
        explicit = eff.pop("id", None)
        if None in eff.values():  # null drops a value inherited from defaults
            eff = {**BUILTIN_DEFAULTS, **{k: v for k, v in eff.items() if v is not None}}
        for key in INT_FIELDS:
            value = eff.get(key)
            if value.__class__ is float:
                eff[key] = int(value)
        add_audio = eff.get("add_audio")
        if add_audio is not None and add_audio["audio_type"].__class__ is float:
            eff["add_audio"] = {**add_audio, "audio_type": int(add_audio["audio_type"])}
        return eff, explicit

    def add_job(self, item: dict[str, Any], index: int, file: str, line: int,
                locate: Callable[[str], int] | None, *, matrix: bool = False,
                extra: dict[str, str] | None = None, skip: frozenset[str] = frozenset()
                ) -> Job | None:
        """Merge defaults under a schema-valid job, check the rules; the Job when building.

        This runs once per job (1,000,000 times for a large jobs_file), so it avoids
        work on the happy path: messages and locations are built only for problems.
        `extra` is the user's own columns (never sent); `skip` names fields whose
        absence is already explained (a header typo).
        """
        if not self.expand:
            return None
        eff, explicit = self.effective(item)
        bad = quick_rule_check(eff)
        if not bad and not ("://" in eff["image_url"] and "audio_url" not in eff
                            and "add_audio" not in eff):  # else: no local file, surely
            local = self.localize(eff, item, index, file, line, locate, matrix)
            if local is None:
                return None
            eff = local
        add_audio = eff.get("add_audio")
        if bad or (explicit is not None and explicit in (".", "..")):
            self.rule_failures(eff, item, explicit, index, file, line, locate, matrix,
                               skip=skip)
            return None
        model, count = eff.get("model_name"), eff.get("count")
        single = model is None and count is None
        negative = item["negative_prompt"] if "negative_prompt" in item \
            else self.defaults.get("negative_prompt")
        if single and negative is not None and not negative.strip():
            at = locate("negative_prompt") if locate is not None and \
                "negative_prompt" in item else line
            self.job_problem(
                file, at, _where(index, item), "negative_prompt is empty, and the API's "
                "create endpoint requires one (it would answer 1003 for every such job)",
                "write what to avoid, e.g. negative_prompt: blurry; or remove the key to use "
                f"batchgen's default {DEFAULT_NEGATIVE_PROMPT!r}", index, matrix)
            return None
        # `eff` holds job fields only, none of them None: it is its own generation
        # request (jobs.generation_request) but for webhook_url, which is left out
        webhook = "webhook_url" in eff
        request = eff if not webhook else {k: v for k, v in eff.items() if k != "webhook_url"}
        digest = hashlib.sha256(self.encode(request).encode()).hexdigest()
        fingerprint = digest if not webhook else request_fingerprint(eff, add_audio)
        job_id = explicit if explicit is not None else digest[:ID_HEX_DIGITS]
        source = f"{file}:{line}"
        if not self.build:
            if self.exact is None:  # KeyLog.add, inlined: a million times
                self.log_request(int(digest[:15], 16) << 1 | (explicit is None))
                self.log_id(hash(job_id))
            elif self.duplicate(digest, job_id, explicit is not None, index, source, file,
                                line, item, matrix):
                return None
            self.expansion.add(source, job_id, explicit is not None, fingerprint, extra)
            shape = (eff["resolution"], eff["video_length"], model, count,
                     add_audio is not None)
            kind = self.shapes.index.get(shape)
            self.log_shape(self.shapes.new(shape) if kind is None else kind)
            return None
        self.expansion.add(source, job_id, explicit is not None, fingerprint, extra)
        get = eff.get
        return Job(
            id=job_id, index=index, image_url=eff["image_url"], resolution=eff["resolution"],
            video_length=eff["video_length"], audio_type=eff["audio_type"],
            prompt=get("prompt"),
            negative_prompt=DEFAULT_NEGATIVE_PROMPT if single and negative is None
            else get("negative_prompt"),
            extend_prompt=get("extend_prompt"), audio_url=get("audio_url"),
            is_premium_model=get("is_premium_model"), effect_code=get("effect_code"),
            webhook_url=get("webhook_url"), model_name=model, count=count,
            add_audio=None if add_audio is None else AddAudio(**add_audio),
            explicit_id=explicit is not None, source=source, fingerprint=fingerprint,
            extra=tuple(extra.items()) if extra else ())

    def rule_failures(self, eff: dict[str, Any], item: dict[str, Any], explicit: Any,
                      index: int, file: str, line: int, locate: Callable[[str], int] | None,
                      matrix: bool, skip: frozenset[str] = frozenset()) -> None:
        """Report why a job breaks the SPEC §3 rules (the slow, explaining path)."""
        where = _where(index, item)
        for key, what, fix in rule_problems(eff):
            if key in self.defaults and key not in item and key in _URL_FIELDS:
                continue  # reported once by check_defaults
            if key in skip or (key in self.defaults_dropped and key not in item):
                continue  # the schema's message about that key covers it
            at = locate(key) if locate is not None else line
            self.job_problem(file, at, where, what, fix, index, matrix)
        if explicit is not None and explicit in (".", ".."):
            at = locate("id") if locate is not None else line
            self.job_problem(file, at, where, f"id {explicit!r} is not a usable name",
                             "use letters or digits in the id", index, matrix)

    def duplicate(self, digest: str, job_id: str, explicit: bool, index: int, source: str,
                  file: str, line: int, item: dict[str, Any], matrix: bool) -> bool:
        """Report a repeated request or id; True when this job must not be added.

        Only jobs whose keys clashed in the first pass (`KeyLog`) are looked up: no other
        job can repeat the others' request or id.
        """
        assert self.exact is not None
        requests, ids = self.exact
        first = self.by_request.get(digest) if request_key(digest) in requests else None
        if first is not None and not (first[1] and explicit):
            self.job_problem(
                file, line, _where(index, item),
                f"same request as jobs[{first[0]}] ({first[2]}): "
                "the API would be paid twice for one video",
                "remove one of them, or give both an explicit id to make two videos on purpose",
                index, matrix)
            return True
        if first is None and request_key(digest) in requests:
            self.by_request[digest] = (index, explicit, source)
        other = self.by_id.get(job_id) if hash(job_id) in ids else None
        if other is not None:
            self.job_problem(file, line, _where(index, {"id": job_id}),
                             f"duplicate id {job_id!r} (also jobs[{other[0]}] at "
                             f"{other[2]})", "give each job its own id", index, matrix)
            return True
        if hash(job_id) in ids:
            self.by_id[job_id] = (index, explicit, source)
        return False

    def job_problem(self, file: str, line: int, where: str, what: str, fix: str, index: int,
                    matrix: bool) -> None:
        if matrix:  # one matrix line makes many jobs: report each problem once
            seen = self.matrix_problems.setdefault((line, what, fix), [index, 0])
            seen[1] += 1
        else:
            self.problems.append(Problem(file, line, where, what, fix))

    def report_matrix_problems(self) -> None:
        for (line, what, fix), (first, jobs) in self.matrix_problems.items():
            more = f" and {jobs - 1} more" if jobs > 1 else ""
            self.problems.append(Problem(self.file, line, f"matrix, jobs[{first}]{more}",
                                         what, fix))
        self.matrix_problems = {}


def _canonical_encoder() -> Callable[[Any], str]:
    """`jobs.canonical_json`, with the C encoder made once (a third faster per job)."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(sort_keys=True, separators=(",", ":"),
                                ensure_ascii=False).encode
    encode = make(None, None, json.encoder.encode_basestring, None, ":", ",", True, False,
                  True)
    return lambda value: "".join(encode(value, 0))


def _meant(keys: set[str] | frozenset[str]) -> set[str]:
    """Job fields that unknown keys are probably typos of (`promt` -> `prompt`)."""
    out: set[str] = set()
    for key in keys:
        out.update(difflib.get_close_matches(key, JOB_KEYS, n=1, cutoff=0.6))
    return out


def _where(index: int, item: Any) -> str:
    """`jobs[3] (id beach)`: the job's place in the final list and its explicit id."""
    job_id = item.get("id") if isinstance(item, dict) else None
    if isinstance(job_id, str) and ID_PATTERN.fullmatch(job_id):
        return f"jobs[{index}] (id {job_id})"
    return f"jobs[{index}]"

