"""The run's assembly: state opened, emulator, client and runner started, reports written.

Owns everything between "a manifest and its options are known" and "the run ended and the
reports are written" (what the manifest's overrides and the environment say is
settings.py's; its names are re-exported here), as one order of steps: opening the store
and resuming (recover, sync, reopen, clean partial downloads), then what comes before the
first create (session_setup.py: emulator, client, authentication, model list, pre-flight,
uploads, output bucket), driving the `Runner`, and the reports however it ended
(session_reports.py). What a run would do, without running, is session_plan.py's. The
public Python API (`batchgen.api`) and `batchgen run` both call `execute`, so the CLI and
a pipeline share one code path and the same guarantees (lock, resume, budget).

Deliberately not here: printing, progress bars, signal handlers and exit codes (batchgen/cli/),
and reading `os.environ` itself — callers pass the environment mapping they mean.
What a run found before sending anything (`Started`) and how it ended (`Finished`) come
back as values; the caller decides what to show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from batchgen.session_plan import estimates as estimates
from batchgen.session_plan import plan_now as plan_now
from batchgen.session_plan import sync_key as sync_key
from batchgen.session_reports import warm_reports, write_reports
from batchgen.session_setup import api_root as api_root
from batchgen.session_setup import authenticate as authenticate
from batchgen.session_setup import before_sending, open_client, preflight_gate
from batchgen.settings import DEFAULT_OUTAGE_TIMEOUT as DEFAULT_OUTAGE_TIMEOUT
from batchgen.settings import ENV_API_BASE as ENV_API_BASE
from batchgen.settings import ENV_API_KEY as ENV_API_KEY
from batchgen.settings import ENV_CLIENT_ID as ENV_CLIENT_ID
from batchgen.settings import ENV_CLIENT_SECRET as ENV_CLIENT_SECRET
from batchgen.settings import ENV_MAX_VIDEO as ENV_MAX_VIDEO
from batchgen.settings import ENV_OUTAGE as ENV_OUTAGE
from batchgen.settings import ENV_PREFLIGHT_TIMEOUT as ENV_PREFLIGHT_TIMEOUT
from batchgen.settings import ENV_RETRY as ENV_RETRY
from batchgen.settings import SANDBOX_KEY as SANDBOX_KEY
from batchgen.settings import PreflightSettings as PreflightSettings
from batchgen.settings import Resolved as Resolved
from batchgen.settings import credentials_from_env as credentials_from_env
from batchgen.settings import is_http_root as is_http_root
from batchgen.settings import limits_from_env as limits_from_env
from batchgen.settings import outage_timeout_from_env as outage_timeout_from_env
from batchgen.settings import preflight_from_env as preflight_from_env
from batchgen.settings import require_credentials as require_credentials
from batchgen.settings import resolve as resolve
from batchgen.settings import retry_policy_from_env as retry_policy_from_env

if TYPE_CHECKING:  # imported lazily at run time, to keep every command's start-up light
    from batchgen.client import Credentials, Limits
    from batchgen.retry import RetryPolicy
    from batchgen.runner import JobEvent, Runner, RunOutcome, RunSettings
    from batchgen.sandbox import SandboxConfig
    from batchgen.state_store import SharedState, StateStore
    from batchgen.store import JobRow


# -- the run ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """What the run found in the output dir before sending anything."""

    lost: int                    #: creates cut off by the last run's end: now unknown
    changed: tuple[str, ...]     #: jobs edited in the manifest after they were sent
    reopened: int                #: jobs reopened by retry_failed/resubmit_unknown
    total: int                   #: active jobs in the state
    committed: int               #: credits already held by earlier runs
    #: jobs already submitted / finished at the API / downloaded / failed / unknown
    #: (progress starts there)
    already: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Finished:
    """How a run ended, with the final state it left and the reports it wrote."""

    outcome: RunOutcome
    summary: dict[str, Any]
    rows: tuple[JobRow, ...]
    committed: int               #: credits held by everything sent, all runs included
    report: Path


class RunControl:
    """Lets whoever started a run ask it to stop submitting (a signal handler, a
    cancelled task). Given to `on_running` once the runner exists."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def stop(self) -> None:
        """No new submissions; creates on the wire get a grace, state is saved."""
        self._runner.stop()


async def execute(resolved: Resolved, creds: Credentials, *, sandbox: bool = False,
                  retry_failed: bool = False, resubmit_unknown: bool = False,
                  retry: RetryPolicy | None = None, limits: Limits | None = None,
                  sandbox_config: SandboxConfig | None = None,
                  outage_timeout: float | None = DEFAULT_OUTAGE_TIMEOUT,
                  preflight: PreflightSettings | None = None,
                  storage_env: Mapping[str, str] | None = None,
                  on_event: Callable[[JobEvent], None] | None = None,
                  on_started: Callable[[Started], None] | None = None,
                  on_running: Callable[[RunControl], None] | None = None, rows: bool = True
                  ) -> Finished:
    """One run of a resolved manifest: lock the output dir, resume, run, write reports
    (with `rows`, read the final rows back: the CLI needs only totals). `on_started` sees
    what the state held before anything is sent (after the lock is taken); `on_running`
    gets a `RunControl` once the client is authenticated and the runner is about to
    start; `sandbox_config` sets the in-process emulator's knobs; `preflight` says whether
    jobs' assets are checked before they are paid for (default: yes, unless sandboxed);
    `storage_env` holds the object store's AWS_* settings, for local files uploaded to
    `storage.upload` and s3:// URLs presigned at submit time. Reports are written however
    the run ends; cancelling the task that awaits this stops the run as SIGINT does."""
    from batchgen.retry import RetryPolicy
    from batchgen.runner import Runner
    from batchgen.state_store import open_state

    creds.check()  # before the state is opened: nothing is marked sent with a bad header
    manifest = resolved.manifest
    started = time.monotonic()
    # creates the dir; names what refuses
    with open_state(resolved.output_dir, resolved.state, manifest.name,
                    runner=True) as store:
        found = _resume(store, resolved, retry_failed=retry_failed,
                        resubmit_unknown=resubmit_unknown)
        (on_started or _ignore)(found)
        settings = _run_settings(resolved, retry or RetryPolicy(), outage_timeout)

        forward: Callable[[JobEvent], None] = on_event or _ignore
        warn = _notices(forward)
        async with preflight_gate(preflight or PreflightSettings(), sandbox,
                                  resolved.api_base, store, warn, env=storage_env,
                                  uploads=manifest.uploads) as gate, \
                open_client(resolved, creds, sandbox, sandbox_config, limits) as client:
            sign, bucket = await before_sending(client, settings.retry, resolved, store,
                                                storage_env or {}, warn)
            runner = Runner(store, client, settings, forward, gate=gate, sign=sign,
                            publish=None if bucket is None else bucket.publish)
            (on_running or _ignore)(RunControl(runner))
            warmed = asyncio.ensure_future(warm_reports(runner))
            try:
                outcome = await _run_to_end(runner)
            finally:
                warmed.cancel()  # if it has not begun; a warm-up begun is not cut off
                await asyncio.gather(warmed, return_exceptions=True)
                summary, report = await write_reports(
                    store, resolved, runner.committed_credits, client.requests,
                    time.monotonic() - started, bucket, warn)
        final_rows = tuple(store.rows()) if rows else ()
    return Finished(outcome=outcome, summary=summary, rows=final_rows,
                    committed=summary["credits_committed"], report=report)


def _ignore(event: object) -> None:
    """A callback the caller did not give."""


def _notices(forward: Callable[[JobEvent], None]) -> Callable[[str], None]:
    """A warning for the caller, told as one of the run's events (a NOTICE)."""
    from batchgen.runner import EventKind, JobEvent

    def warn(message: str) -> None:
        forward(JobEvent(EventKind.NOTICE, "", message))

    return warn


def _resume(store: StateStore, resolved: Resolved, *, retry_failed: bool,
            resubmit_unknown: bool) -> Started:
    """Settle what the last run left (lost creates, partial files), lay the manifest
    over the state, reopen what the flags ask for, and count what is already done (the
    store counts: no row is read)."""
    from batchgen.download import clean_partials
    from batchgen.store import JobState
    manifest = resolved.manifest
    lost = store.recover()
    sync = store.sync(manifest.jobs, estimates(manifest), key=sync_key(manifest))
    reopened = store.reopen(unknown=resubmit_unknown, failed=retry_failed)
    # a shared output dir's .part files may be other runners' downloads in progress: only
    # those of runners that are gone (recover reaped the ones whose lease ran out) go
    clean_partials(resolved.output_dir,
                   cast("SharedState", store).departed() if store.shared else None)
    n = store.counts()
    done, ready = n[JobState.COMPLETED.value], n[JobState.READY.value]
    return Started(
        lost=lost, changed=tuple(sync.changed), reopened=reopened,
        total=sum(n[s.value] for s in JobState), committed=store.committed_total(),
        already={"submitted": n["submitted"], "task_done": ready + done,
                 "downloaded": done, "failed": n[JobState.FAILED.value],
                 "unknown": n[JobState.UNKNOWN.value]})


def _run_settings(resolved: Resolved, retry: RetryPolicy,
                  outage_timeout: float | None) -> RunSettings:
    """What the runner needs, from the manifest and its resolved overrides."""
    from batchgen.runner import RunSettings
    manifest = resolved.manifest
    return RunSettings(
        output_dir=resolved.output_dir, name=manifest.name,
        filename=manifest.output.filename, concurrency=resolved.concurrency,
        poll_interval=manifest.api.poll_interval, poll_batch=manifest.api.poll_batch,
        max_credits=resolved.max_credits,
        download_workers=max(2, min(32, resolved.concurrency // 3)),
        retry=retry,
        delete_remote=manifest.output.delete_remote, outage_timeout=outage_timeout)


async def _run_to_end(runner: Runner) -> RunOutcome:
    """`runner.run()`, where cancelling the caller stops the run as SIGINT does.

    A cancelled caller (an `arun` task, Ctrl-C in `batchgen.run`) gets the graceful stop:
    no new submissions, creates on the wire get their grace, then the cancellation goes
    on and the reports are written on the way out. A second cancel while stopping cuts
    the grace short; creates still on the wire then resume as unknown, never resent.
    """
    task = asyncio.ensure_future(runner.run())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        runner.stop()
        await task
        raise
