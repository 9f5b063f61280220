"""One load of one manifest: check the document, expand its jobs in order.

Owns the walk over a parsed manifest: its settings sections, `defaults` merged under each
job (and `jobs.BUILTIN_DEFAULTS` under those), the job sources in order (`jobs`, then
`matrix` combinations, then `jobs_file` rows), the SPEC §3 rules on each effective job
(rules.py), repeated requests and ids, and every problem located by file and line (the
data file and its line for `jobs_file` rows), collected and raised at once as a
`ManifestError` so one run of `validate` shows everything to fix.

A first pass only checks (and keeps compact keys); the jobs are built again, one at a
time, each time a consumer iterates `Manifest.jobs`. Reading the data files and hashing
local files are the only I/O; deliberately does not price, plan or touch the output dir.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import json.encoder
import math
from collections.abc import Callable, Iterator
from pathlib import Path
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
from batchgen.manifest.model import (
    DEFAULT_BASE_URL,
    DEFAULT_FILENAME,
    DEFAULT_REPORT,
    MAX_JOBS,
    MIN_POLL_INTERVAL,
    OWN_NAMES,
    ApiSettings,
    BudgetSettings,
    Manifest,
    OutputSettings,
)
from batchgen.manifest.rules import (
    CONTROL,
    URL_FIELDS,
    filename_could_be,
    filename_problems,
    is_http_url,
    is_url_or_file,
    quick_rule_check,
    report_problems,
    rule_problems,
)
from batchgen.manifest_rows import CSV_EXTENSIONS, JSONL_EXTENSIONS, MAX_DATA_BYTES, Row
from batchgen.manifest_schema import (
    ID_PATTERN,
    INT_FIELDS,
    JOB_KEYS,
    Validators,
    explain,
    job_is_valid,
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
from batchgen.manifest_yaml import JsonPath, ParsedYaml
from batchgen.objstore import is_s3_url
from batchgen.outputs import work_dir
from batchgen.pricing import price_table
from batchgen.redact import redact_url


class Loader:
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
                return Loader(self.path, self.parsed, self.validators, self.before,
                               self.file, exact=(requests, ids), local=self.local).load()
        if self.problems:
            raise ManifestError(self.problems)
        path, parsed, validators, file = self.path, self.parsed, self.validators, self.file
        local = self.local
        count, digest = self.expansion.count, self.expansion.hexdigest()

        def replay() -> Iterator[Job]:
            loader = Loader(path, parsed, validators, [], file, build=True, local=local)
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
        if CONTROL.search(str(out_dir)):
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
        for name in URL_FIELDS:
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
            if key in self.defaults and key not in item and key in URL_FIELDS:
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
