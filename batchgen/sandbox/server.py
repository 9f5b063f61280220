"""Running the emulator: the `Sandbox` context manager and the `batchgen sandbox` command.

`Sandbox` serves in the caller's event loop (tests, `run --sandbox`), so no thread and no
second loop are involved. `add_arguments`/`serve` are the hooks `cli.py` calls; `serve` is
the only place here that prints, and it turns every bad flag or config into one line on
stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from batchgen.sandbox.app import create_app
from batchgen.sandbox.config import ConfigError, SandboxConfig
from batchgen.sandbox.state import SandboxState

DEFAULT_PORT = 8765


class Sandbox:
    """The emulator on a loopback port, started and stopped with `async with`."""

    def __init__(
        self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0,
        journal: Path | None = None,
    ) -> None:
        """`journal`: a file that keeps the tasks across processes (see state.py)."""
        self.host = host
        self.port = port
        #: root URL without trailing slash, set once started
        self.url = ""
        self.state = SandboxState(config if config is not None else SandboxConfig(),
                                  journal=journal)
        self._runner: web.AppRunner | None = None

    @property
    def config(self) -> SandboxConfig:
        """The live config: attribute changes apply from the next request on."""
        return self.state.config

    def stats(self) -> dict[str, Any]:
        """The server-side ledger (same as GET /__sandbox__/stats)."""
        return self.state.stats()

    def reset(self) -> None:
        """Forget tasks and counters, refill the balance (same as POST /__sandbox__/reset)."""
        self.state.reset()

    async def start(self) -> None:
        """Bind the port (0 = any free one) and start serving in the running loop."""
        if self._runner is not None:
            return
        runner = web.AppRunner(
            create_app(self.state), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.state.close()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# --- command line -------------------------------------------------------------------------


def _float(text: str) -> float:
    return float(text)


def _span(text: str) -> float | list[float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) == 1:
        return parts[0]
    if len(parts) != 2:
        raise ValueError(text)
    return parts


def _pair(text: str) -> tuple[str, str]:
    client_id, sep, secret = text.partition(":")
    if not sep or not client_id or not secret:
        raise ValueError(text)
    return client_id, secret


#: (flag, config key, converter of the flag's text, help)
_KNOBS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    ("--seed", "seed", int, "seed of the random generator (outcomes, timings, faults)"),
    ("--queue-time", "queue_time", _span, "seconds in status 1: MIN[,MAX]"),
    ("--processing-time", "processing_time", _span, "seconds in status 2: MIN[,MAX]"),
    ("--failure-rate", "failure_rate", _float, "probability a task ends in status 4"),
    ("--max-in-flight", "max_in_flight", int, "tasks in status 1/2 allowed at once (0 = off)"),
    ("--url-expiry", "url_expiry", _float, "seconds a video URL works after completion"),
    ("--balance", "balance", _float, "starting credit balance"),
    ("--token-expiry-uses", "token_expiry_uses", int, "a token answers 1101 after N uses"),
    ("--http-error-rate", "http_error_rate", _float, "probability of HTTP 500/502/503"),
    ("--rate-limit-rate", "rate_limit_rate", _float, "probability of HTTP 429"),
    ("--retry-after", "retry_after", _float, "Retry-After seconds sent with a 429"),
    ("--code-1005-rate", "code_1005_rate", _float, "probability of business code 1005"),
    ("--latency", "latency", _span, "seconds added per API request: MIN[,MAX]"),
    ("--reset-rate", "reset_rate", _float, "probability the connection is closed unread"),
    ("--lost-create-rate", "lost_create_rate", _float,
     "probability a create is charged but its answer dropped"),
    ("--truncate-rate", "truncate_rate", _float, "probability a download is cut short"),
    ("--download-error-rate", "download_error_rate", _float,
     "probability a download answers HTTP 500"),
    ("--slow-download", "slow_download", _float, "seconds over which a download trickles"),
    ("--delete-refusal-rate", "delete_refusal_rate", _float,
     "probability delbyids refuses a finished task as still processing"),
)
#: repeatable flags collected into a list
_LISTS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    ("--fail-prompt", "fail_prompts", str, "tasks whose prompt contains this fail (repeatable)"),
    ("--api-key", "api_keys", str, "an accepted x-api-key (repeatable; default: any)"),
    ("--client", "client_pairs", _pair, "an accepted ID:SECRET getToken pair (repeatable)"),
    ("--banned-key", "banned_keys", str, "a banned API key or clientId (repeatable)"),
)


def _dest(flag: str) -> str:
    return "sbx_" + flag.lstrip("-").replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's flags to `parser` (values are checked later, by `serve`)."""
    parser.add_argument("--host", dest="sbx_host", metavar="HOST", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", dest="sbx_port", metavar="PORT", default=str(DEFAULT_PORT),
                        help=f"port to bind, 0 = any free port (default {DEFAULT_PORT})")
    add_knob_arguments(parser)


def add_knob_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's settings alone (no --host/--port): what `run --sandbox` also takes."""
    parser.add_argument("--config", dest="sbx_config", metavar="FILE.json",
                        help="JSON object of sandbox settings; flags override it")
    for flag, key, conv, text in _KNOBS:
        metavar = "MIN[,MAX]" if conv is _span else "P" if key.endswith("_rate") else "N"
        parser.add_argument(flag, dest=_dest(flag), metavar=metavar, help=text)
    for flag, _key, conv, text in _LISTS:
        metavar = "ID:SECRET" if conv is _pair else "TEXT"
        parser.add_argument(flag, dest=_dest(flag), action="append", metavar=metavar, help=text)
    parser.add_argument("--no-negative-prompt-required", dest="sbx_optional_negative",
                        action="store_true", help="accept creates without negative_prompt")


def knobs_given(args: argparse.Namespace) -> list[str]:
    """The emulator flags set on the command line (to refuse them without --sandbox)."""
    given = [flag for flag, *_ in _KNOBS + _LISTS if getattr(args, _dest(flag), None) is not None]
    if getattr(args, "sbx_config", None):
        given.append("--config")
    if getattr(args, "sbx_optional_negative", False):
        given.append("--no-negative-prompt-required")
    return given


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """Defaults, then the --config file, then flags; raises ConfigError naming the flag."""
    path = getattr(args, "sbx_config", None)
    config = SandboxConfig.from_file(path) if path else SandboxConfig()
    for flag, key, conv, _text in _KNOBS + _LISTS:
        raw = getattr(args, _dest(flag), None)
        if raw is None:
            continue
        try:
            value = [conv(item) for item in raw] if isinstance(raw, list) else conv(raw)
            if key == "client_pairs":
                value = dict(value)
            config.update({key: value})
        except (ValueError, ConfigError) as exc:
            shown = raw if not isinstance(raw, list) else ", ".join(raw)
            detail = f" ({exc})" if isinstance(exc, ConfigError) else ""
            raise ConfigError(f"{flag}: invalid value {shown!r}{detail}") from None
    if getattr(args, "sbx_optional_negative", False):
        config.require_negative_prompt = False
    return config


def _port(text: Any) -> int:
    try:
        port = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--port: invalid value {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: {port} is out of range 0-65535")
    return port


def serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT (exit 130) or SIGTERM (exit 0); 2 on bad flags, 1 if unbindable."""
    try:
        config = config_from_args(args)
        port = _port(getattr(args, "sbx_port", DEFAULT_PORT))
    except ConfigError as exc:
        print(f"batchgen sandbox: error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(config, getattr(args, "sbx_host", "127.0.0.1"), port))


async def _serve(config: SandboxConfig, host: str, port: int) -> int:
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[signal.Signals] = loop.create_future()

    def stop(signum: signal.Signals) -> None:
        if not stopped.done():
            stopped.set_result(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    sandbox = Sandbox(config, host=host, port=port)
    try:
        await sandbox.start()
    except OSError as exc:
        print(f"batchgen sandbox: error: cannot listen on {host}:{port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    try:
        print(f"sandbox listening on {sandbox.url}", flush=True)
        signum = await stopped
    finally:
        await sandbox.close()
    return 130 if signum == signal.SIGINT else 0
