"""The values a manifest becomes, and the names and limits they are checked against.

Owns the frozen settings (`ApiSettings`, `BudgetSettings`, `OutputSettings`) and the loaded
`Manifest`, and the constants other modules compare with (the default base URL, file names
batchgen writes itself, the size limits). Pure values: no parsing, no I/O.

Limits (documented in the README): a manifest file may be at most 20 MB (long job lists
belong in a `jobs_file`, which may be up to 256 MB); a manifest expands to at most
1,000,000 jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batchgen.local_assets import StorageSettings
from batchgen.manifest_stream import Jobs
from batchgen.pricing import PriceTable

DEFAULT_BASE_URL = "https://openapi.akool.com"
DEFAULT_FILENAME = "{id}.mp4"
DEFAULT_REPORT = "report.csv"
MAX_MANIFEST_BYTES = 20 * 1024 * 1024
MAX_JOBS = 1_000_000
FILENAME_FIELDS = ("id", "name", "index", "resolution", "video_length", "task_id")
#: At least one of these makes every job's file name different.
UNIQUE_FILENAME_FIELDS = ("id", "index", "task_id")
#: what batchgen itself writes in the output dir: never a report's or a video's name
SUMMARY_NAME = "summary.json"
STATE_DIR_NAME = ".batchgen"
#: every other name batchgen writes in the output dir: report.html (report_html.HTML_NAME)
#: and the posters folder (posters.POSTER_DIR); neither module is imported here (Jinja2,
#: PyAV), so tests/test_manifest_settings.py pins that the names agree
OWN_NAMES = (SUMMARY_NAME, STATE_DIR_NAME, "report.html", "posters")
#: the smallest first poll wait: anything shorter only hammers the API
MIN_POLL_INTERVAL = 0.01
#: how problems in a manifest given as a mapping name their file
MAPPING_FILE = "<mapping>"


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

