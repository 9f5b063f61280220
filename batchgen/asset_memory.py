"""Asset checks remembered across runs: a good verdict for a day, a dead host for an hour.

Pre-flight (preflight.py) asks here before it fetches: a URL found good within `OK_TTL`
is not fetched again (the asset may be replaced later, so not for ever), and a host found
unreachable within `HOST_TTL` is not asked again (a dead host is asked once, not once per
image). Verdicts live in the state (`CheckStore`; store.Store implements it) as small JSON
documents stamped with the time they were made; one that cannot be read is ignored. Each
is looked up by its key when a check needs it (an indexed read), never all loaded: a
state that remembers a million URLs costs no memory (issue 18).

The time is passed in, never read here. Deliberately not here: which checks run when
(preflight.py), fetching (asset_probe.py), SQL (store.py).
"""

from __future__ import annotations

import contextlib
import json
from typing import Protocol

from batchgen.assets import Check, Verdict

#: seconds a good verdict is trusted across runs (the asset may be replaced later)
OK_TTL = 24 * 3600.0
#: seconds an unreachable host is taken as unreachable across runs
HOST_TTL = 3600.0


class CheckStore(Protocol):
    """Where verdicts are kept between runs (store.Store implements it)."""

    def asset_check(self, key: str) -> str | None: ...

    def record_asset_check(self, key: str, value: str) -> None: ...


class CheckMemory:
    """The verdicts of earlier runs (looked up one key at a time), and the recording of
    new ones; without a store it remembers nothing."""

    def __init__(self, store: CheckStore | None) -> None:
        self._store = store

    def host_down(self, host: str, now: float) -> Check | None:
        """Why `host` could not be reached, when a run within `HOST_TTL` found so."""
        return self._recall("host:" + host, now, HOST_TTL)

    def good(self, url: str, now: float) -> Check | None:
        """The OK verdict on `url` of a run within `OK_TTL`, if there was one."""
        kept = self._recall("url:" + url, now, OK_TTL)
        return kept if kept is not None and kept.verdict is Verdict.OK else None

    def keep_host(self, host: str, check: Check, at: float) -> None:
        """Remember that `host` could not be reached (an inconclusive check)."""
        self._keep("host:" + host, check, at)

    def keep_url(self, url: str, check: Check, at: float) -> None:
        """Remember a definitive verdict on `url`."""
        self._keep("url:" + url, check, at)

    def _recall(self, key: str, now: float, ttl: float) -> Check | None:
        text = None if self._store is None else self._store.asset_check(key)
        if text is None:
            return None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            doc = json.loads(text)
            if now - float(doc["at"]) <= ttl:
                return Check(Verdict(doc["verdict"]), str(doc["reason"]))
        return None

    def _keep(self, key: str, check: Check, at: float) -> None:
        if self._store is not None:
            self._store.record_asset_check(key, json.dumps(
                {"verdict": check.verdict.value, "reason": check.reason, "at": at}))
