"""`status` and `report`: what the local state says, without asking the API.

`status` counts jobs per state and credits (a manifest never run shows all pending);
`report` rewrites report.csv, summary.json and report.html from the state alone.
Deliberately not here: SQL (the stores), the report's columns (report.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from batchgen.cli.config import Config
from batchgen.cli.exits import EXIT_OK
from batchgen.cli.plan import resolve
from batchgen.errors import NoState

if TYPE_CHECKING:
    from batchgen.audit import Oldest
    from batchgen.manifest import Manifest
    from batchgen.session import Resolved
    from batchgen.store import JobRow


def cmd_status(config: Config, out: TextIO, err: TextIO) -> int:
    from batchgen.audit import utc_now
    from batchgen.state_store import open_state
    resolved = resolve(config, os.environ)
    if config.display.json:
        return _status_json(resolved, out)
    try:
        with open_state(resolved.output_dir, resolved.state, resolved.manifest.name,
                        lock=False, create=False) as store:
            summary, spent, waiting = _stream_totals(store.iter_rows(active_only=False))
            runners = store.runners()
        ran = True
    except NoState:  # a state that cannot be read raises instead: it is not "never run"
        summary, spent, waiting = _stream_totals(_manifest_rows(resolved.manifest))
        ran, runners = False, []
    where = resolved.output_dir if ran else f"{resolved.output_dir} (not run yet)"
    if resolved.state is not None:
        where = f"{where}, state {resolved.state}"
    print(f"{resolved.manifest.name}: {summary['jobs']} jobs in {where}", file=out)
    for runner in runners:  # several runners share a PostgreSQL state (--state)
        print(f"  runner {runner['host']}:{runner['pid']} holds {runner['jobs']} job(s)"
              + ("" if runner["alive"] else " (lease expired: its jobs go to the others)"),
              file=out)
    for state, n in sorted(summary["states"].items()):
        print(f"  {state:<17}{n:>8}", file=out)
    budget = resolved.max_credits
    print(f"credits: {summary['credits_deducted']} deducted by the API, {spent} committed "
          f"(estimates where unknown)" + (f", budget {budget}" if budget is not None else ""),
          file=out)
    if summary["manifest_changed"]:
        print(f"{summary['manifest_changed']} job(s) changed in the manifest after they were "
              "submitted (kept as sent; see report.csv column manifest_changed)", file=out)
    if waiting.count:
        first = waiting.items[0]
        print(f"warning: {waiting.count} video(s) finished at the API but not downloaded; the "
              f"API keeps them 7 days: the oldest, {first.job_id}, expires "
              f"{first.expires_at:%Y-%m-%d %H:%M} UTC ({first.left(utc_now())}); run "
              "`batchgen run` again to download them", file=out)
    return EXIT_OK


def _stream_totals(rows: Iterable[JobRow]) -> tuple[dict[str, Any], int, Oldest]:
    """(summary, credits committed, videos waiting for download) of rows read one at a
    time: what `status` prints, in memory that does not grow with the jobs. Committed
    credits count inactive rows too (money is money); the rest, active rows only."""
    from batchgen.audit import Oldest
    from batchgen.budget import held
    from batchgen.report import Totals
    totals, spent, waiting = Totals(), 0, Oldest(1)
    for row in rows:
        spent += held(row)
        if not row.active:
            continue
        totals.add(row)
        waiting.add(row)
    return totals.summary(), spent, waiting


def _status_json(resolved: Resolved, out: TextIO) -> int:
    """`status --json`: every job listed, written as it is read (two passes over the
    state: the totals, which come first in the document, then the job list)."""
    from batchgen.state_store import open_state
    try:
        with open_state(resolved.output_dir, resolved.state, resolved.manifest.name,
                        lock=False, create=False) as store:
            summary, spent, waiting = _stream_totals(store.iter_rows(active_only=False))
            shared = (store.runners(), store.holders()) if resolved.state else None
            _write_status_json(out, summary, spent, True, waiting, shared, store.iter_rows())
        return EXIT_OK
    except NoState:
        pass
    summary, _, waiting = _stream_totals(_manifest_rows(resolved.manifest))
    shared = ([], {}) if resolved.state else None
    _write_status_json(out, summary, 0, False, waiting, shared,
                       _manifest_rows(resolved.manifest))
    return EXIT_OK


def _write_status_json(out: TextIO, summary: dict[str, Any], spent: int, ran: bool,
                       waiting: Oldest,
                       shared: tuple[list[dict[str, Any]], dict[str, str]] | None,
                       rows: Iterable[JobRow]) -> None:
    """The `status --json` document, its job list written a job at a time: the text of
    ``json.dumps(doc, indent=2)``. `shared` (with --state): the runners sharing it and
    who holds what (the SQLite document is unchanged)."""
    from batchgen.audit import ISO
    runners, holders = shared if shared is not None else ([], {})
    doc = {**summary, "credits_committed": spent, "ran": ran,
           "not_downloaded": waiting.count,
           "first_expires_at": (waiting.items[0].expires_at.strftime(ISO) if waiting.count
                                else None),
           **({"runners": runners} if shared is not None else {}), "job_list": []}
    text = json.dumps(doc, indent=2)
    out.write(text[:text.rindex("[]")] + "[")  # the job list comes last
    listed = False
    for r in rows:
        job = {**_job_dict(r), **({"holder": holders.get(r.job_id)}
                                  if shared is not None else {})}
        out.write(("," if listed else "") + "\n    "
                  + json.dumps(job, indent=2).replace("\n", "\n    "))
        listed = True
    out.write(("\n  ]" if listed else "]") + "\n}\n")


def _manifest_rows(manifest: Manifest) -> Iterator[JobRow]:
    """The jobs of a manifest never run: all pending, one row per video (as `sync` makes)."""
    from batchgen.pricing import add_audio_credits, job_credits
    from batchgen.store import JobRow, JobState, stored_fields
    prices = manifest.budget.prices
    for job in manifest.jobs:
        count = job.count or 1
        video = job_credits(prices, job) // count
        stored = stored_fields(job, add_audio_credits(prices, job) // count)
        for k in range(1, count + 1):
            yield JobRow(job_id=job.id if k == 1 else f"{job.id}#{k}", idx=job.index,
                         fingerprint=job.fingerprint, **stored,
                         state=JobState.PENDING, credits_estimated=video,
                         parent=None if k == 1 else job.id)


def _job_dict(row: JobRow) -> dict[str, Any]:
    """One job for `status --json`."""
    from batchgen.store import report_status
    return {"id": row.job_id, "status": report_status(row.state), "state": row.state.value,
            "task_id": row.task_id, "file": row.file,
            "credits_estimated": row.credits_estimated,
            "credits_deducted": row.credits_deducted, "error": row.error,
            # what the job holds against the budget (budget.held), and what the API said
            # about a charge the budget could not use (budget.charge)
            "credits_held": row.committed_credits, "credits_note": row.credits_note}


def cmd_report(config: Config, out: TextIO, err: TextIO) -> int:
    """report.csv, summary.json and report.html, each streamed from the state's cursor."""
    from batchgen.report import Totals, add_history, stream_reports
    from batchgen.report_stream import write_html_stream
    from batchgen.state_store import open_state
    resolved = resolve(config, os.environ)
    with open_state(resolved.output_dir, resolved.state, resolved.manifest.name,
                    create=False) as store:
        committed = store.committed_total()
        history = store.run_history()
        abandoned = store.abandoned()
        holders = store.holders() if resolved.state is not None else None

        def summary_of(totals: Totals) -> dict[str, Any]:
            summary = totals.summary()
            summary["credits_committed"] = committed
            add_history(summary, history)  # the last run's budget, wall time and requests
            summary.setdefault("budget", resolved.max_credits)
            return summary

        report, summary = stream_reports(resolved.output_dir,
                                         resolved.manifest.output.report, store.iter_rows(),
                                         store.rows_with_extra(), summary_of, holders)
        html = write_html_stream(resolved.output_dir, store.iter_rows(),
                                 name=resolved.manifest.name, summary=summary,
                                 abandoned=abandoned, budget=summary["budget"],
                                 committed=committed)
    print(f"wrote {report} and {html.name} ({summary['jobs']} jobs)", file=out)
    if resolved.output_url is not None:  # a bucket output: the reports go there too
        import asyncio

        from batchgen.outputs import BucketOutput
        bucket = BucketOutput.open(resolved.output_url, os.environ)
        asyncio.run(bucket.publish_reports([report, report.parent / "summary.json", html]))
        print(f"uploaded them to {resolved.output_url}", file=out)
    return EXIT_OK
