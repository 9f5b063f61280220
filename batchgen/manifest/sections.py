"""The manifest's settings sections: `name`, `api`, `budget`, `output`, `storage`, and the
URLs in `defaults`, each turned into its frozen value with its problems reported.

Each function takes the section as parsed (already valid against the schema, or None when
absent or broken) and a `Report` callback that locates a problem by its path in the
document. Pure but for that callback: no files are read (`output.dir` is only joined to
the manifest's folder).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchgen.local_assets import DEFAULT_URL_LIFETIME, StorageSettings
from batchgen.manifest.model import (
    DEFAULT_BASE_URL,
    DEFAULT_FILENAME,
    DEFAULT_REPORT,
    MIN_POLL_INTERVAL,
    OWN_NAMES,
    ApiSettings,
    BudgetSettings,
    OutputSettings,
)
from batchgen.manifest.rules import (
    CONTROL,
    URL_FIELDS,
    filename_could_be,
    filename_problems,
    is_http_url,
    is_url_or_file,
    report_problems,
)
from batchgen.manifest_schema import ID_PATTERN
from batchgen.manifest_yaml import JsonPath
from batchgen.objstore import is_s3_url
from batchgen.outputs import work_dir
from batchgen.pricing import price_table
from batchgen.redact import redact_url

#: reports a problem at a path of the document: (path, what, fix)
Report = Callable[[JsonPath, str, str], None]


def batch_name(name: str | None, path: Path, problem: Report) -> str:
    """The batch's name: `name:`, else the manifest file's stem."""
    if name is None:
        name = path.stem
        if not ID_PATTERN.fullmatch(name) or name in (".", ".."):
            problem((), f"no name given, and the file name {name!r} cannot be one",
                    "add `name: my-batch` (letters, digits, '.', '_', '-')")
    elif name in (".", ".."):
        problem(("name",), f"name {name!r} would leave the output folder",
                "choose a name with letters or digits")
    return name


def api_settings(api: dict[str, Any], problem: Report) -> ApiSettings:
    base_url = api.get("base_url", DEFAULT_BASE_URL)
    if not is_http_url(base_url):
        shown = redact_url(str(base_url))
        problem(("api", "base_url"), f"api.base_url {shown!r} is not an http(s) URL",
                f"use the API's root, e.g. {DEFAULT_BASE_URL}")
    defaults = ApiSettings()
    interval = api.get("poll_interval", defaults.poll_interval)
    if not math.isfinite(interval):
        problem(("api", "poll_interval"),
                f"api.poll_interval is {interval}, not a finite number of seconds",
                "use a number of seconds such as 5")
        interval = defaults.poll_interval
    elif 0 < interval < MIN_POLL_INTERVAL:
        problem(("api", "poll_interval"),
                f"api.poll_interval is {interval}, below {MIN_POLL_INTERVAL} s",
                "use a number of seconds such as 5; the runner adapts it later")
    return ApiSettings(base_url=base_url.rstrip("/"),
                       concurrency=int(api.get("concurrency", defaults.concurrency)),
                       poll_interval=float(interval),
                       poll_batch=int(api.get("poll_batch", defaults.poll_batch)))


def budget_settings(budget: dict[str, Any]) -> BudgetSettings:
    max_credits = budget.get("max_credits")
    return BudgetSettings(max_credits=None if max_credits is None else int(max_credits),
                          prices=price_table(budget.get("prices")))


def output_settings(output: dict[str, Any], name: str, folder: Path, problem: Report
                    ) -> OutputSettings:
    """`output`, its names checked; `folder` is the manifest's (output.dir is relative)."""
    filename = output.get("filename", DEFAULT_FILENAME)
    report = output.get("report", DEFAULT_REPORT)
    _check_names(filename, report, name, problem)
    delete_remote = bool(output.get("delete_remote", False))
    if is_s3_url(str(output.get("dir", ""))):
        return OutputSettings(dir=work_dir(folder, output["dir"]), filename=filename,
                              report=report, delete_remote=delete_remote,
                              bucket=output["dir"])
    out_dir = Path(output["dir"]) if "dir" in output else Path("output") / name
    if CONTROL.search(str(out_dir)):
        problem(("output", "dir"), f"output.dir {str(out_dir)!r} contains a control "
                "character (NUL, tab, newline...)", "remove it")
        out_dir = Path("output") / name
    # like docker compose and terraform: relative to the manifest, not to the working
    # directory, so cron (started elsewhere) finds the same state and pays nothing twice
    return OutputSettings(dir=folder / out_dir, filename=filename, report=report,
                          delete_remote=delete_remote)


def _check_names(filename: str, report: str, name: str, problem: Report) -> None:
    """output.filename and output.report: safe, and never a name batchgen writes."""
    for what, fix in filename_problems(filename):
        problem(("output", "filename"), what, fix)
    if "/" in report or "\\" in report or report in (".", ".."):
        problem(("output", "report"), f"output.report {report!r} leaves the output dir",
                "give a plain file name such as report.csv")
    else:
        for what, fix in report_problems(report, filename, name):
            problem(("output", "report"), what, fix)
    for own in OWN_NAMES:
        if filename_could_be(filename, name, own):
            problem(("output", "filename"),
                    f"output.filename {filename!r} could name a video {own}, a name batchgen "
                    "writes itself (its totals, state, HTML report or posters)",
                    "end the template with .mp4, e.g. \"{id}.mp4\"")
            break


def storage_settings(storage: dict[str, Any], problem: Report) -> tuple[StorageSettings, bool]:
    """`storage`, and whether storage.upload is set but wrong (then reported once here)."""
    upload = storage.get("upload")
    broken = False
    if upload is not None and not is_s3_url(upload):
        problem(("storage", "upload"), f"storage.upload {upload!r} is not an "
                "s3://bucket/prefix URL", "a bucket name has 3-63 lowercase letters, "
                "digits, '.' or '-', e.g. upload: s3://my-bucket/batchgen")
        broken, upload = True, None
    return StorageSettings(upload=upload, url_lifetime=int(storage.get(
        "url_lifetime", DEFAULT_URL_LIFETIME))), broken


def check_default_urls(defaults: dict[str, Any], problem: Report) -> None:
    """URLs in defaults are checked once here, not once per job that inherits them."""
    for name in URL_FIELDS:
        value = defaults.get(name)
        if value is not None and not is_url_or_file(name, value):
            problem(("defaults", name), f"defaults.{name} {value!r} is not an http(s) URL",
                    "use a public http:// or https:// URL the API can fetch")
    add_audio = defaults.get("add_audio") or {}
    url = add_audio.get("audio_url")
    if url is not None and not is_url_or_file("audio_url", url):
        problem(("defaults", "add_audio", "audio_url"),
                f"defaults.add_audio.audio_url {url!r} is not an http(s) URL",
                "use a public http:// or https:// URL the API can fetch")
