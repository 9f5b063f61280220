"""Sandbox knobs: one mutable dataclass, loadable from a dict or a JSON file.

Owns the names, defaults and validation of every emulator setting (timings, prices,
credentials, faults). It does not read flags (`server.py` maps flags onto it) and does not
act on the values (`app.py` reads them on every request, so a change takes effect on the
next request).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: Credits per video by resolution and length (akool-api.md §8.1).
PUBLISHED_PRICES: dict[str, dict[int, int]] = {
    "720p": {5: 20, 10: 40},
    "1080p": {5: 25, 10: 50},
    "4k": {5: 30, 10: 60},
}
#: Credits of an updateVideoAudio task by the source video's length (akool-api.md §8.1).
PUBLISHED_ADD_AUDIO: dict[int, int] = {5: 5, 10: 10}

Span = tuple[float, float]


class ConfigError(ValueError):
    """A sandbox setting is unknown or has a value of the wrong shape."""


@dataclass(slots=True)
class SandboxConfig:
    """Every knob of the emulator. Faults are all off by default; any API key works."""

    #: seconds a task stays queueing (status 1); a number or a [min, max] range per task
    queue_time: Span = (0.2, 0.5)
    #: seconds a task stays processing (status 2); a number or a [min, max] range per task
    processing_time: Span = (0.5, 2.0)
    #: seconds each task takes, in creation order (processing only, no queueing): the n-th
    #: task created since the start or a reset takes the n-th figure, later tasks follow
    #: queue_time/processing_time. Lets a benchmark know every duration in advance
    task_times: tuple[float, ...] = ()
    #: probability that a task ends in status 4 instead of 3
    failure_rate: float = 0.0
    #: a task whose prompt contains any of these substrings ends in status 4
    fail_prompts: tuple[str, ...] = ()
    #: tasks in status 1 or 2 allowed at once for the account; 0 = unlimited (else 1005)
    max_in_flight: int = 0
    #: seconds after completion when a video URL stops working (403); 0 = never
    url_expiry: float = 0.0
    #: credits per video of createBySourcePrompt by resolution and length; an update merges
    #: into the table (per resolution and length) instead of replacing it
    prices: dict[str, dict[int, int]] = field(
        default_factory=lambda: {k: dict(v) for k, v in PUBLISHED_PRICES.items()}
    )
    #: credits of updateVideoAudio by the source video's length
    add_audio_prices: dict[int, int] = field(default_factory=lambda: dict(PUBLISHED_ADD_AUDIO))
    #: account balance at start and after a reset
    balance: float = 1_000_000
    #: accepted x-api-key values; with `client_pairs` also empty, any key is accepted
    api_keys: tuple[str, ...] = ()
    #: clientId -> clientSecret accepted by getToken (the secret also works as an API key)
    client_pairs: dict[str, str] = field(default_factory=dict)
    #: API keys or clientIds of banned accounts (1200)
    banned_keys: tuple[str, ...] = ()
    #: createBySourcePrompt answers 1003 without `negative_prompt` (as documented)
    require_negative_prompt: bool = True
    #: seed of the one random generator (lifecycle, outcomes, faults); None = fresh entropy
    seed: int | None = None
    #: probability of an HTTP 500/502/503 on an API request
    http_error_rate: float = 0.0
    #: probability of an HTTP 429 on an API request
    rate_limit_rate: float = 0.0
    #: seconds sent in the Retry-After header of a 429
    retry_after: float = 1.0
    #: probability of a business code 1005 on an API request
    code_1005_rate: float = 0.0
    #: seconds added to every API request; a number or a [min, max] range
    latency: Span = (0.0, 0.0)
    #: probability that the connection is closed before the request body is read
    reset_rate: float = 0.0
    #: probability that a create is performed and charged, then the connection dropped
    lost_create_rate: float = 0.0
    #: probability that a download promises more bytes than it sends, then closes
    truncate_rate: float = 0.0
    #: probability of an HTTP 500 on a download
    download_error_rate: float = 0.0
    #: seconds over which a download body is trickled; 0 = all at once
    slow_download: float = 0.0
    #: probability that delbyids refuses a finished task as "still processing"
    delete_refusal_rate: float = 0.0
    #: a getToken token stops working (1101) after this many uses; 0 = never
    token_expiry_uses: int = 0
    #: fetch each create's image_url first: one that serves no image makes a task that is
    #: charged and ends in status 4, as the real API would (sandbox/fetch.py)
    fetch_images: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxConfig:
        """Defaults with `data` merged over them; raises ConfigError naming a bad key."""
        config = cls()
        config.update(data)
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> SandboxConfig:
        """Load a JSON object of settings (partial is fine) from `path`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must hold a JSON object")
        return cls.from_dict(data)

    def update(self, data: Mapping[str, Any]) -> None:
        """Validate every value of `data` first, then assign them all (all or nothing)."""
        if not isinstance(data, Mapping):
            raise ConfigError("sandbox config must be a JSON object")
        known = {f.name for f in fields(self)}
        parsed: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"unknown sandbox config key: {key!r}")
            parsed[key] = _PARSERS[key](key, value)
        for key, value in parsed.items():
            if key == "prices":  # merge per resolution and length, like manifest prices
                merged = {res: dict(row) for res, row in self.prices.items()}
                for res, row in value.items():
                    merged.setdefault(res, {}).update(row)
                value = merged
            elif key == "add_audio_prices":
                value = {**self.add_audio_prices, **value}
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy; `from_dict(to_dict())` gives an equal config."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif f.name == "prices":
                value = {res: {str(k): v for k, v in row.items()} for res, row in value.items()}
            elif f.name == "add_audio_prices":
                value = {str(k): v for k, v in value.items()}
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out


def span(value: float | Span | list[float]) -> Span:
    """(min, max) of a timing knob given as a number or a pair; tolerant of runtime edits."""
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    lo, hi = value
    return (float(lo), float(hi))


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return float(value)


def _amount(key: str, value: Any) -> float:
    """A non-negative number kept as given, so an integer balance stays an integer."""
    _number(key, value)
    return value


def _rate(key: str, value: Any) -> float:
    number = _number(key, value)
    if number > 1:
        raise ConfigError(f"{key}: expected a probability between 0 and 1, got {value!r}")
    return number


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: expected a non-negative integer, got {value!r}")
    return value


def _span(key: str, value: Any) -> Span:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{key}: expected a number or [min, max], got {value!r}")
        lo, hi = _number(key, value[0]), _number(key, value[1])
        if lo > hi:
            raise ConfigError(f"{key}: min {lo} is greater than max {hi}")
        return (lo, hi)
    number = _number(key, value)
    return (number, number)


def _times(key: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list of seconds, got {type(value).__name__}")
    return tuple(_number(f"{key}[{i}]", v) for i, v in enumerate(value))


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _seed(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer or null, got {value!r}")
    return value


def _length_row(key: str, value: Any) -> dict[int, int]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected an object of video length -> credits")
    row: dict[int, int] = {}
    for length, credits in value.items():
        try:
            length_int = int(length)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: video length {length!r} is not an integer") from None
        row[length_int] = int(_number(f"{key}.{length}", credits))
    return row


def _prices(key: str, value: Any) -> dict[str, dict[int, int]]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected an object of resolution -> {{length: credits}}")
    return {str(res): _length_row(f"{key}.{res}", row) for res, row in value.items()}


def _pairs(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{key}: expected an object of clientId -> clientSecret")
    return dict(value)


_PARSERS: dict[str, Any] = {
    "queue_time": _span,
    "processing_time": _span,
    "task_times": _times,
    "failure_rate": _rate,
    "fail_prompts": _strings,
    "max_in_flight": _count,
    "url_expiry": _number,
    "prices": _prices,
    "add_audio_prices": _length_row,
    "balance": _amount,
    "api_keys": _strings,
    "client_pairs": _pairs,
    "banned_keys": _strings,
    "require_negative_prompt": _bool,
    "seed": _seed,
    "http_error_rate": _rate,
    "rate_limit_rate": _rate,
    "retry_after": _number,
    "code_1005_rate": _rate,
    "latency": _span,
    "reset_rate": _rate,
    "lost_create_rate": _rate,
    "truncate_rate": _rate,
    "download_error_rate": _rate,
    "delete_refusal_rate": _rate,
    "slow_download": _number,
    "token_expiry_uses": _count,
    "fetch_images": _bool,
}
