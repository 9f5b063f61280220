"""The emulator's command-line flags: shared by `batchgen sandbox` and `run --sandbox`.

Kept apart from `server.py` because building the parser must stay light: `batchgen run`
against the real API parses these flags too, and importing the server would pull in
aiohttp's web framework and the video encoder on every start-up (0.4 s). Owns flag names,
their converters and turning them into a `SandboxConfig`; serves nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from batchgen.sandbox.config import ConfigError, SandboxConfig

DEFAULT_PORT = 8765

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
    parser.add_argument("--fetch-images", dest="sbx_fetch_images", action="store_true",
                        help="fetch each create's image_url as the API does: one that serves "
                             "no image makes a charged task that fails (status 4)")


def knobs_given(args: argparse.Namespace) -> list[str]:
    """The emulator flags set on the command line (to refuse them without --sandbox)."""
    given = [flag for flag, *_ in _KNOBS + _LISTS if getattr(args, _dest(flag), None) is not None]
    if getattr(args, "sbx_config", None):
        given.append("--config")
    if getattr(args, "sbx_optional_negative", False):
        given.append("--no-negative-prompt-required")
    if getattr(args, "sbx_fetch_images", False):
        given.append("--fetch-images")
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
    if getattr(args, "sbx_fetch_images", False):
        config.fetch_images = True
    return config


def _port(text: Any) -> int:
    try:
        port = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--port: invalid value {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: {port} is out of range 0-65535")
    return port
