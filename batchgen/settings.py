"""What a run is told before it starts: the manifest with its overrides resolved
(`Resolved`: output dir, API root, concurrency, budget, state URL) and what the
environment mapping says (credentials, retry policy, limits, outage timeout,
pre-flight).

Pure reading and checking of values: a bad value is a one-line `UsageError` (or a
`CredentialsError`) before anything is sent. The caller passes the environment mapping
it means (the CLI's `os.environ`, or the Python API's `env=`); nothing here reads
`os.environ` itself. session.py re-exports every name. Deliberately not here: opening
anything (session.py), printing (batchgen/cli/).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.errors import CredentialsError, UsageError
from batchgen.redact import redact_url

if TYPE_CHECKING:
    from batchgen.client import Credentials, Limits
    from batchgen.manifest import Manifest
    from batchgen.retry import RetryPolicy
    from batchgen.state_store import StateUrl

ENV_API_KEY = "AKOOL_API_KEY"
ENV_CLIENT_ID = "AKOOL_CLIENT_ID"
ENV_CLIENT_SECRET = "AKOOL_CLIENT_SECRET"
ENV_API_BASE = "BATCHGEN_API_BASE"
ENV_RETRY = "BATCHGEN_RETRY_"
ENV_MAX_VIDEO = "BATCHGEN_MAX_VIDEO_BYTES"
ENV_OUTAGE = "BATCHGEN_OUTAGE_TIMEOUT"
ENV_PREFLIGHT_TIMEOUT = "BATCHGEN_PREFLIGHT_TIMEOUT"
#: seconds with no usable answer from the API before a run saves its state and ends
DEFAULT_OUTAGE_TIMEOUT = 600.0
SANDBOX_KEY = "sandbox-key"
#: assets checked at once by pre-flight
PREFLIGHT_CONCURRENCY = 8


# -- settings --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolved:
    """A manifest with the caller's overrides and the environment laid over it."""

    manifest: Manifest
    output_dir: Path
    api_base: str
    concurrency: int
    max_credits: int | None
    #: the shared PostgreSQL state (--state, BATCHGEN_STATE); None: SQLite in output_dir
    state: StateUrl | None = None
    #: s3://bucket/prefix where the files go; `output_dir` is then the local working
    #: folder (state, lock, staging: outputs.py)
    output_url: str | None = None


def resolve(manifest: Manifest, env: Mapping[str, str], *,
            output: str | os.PathLike[str] | None = None,
            api_base: str | None = None, concurrency: int | None = None,
            max_credits: int | None = None, state: str | None = None) -> Resolved:
    """Overrides first, then the environment (`BATCHGEN_API_BASE`, `BATCHGEN_STATE`),
    then the manifest."""
    from batchgen.state_store import state_url_from
    base = api_base or env.get(ENV_API_BASE) or manifest.api.base_url
    if not is_http_root(base):
        raise UsageError(f"API base URL {redact_url(base)!r} is not a valid http(s) URL; fix "
                         f"--api-base, {ENV_API_BASE} or api.base_url")
    output_url = manifest.output.bucket
    if output is not None and str(output).startswith("s3://"):
        from batchgen.objstore import is_s3_url
        from batchgen.outputs import work_dir
        if not is_s3_url(str(output)):
            raise UsageError(f"--output {output!r} is not an s3://bucket/prefix URL")
        output_url, output = str(output), work_dir(manifest.path.parent, str(output))
    elif output is not None:
        output_url = None
    return Resolved(
        manifest=manifest, output_url=output_url,
        output_dir=Path(output) if output else Path(manifest.output.dir),
        api_base=base,
        concurrency=concurrency or manifest.api.concurrency,
        max_credits=max_credits if max_credits is not None else manifest.budget.max_credits,
        state=state_url_from(state, env),
    )


def is_http_root(url: str) -> bool:
    """An http(s) URL with a host and a valid port (checked before anything is sent)."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0


def credentials_from_env(env: Mapping[str, str]) -> Credentials | None:
    """SPEC §2: a clientId/secret pair first, then an API key; None when neither is set."""
    from batchgen.client import Credentials
    cid, secret = env.get(ENV_CLIENT_ID, "").strip(), env.get(ENV_CLIENT_SECRET, "").strip()
    if cid and secret:
        return Credentials(client_id=cid, client_secret=secret)
    key = env.get(ENV_API_KEY, "").strip()
    if key:
        return Credentials(api_key=key)
    return None


def require_credentials(env: Mapping[str, str], sandbox: bool) -> Credentials:
    """The credentials of a run: the emulator's key with `sandbox`, else the environment's."""
    from batchgen.client import Credentials
    if sandbox:
        return Credentials(api_key=SANDBOX_KEY)
    creds = credentials_from_env(env)
    if creds is None:
        raise CredentialsError(
            f"no credentials: set {ENV_API_KEY}, or {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} "
            "(or add --sandbox to try against the built-in emulator)")
    creds.check()  # a value that cannot go in a header: refused before anything is sent
    return creds


def retry_policy_from_env(env: Mapping[str, str]) -> RetryPolicy:
    """The retry policy, tunable for slow networks or fast tests.

    BATCHGEN_RETRY_BASE (first backoff ceiling, s), BATCHGEN_RETRY_CAP (longest wait, s),
    BATCHGEN_RETRY_ATTEMPTS (attempts in all), BATCHGEN_RETRY_DEADLINE (s per call).
    """
    from batchgen.retry import RetryPolicy
    names = {"base": ENV_RETRY + "BASE", "cap": ENV_RETRY + "CAP",
             "max_attempts": ENV_RETRY + "ATTEMPTS", "deadline": ENV_RETRY + "DEADLINE"}
    values: dict[str, Any] = {}
    for attr, var in names.items():
        text = env.get(var, "").strip()
        if not text:
            continue
        try:
            value = int(text) if attr == "max_attempts" else float(text)
        except ValueError:
            raise UsageError(f"{var}={text!r} is not a number") from None
        if value <= 0:
            raise UsageError(f"{var} must be positive")
        values[attr] = value
    return RetryPolicy(**values)


def outage_timeout_from_env(env: Mapping[str, str]) -> float:
    """BATCHGEN_OUTAGE_TIMEOUT (seconds), else the default of 10 minutes."""
    text = env.get(ENV_OUTAGE, "").strip()
    if not text:
        return DEFAULT_OUTAGE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{ENV_OUTAGE}={text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{ENV_OUTAGE} must be a positive number of seconds")
    return value


@dataclass(frozen=True, slots=True)
class PreflightSettings:
    """Whether a run checks assets before paying, and how patiently. Here, not in
    preflight.py (which re-exports it), so a run that checks nothing never imports that."""

    #: None: on against the real API; off with the emulator (--sandbox, or an API root on
    #: this machine's loopback, where only an emulator runs): it fetches nothing
    enabled: bool | None = None
    timeout: float = 10.0          #: seconds for one asset's check, redirects included
    concurrency: int = PREFLIGHT_CONCURRENCY

    def on(self, sandbox: bool, api_base: str = "") -> bool:
        if self.enabled is not None:
            return self.enabled
        return not sandbox and not is_loopback(api_base)


def is_loopback(url: str) -> bool:
    """Whether a URL's host is this machine (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress
    from urllib.parse import urlsplit
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def preflight_from_env(env: Mapping[str, str], enabled: bool | None = None
                       ) -> PreflightSettings:
    """Pre-flight settings: `enabled` (None: on unless sandboxed) and
    BATCHGEN_PREFLIGHT_TIMEOUT, the seconds one asset's check may take (default 10)."""
    text = env.get(ENV_PREFLIGHT_TIMEOUT, "").strip()
    if not text:
        return PreflightSettings(enabled=enabled)
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{ENV_PREFLIGHT_TIMEOUT}={text!r} is not a number of seconds"
                         ) from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{ENV_PREFLIGHT_TIMEOUT} must be a positive number of seconds")
    return PreflightSettings(enabled=enabled, timeout=value)


def limits_from_env(env: Mapping[str, str]) -> Limits:
    """What the network may send: BATCHGEN_MAX_VIDEO_BYTES caps one downloaded video."""
    from batchgen.client import Limits
    text = env.get(ENV_MAX_VIDEO, "").strip()
    if not text:
        return Limits()
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{ENV_MAX_VIDEO}={text!r} is not a whole number of bytes") from None
    if value <= 0:
        raise UsageError(f"{ENV_MAX_VIDEO} must be positive")
    return Limits(video_bytes=value)
