"""Command line: parse arguments, resolve settings, run a command, map errors to exit codes.

The only module that reads the environment, prints, draws progress bars, installs signal
handlers or exits. Everything below it receives plain values and reports back through
return values, exceptions and `JobEvent` callbacks. Exit codes (SPEC §6) are decided in
exactly one place, `main`. An error that is not a `BatchgenError` is a bug: its traceback
goes to a crash file (with secrets scrubbed) and the user reads one line about it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from batchgen import __version__
from batchgen.console import STATUS_EVERY
from batchgen.errors import (
    ApiError,
    BatchgenError,
    CredentialsError,
    ManifestError,
    NoState,
    OutputDirLocked,
    OutputNotWritable,
    Problem,
    RetryableApiError,
    StateError,
    StateUnavailable,
    UsageError,
)
from batchgen.session import (
    ENV_API_BASE,
    api_root,
    authenticate,
    credentials_from_env,
    limits_from_env,
    outage_timeout_from_env,
    preflight_from_env,
    require_credentials,
    retry_policy_from_env,
)
from batchgen.state_store import ENV_STATE

if TYPE_CHECKING:  # imported lazily at run time, to keep every command's start-up light
    from collections.abc import Callable

    from batchgen.client import Credentials
    from batchgen.console import Console
    from batchgen.manifest import Manifest
    from batchgen.runner import JobEvent
    from batchgen.sandbox import SandboxConfig
    from batchgen.session import Resolved, RunControl, Started
    from batchgen.store import JobRow

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET, EXIT_CREDENTIALS, EXIT_LOCKED = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
#: EX_TEMPFAIL: the API stayed unavailable; state saved, nothing lost, re-run later
EXIT_UNAVAILABLE = 75
EXIT_BUG = 70
#: EX_CANTCREAT: the output dir or its state cannot be written (read-only, disk full, a
#: file where the dir should be); nothing is lost, fix it and re-run
EXIT_NOT_WRITABLE = 73
#: a run's outcome (api.Outcome values) -> exit code (SPEC §6)
RUN_EXIT_CODES: Mapping[str, int] = {"completed": EXIT_OK, "failed": EXIT_FAILED,
                                     "budget_stopped": EXIT_BUDGET,
                                     "interrupted": EXIT_INTERRUPTED,
                                     "unavailable": EXIT_UNAVAILABLE}
#: error type -> exit code (SPEC §6); 0/1/3/130 come from the run's outcome
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ManifestError, EXIT_USAGE),
    (UsageError, EXIT_USAGE),
    (StateError, EXIT_USAGE),
    (CredentialsError, EXIT_CREDENTIALS),
    (OutputDirLocked, EXIT_LOCKED),
    (RetryableApiError, EXIT_UNAVAILABLE),
    (StateUnavailable, EXIT_UNAVAILABLE),
    (OutputNotWritable, EXIT_NOT_WRITABLE),
    (ApiError, EXIT_FAILED),
)

# -- settings --------------------------------------------------------------------------


def _load(path: str) -> Manifest:
    from batchgen.manifest import load_manifest
    return load_manifest(path)


def _resolve(args: argparse.Namespace, env: Mapping[str, str]) -> Resolved:
    from batchgen.session import resolve
    return resolve(_load(args.manifest), env, output=getattr(args, "output", None),
                   api_base=getattr(args, "api_base", None),
                   concurrency=getattr(args, "concurrency", None),
                   max_credits=getattr(args, "max_credits", None),
                   state=getattr(args, "state", None))


# -- commands ----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    worst = EXIT_OK
    docs: list[dict[str, Any]] = []
    as_json = getattr(args, "json", False)
    for path in args.manifests:
        try:
            manifest = _load(path)
        except ManifestError as exc:
            worst = EXIT_USAGE
            if as_json:
                docs.append({"manifest": path, "ok": False, "jobs": None,
                             "errors": [_problem_dict(p) for p in exc.problems],
                             "warnings": []})
                continue
            for problem in exc.problems:
                print(str(problem), file=err)
            print(f"{path}: {len(exc.problems)} problem(s); nothing was sent", file=err)
            continue
        errors, warnings = _online_checks(args, manifest) if args.online else ([], [])
        if errors:
            worst = EXIT_USAGE
            if as_json:
                docs.append({"manifest": path, "ok": False, "jobs": len(manifest.jobs),
                             "errors": [_problem_dict(p) for p in errors],
                             "warnings": [_problem_dict(w) for w in warnings]})
                continue
            for problem in (*errors, *warnings):
                print(str(problem), file=err)
            print(f"{path}: {len(errors)} problem(s) with the API's lists or the assets; "
                  "nothing was sent", file=err)
            continue
        if as_json:
            docs.append({"manifest": path, "ok": True, "jobs": len(manifest.jobs),
                         "errors": [], "warnings": [_problem_dict(w) for w in warnings]})
            continue
        # SPEC §1: exactly `ok: N jobs`; the path only tells several manifests apart
        suffix = f" ({path})" if len(args.manifests) > 1 else ""
        print(f"ok: {len(manifest.jobs)} jobs{suffix}", file=out)
        for warning in warnings:
            print(f"warning: {warning}", file=err)
    if as_json:
        print(json.dumps({"ok": worst == EXIT_OK, "manifests": docs}, indent=2), file=out)
    return worst


def _problem_dict(problem: Problem) -> dict[str, Any]:
    """A located problem for --json: file, line, job (or null), message, fix."""
    return {"file": problem.file, "line": problem.line, "job": problem.where or None,
            "message": problem.what, "fix": problem.fix or None}


def _model_checks(manifest: Manifest, records: Sequence[Mapping[str, Any]]
                  ) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) of the manifest's model jobs against the API's model list."""
    from batchgen.models import model_problems, parse_models
    errors, warnings = model_problems(manifest.jobs, parse_models(records))
    return [p.problem() for p in errors], [p.problem() for p in warnings]


def _online_checks(args: argparse.Namespace, manifest: Manifest
                   ) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) against the API's lists: a model that cannot make a job's
    resolution or length is an error (the create would be refused); effect codes and model
    names the lists do not name are warnings."""
    catalog = _catalog(args, effects=True, models=True, base=manifest.api.base_url)
    effects = {e.get("effect_code") for e in catalog["effects"] if isinstance(e, Mapping)}
    errors, warnings = _model_checks(manifest, catalog["models"])
    bad, unreachable = _asset_checks(args, manifest)
    errors += bad
    warnings += unreachable
    from batchgen.models import ModelProblem
    for job in manifest.jobs:
        if job.effect_code and job.effect_code not in effects:
            warnings.append(ModelProblem(job, "effect_code", f"effect_code {job.effect_code!r} "
                                         "is not in the API's effect list",
                                         "pick one from `batchgen effects`").problem())
    return errors, warnings


def _asset_checks(args: argparse.Namespace, manifest: Manifest
                  ) -> tuple[list[Problem], list[Problem]]:
    """--online's pre-flight: (every bad asset, each host that could not be reached)."""
    from batchgen.asset_probe import AssetProber
    from batchgen.preflight import check_jobs
    settings = preflight_from_env(os.environ, args.preflight)
    base = args.api_base or os.environ.get(ENV_API_BASE) or manifest.api.base_url
    if not settings.on(args.sandbox, base):
        return [], []

    async def check() -> tuple[list[Problem], list[Problem]]:
        async with AssetProber.open(timeout=settings.timeout) as prober:
            return await check_jobs(manifest.jobs, prober.check,
                                    concurrency=settings.concurrency)

    return asyncio.run(check())


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from batchgen.api import plan_resolved
    from batchgen.planning import render_plan
    resolved = _resolve(args, os.environ)
    online = None
    if getattr(args, "online", False):
        from dataclasses import replace

        from batchgen.pricing import with_models
        manifest = resolved.manifest
        records = _catalog(args, models=True, base=manifest.api.base_url)["models"]
        errors, warnings = _model_checks(manifest, records)
        bad, unreachable = _asset_checks(args, manifest)
        errors += bad
        if errors:
            raise ManifestError(errors + warnings + unreachable)
        for warning in unreachable:
            print(f"warning: {warning}", file=err)
        online = _online_prices(records, manifest)
        # the totals and the budget use the model list's prices for model jobs
        budget = replace(manifest.budget, prices=with_models(manifest.budget.prices, records))
        resolved = replace(resolved, manifest=replace(manifest, budget=budget))
    result = plan_resolved(resolved, retry_failed=getattr(args, "retry_failed", False),
                           resubmit_unknown=getattr(args, "resubmit_unknown", False))
    if getattr(args, "json", False):
        doc = result.to_dict()
        if online is not None:
            doc["model_prices"] = online
        print(json.dumps(doc, indent=2), file=out)
    else:
        print(render_plan(result), file=out)
        charged = result.charged_so_far
        if charged is not None and charged.jobs:
            note = (f"; the API charged differently from the table for {charged.differs} "
                    "of them" if charged.differs else "")
            print(f"\ncharged so far: {charged.jobs} jobs, {charged.deducted} credits "
                  f"deducted by the API against {charged.estimated} estimated{note}",
                  file=out)
        if online is not None:
            print(f"\nmodel jobs priced from the API's model list (aigModel/list), in the "
                  f"totals and budget above: {online['jobs']} jobs, {online['credits']} "
                  f"credits (the published table would say {online['table_credits']})"
                  + (f"; not in the list: {', '.join(online['unlisted'])}"
                     if online["unlisted"] else ""), file=out)
    return EXIT_OK


def _online_prices(models: Sequence[Mapping[str, Any]], manifest: Manifest
                   ) -> dict[str, Any]:
    from batchgen.pricing import model_credits, video_credits
    model_jobs = [j for j in manifest.jobs if j.model_name]
    priced = {j.id: model_credits(models, j) for j in model_jobs}
    return {
        "jobs": len(model_jobs),
        "credits": sum(c for c in priced.values() if c is not None),
        "table_credits": sum(video_credits(manifest.budget.prices, j) for j in model_jobs),
        "unlisted": sorted({j.model_name for j in model_jobs if priced[j.id] is None}),
    }


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from batchgen.audit import ISO, not_downloaded, utc_now
    from batchgen.report import summarize
    from batchgen.state_store import open_state
    resolved = _resolve(args, os.environ)
    try:
        with open_state(resolved.output_dir, resolved.state, resolved.manifest.name,
                        lock=False, create=False) as store:
            rows, spent = store.rows_and_committed()
            holders, runners = store.holders(), store.runners()
        ran = True
    except NoState:  # a state that cannot be read raises instead: it is not "never run"
        rows, spent, ran = _manifest_rows(resolved.manifest), 0, False
        holders, runners = {}, []
    summary = summarize(rows)
    waiting = not_downloaded(rows)
    if getattr(args, "json", False):
        print(json.dumps({**summary, "credits_committed": spent, "ran": ran,
                          "not_downloaded": len(waiting),
                          "first_expires_at": (waiting[0].expires_at.strftime(ISO)
                                               if waiting else None),
                          # with --state: the runners sharing it and who holds what
                          **({"runners": runners} if resolved.state else {}),
                          "job_list": [{**_job_dict(r), **({"holder": holders.get(r.job_id)}
                                                            if resolved.state else {})}
                                       for r in rows]}, indent=2), file=out)
        return EXIT_OK
    where = resolved.output_dir if ran else f"{resolved.output_dir} (not run yet)"
    if resolved.state is not None:
        where = f"{where}, state {resolved.state}"
    print(f"{resolved.manifest.name}: {len(rows)} jobs in {where}", file=out)
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
    if waiting:
        first = waiting[0]
        print(f"warning: {len(waiting)} video(s) finished at the API but not downloaded; the "
              f"API keeps them 7 days: the oldest, {first.job_id}, expires "
              f"{first.expires_at:%Y-%m-%d %H:%M} UTC ({first.left(utc_now())}); run "
              "`batchgen run` again to download them", file=out)
    return EXIT_OK


def _manifest_rows(manifest: Manifest) -> list[JobRow]:
    """The jobs of a manifest never run: all pending, one row per video (as `sync` makes)."""
    from batchgen.pricing import add_audio_credits, job_credits
    from batchgen.store import JobRow, JobState, stored_fields
    prices = manifest.budget.prices
    rows = []
    for job in manifest.jobs:
        count = job.count or 1
        video = job_credits(prices, job) // count
        stored = stored_fields(job, add_audio_credits(prices, job) // count)
        for k in range(1, count + 1):
            rows.append(JobRow(job_id=job.id if k == 1 else f"{job.id}#{k}", idx=job.index,
                               fingerprint=job.fingerprint, **stored,
                               state=JobState.PENDING, credits_estimated=video,
                               parent=None if k == 1 else job.id))
    return rows


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


def cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from batchgen.report import add_history, summarize, write_reports
    from batchgen.report_html import write_html
    from batchgen.state_store import open_state
    resolved = _resolve(args, os.environ)
    with open_state(resolved.output_dir, resolved.state, resolved.manifest.name,
                    create=False) as store:
        rows, committed = store.rows_and_committed()
        history = store.run_history()
        abandoned = store.abandoned()
    summary = summarize(rows)
    summary["credits_committed"] = committed
    add_history(summary, history)  # the last run's budget, wall time and requests stay
    summary.setdefault("budget", resolved.max_credits)
    report, _ = write_reports(resolved.output_dir, resolved.manifest.output.report, rows,
                              summary)
    html = write_html(resolved.output_dir, rows, name=resolved.manifest.name, summary=summary,
                      abandoned=abandoned, budget=summary["budget"], committed=committed)
    print(f"wrote {report} and {html.name} ({len(rows)} jobs)", file=out)
    return EXIT_OK


def _catalog(args: argparse.Namespace, *, effects: bool = False, models: bool = False,
             base: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Fetch the API's effect and/or model lists (for effects, models and --online)."""
    from batchgen.client import AkoolClient
    from batchgen.manifest import DEFAULT_BASE_URL
    creds = require_credentials(os.environ, args.sandbox)
    base = args.api_base or os.environ.get(ENV_API_BASE) or base or DEFAULT_BASE_URL

    async def fetch() -> dict[str, list[dict[str, Any]]]:
        async with api_root(base, args.sandbox) as url, AkoolClient.open(url, creds) as client:
            await authenticate(client, retry_policy_from_env(os.environ))
            got: dict[str, list[dict[str, Any]]] = {}
            if effects:
                got["effects"] = await client.effects()
            if models:
                got["models"] = await client.models()
            return got

    return asyncio.run(fetch())


def cmd_models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    models = _catalog(args, models=True)["models"]
    if args.json:
        print(json.dumps(models, indent=2), file=out)
        return EXIT_OK
    rows = []
    for m in models:
        res = " ".join(f"{r.get('value')}:{r.get('unit_credit')}"
                       for r in m.get("resolutionList") or [])
        durations = ",".join(str(d) for d in m.get("durationList") or [])
        rows.append((str(m.get("value", "")), str(m.get("label", "")), res, durations,
                     str(m.get("maxCount", ""))))
    print(_table(("model_name", "label", "credits per video by resolution", "lengths",
                  "max count"), rows), file=out)
    return EXIT_OK


def cmd_effects(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    effects = _catalog(args, effects=True)["effects"]
    if args.json:
        print(json.dumps(effects, indent=2), file=out)
        return EXIT_OK
    rows = [(str(e.get("effect_code", "")), str(e.get("name", "")), str(e.get("video_url", "")))
            for e in effects]
    print(_table(("code", "name", "preview"), rows), file=out)
    return EXIT_OK


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


def cmd_schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The manifest's JSON Schema, for editors (`# yaml-language-server: $schema=...`)."""
    from pathlib import Path

    from batchgen.manifest_schema import load_schema
    text = json.dumps(load_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.write:
        target = Path(args.write)
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
        print(f"wrote {target}; start a manifest with: # yaml-language-server: "
              f"$schema={target.name}", file=out)
        return EXIT_OK
    out.write(text)
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from batchgen import sandbox
    return sandbox.serve(args)


# -- run ---------------------------------------------------------------------------------


def _console(args: argparse.Namespace, out: TextIO, err: TextIO) -> Console:
    """The run's console: --quiet and --log-file (appended, created with its folder)."""
    from pathlib import Path

    from batchgen.console import Console
    log = None
    path = getattr(args, "log_file", None)
    if path:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            log = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by Console.close
        except OSError as exc:
            raise UsageError(f"--log-file {path}: cannot open it for appending "
                             f"({exc.strerror or exc}); choose a writable path") from None
    return Console(out=out, err=err, quiet=getattr(args, "quiet", False), log=log)


def _sandbox_settings(args: argparse.Namespace) -> SandboxConfig | None:
    """The emulator's knobs from `run --sandbox --processing-time ...`; None when none."""
    if not hasattr(args, "sbx_config"):
        return None
    from batchgen.sandbox.config import ConfigError
    from batchgen.sandbox.flags import config_from_args, knobs_given
    if not knobs_given(args):
        return None
    try:
        return config_from_args(args)
    except ConfigError as exc:
        raise UsageError(f"{exc}; see batchgen sandbox --help") from None


async def _run_async(args: argparse.Namespace, resolved: Resolved, creds: Credentials,
                     console: Console, sandbox_config: SandboxConfig | None) -> int:
    """`batchgen run`: the API runs it (as `batchgen.arun` would); this shows progress,
    owns the signals and turns the outcome into an exit code."""
    from batchgen.api import Outcome, run_resolved
    from batchgen.console import Progress

    manifest = resolved.manifest

    loop = asyncio.get_running_loop()
    progress: Progress | None = None
    tick: asyncio.Task[None] | None = None
    handled: list[signal.Signals] = []
    already: dict[str, int] = {}
    console.log_only(f"run {manifest.name}: {manifest.path} -> {resolved.output_dir}"
                     + (" (sandbox)" if args.sandbox else ""))

    def on_started(found: Started) -> None:
        nonlocal progress
        if found.lost:
            console.alert(f"{found.lost} job(s) were being submitted when the last run "
                          "stopped: marked unknown (they may have been charged); "
                          "--resubmit-unknown sends them again")
        if found.changed:
            console.alert(f"{len(found.changed)} job(s) changed in the manifest after "
                          f"submission and are kept as sent (e.g. "
                          f"{', '.join(found.changed[:3])}); give them a new id to generate "
                          "them again")
        if found.reopened:
            console.info(f"{found.reopened} job(s) reopened by --retry-failed/"
                         "--resubmit-unknown")
        bars = not args.no_progress and not console.quiet and console.err.isatty()
        progress = Progress(total=found.total, budget=resolved.max_credits, console=console,
                            bars=bars, every=args.status_interval)
        progress.credits = found.committed
        already.update(found.already)

    def on_event(ev: JobEvent) -> None:
        if progress is not None:
            progress.event(ev)

    def on_running(control: RunControl) -> None:
        nonlocal tick
        interrupts = 0

        def on_signal() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                # above the bars (tqdm.write), never over them
                console.alert("stopping: no new submissions; saving state (Ctrl-C again to "
                              "quit at once)")
                control.stop()
            else:
                os._exit(EXIT_INTERRUPTED)  # every transition is already committed

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
            handled.append(sig)
        assert progress is not None  # on_started came first
        progress.start(already)
        shown = progress

        async def ticker() -> None:
            pause = min(1.0, args.status_interval or 1.0)
            while True:
                await asyncio.sleep(pause)
                shown.tick(time.monotonic())

        tick = asyncio.create_task(ticker())

    try:
        report = await run_resolved(
            resolved, creds, sandbox=args.sandbox, retry_failed=args.retry_failed,
            resubmit_unknown=args.resubmit_unknown, retry=retry_policy_from_env(os.environ),
            limits=limits_from_env(os.environ),
            sandbox_config=sandbox_config,
            outage_timeout=(args.outage_timeout if args.outage_timeout is not None
                            else outage_timeout_from_env(os.environ)),
            preflight=preflight_from_env(os.environ, args.preflight), storage_env=os.environ,
            on_event=on_event, on_started=on_started, on_running=on_running)
    finally:
        if tick is not None:
            tick.cancel()
        if progress is not None:
            progress.close()
        for sig in handled:
            loop.remove_signal_handler(sig)
    st = report.counts
    line = (f"{report.name}: {st['completed']} completed, {st['failed']} failed, "
            f"{st['unknown']} unknown, {st['pending']} pending; credits deducted "
            f"{report.credits_deducted}; {report.requests} requests in "
            f"{report.wall_seconds:.1f}s; report: {report.report_file}")
    if getattr(args, "json", False):
        console.log_only(line)
        print(json.dumps(report.summary, indent=2, sort_keys=True), file=console.out)
    else:
        console.result(line)
    if report.outcome is Outcome.INTERRUPTED:
        console.alert("interrupted: state saved; run the same command again to resume")
    elif report.outcome is Outcome.BUDGET_STOPPED:
        if report.budget_blocked:
            console.alert(f"budget: {report.budget_blocked} job(s) not submitted; they need "
                          f"{report.budget_needed} more credits (budget {report.max_credits}"
                          f", committed {report.credits_committed}); raise budget.max_credits "
                          "or --max-credits and run again")
        if report.out_of_credit:
            console.alert(f"the account ran out of credit ({report.out_of_credit}); top up "
                          "and run again")
    elif report.outcome is Outcome.UNAVAILABLE:
        why = report.outage or (f"it could not be reached or kept refusing: "
                                f"{report.api_unavailable}")
        console.alert(f"the API is unavailable ({why}); nothing is lost: {st['pending']} "
                      "job(s) are kept pending or in flight in the state; re-run later to go "
                      "on")
    else:
        if report.kept_ready:
            console.alert(f"{report.kept_ready} finished video(s) could not be downloaded "
                          "now; they are kept and the next run fetches them")
        if report.abandoned:
            console.alert(f"{report.abandoned} task(s) stayed queued or processing at the API "
                          "for too long; they are kept in the state and the next run polls "
                          "them again")
        if report.outcome is Outcome.FAILED and console.quiet:
            console.alert(line)  # whoever reads the cron mail needs the totals too
    return RUN_EXIT_CODES[report.outcome]


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.dry_run:
        return cmd_plan(args, out, err)
    sandbox_config = _sandbox_settings(args)
    if sandbox_config is not None and not args.sandbox:
        raise UsageError("emulator settings (--processing-time, --failure-rate, ...) apply "
                         "only with --sandbox; add --sandbox or drop them")
    resolved = _resolve(args, os.environ)
    creds = require_credentials(os.environ, args.sandbox)
    console = _console(args, out, err)
    try:
        return asyncio.run(_run_async(args, resolved, creds, console, sandbox_config))
    except BatchgenError as exc:
        console.log_only(f"batchgen: {exc}")
        raise
    finally:
        console.close()


# -- parsing and the top ---------------------------------------------------------------


def _whole(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (`what` names it in errors)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {what}"
                                             ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}")
        return value
    return parse


def _positive_seconds(text: str) -> float:
    """An argparse type: a finite, positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("seconds must be a positive number")
    return value


_positive_int = _whole(1, "tasks")
_credits = _whole(0, "credits")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line, as every usage error should."""

    def error(self, message: str) -> NoReturn:
        # main() prefixes "batchgen: "; the subcommand's name is in the hint
        raise UsageError(f"{message} (see {self.prog} --help)")


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("seconds must be 0 or more")
    return value


def build_parser(sandbox_flags: bool = True) -> argparse.ArgumentParser:
    """The whole command line (SPEC §1).

    The emulator's flags need its server code; commands other than `sandbox` and `run`
    skip importing it (`sandbox_flags=False`), which keeps their start-up light.
    """
    parser = _Parser(prog="batchgen", description="Run Akool image-to-video jobs in bulk "
                     "from YAML manifests.")
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    def online(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--online", action="store_true",
                       help=what + "; and check every image and audio URL as a run's "
                       "pre-flight does, listing each bad asset")
        p.add_argument("--sandbox", action="store_true",
                       help="with --online: ask the built-in emulator (no account needed)")
        p.add_argument("--api-base", metavar="URL", help=f"API root (over {ENV_API_BASE})")
        preflight_flags(p)

    def preflight_flags(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--no-preflight", dest="preflight", action="store_false",
                           default=None, help="do not check image/audio URLs before paying")
        group.add_argument("--preflight", dest="preflight", action="store_true",
                           default=None, help="check image/audio URLs before paying even "
                           "against an emulator (--sandbox or a loopback --api-base)")

    p = sub.add_parser("validate", help="check manifests; print 'ok: N jobs' or every error")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST",
                   help="manifest files (YAML) to check")
    p.add_argument("--json", action="store_true",
                   help="one JSON document: per manifest, ok and the job count or every "
                        "error as {file, line, job, message, fix}")
    online(p, "also check effect codes and model names against the API's lists")
    p.set_defaults(func=cmd_validate)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("manifest", metavar="MANIFEST", help="the manifest file (YAML)")
        p.add_argument("--output", metavar="DIR", help="overrides output.dir")
        p.add_argument("--state", metavar="URL",
                       help="keep the state in PostgreSQL (postgresql://USER@HOST/DB; over "
                            f"{ENV_STATE}) instead of SQLite in the output dir: it outlives "
                            "the host, and several runners may share it")

    p = sub.add_parser("plan", help="what a run would do now, and what it would cost")
    common(p)
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--max-credits", type=_credits, metavar="N",
                   help="overrides the budget, as run --max-credits would")
    p.add_argument("--retry-failed", action="store_true",
                   help="plan what run --retry-failed would send")
    p.add_argument("--resubmit-unknown", action="store_true",
                   help="plan what run --resubmit-unknown would send")
    online(p, "price model jobs from the API's model list")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="submit, poll, download and report (resumable)")
    common(p)
    p.add_argument("--sandbox", action="store_true",
                   help="run against the built-in emulator (no account needed); it keeps "
                        "its tasks in the output dir's .batchgen/, so a re-run resumes")
    p.add_argument("--api-base", metavar="URL", help=f"API root (over {ENV_API_BASE})")
    p.add_argument("--concurrency", type=_positive_int, metavar="N",
                   help="tasks in flight at the API")
    p.add_argument("--max-credits", type=_credits, metavar="N", help="overrides the budget")
    p.add_argument("--dry-run", action="store_true", help="print the plan; send nothing")
    p.add_argument("--json", action="store_true",
                   help="the plan (with --dry-run) or the run's summary as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true",
                   help="print nothing unless a human is needed (errors, failed or unknown "
                        "jobs, the budget holding jobs back): for cron")
    p.add_argument("--log-file", metavar="PATH",
                   help="append status lines and notices, with ISO 8601 UTC times, to PATH")
    p.add_argument("--status-interval", type=_seconds, metavar="SECONDS",
                   default=STATUS_EVERY,
                   help=f"seconds between status lines without bars (default "
                        f"{STATUS_EVERY:g}; 0 = none)")
    p.add_argument("--retry-failed", action="store_true",
                   help="resubmit jobs that failed in an earlier run")
    p.add_argument("--resubmit-unknown", action="store_true",
                   help="resubmit jobs whose submission outcome is unknown (may pay twice)")
    p.add_argument("--outage-timeout", type=_positive_seconds, metavar="SECONDS",
                   help="end the run (exit 75, state saved) when the API has answered "
                   "nothing usable for this long (default 600, or BATCHGEN_OUTAGE_TIMEOUT)")
    preflight_flags(p)
    if sandbox_flags:
        from batchgen.sandbox import flags
        group = p.add_argument_group("emulator settings (with --sandbox; as batchgen sandbox)")
        flags.add_knob_arguments(group)  # type: ignore[arg-type]
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="counts per state and credits, from local state only")
    common(p)
    p.add_argument("--json", action="store_true",
                   help="one JSON document: the counts, and every job with its state, "
                        "task id, file and credits")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="rewrite report.csv and summary.json from local state")
    common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("effects", help="list the API's effects")
    p.add_argument("--json", action="store_true", help="the API's records as JSON")
    p.add_argument("--sandbox", action="store_true",
                   help="ask the built-in emulator (no account needed)")
    p.add_argument("--api-base", metavar="URL", help=f"API root (over {ENV_API_BASE})")
    p.set_defaults(func=cmd_effects)

    p = sub.add_parser("models", help="list the API's video models with their prices")
    p.add_argument("--json", action="store_true", help="the API's records as JSON")
    p.add_argument("--sandbox", action="store_true",
                   help="ask the built-in emulator (no account needed)")
    p.add_argument("--api-base", metavar="URL", help=f"API root (over {ENV_API_BASE})")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("schema", help="print the manifest's JSON Schema (for editors)")
    p.add_argument("--write", metavar="FILE",
                   help="write it to FILE (e.g. beside your manifests) instead of stdout")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("sandbox", help="serve the built-in API emulator on loopback")
    if sandbox_flags:
        from batchgen.sandbox import flags as sandbox_flags_
        sandbox_flags_.add_arguments(p)
    p.set_defaults(func=cmd_sandbox)
    return parser


def _crash(exc: BaseException, err: TextIO, argv: Sequence[str]) -> int:
    from batchgen.client import scrub
    from batchgen.state_store import parse_state_url
    creds = credentials_from_env(os.environ)
    secrets = creds.secrets() if creds else []
    # the state URL's password, from the environment or the command line
    for arg in (os.environ.get(ENV_STATE, ""), *argv):
        text = arg.removeprefix("--state=")
        if "://" in text:
            with contextlib.suppress(BatchgenError):
                secrets += parse_state_url(text).secrets()
    text = scrub("".join(traceback.format_exception(exc)), secrets)
    fd, path = tempfile.mkstemp(prefix="batchgen-crash-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"batchgen: internal error ({type(exc).__name__}); this is a bug in batchgen. "
          f"Details: {path}. State is saved: re-running resumes.", file=err)
    return EXIT_BUG


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        argv = sys.argv[1:] if argv is None else argv
        command = next((a for a in argv if not a.startswith("-")), "")
        args = build_parser(sandbox_flags=command in ("sandbox", "run")).parse_args(argv)
        return int(args.func(args, out, err))
    except ManifestError as exc:
        for problem in exc.problems:
            print(str(problem), file=err)
        return EXIT_USAGE
    except BatchgenError as exc:
        code = next((c for t, c in EXIT_CODES if isinstance(exc, t)), EXIT_FAILED)
        print(f"batchgen: {exc}", file=err)
        return code
    except KeyboardInterrupt:
        print("batchgen: interrupted", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug: one line for the user, the traceback to a file
        return _crash(exc, err, argv or [])

