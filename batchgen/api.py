"""The public Python API (SPEC §7): `run`, `arun` and `plan`, with their typed results.

Pipelines (Prefect, Dagster, a FastAPI handler, a notebook) import batchgen instead of
shelling out. A run through here is the run of `batchgen run`: the CLI calls
`run_resolved` and `plan_resolved` below, so both faces share one code path and every
guarantee of SPEC §5 (the output dir's lock, resume, the budget, no double spend).

Owns: turning a manifest path or mapping plus keyword options into a resolved run,
credentials from arguments or the environment, and the typed values handed back
(`RunReport`, `JobResult`, `RunPlan`). Deliberately not here: printing (nothing is ever
printed), signal handlers and exit codes (batchgen/cli/); the run's assembly (session.py).
Errors are the exceptions of `batchgen.errors`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.errors import UsageError
from batchgen.results import Charges as Charges
from batchgen.results import JobResult as JobResult
from batchgen.results import Outcome as Outcome
from batchgen.results import RunPlan as RunPlan
from batchgen.results import RunReport as RunReport
from batchgen.results import job_result as job_result
from batchgen.results import outcome_of as outcome_of

if TYPE_CHECKING:
    from batchgen.client import Credentials, Limits
    from batchgen.manifest import Manifest
    from batchgen.preflight import PreflightSettings
    from batchgen.retry import RetryPolicy
    from batchgen.runner import JobEvent
    from batchgen.sandbox import SandboxConfig
    from batchgen.session import Resolved, RunControl, Started

#: what `manifest=` may be: a YAML file, or the manifest itself as a mapping
ManifestSource = str | os.PathLike[str] | Mapping[str, Any]


# -- the public functions ----------------------------------------------------------------


def run(manifest: ManifestSource, *, base_dir: str | os.PathLike[str] | None = None,
        output: str | os.PathLike[str] | None = None, concurrency: int | None = None,
        max_credits: int | None = None, api_base: str | None = None, sandbox: bool = False,
        retry_failed: bool = False, resubmit_unknown: bool = False,
        on_event: Callable[[JobEvent], None] | None = None, api_key: str | None = None,
        client_id: str | None = None, client_secret: str | None = None,
        outage_timeout: float | None = None, state: str | None = None,
        preflight: bool | None = None,
        env: Mapping[str, str] | None = None) -> RunReport:
    """Run a manifest to the end, as `batchgen run` does, and return its report.

    `manifest` is a YAML file's path or the manifest as a mapping (then relative paths in
    it — `jobs_file`, `output.dir` — are taken from `base_dir`, default the current
    directory; a file's are taken from its folder). The keyword options are those of
    `batchgen run`: `output` (relative to the current directory), `concurrency`,
    `max_credits`, `api_base`, `sandbox` (an emulator in-process, no account needed),
    `retry_failed`, `resubmit_unknown`, `outage_timeout` (seconds; default
    BATCHGEN_OUTAGE_TIMEOUT or 600), `state` (a postgresql:// URL: the state lives
    there instead of the output dir, as with `--state`; default BATCHGEN_STATE),
    `preflight` (check every job's image and audio URL before paying for it; default on
    against the real API, off with `sandbox`; False is `--no-preflight`).
    `on_event` receives every `JobEvent` (submitted, task_done, downloaded, failed, ...)
    in the run's thread; keep it quick. If it raises,
    the run stops as on a cancel (state saved) and its exception is raised from here.

    Credentials: `client_id` + `client_secret`, else `api_key`, else the environment's
    AKOOL_CLIENT_ID/AKOOL_CLIENT_SECRET/AKOOL_API_KEY (`env` replaces `os.environ` for
    these and BATCHGEN_API_BASE, BATCHGEN_RETRY_*, BATCHGEN_MAX_VIDEO_BYTES). They are
    never printed or logged.

    Every guarantee of the CLI holds: the output dir's lock (`OutputDirLocked` while
    another run holds it), resume from its state, the budget over all runs, no double
    spend. Nothing is printed. Errors are `batchgen.errors` exceptions (`ManifestError`
    lists every problem). Run it where no event loop runs (a script, a worker thread);
    inside one, `await arun(...)`. Ctrl-C in the main thread stops it as the CLI stops on
    SIGINT (no new submissions, state saved), then raises KeyboardInterrupt.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("batchgen.run() was called inside a running event loop; use "
                         "`await batchgen.arun(...)` there")
    return asyncio.run(arun(
        manifest, base_dir=base_dir, output=output, concurrency=concurrency,
        max_credits=max_credits, api_base=api_base, sandbox=sandbox,
        retry_failed=retry_failed, resubmit_unknown=resubmit_unknown, on_event=on_event,
        api_key=api_key, client_id=client_id, client_secret=client_secret,
        outage_timeout=outage_timeout, state=state, preflight=preflight, env=env))


async def arun(manifest: ManifestSource, *, base_dir: str | os.PathLike[str] | None = None,
               output: str | os.PathLike[str] | None = None, concurrency: int | None = None,
               max_credits: int | None = None, api_base: str | None = None,
               sandbox: bool = False, retry_failed: bool = False,
               resubmit_unknown: bool = False,
               on_event: Callable[[JobEvent], None] | None = None,
               api_key: str | None = None, client_id: str | None = None,
               client_secret: str | None = None, outage_timeout: float | None = None,
               state: str | None = None, preflight: bool | None = None,
               env: Mapping[str, str] | None = None) -> RunReport:
    """`run` inside a running event loop (same arguments, same report).

    Cancelling the task stops the run as SIGINT stops the CLI: no new submissions,
    creates already on the wire get a short grace, state and reports are saved, then
    CancelledError goes on. The same call later resumes where it stopped. Loading and
    parsing the manifest runs in the loop's thread; for a very large manifest, call this
    from a worker thread's loop or accept the pause.
    """
    from batchgen.session import (
        limits_from_env,
        outage_timeout_from_env,
        preflight_from_env,
        require_credentials,
        resolve,
        retry_policy_from_env,
    )
    environ = os.environ if env is None else env
    _check_options(concurrency, max_credits)
    if outage_timeout is not None and (isinstance(outage_timeout, bool)
                                       or not isinstance(outage_timeout, int | float)
                                       or not outage_timeout > 0):
        raise UsageError(f"outage_timeout must be a positive number of seconds, not "
                         f"{outage_timeout!r}")
    resolved = resolve(load(manifest, base_dir), environ, output=output, api_base=api_base,
                       concurrency=concurrency, max_credits=max_credits, state=state)
    creds = None if sandbox else _credentials(api_key, client_id, client_secret)
    if creds is None:
        creds = require_credentials(environ, sandbox)
    guard = _CallbackGuard(on_event)
    report = await run_resolved(
        resolved, creds, sandbox=sandbox, retry_failed=retry_failed,
        resubmit_unknown=resubmit_unknown, retry=retry_policy_from_env(environ),
        limits=limits_from_env(environ),
        outage_timeout=(outage_timeout if outage_timeout is not None
                        else outage_timeout_from_env(environ)),
        preflight=preflight_from_env(environ, preflight), storage_env=environ,
        on_event=guard.event if on_event is not None else None, on_running=guard.running)
    if guard.error is not None:
        raise guard.error
    return report


def plan(manifest: ManifestSource, *, base_dir: str | os.PathLike[str] | None = None,
         output: str | os.PathLike[str] | None = None, max_credits: int | None = None,
         retry_failed: bool = False, resubmit_unknown: bool = False,
         state: str | None = None, env: Mapping[str, str] | None = None) -> RunPlan:
    """What a run would do now and what it would cost: the figures of `plan --json`.

    Sends nothing and takes no lock; reads the output dir's state when there is one, so
    done, in-flight, unknown and failed jobs are split out and `retry_failed` /
    `resubmit_unknown` count what they would send again. `RunPlan.to_dict()` is the
    `plan --json` document.
    """
    from batchgen.session import resolve
    _check_options(None, max_credits)
    resolved = resolve(load(manifest, base_dir), os.environ if env is None else env,
                       output=output, max_credits=max_credits, state=state)
    return plan_resolved(resolved, retry_failed=retry_failed,
                         resubmit_unknown=resubmit_unknown)


def load(manifest: ManifestSource, base_dir: str | os.PathLike[str] | None = None
         ) -> Manifest:
    """A validated, expanded manifest from a path or a mapping (ManifestError if not)."""
    from batchgen.manifest import load_manifest, load_manifest_data
    if isinstance(manifest, Mapping):
        return load_manifest_data(manifest, None if base_dir is None else Path(base_dir))
    if isinstance(manifest, str | os.PathLike):
        return load_manifest(os.fspath(manifest), recall=True)  # memo.py: unchanged inputs
    raise UsageError(f"manifest must be a path or a mapping, not {type(manifest).__name__}")


# -- shared with the CLI -----------------------------------------------------------------


def plan_resolved(resolved: Resolved, *, retry_failed: bool = False,
                  resubmit_unknown: bool = False) -> RunPlan:
    """The plan of a resolved manifest (`batchgen plan` and `plan()` both come here)."""
    from batchgen.session_plan import plan_now
    base, charged = plan_now(resolved, retry_failed=retry_failed,
                             resubmit_unknown=resubmit_unknown)
    values = {f.name: getattr(base, f.name) for f in fields(base)}
    return RunPlan(**values, charged_so_far=Charges(**charged) if charged else None)


async def run_resolved(resolved: Resolved, creds: Credentials, *, sandbox: bool = False,
                       retry_failed: bool = False, resubmit_unknown: bool = False,
                       retry: RetryPolicy | None = None, limits: Limits | None = None,
                       sandbox_config: SandboxConfig | None = None,
                       outage_timeout: float | None = None,
                       preflight: PreflightSettings | None = None,
                       storage_env: Mapping[str, str] | None = None,
                       on_event: Callable[[JobEvent], None] | None = None,
                       on_started: Callable[[Started], None] | None = None,
                       on_running: Callable[[RunControl], None] | None = None,
                       jobs: bool = True) -> RunReport:
    """A run of a resolved manifest; `batchgen run` and `arun()` both come here. Without
    `jobs` the report's `jobs` is empty (the CLI prints totals only: a million jobs' rows
    are never read back at once)."""
    from batchgen.session import DEFAULT_OUTAGE_TIMEOUT, execute
    finished = await execute(resolved, creds, sandbox=sandbox, retry_failed=retry_failed,
                             resubmit_unknown=resubmit_unknown, retry=retry,
                             limits=limits, sandbox_config=sandbox_config,
                             outage_timeout=outage_timeout or DEFAULT_OUTAGE_TIMEOUT,
                             preflight=preflight, storage_env=storage_env,
                             on_event=on_event,
                             on_started=on_started, on_running=on_running, rows=jobs)
    summary = finished.summary
    status = summary["status"]
    out = finished.outcome
    return RunReport(
        name=resolved.manifest.name, output_dir=resolved.output_dir,
        outcome=outcome_of(out, status),
        jobs=tuple(job_result(r, resolved.output_dir, resolved.output_url)
                   for r in finished.rows),
        counts=dict(status), credits_estimated=summary["credits_estimated"],
        credits_deducted=summary["credits_deducted"], credits_committed=finished.committed,
        max_credits=resolved.max_credits, budget_blocked=out.budget_blocked,
        budget_needed=out.budget_needed, out_of_credit=out.out_of_credit,
        api_unavailable=out.api_unavailable, abandoned=out.abandoned,
        requests=summary["requests_total"], wall_seconds=summary["wall_seconds"],
        report_file=finished.report, summary=summary, outage=out.outage,
        kept_ready=out.kept_ready)


class _CallbackGuard:
    """Keeps the caller's `on_event` from raising into the runner.

    The runner emits events between state changes; an exception there must not cut a
    money path in half. The first one stops the run gracefully (as a cancel does) and is
    raised to the caller once state and reports are saved; later events are not passed on.
    """

    def __init__(self, on_event: Callable[[JobEvent], None] | None) -> None:
        self._on_event = on_event
        self._control: RunControl | None = None
        self.error: Exception | None = None

    def running(self, control: RunControl) -> None:
        self._control = control

    def event(self, ev: JobEvent) -> None:
        if self.error is not None or self._on_event is None:
            return
        try:
            self._on_event(ev)
        except Exception as exc:
            self.error = exc
            if self._control is not None:
                self._control.stop()


def _credentials(api_key: str | None, client_id: str | None, client_secret: str | None
                 ) -> Credentials | None:
    """Credentials given as arguments (a clientId/secret pair first), or None."""
    from batchgen.client import Credentials
    if client_id or client_secret:
        if not (client_id and client_secret):
            raise UsageError("client_id and client_secret go together; pass both, or "
                             "api_key")
        return Credentials(client_id=client_id, client_secret=client_secret)
    if api_key:
        return Credentials(api_key=api_key)
    return None


def _check_options(concurrency: int | None, max_credits: int | None) -> None:
    """What argparse checks for the CLI: the manifest keys' ranges."""
    from batchgen.jobs import MAX_CONCURRENCY, MAX_CREDITS
    for name, value, low, high in (("concurrency", concurrency, 1, MAX_CONCURRENCY),
                                   ("max_credits", max_credits, 0, MAX_CREDITS)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not low <= value <= high):
            raise UsageError(f"{name} must be a whole number {low}..{high}, not {value!r}")
