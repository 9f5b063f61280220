"""The run's assembly: state opened, emulator, client and runner started, reports written.

Owns everything between "a manifest and its options are known" and "the run ended and the
reports are written" (what the manifest's overrides and the environment say is
settings.py's; its names are re-exported here): opening the store (recover, sync, reopen, clean
partial downloads), starting the in-process emulator for `sandbox`, opening the client,
authenticating, driving the `Runner` and writing report.csv/summary.json. The public
Python API (`batchgen.api`) and `batchgen run` both call `execute`, so the CLI and a
pipeline share one code path and the same guarantees (lock, resume, budget).

Deliberately not here: printing, progress bars, signal handlers and exit codes (batchgen/cli/),
and reading `os.environ` itself — callers pass the environment mapping they mean.
What a run found before sending anything (`Started`) and how it ended (`Finished`) come
back as values; the caller decides what to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from batchgen.errors import NoState
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
    from batchgen.client import AkoolClient, Credentials, Limits
    from batchgen.jobs import Job
    from batchgen.manifest import Manifest
    from batchgen.outputs import BucketOutput
    from batchgen.planning import Plan
    from batchgen.preflight import Preflight
    from batchgen.report import Totals
    from batchgen.retry import RetryPolicy
    from batchgen.runner import JobEvent, Runner, RunOutcome, RunSettings
    from batchgen.sandbox import SandboxConfig
    from batchgen.state_store import SharedState, StateStore
    from batchgen.store import JobRow

@contextlib.asynccontextmanager
async def preflight_gate(settings: PreflightSettings, sandbox: bool, api_base: str,
                         store: StateStore, warn: Callable[[str], None], *,
                         env: Mapping[str, str] | None = None,
                         uploads: Container[str] = ()) -> AsyncIterator[Preflight | None]:
    """Pre-flight checks of the jobs still to send, started now, in the order they will be
    sent (the admission queue, read from the store: scheduler/window.py), so verdicts are
    ready before the submitter asks for them. s3:// assets are presigned with `env`'s
    credentials and checked, except `uploads` (objects made from local files, checked at
    load)."""
    if not settings.on(sandbox, api_base):
        yield None
        return
    from batchgen.asset_probe import AssetProber
    from batchgen.jobs import JobState
    from batchgen.preflight import Preflight, assets_of
    from batchgen.scheduler.window import Window
    from batchgen.uploads import Buckets, bucket_probe
    jobs = [(row.job_id, assets_of(row.request, uploads)) for row, _ in Window(store).rest()
            if row.state is JobState.PENDING]
    async with AssetProber.open(timeout=settings.timeout) as prober:
        checks = Preflight(bucket_probe(prober.check, Buckets(env or {})), store=store,
                           concurrency=settings.concurrency, warn=warn)
        checks.start([(job_id, assets) for job_id, assets in jobs if assets])
        try:
            yield checks
        finally:
            await checks.close()


async def prepare_uploads(manifest: Manifest, store: StateStore,
                          env: Mapping[str, str], tell: Callable[[str], None]
                          ) -> Callable[[str], Awaitable[str]] | None:
    """Upload the local files of the jobs still to send (each once, ever: its key is its
    content hash) and return the presigner for s3:// URLs, or None when no job has one.
    Only the rows whose request names an s3:// URL at all are read."""
    from batchgen.jobs import JobState
    todo = (JobState.PENDING, JobState.AUDIO_PENDING)
    rows = store.rows_in(todo, where="request LIKE ?", params=("%s3://%",))
    head = next(rows, None)
    if head is None:
        return None  # nothing to upload or presign: uploads.py is not even imported
    from itertools import chain

    from batchgen.uploads import Buckets, Presigner, s3_urls, upload_all
    wanted = [u for r in chain([head], rows) for u in s3_urls(r.request)]
    if not wanted:
        return None
    from batchgen.objstore import StorageError, StorageUnavailable
    buckets = Buckets(env)
    try:
        stats = await upload_all(buckets, manifest.uploads, wanted)
    except* StorageError as group:
        first = group.exceptions[0]
        kind = StorageUnavailable if isinstance(first, StorageUnavailable) else StorageError
        raise kind(f"storage.upload: {first}; nothing was sent or paid: check the bucket "
                   "and the AWS_* settings, then run again") from None
    if stats.uploaded or stats.present:
        rate = stats.bytes / 1e6 / stats.seconds if stats.seconds > 0 else 0.0
        tell(f"local files: {stats.uploaded} uploaded ({stats.bytes / 1e6:.1f} MB in "
             f"{stats.seconds:.1f} s, {rate:.1f} MB/s), {stats.present} already in the bucket")
    return Presigner(buckets, manifest.storage.url_lifetime).url


async def publish_reports(bucket: Any, paths: Sequence[Path],
                          tell: Callable[[str], None]) -> None:
    """The reports into the output bucket; a failure is told (they stay local)."""
    from batchgen.objstore import StorageError
    try:
        await bucket.publish_reports(paths)
    except StorageError as exc:
        tell(f"the reports could not be uploaded ({exc}); they are in "
             f"{paths[0].parent}, and the next run or `batchgen report` uploads them")


async def authenticate(client: AkoolClient, policy: RetryPolicy) -> None:
    """getToken (when a clientId/secret pair is used), retried like any other call."""
    import random
    await policy.run(client.authenticate, sleep=asyncio.sleep, clock=time.monotonic,
                     rng=random.Random())


#: the in-process emulator's task journal, in the output dir's state folder
SANDBOX_JOURNAL = "sandbox-tasks.jsonl"


@contextlib.asynccontextmanager
async def api_root(resolved_base: str, sandbox: bool, config: SandboxConfig | None = None,
                   output_dir: Path | None = None) -> AsyncIterator[str]:
    """The API root to talk to; with `sandbox`, an emulator started in-process.

    With an output dir, the emulator keeps its tasks in that dir's state folder, so a
    killed sandbox run resumes against the tasks it had created, as a real run would.
    """
    if not sandbox:
        yield resolved_base
        return
    from batchgen.sandbox import Sandbox
    from batchgen.store import STATE_DIR
    journal = None if output_dir is None else output_dir / STATE_DIR / SANDBOX_JOURNAL
    async with Sandbox(config, journal=journal) as emulator:
        yield emulator.url


# -- the plan --------------------------------------------------------------------------


def estimates(manifest: Manifest) -> Callable[[Job], tuple[int, int]]:
    """(total, add-audio part) credits of a job, as the store records them (`Store.sync`
    calls it job by job, so no list of a million pairs is built)."""
    from batchgen.pricing import add_audio_credits, job_credits
    prices = manifest.budget.prices

    def estimate(job: Job) -> tuple[int, int]:
        return job_credits(prices, job), add_audio_credits(prices, job)

    return estimate


#: bump when what `Store.sync` writes for one job changes (its stored request, ...)
SYNC_FORMAT = 1


def sync_key(manifest: Manifest) -> str | None:
    """What the state's rows were synced from: the manifest's expansion and its prices.

    Equal keys mean a new sync would write what the last one wrote (`Store.sync` skips
    it); None for a job list without an expansion digest.
    """
    import hashlib

    from batchgen.jobs import DEFAULT_NEGATIVE_PROMPT
    digest = getattr(manifest.jobs, "digest", None)
    if digest is None:
        return None
    made = f"{SYNC_FORMAT}\x1f{digest}\x1f{manifest.budget.prices!r}\x1f{DEFAULT_NEGATIVE_PROMPT}"
    return hashlib.sha256(made.encode()).hexdigest()


def plan_now(resolved: Resolved, *, retry_failed: bool = False, resubmit_unknown: bool = False
             ) -> tuple[Plan, dict[str, int]]:
    """What a run with these options would do now, and what the API charged so far.

    Reads local state (if any) without taking the lock and sends nothing; `plan`,
    `run --dry-run` and `batchgen.plan()` all come through here, so their figures agree.
    The run's own preparation (recover, sync, reopen) runs on a private copy (on disk) of
    the state, and the queue is `budget.queue`'s, as in the runner: plan and run cannot
    disagree about what is sent or about the budget (`jobs_within_budget`).
    """
    from dataclasses import replace

    from batchgen.planning import bucket, build_plan
    from batchgen.state_store import preview_state

    manifest = resolved.manifest
    if resolved.max_credits != manifest.budget.max_credits:
        manifest = replace(manifest, budget=replace(manifest.budget,
                                                    max_credits=resolved.max_credits))
    states: dict[str, str] = {}
    spent, charged = 0, {}
    sends: list[tuple[str, int]] | None = None
    try:
        store = preview_state(resolved.output_dir, resolved.state, manifest.name)
    except NoState:  # nothing run yet; a state that cannot be read is an error, not empty
        pass
    else:
        with store:
            store.recover()
            store.sync(manifest.jobs, estimates(manifest), key=sync_key(manifest))
            store.reopen(unknown=resubmit_unknown, failed=retry_failed)
            spent = store.committed_total()
            from batchgen.plan_state import plan_over
            streamed = plan_over(manifest, store, spent)  # by price shape: flat memory
            if streamed is not None:
                return streamed
            sends = _sends(store)
            sending = {job for job, _ in sends}
            charged = {"jobs": 0, "estimated": 0, "deducted": 0, "differs": 0}
            for r in store.iter_rows():  # one row at a time (the copy is on disk)
                deducted = r.credits_deducted
                if deducted is not None:  # report.charges, streamed
                    charged["jobs"] += 1
                    charged["estimated"] += r.credits_estimated
                    charged["deducted"] += deducted
                    charged["differs"] += deducted != r.credits_estimated
                if not r.parent:
                    states[r.job_id] = ("to_submit" if r.job_id in sending
                                        else bucket(r.state.value))
    return build_plan(manifest, states or None, spent_credits=spent, sends=sends), charged


def _sends(store: StateStore) -> list[tuple[str, int]]:
    """The admissions of `budget.queue` over the state's active rows, as (the job they
    belong to, credits they reserve), read from the store a page at a time."""
    from batchgen import budget
    from batchgen.jobs import JobState
    from batchgen.scheduler.window import Window
    learned = store.learned(active_only=True)
    return [(row.parent or row.job_id,
             budget.need(row, learned, 1 + len(family) if row.state is JobState.PENDING else 1))
            for row, family in Window(store).rest()]


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


async def check_models(client: AkoolClient, policy: RetryPolicy, manifest: Manifest,
                       store: StateStore) -> None:
    """Before anything is spent: a model job the model cannot make stops the run (exit 2).

    The model list decides which resolutions and lengths a model makes (the batch endpoint
    refuses the others). Only jobs still to be sent are checked; when the list cannot be
    read, the run goes on and the API itself refuses what it cannot make (at no charge).
    """
    import random

    from batchgen.errors import ApiError, ManifestError
    from batchgen.models import model_problems, parse_models
    from batchgen.store import JobState
    shapes = getattr(manifest.jobs, "shapes", None)
    if shapes is not None and not any(model for _, _, model, _, _ in shapes.kinds):
        return  # no job names a model (their price shapes say): no need to expand them
    pending = {r.parent or r.job_id for r in store.rows_in([JobState.PENDING])}
    jobs = [j for j in manifest.jobs if j.model_name and j.id in pending]
    if not jobs:
        return
    try:
        records = await policy.run(client.models, sleep=asyncio.sleep, clock=time.monotonic,
                                   rng=random.Random())
    except ApiError:
        return
    errors, _ = model_problems(jobs, parse_models(records))
    if errors:
        raise ManifestError([p.problem() for p in errors])


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
    from batchgen.runner import EventKind, JobEvent, Runner
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

        def warn(message: str) -> None:
            forward(JobEvent(EventKind.NOTICE, "", message))

        async with preflight_gate(preflight or PreflightSettings(), sandbox,
                                  resolved.api_base, store, warn, env=storage_env,
                                  uploads=manifest.uploads) as gate, \
                _client(resolved, creds, sandbox, sandbox_config, limits) as client:
            await authenticate(client, settings.retry)
            await check_models(client, settings.retry, manifest, store)
            sign = await prepare_uploads(manifest, store, storage_env or {}, warn)
            bucket = await _bucket(resolved, storage_env or {})
            runner = Runner(store, client, settings, forward, gate=gate, sign=sign,
                            publish=None if bucket is None else bucket.publish)
            (on_running or _ignore)(RunControl(runner))
            warmed = asyncio.ensure_future(_warm_reports(runner))
            try:
                outcome = await _run_to_end(runner)
            finally:
                warmed.cancel()  # if it has not begun; a warm-up begun is not cut off
                await asyncio.gather(warmed, return_exceptions=True)
                summary, report = await _write_reports(
                    store, resolved, runner.committed_credits, client.requests,
                    time.monotonic() - started, bucket, warn)
        final_rows = tuple(store.rows()) if rows else ()
    return Finished(outcome=outcome, summary=summary, rows=final_rows,
                    committed=summary["credits_committed"], report=report)


@contextlib.asynccontextmanager
async def _client(resolved: Resolved, creds: Credentials, sandbox: bool,
                  sandbox_config: SandboxConfig | None, limits: Limits | None
                  ) -> AsyncIterator[AkoolClient]:
    """The run's client, on the API (or the emulator it starts) with its connection pool
    sized to the concurrency."""
    from batchgen.client import AkoolClient
    connections = min(100, resolved.concurrency * 2 + 8)
    async with api_root(resolved.api_base, sandbox, sandbox_config,
                        resolved.output_dir) as base, \
            AkoolClient.open(base, creds, max_connections=connections,
                             limits=limits) as client:
        yield client


def _ignore(event: object) -> None:
    """A callback the caller did not give."""


async def _bucket(resolved: Resolved, env: Mapping[str, str]) -> BucketOutput | None:
    """The object-store output (output.dir as s3://...), when the manifest names one,
    checked before anything is sent (reachable, these credentials let in)."""
    if resolved.output_url is None:
        return None
    from batchgen.objstore import StorageError, StorageUnavailable
    from batchgen.outputs import BucketOutput
    bucket = BucketOutput.open(resolved.output_url, env)
    try:
        await bucket.check()
    except StorageError as exc:
        kind = StorageUnavailable if isinstance(exc, StorageUnavailable) else StorageError
        raise kind(f"output.dir: {exc}; nothing was sent or paid") from None
    return bucket


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


async def _warm_reports(runner: Runner) -> None:
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


async def _write_reports(store: StateStore, resolved: Resolved, committed: int,
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
