"""`run`: the API runs the manifest (as `batchgen.arun` would); this command opens the
console (--quiet, --log-file), shows progress, owns the signals (progress.py) and turns
the outcome into an exit code with the lines a human needs.

Deliberately not here: the run itself (api.py, session.py, runner.py), drawing bars
(console.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, TextIO

from batchgen.cli.config import Config
from batchgen.cli.exits import RUN_EXIT_CODES
from batchgen.cli.plan import cmd_plan, resolve
from batchgen.cli.progress import RunDisplay
from batchgen.errors import BatchgenError, UsageError
from batchgen.session import (
    limits_from_env,
    outage_timeout_from_env,
    preflight_from_env,
    require_credentials,
    retry_policy_from_env,
)

if TYPE_CHECKING:
    from batchgen.api import RunReport
    from batchgen.client import Credentials
    from batchgen.console import Console
    from batchgen.sandbox import SandboxConfig
    from batchgen.session import Resolved


def cmd_run(config: Config, out: TextIO, err: TextIO) -> int:
    if config.run.dry_run:
        return cmd_plan(config, out, err)
    sandbox_config = _sandbox_settings(config)
    if sandbox_config is not None and not config.api.sandbox:
        raise UsageError("emulator settings (--processing-time, --failure-rate, ...) apply "
                         "only with --sandbox; add --sandbox or drop them")
    resolved = resolve(config, os.environ)
    creds = require_credentials(os.environ, config.api.sandbox)
    console = _console(config, out, err)
    try:
        return asyncio.run(_run_async(config, resolved, creds, console, sandbox_config))
    except BatchgenError as exc:
        console.log_only(f"batchgen: {exc}")
        raise
    finally:
        console.close()


def _console(config: Config, out: TextIO, err: TextIO) -> Console:
    """The run's console: --quiet and --log-file (appended, created with its folder)."""
    from pathlib import Path

    from batchgen.console import Console
    log = None
    path = config.display.log_file
    if path:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            log = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by Console.close
        except OSError as exc:
            raise UsageError(f"--log-file {path}: cannot open it for appending "
                             f"({exc.strerror or exc}); choose a writable path") from None
    return Console(out=out, err=err, quiet=config.display.quiet, log=log)


def _sandbox_settings(config: Config) -> SandboxConfig | None:
    """The emulator's knobs from `run --sandbox --processing-time ...`; None when none."""
    if not hasattr(config.emulator, "sbx_config"):
        return None
    from batchgen.sandbox.config import ConfigError
    from batchgen.sandbox.flags import config_from_args, knobs_given
    if not knobs_given(config.emulator):
        return None
    try:
        return config_from_args(config.emulator)
    except ConfigError as exc:
        raise UsageError(f"{exc}; see batchgen sandbox --help") from None


async def _run_async(config: Config, resolved: Resolved, creds: Credentials,
                     console: Console, sandbox_config: SandboxConfig | None) -> int:
    """The run with its display; the outcome told and mapped to an exit code."""
    from batchgen.api import run_resolved

    manifest = resolved.manifest
    console.log_only(f"run {manifest.name}: {manifest.path} -> {resolved.output_dir}"
                     + (" (sandbox)" if config.api.sandbox else ""))
    display = RunDisplay(console, config.display, resolved.max_credits)
    outage_timeout = config.run.outage_timeout
    try:
        report = await run_resolved(
            resolved, creds, sandbox=config.api.sandbox, retry_failed=config.run.retry_failed,
            resubmit_unknown=config.run.resubmit_unknown,
            retry=retry_policy_from_env(os.environ), limits=limits_from_env(os.environ),
            sandbox_config=sandbox_config,
            outage_timeout=(outage_timeout if outage_timeout is not None
                            else outage_timeout_from_env(os.environ)),
            preflight=preflight_from_env(os.environ, config.api.preflight),
            storage_env=os.environ,
            on_event=display.on_event, on_started=display.on_started,
            on_running=display.on_running, jobs=False)
    finally:
        display.close()
    _tell(report, console, as_json=config.display.json)
    return RUN_EXIT_CODES[report.outcome]


def _shown(path: os.PathLike[str] | str) -> str:
    """A path as a person reads it: ``output/x/report.csv``, not ``manifests/../output/...``
    (output.dir is relative to the manifest). Only what is shown: "." and ".." are
    resolved by text, which is what the user wrote; where the file is does not change."""
    return str(path) if "://" in str(path) else os.path.normpath(path)


def _tell(report: RunReport, console: Console, *, as_json: bool) -> None:
    """The run's last line (or --json summary), and what a human must do about it."""
    from batchgen.api import Outcome
    st = report.counts
    line = (f"{report.name}: {st['completed']} completed, {st['failed']} failed, "
            f"{st['unknown']} unknown, {st['pending']} pending; credits deducted "
            f"{report.credits_deducted}; {report.requests} requests in "
            f"{report.wall_seconds:.1f}s; report: {_shown(report.report_file)}")
    if as_json:
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
