"""Manifest loading: YAML in, validated frozen dataclasses out.

(Contract stub — load_manifest is being implemented.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from batchgen.jobs import Job
from batchgen.pricing import PriceTable

DEFAULT_BASE_URL = "https://openapi.akool.com"


@dataclass(frozen=True, slots=True)
class ApiSettings:
    base_url: str = DEFAULT_BASE_URL
    concurrency: int = 5
    poll_interval: float = 5.0
    poll_batch: int = 50


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    max_credits: int | None = None
    prices: PriceTable = field(default_factory=PriceTable)


@dataclass(frozen=True, slots=True)
class OutputSettings:
    dir: Path = Path("output")
    filename: str = "{id}.mp4"
    report: str = "report.csv"
    delete_remote: bool = False


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    name: str
    api: ApiSettings
    budget: BudgetSettings
    output: OutputSettings
    jobs: tuple[Job, ...]


def load_manifest(path: str | Path) -> Manifest:
    """Load, validate and expand a manifest; raise ManifestError with every problem."""
    raise NotImplementedError
