"""The run's reports, at its end however it ended: written from the state alone.

report.csv, summary.json and report.html, each streamed from the store's cursor
(report.py, report_stream.py), with the run's figures recorded in the state's history
first; then published to the output bucket when there is one (a refusal is told, the
reports stay local). What writing them needs is made ready while the run's last tasks
are in flight (`warm_reports`).

Deliberately not here: what the reports hold (report*.py), when the run ends (session.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.settings import Resolved

if TYPE_CHECKING:  # imported lazily at run time, to keep every command's start-up light
    from batchgen.outputs import BucketOutput
    from batchgen.report import Totals
    from batchgen.runner import Runner
    from batchgen.state_store import StateStore


async def warm_reports(runner: Runner) -> None:
    """Once the last tasks are in flight (the run only waits on the API), import what
    writing the reports needs (Jinja2, the report modules) and compile report.html's
    template in a worker thread: ~0.1-0.2 s less between a run's last download and its
    exit on the loaded VM (issue 15). Not sooner: an import holds the interpreter for
    tens of ms at a time, which would delay the creates. Only preparation: if it fails,
    the reports do it again themselves and say what went wrong."""
    def warm() -> None:
        import batchgen.report
        import batchgen.report_stream  # noqa: F401 - imported for the reports to come
        from batchgen.report_html import warm
        warm()

    await runner.drained()
    await asyncio.get_running_loop().run_in_executor(None, warm)


async def write_reports(store: StateStore, resolved: Resolved, committed: int,
                         requests: Mapping[str, int], wall: float,
                         bucket: BucketOutput | None, warn: Callable[[str], None]
                         ) -> tuple[dict[str, Any], Path]:
    """report.csv, summary.json and report.html from the state alone, however the run
    ended (and published to the output bucket, when there is one), each streamed from
    the store's cursor (report.py, report_stream.py)."""
    from batchgen.report import add_history, stream_reports
    from batchgen.report_stream import write_html_stream
    from batchgen.runner import utc_now_iso
    manifest = resolved.manifest
    history = store.record_run(wall_seconds=wall, requests=requests,
                               budget=resolved.max_credits, finished_at=utc_now_iso())

    def summary_of(totals: Totals) -> dict[str, Any]:
        summary = totals.summary(wall_seconds=wall, requests=requests)
        summary["credits_committed"] = committed
        summary["budget"] = resolved.max_credits
        return add_history(summary, history)

    report, summary = stream_reports(resolved.output_dir, manifest.output.report,
                                     store.iter_rows(), store.rows_with_extra(), summary_of,
                                     store.holders() if resolved.state else None)
    html = write_html_stream(resolved.output_dir, store.iter_rows(), name=manifest.name,
                             summary=summary, abandoned=store.abandoned(),
                             budget=resolved.max_credits, committed=committed)
    if bucket is not None:
        await publish_reports(bucket, [report, report.parent / "summary.json", html], warn)
    return summary, report


async def publish_reports(bucket: Any, paths: Sequence[Path],
                          tell: Callable[[str], None]) -> None:
    """The reports into the output bucket; a failure is told (they stay local)."""
    from batchgen.objstore import StorageError
    try:
        await bucket.publish_reports(paths)
    except StorageError as exc:
        tell(f"the reports could not be uploaded ({exc}); they are in "
             f"{paths[0].parent}, and the next run or `batchgen report` uploads them")
