"""Where a manifest's jobs come from, in order: `jobs`, `matrix`, then `jobs_file` rows.

Owns walking each source and numbering its entries (a job's index is its place in the
final list, whether it is valid or not), the schema check of each inline job and data
row (an invalid one is explained, and its rules checked without the broken keys), globs
expanded to one job per local file, and the limits (at most `MAX_JOBS` per manifest).
Each valid entry goes to `JobBuilder.add_job`. Reads the data file a row at a time
(manifest_stream.py); knows nothing of the rules themselves.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchgen.errors import Problem
from batchgen.jobs import Job
from batchgen.local_assets import LOCAL_FIELDS
from batchgen.manifest.job import JobBuilder
from batchgen.manifest.messages import explain
from batchgen.manifest.model import MAX_JOBS
from batchgen.manifest.problems import Reporter, where
from batchgen.manifest_rows import CSV_EXTENSIONS, JSONL_EXTENSIONS, MAX_DATA_BYTES, Row
from batchgen.manifest_schema import JOB_KEYS, Validators, job_is_valid
from batchgen.manifest_stream import check_data_file, open_rows
from batchgen.manifest_yaml import JsonPath, ParsedYaml


class JobSources:
    """The job entries of one load, numbered in order."""

    def __init__(self, folder: Path, parsed: ParsedYaml, validators: Validators,
                 jobs: JobBuilder) -> None:
        #: the manifest's folder: `jobs_file` and globs are relative to it
        self.folder = folder
        self.parsed = parsed
        self.validators = validators
        self.jobs = jobs
        self.report: Reporter = jobs.report
        self.count = 0                 # job entries seen, valid or not: the next index
        #: jobs_file: {extra_columns: keep}: columns/keys that are no job field are kept
        self.keep_extra = False
        #: the jobs_file as the manifest writes it: what the expansion digest names its
        #: rows' file by, however the manifest's path was typed (`ExpansionDigest.add`)
        self.data_origin = ""
        self.suggestions: dict[tuple[str, str], str] = {}  # difflib results, this load only

    def next_index(self) -> int:
        self.count += 1
        return self.count - 1

    def inline(self, jobs: Any) -> Iterator[Job | None]:
        """`jobs:` (None when absent or broken: nothing to walk)."""
        if not isinstance(jobs, list):
            return
        for i, item in enumerate(jobs):
            index = self.next_index()
            line = self.parsed.line_of(("jobs", i))

            def locate(key: str, i: int = i, line: int = line) -> int:
                return self.parsed.lines.get(("jobs", i, key), line)

            if not job_is_valid(item):
                before = len(self.report.problems)
                paths = []
                for sub, what, fix in explain(self.validators.job, item, "the job",
                                              self.suggestions):
                    self.report.at(("jobs", i, *sub), what, fix, where(index, item))
                    paths.append(sub)
                if len(self.report.problems) == before:  # pragma: no cover - disagree
                    self.report.at(("jobs", i), "not a valid job",
                                   "see manifests/example.yaml", where(index, item))
                self.jobs.rules_despite_schema(item, paths, index, self.report.file, line,
                                               locate)
                continue
            yield self.jobs.add_job(item, index, self.report.file, line, locate)

    def matrix(self, matrix: Any) -> Iterator[Job | None]:
        """`matrix:`, one job per combination of its columns (globs expanded first)."""
        if not matrix:
            return
        matrix = {k: self.matrix_files(k, v) for k, v in matrix.items()}
        keys = list(matrix)
        total = math.prod(len(matrix[k]) for k in keys)
        if not total:
            return
        line = self.parsed.line_of(("matrix",))
        if self.count + total > MAX_JOBS:
            self.report.at(("matrix",), f"the matrix expands to {total:,} jobs, more than "
                           f"batchgen's limit of {MAX_JOBS:,} per manifest",
                           "split the batch into several manifests")
            return
        for combo in itertools.product(*(matrix[k] for k in keys)):
            index = self.next_index()
            item = dict(zip(keys, combo, strict=True))

            def locate(key: str) -> int:
                return self.parsed.lines.get(("matrix", key), line)

            yield self.jobs.add_job(item, index, self.report.file, line, locate, matrix=True)

    def matrix_files(self, key: str, values: list[Any]) -> list[Any]:
        """A matrix column with each glob (`images/*.png`) replaced by its files."""
        if key not in LOCAL_FIELDS:
            return values
        out: list[Any] = []
        for value in values:
            files = self.jobs.local.expand(value)
            if files is None:
                out.append(value)
            elif not files:
                self.report.at(("matrix", key), f"matrix.{key} {value!r} matches no file",
                               "the pattern is relative to the manifest's folder")
            else:
                out.extend(files)
        return out

    def data_file(self, jobs_file: Any) -> Iterator[Job | None]:
        """`jobs_file:`, a CSV or JSON Lines file read a row at a time."""
        if jobs_file is None:
            return
        at: JsonPath = ("jobs_file",)
        if isinstance(jobs_file, dict):  # {path: ..., extra_columns: keep}
            self.keep_extra = jobs_file.get("extra_columns") == "keep"
            at, jobs_file = ("jobs_file", "path"), jobs_file["path"]
        data_path = self.folder / jobs_file
        display = str(data_path)
        self.data_origin = str(jobs_file)
        if not jobs_file.lower().endswith(CSV_EXTENSIONS + JSONL_EXTENSIONS):
            self.report.at(at, f"jobs_file {jobs_file!r} is neither .csv, .jsonl nor "
                           ".ndjson", "name a CSV (.csv) or JSON Lines (.jsonl) file")
            return
        if self.jobs.local.inputs is not None:  # looked at before it is read (memo.py)
            self.jobs.local.inputs.file(data_path, content=True)
        trouble = check_data_file(data_path, display, MAX_DATA_BYTES)
        if isinstance(trouble, Problem):
            self.report.problems.append(trouble)
            return
        if trouble is not None:
            what, fix = trouble
            if what.endswith("does not exist"):
                fix = "the path is relative to the manifest's folder"
            self.report.at(at, f"jobs_file: {what}", fix)
            return
        yield from self.rows(data_path, display)

    def rows(self, data_path: Path, display: str) -> Iterator[Job | None]:
        for row in open_rows(data_path, display, self.keep_extra):
            if isinstance(row, Problem):
                self.report.problems.append(row)
                continue
            if self.count >= MAX_JOBS:
                self.report.problems.append(Problem(
                    display, row.line, "", f"more than {MAX_JOBS:,} jobs in this manifest",
                    "split the batch into several manifests"))
                return
            image = row.fields.get("image_url")
            # a URL is never a glob: skip the call for it (once per row)
            files = None if image.__class__ is str and "://" in image else \
                self.jobs.local.expand(image)
            if files is None:
                job = self.add_row(row, display)
                if job is not None:  # a check-only pass yields nothing: a million resumes
                    yield job
            else:  # a glob: one job per file
                yield from self.glob_rows(row, display, files)

    def glob_rows(self, row: Row, display: str, files: list[str]) -> Iterator[Job | None]:
        if not files:
            self.report.problems.append(Problem(
                display, row.line, where(self.count, row.fields),
                f"image_url {row.fields['image_url']!r} matches no file",
                "the pattern is relative to the manifest's folder"))
        for name in files:
            yield self.add_row(row._replace(fields={**row.fields, "image_url": name}), display)

    def add_row(self, row: Row, display: str) -> Job | None:
        index = self.count  # next_index, inlined: once per row
        self.count += 1
        item, extra = row.fields, row.extra
        if self.keep_extra and extra is None and not JOB_KEYS.issuperset(item):
            # JSONL keys that are no job field: the user's own, kept as text for the report
            extra = {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                     for k, v in item.items() if k not in JOB_KEYS}
            item = {k: v for k, v in item.items() if k in JOB_KEYS}
        if not job_is_valid(item):
            at_job = where(index, item)
            paths = []
            for sub, what, fix in explain(self.validators.job, item, "the job",
                                          self.suggestions):
                self.report.problems.append(Problem(display, row.line, at_job, what, fix))
                paths.append(sub)
            if not paths:  # pragma: no cover - job_is_valid and the schema disagree
                self.report.problems.append(Problem(display, row.line, at_job,
                                                    "not a valid job",
                                                    "see schemas/manifest.schema.json"))
            self.jobs.rules_despite_schema(item, paths, index, display, row.line, None,
                                           skip=row.unsure)
            return None
        return self.jobs.add_job(item, index, display, row.line, None, extra=extra,
                                 skip=row.unsure, origin=self.data_origin)
