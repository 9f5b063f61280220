"""Where a load's problems go, and how a repeated request or id is found.

Owns `Reporter` (each problem located by file and line; a problem of a `matrix` line,
which makes many jobs, reported once with how many jobs it hits) and `Repeats` (the
compact keys of the first pass, then the exact comparison of the suspects in a second).
Also the small helpers that name a job (`where`) or guess what a typo meant (`meant`).
Deliberately decides nothing about what is wrong: the loader, the sources and the job
checks say that.
"""

from __future__ import annotations

import difflib
from typing import Any

from batchgen.errors import Problem
from batchgen.manifest_schema import ID_PATTERN, JOB_KEYS
from batchgen.manifest_stream import KeyLog, request_key
from batchgen.manifest_yaml import JsonPath, ParsedYaml


class Reporter:
    """The problems of one load, in the order found."""

    def __init__(self, file: str, parsed: ParsedYaml, problems: list[Problem]) -> None:
        #: the manifest as problems name it (its path, or `<mapping>`)
        self.file = file
        self.parsed = parsed
        #: every problem so far (the caller's list: problems from parsing come first)
        self.problems = problems
        #: (line, what, fix) -> [first index, jobs]: one matrix line makes many jobs
        self.matrix: dict[tuple[int, str, str], list[int]] = {}

    def at(self, path: JsonPath, what: str, fix: str, where: str = "") -> None:
        """A problem at a place in the manifest (its line found from the path)."""
        self.problems.append(Problem(self.file, self.parsed.line_of(path), where, what, fix))

    def job(self, file: str, line: int, where: str, what: str, fix: str, index: int,
            matrix: bool) -> None:
        """A problem of one job; a matrix job's is counted and told once per line."""
        if matrix:
            seen = self.matrix.setdefault((line, what, fix), [index, 0])
            seen[1] += 1
        else:
            self.problems.append(Problem(file, line, where, what, fix))

    def flush_matrix(self) -> None:
        """The matrix problems counted so far, each once: `matrix, jobs[4] and 9 more`."""
        for (line, what, fix), (first, jobs) in self.matrix.items():
            more = f" and {jobs - 1} more" if jobs > 1 else ""
            self.problems.append(Problem(self.file, line, f"matrix, jobs[{first}]{more}",
                                         what, fix))
        self.matrix = {}


class Repeats:
    """Two jobs with one request (paid twice for one video) or one id.

    The first pass (`exact` None) only logs 8-byte keys per job (`KeyLog`); when keys
    clash, a second pass is given the suspect keys as `exact` and compares those jobs'
    full digests and ids: no other job can repeat the others' request or id.
    """

    def __init__(self, exact: tuple[set[int], set[int]] | None) -> None:
        #: None: log compact keys (first pass); else the suspect (request, id) keys
        self.exact = exact
        self.keys = KeyLog()
        #: `KeyLog.add`, inlined by the job checks: they run a million times
        self.log_request, self.log_id = self.keys.requests.append, self.keys.ids.append
        #: first suspect job per request digest / per id: (index, explicit id?, "FILE:LINE")
        self.by_request: dict[str, tuple[int, bool, str]] = {}
        self.by_id: dict[str, tuple[int, bool, str]] = {}

    def duplicate(self, digest: str, job_id: str, explicit: bool, index: int, source: str,
                  file: str, line: int, item: dict[str, Any], matrix: bool,
                  report: Reporter) -> bool:
        """Report a repeated request or id; True when this job must not be added.

        Only jobs whose keys clashed in the first pass are looked up.
        """
        assert self.exact is not None
        requests, ids = self.exact
        suspect = request_key(digest) in requests
        first = self.by_request.get(digest) if suspect else None
        if first is not None and not (first[1] and explicit):
            report.job(file, line, where(index, item),
                       f"same request as jobs[{first[0]}] ({first[2]}): "
                       "the API would be paid twice for one video",
                       "remove one of them, or give both an explicit id to make two videos "
                       "on purpose", index, matrix)
            return True
        if first is None and suspect:
            self.by_request[digest] = (index, explicit, source)
        other = self.by_id.get(job_id) if hash(job_id) in ids else None
        if other is not None:
            report.job(file, line, where(index, {"id": job_id}),
                       f"duplicate id {job_id!r} (also jobs[{other[0]}] at {other[2]})",
                       "give each job its own id", index, matrix)
            return True
        if hash(job_id) in ids:
            self.by_id[job_id] = (index, explicit, source)
        return False


def meant(keys: set[str] | frozenset[str]) -> set[str]:
    """Job fields that unknown keys are probably typos of (`promt` -> `prompt`)."""
    out: set[str] = set()
    for key in keys:
        out.update(difflib.get_close_matches(key, JOB_KEYS, n=1, cutoff=0.6))
    return out


def where(index: int, item: Any) -> str:
    """`jobs[3] (id beach)`: the job's place in the final list and its explicit id."""
    job_id = item.get("id") if isinstance(item, dict) else None
    if isinstance(job_id, str) and ID_PATTERN.fullmatch(job_id):
        return f"jobs[{index}] (id {job_id})"
    return f"jobs[{index}]"
