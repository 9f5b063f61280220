"""The command line's typed configuration: the argparse `Namespace`, turned once into
frozen values that the commands read (no `getattr(args, ...)` below this point).

Flags a subcommand does not take keep their defaults, so every command reads the same
shape. The emulator's own flags (`run --sandbox --processing-time ...`, `batchgen
sandbox`) stay in their namespace: batchgen/sandbox/flags.py owns their meaning.
Deliberately not here: reading the environment (the commands do, in the order that
decides which error a user sees first), printing.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from batchgen.console import STATUS_EVERY


@dataclass(frozen=True, slots=True)
class Target:
    """Which manifest, and the overrides that place and bound its run (plan, run,
    status, report)."""

    manifest: str
    output: str | None = None
    #: a PostgreSQL state URL (--state); None: SQLite in the output dir or BATCHGEN_STATE
    state: str | None = None
    concurrency: int | None = None
    max_credits: int | None = None


@dataclass(frozen=True, slots=True)
class Api:
    """How to reach the API, and whether to ask it before paying."""

    sandbox: bool = False
    #: --api-base (over BATCHGEN_API_BASE and the manifest's api.base_url)
    base: str | None = None
    #: validate/plan --online: ask the API's lists and check every asset
    online: bool = False
    #: --preflight / --no-preflight; None: the default for the API in use
    preflight: bool | None = None


@dataclass(frozen=True, slots=True)
class RunFlags:
    """What `run` (and `plan`, which forecasts it) is asked to send."""

    dry_run: bool = False
    retry_failed: bool = False
    resubmit_unknown: bool = False
    #: --outage-timeout; None: BATCHGEN_OUTAGE_TIMEOUT or the default
    outage_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Display:
    """What is printed, and how."""

    json: bool = False
    quiet: bool = False
    no_progress: bool = False
    log_file: str | None = None
    status_interval: float = STATUS_EVERY


@dataclass(frozen=True, slots=True)
class Config:
    """One command line, typed."""

    command: str
    #: validate's manifests
    manifests: tuple[str, ...] = ()
    #: plan/run/status/report's manifest and overrides; None for the other commands
    target: Target | None = None
    api: Api = Api()
    run: RunFlags = RunFlags()
    display: Display = Display()
    #: schema --write FILE
    write: str | None = None
    #: the emulator's flags, as batchgen/sandbox/flags.py reads them
    emulator: argparse.Namespace = field(default_factory=argparse.Namespace)

    def need_target(self) -> Target:
        """The manifest this command works on (its parser requires one)."""
        if self.target is None:
            raise AssertionError(f"{self.command} takes no manifest")
        return self.target


def from_namespace(ns: argparse.Namespace) -> Config:
    """The parsed command line as a `Config` (flags a command lacks get defaults)."""
    def get(name: str, default: object = None) -> object:
        return getattr(ns, name, default)

    manifest = get("manifest")
    target = None if manifest is None else Target(
        manifest=str(manifest), output=_str(get("output")), state=_str(get("state")),
        concurrency=_int(get("concurrency")),
        max_credits=_int(get("max_credits")))
    return Config(
        command=str(get("command", "")),
        manifests=tuple(str(m) for m in (ns.manifests if hasattr(ns, "manifests") else ())),
        target=target,
        api=Api(sandbox=bool(get("sandbox", False)), base=_str(get("api_base")),
                online=bool(get("online", False)), preflight=_bool(get("preflight"))),
        run=RunFlags(dry_run=bool(get("dry_run", False)),
                     retry_failed=bool(get("retry_failed", False)),
                     resubmit_unknown=bool(get("resubmit_unknown", False)),
                     outage_timeout=_float(get("outage_timeout"))),
        display=Display(json=bool(get("json", False)), quiet=bool(get("quiet", False)),
                        no_progress=bool(get("no_progress", False)),
                        log_file=_str(get("log_file")),
                        status_interval=float(_float(get("status_interval")) or 0.0)
                        if hasattr(ns, "status_interval") else STATUS_EVERY),
        write=_str(get("write")),
        emulator=ns)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None
