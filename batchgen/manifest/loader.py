"""One load of one manifest: check the document, expand its jobs in order.

Owns the walk over a parsed manifest: the document against the schema, its settings
sections (sections.py), `defaults` (salvaged when only some of its keys are wrong), then
the job sources in order (sources.py), each job checked by `JobBuilder` (job.py). Every
problem is located by file and line (the data file and its line for `jobs_file` rows)
and all of them are raised at once as a `ManifestError`, so one run of `validate` shows
everything to fix.

A first pass only checks, keeping compact keys; when two jobs' keys clash, a second pass
compares those exactly (problems.py). The jobs are then built again, one at a time, each
time a consumer iterates `Manifest.jobs` (a replay, which fails if the files changed).
Deliberately does not price, plan or touch the output dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from batchgen.errors import ManifestError, Problem
from batchgen.jobs import BUILTIN_DEFAULTS, Job
from batchgen.local_assets import LocalAssets, StorageSettings
from batchgen.manifest import sections
from batchgen.manifest.job import Defaults, JobBuilder
from batchgen.manifest.memo import Inputs, LoadMemo
from batchgen.manifest.memo_row import Remembered
from batchgen.manifest.messages import explain
from batchgen.manifest.model import ApiSettings, BudgetSettings, Manifest, OutputSettings
from batchgen.manifest.problems import Repeats, Reporter, meant
from batchgen.manifest.sources import JobSources
from batchgen.manifest_schema import Validators
from batchgen.manifest_stream import Jobs, Shapes
from batchgen.manifest_yaml import JsonPath, ParsedYaml


class Settings(NamedTuple):
    """The document's settings sections, as checked by `Loader.prepare`."""

    name: str
    api: ApiSettings
    budget: BudgetSettings
    output: OutputSettings
    storage: StorageSettings


class Loader:
    """One load of one manifest: collects problems, expands jobs in order."""

    def __init__(self, path: Path, parsed: ParsedYaml, validators: Validators,
                 problems: list[Problem], file: str | None = None, *,
                 exact: tuple[set[int], set[int]] | None = None, build: bool = False,
                 local: LocalAssets | None = None, memo: LoadMemo | None = None) -> None:
        self.path = path
        self.parsed = parsed
        self.validators = validators
        #: the problems found before (YAML), for a second, exact pass
        self.before = list(problems)
        self.report = Reporter(str(path) if file is None else file, parsed, problems)
        self.repeats = Repeats(exact)
        #: build `Job`s (a replay for a consumer) instead of only checking them
        self.build = build
        #: local files already hashed by an earlier pass of this load (None: the first)
        self.local = local
        #: where a validated load is remembered, and recalled by a first pass (memo.py)
        self.memo = memo
        self.bad_sections: set[str] = set()
        #: paths the document schema found wrong (to salvage what `defaults` got right)
        self.bad_paths: list[JsonPath] = []

    # -- driver ----------------------------------------------------------------------

    def load(self) -> Manifest:
        """Check everything in one streaming pass; the jobs are replayed when used.

        With a memo, a first pass whose inputs are those of a load already validated
        takes that load's result instead of expanding the jobs (memo.py)."""
        settings, sources = self.prepare()
        if self.memo is not None and self.repeats.exact is None:
            known = self.memo.recall() if not self.report.problems else None
            if known is not None:
                return self.manifest(settings, sources.jobs.local, known)
            sources.jobs.local.inputs = Inputs(clock=self.memo.clock())
        for _ in self.expand_jobs(sources):
            pass
        self.report.flush_matrix()
        jobs = sources.jobs
        if self.repeats.exact is None:
            requests, ids = self.repeats.keys.suspects()
            if requests or ids:  # maybe the same request or id twice: look exactly
                return Loader(self.path, self.parsed, self.validators, self.before,
                              self.report.file, exact=(requests, ids),
                              local=jobs.local, memo=self.memo).load()
        if self.report.problems:
            raise ManifestError(self.report.problems)
        shapes = jobs.shapes if jobs.shapes.usable else None
        made = Remembered(jobs.expansion.count, jobs.expansion.hexdigest(),
                          None if shapes is None else list(shapes.kinds),
                          bytes(shapes.order) if shapes is not None else b"",
                          {url: str(path) for url, path in jobs.local.uploads.items()})
        if self.memo is not None and jobs.local.inputs is not None:
            self.memo.remember(made, jobs.local.inputs)
        return self.manifest(settings, jobs.local, made)

    def manifest(self, settings: Settings, local: LocalAssets, made: Remembered) -> Manifest:
        """The loaded manifest: its settings, and jobs replayed from the files (checked
        against `made`'s count and digest each time)."""
        path, parsed, validators, file = self.path, self.parsed, self.validators, \
            self.report.file
        count, digest = made.count, made.digest

        def replay() -> Iterator[Job]:
            loader = Loader(path, parsed, validators, [], file, build=True, local=local)
            return loader.replay(count, digest)

        shapes = None
        if made.kinds is not None:
            shapes = Shapes()
            for kind in made.kinds:
                shapes.new(kind)
            shapes.order = bytearray(made.order)
        return Manifest(path=self.path, name=settings.name, api=settings.api,
                        budget=settings.budget, output=settings.output,
                        jobs=Jobs(replay, count, digest, shapes),
                        storage=settings.storage,
                        uploads={url: Path(p) for url, p in made.uploads.items()})

    def prepare(self) -> tuple[Settings, JobSources]:
        """The document's checks and settings, and the job sources with the defaults that
        are merged under each job."""
        self.check_document()
        problem = self.report.at
        name = sections.batch_name(self.section("name"), self.path, problem)
        api = sections.api_settings(self.section("api") or {}, problem)
        budget = sections.budget_settings(self.section("budget") or {})
        output = sections.output_settings(self.section("output") or {}, name,
                                          self.path.parent, problem)
        storage, upload_broken = sections.storage_settings(self.section("storage") or {},
                                                           problem)
        local = self.local
        if local is None:  # the first pass; later passes share its hashed files
            local = LocalAssets(self.path.parent, storage.upload, upload_broken=upload_broken)
        defaults = self.defaults()
        sections.check_default_urls(defaults.given, problem)
        jobs = JobBuilder(defaults, local, self.report, self.repeats, self.build)
        return (Settings(name, api, budget, output, storage),
                JobSources(self.path.parent, self.parsed, self.validators, jobs))

    def expand_jobs(self, sources: JobSources) -> Iterator[Job | None]:
        """Every job entry in order: a Job when building, else None once checked."""
        yield from sources.inline(self.section("jobs"))
        yield from sources.matrix(self.section("matrix"))
        yield from sources.data_file(self.section("jobs_file"))

    def replay(self, count: int, digest: str) -> Iterator[Job]:
        """The jobs again, for a consumer; a problem now, or another expansion than the
        `count` jobs of `digest` that were validated, means the files changed."""
        _, sources = self.prepare()
        problems = self.report.problems
        for job in self.expand_jobs(sources):
            if problems:
                break
            if job is not None:
                yield job
        self.report.flush_matrix()
        if problems:
            raise ManifestError(problems)
        expansion = sources.jobs.expansion
        if expansion.count != count or expansion.hexdigest() != digest:
            raise ManifestError([Problem(
                self.report.file, 1, "", "the manifest's files changed while batchgen read "
                "them", "run the command again once nothing edits them")])

    # -- the document ----------------------------------------------------------------

    def check_document(self) -> None:
        for path, what, fix in explain(self.validators.document, self.parsed.value):
            self.bad_sections.add(str(path[0]) if path else "")
            self.bad_paths.append(path)
            self.report.at(path, what, fix)

    def section(self, key: str) -> Any:
        """A top-level value, or None when absent or broken (already reported)."""
        return None if key in self.bad_sections else self.parsed.value.get(key)

    def defaults(self) -> Defaults:
        """`defaults`, salvaged when only some of its keys break the schema.

        So that its errors do not hide the jobs' own: the jobs are still checked, with the
        broken keys left out, and a rule about a left-out key is not reported again.
        """
        given = self.section("defaults") or {}
        usable = "defaults" not in self.bad_sections
        doc = self.parsed.value.get("defaults")
        bad = [p for p in self.bad_paths if p and p[0] == "defaults"]
        dropped: frozenset[str] = frozenset()
        if bad and isinstance(doc, dict) and all(len(p) >= 2 for p in bad):
            left_out = {str(p[1]) for p in bad}
            given = {k: v for k, v in doc.items() if k not in left_out}
            dropped = frozenset(left_out | meant(left_out))
            usable = True
        return Defaults(given, {**BUILTIN_DEFAULTS, **given}, dropped, usable)
