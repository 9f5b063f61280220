"""Manifest loading: YAML (or a mapping built in code) in, validated frozen dataclasses out.

Owns reading a manifest (and its `jobs_file`), checking it against
`schemas/manifest.schema.json` and the rules of SPEC §3, and expanding it into the final,
ordered list of `Job`s: `jobs`, then `matrix` combinations, then `jobs_file` rows, each
with `defaults` merged under it and `jobs.BUILTIN_DEFAULTS` under those. Every problem is
collected and raised at once as a `ManifestError`, located by file and line (the data
file and its line for `jobs_file` rows), so one run of `validate` shows everything to fix.

Reading files is the only I/O here; there is no clock, no network and no state between
calls. Deliberately does not price, plan or touch the output dir.

    load.py      the entry points: a file within its size limit, or a mapping -> Loader
    loader.py    one load: the document, its settings and defaults, the passes, replays
    sections.py  the settings sections (name, api, budget, output, storage) -> values
    sources.py   the job entries in order: jobs, matrix, jobs_file rows
    job.py       one job: defaults merged under it, its rules, digest and keys, the Job
    problems.py  problems located by file and line; repeated requests and ids
    rules.py     SPEC §3 rules on one effective job; unsafe output names (pure)
    messages.py  the schema's errors as "what is wrong — what to do"
    model.py     the frozen values (Manifest, *Settings) and the names and limits

Beside this package (imported by it, never the other way round): manifest_yaml.py (YAML
with line numbers), manifest_schema.py (the JSON schema, a fast job check),
manifest_rows.py (CSV / JSON Lines rows) and manifest_stream.py (the expansion replayed
on demand, its digest and the compact keys that find repeats).

Every name below is the package's interface: import it from `batchgen.manifest`.
"""

from __future__ import annotations

from batchgen.manifest.load import load_manifest, load_manifest_data, read_limited
from batchgen.manifest.model import (
    DEFAULT_BASE_URL,
    DEFAULT_FILENAME,
    DEFAULT_REPORT,
    FILENAME_FIELDS,
    MAPPING_FILE,
    MAX_JOBS,
    MAX_MANIFEST_BYTES,
    MIN_POLL_INTERVAL,
    OWN_NAMES,
    STATE_DIR_NAME,
    SUMMARY_NAME,
    UNIQUE_FILENAME_FIELDS,
    ApiSettings,
    BudgetSettings,
    Manifest,
    OutputSettings,
)
from batchgen.manifest.rules import (
    filename_could_be,
    filename_problems,
    is_http_url,
    is_url_or_file,
    quick_rule_check,
    report_problems,
    rule_problems,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_FILENAME",
    "DEFAULT_REPORT",
    "FILENAME_FIELDS",
    "MAPPING_FILE",
    "MAX_JOBS",
    "MAX_MANIFEST_BYTES",
    "MIN_POLL_INTERVAL",
    "OWN_NAMES",
    "STATE_DIR_NAME",
    "SUMMARY_NAME",
    "UNIQUE_FILENAME_FIELDS",
    "ApiSettings",
    "BudgetSettings",
    "Manifest",
    "OutputSettings",
    "filename_could_be",
    "filename_problems",
    "is_http_url",
    "is_url_or_file",
    "load_manifest",
    "load_manifest_data",
    "quick_rule_check",
    "read_limited",
    "report_problems",
    "rule_problems",
]
