"""What a run opens and checks before its first create, so nothing is paid in vain.

The pre-flight checks of the jobs' assets (`preflight_gate`, started first, in the order
the jobs will be sent), the API root (an in-process emulator for `sandbox`, keeping its
tasks beside the state) and the client on it, then `before_sending`: authentication
(getToken, retried like any call), the model list against the jobs still to send, the
local files uploaded (s3:// URLs presigned) and the output bucket checked. Each refusal
here ends the run before anything is spent.

Deliberately not here: the run's order of steps (session.py), the checks themselves
(preflight.py, models.py), uploading (uploads.py), the wire (client/).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen.settings import PreflightSettings, Resolved

if TYPE_CHECKING:  # imported lazily at run time, to keep every command's start-up light
    from batchgen.client import AkoolClient, Credentials, Limits
    from batchgen.manifest import Manifest
    from batchgen.outputs import BucketOutput
    from batchgen.preflight import Preflight
    from batchgen.retry import RetryPolicy
    from batchgen.sandbox import SandboxConfig
    from batchgen.state_store import StateStore


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


@contextlib.asynccontextmanager
async def open_client(resolved: Resolved, creds: Credentials, sandbox: bool,
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


async def authenticate(client: AkoolClient, policy: RetryPolicy) -> None:
    """getToken (when a clientId/secret pair is used), retried like any other call."""
    import random
    await policy.run(client.authenticate, sleep=asyncio.sleep, clock=time.monotonic,
                     rng=random.Random())


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


@contextlib.asynccontextmanager
async def preflight_gate(settings: PreflightSettings, sandbox: bool, api_base: str,
                         store: StateStore, warn: Callable[[str], None], *,
                         env: Mapping[str, str] | None = None,
                         uploads: Container[str] = ()) -> AsyncIterator[Preflight | None]:
    """Pre-flight checks of the jobs still to send, started now, in the order they will be
    sent (the admission queue, read from the store a page at a time as the checks go:
    scheduler/window.py), so verdicts are ready before the submitter asks for them, and no
    further ahead than the lookahead (preflight.LOOKAHEAD). s3:// assets are presigned with
    `env`'s credentials and checked, except `uploads` (objects made from local files,
    checked at load)."""
    if not settings.on(sandbox, api_base):
        yield None
        return
    from batchgen.asset_probe import AssetProber
    from batchgen.jobs import JobState
    from batchgen.preflight import Asset, Preflight, assets_of
    from batchgen.scheduler.window import Window
    from batchgen.uploads import Buckets, bucket_probe

    def queue() -> Iterator[tuple[str, list[Asset]]]:
        """Every job still to send, with what to check (jobs with nothing to check too:
        the submitter asks about each, and one not read would be looked up alone)."""
        for row, _ in Window(store).rest():
            if row.state is JobState.PENDING:
                yield row.job_id, assets_of(row.request, uploads)

    def lookup(job_id: str) -> list[Asset]:
        """A job asked for out of order, read alone: checked unless it can no longer be
        sent. A shared state's store claims a job (`submitting`) before its create asks
        the gate, so a claimed job the reader had not reached is checked too, never
        cleared unchecked (the gate is only asked before a create leaves)."""
        try:
            row = store.get(job_id)
        except KeyError:
            return []
        unsent = (JobState.PENDING, JobState.SUBMITTING)
        return assets_of(row.request, uploads) if row.state in unsent else []

    async with AssetProber.open(timeout=settings.timeout) as prober:
        checks = Preflight(bucket_probe(prober.check, Buckets(env or {})), store=store,
                           concurrency=settings.concurrency, warn=warn)
        checks.start(queue(), lookup)
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


async def open_bucket(resolved: Resolved, env: Mapping[str, str]) -> BucketOutput | None:
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


async def before_sending(client: AkoolClient, policy: RetryPolicy, resolved: Resolved,
                         store: StateStore, env: Mapping[str, str],
                         warn: Callable[[str], None]
                         ) -> tuple[Callable[[str], Awaitable[str]] | None,
                                    BucketOutput | None]:
    """The run's steps between opening the client and the first create, in this order:
    authenticate, check the model list, upload the local files (returns the presigner
    for s3:// URLs) and check the output bucket (returned, when there is one). Each
    refusal ends the run before anything is paid."""
    await authenticate(client, policy)
    await check_models(client, policy, resolved.manifest, store)
    sign = await prepare_uploads(resolved.manifest, store, env, warn)
    return sign, await open_bucket(resolved, env)
