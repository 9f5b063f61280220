"""The emulator's memory: tasks (tasks.py), balance, tokens, counters and the one seeded RNG.

Task status is computed lazily from the monotonic clock when read, so a task costs a small
object and no timer: 100,000 tasks are free. Tasks still in flight sit in a heap ordered by
the time they finish, which keeps "how many are in flight" at O(log n) per create instead of
a scan. Knows nothing about HTTP; `app.py` translates requests into calls here.

What the emulator received and charged is its `Ledger` (the figures tests assert
against: `stats`). With a `journal` file (what `run --sandbox` passes), its tasks outlive
the process (journal.py), so a run killed with `kill -9` resumes against the sandbox as
it would against the real API.
"""

from __future__ import annotations

import heapq
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.sandbox.config import SandboxConfig, span
from batchgen.sandbox.journal import TaskJournal
from batchgen.sandbox.tasks import SUB_TYPE as SUB_TYPE
from batchgen.sandbox.tasks import TEAM_ID as TEAM_ID
from batchgen.sandbox.tasks import UID as UID
from batchgen.sandbox.tasks import Task as Task
from batchgen.sandbox.tasks import encode_fields as encode_fields
from batchgen.sandbox.tasks import fingerprint as fingerprint

CODE_OK = 1000
CODE_PARAM = 1003
CODE_TOO_FREQUENT = 1005
CODE_QUOTA = 1006
CODE_NOT_FOUND = 1008
CODE_BAD_TOKEN = 1101
CODE_NO_AUTH = 1102
CODE_NO_ACCOUNT = 1109
CODE_BANNED = 1200

MESSAGES = {
    CODE_TOO_FREQUENT: "Operation is too frequent",
    CODE_QUOTA: "Your quota is not enough",
    CODE_NOT_FOUND: "The content you get does not exist",
    CODE_BAD_TOKEN: "Invalid authorization or The request token has expired",
    CODE_NO_AUTH: "Authorization cannot be empty",
    CODE_NO_ACCOUNT: "The account does not exist",
    CODE_BANNED: "The account has been banned",
}


@dataclass(slots=True)
class Token:
    """A getToken token: which client it belongs to and how often it was used."""

    client_id: str
    uses: int = 0


@dataclass(slots=True)
class Ledger:
    """What the emulator received and charged since its last reset (`SandboxState.stats`)."""

    balance: float
    #: requests received, by endpoint
    requests: Counter[str] = field(default_factory=Counter)
    #: faults injected, by kind
    faults: Counter[str] = field(default_factory=Counter)
    #: paid creates by request fingerprint: one seen twice is a duplicate charge
    creates_by_fingerprint: Counter[str] = field(default_factory=Counter)
    #: fingerprints created more than once (kept as they happen: `stats` is asked often)
    duplicate_fingerprints: int = 0
    tasks_created: int = 0
    credits_charged: int = 0
    max_in_flight: int = 0


@dataclass(slots=True)
class SandboxState:
    """All mutable emulator state, owned by one app; `reset()` returns it to the start."""

    config: SandboxConfig
    #: where tasks are kept across processes (None: in memory only)
    journal: Path | None = None
    rng: random.Random = field(init=False)
    tasks: dict[str, Task] = field(init=False)
    tokens: dict[str, Token] = field(default_factory=dict)
    ledger: Ledger = field(init=False)
    _in_flight: list[tuple[float, str]] = field(init=False)
    _id_prefix: bytes = field(init=False)
    _id_counter: int = field(init=False)
    _log: TaskJournal | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.reset()
        if self.journal is not None:
            self._load_journal(self.journal)

    @property
    def balance(self) -> float:
        """Credits left (the ledger's)."""
        return self.ledger.balance

    @property
    def requests(self) -> Counter[str]:
        """Requests received, by endpoint (the ledger's; the app counts into it)."""
        return self.ledger.requests

    @property
    def faults(self) -> Counter[str]:
        """Faults injected, by kind (the ledger's)."""
        return self.ledger.faults

    def reset(self) -> None:
        """Forget tasks and counters, refill the balance, reseed; issued tokens stay valid."""
        self.rng = random.Random(self.config.seed)
        self.tasks = {}
        self.ledger = Ledger(balance=self.config.balance)
        self._in_flight = []
        self._id_prefix = os.urandom(5)
        self._id_counter = int.from_bytes(os.urandom(3), "big")
        for token in self.tokens.values():
            token.uses = 0
        if self._log is not None:
            self._log.clear()

    # -- journal -------------------------------------------------------------------------

    def _load_journal(self, path: Path) -> None:
        """Take over the tasks of earlier emulators on `path`, then keep appending to it."""
        wall, mono = time.time(), time.monotonic()
        self._log, tasks = TaskJournal.open(path, wall=wall, mono=mono)
        for task in tasks.values():
            self.tasks[task.id] = task
            self.ledger.balance -= task.deduction_credit
            if task.done_at > mono:
                heapq.heappush(self._in_flight, (task.done_at, task.id))

    def delete_task(self, task_id: str) -> None:
        """Forget a task (delbyids), in the journal too."""
        del self.tasks[task_id]
        if self._log is not None:
            self._log.deleted(task_id)

    def close(self) -> None:
        """Close the journal (the tasks stay in it for the next emulator)."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def new_id(self) -> str:
        """A 24-hex ObjectId-like id: seconds, a random per-instance part, a counter."""
        self._id_counter = (self._id_counter + 1) & 0xFFFFFF
        raw = int(time.time()).to_bytes(4, "big") + self._id_prefix
        return (raw + self._id_counter.to_bytes(3, "big")).hex()

    def chance(self, rate: float, kind: str) -> bool:
        """Draw a fault of probability `rate`; counts it in `faults` when it fires."""
        if rate <= 0 or self.rng.random() >= rate:
            return False
        self.ledger.faults[kind] += 1
        return True

    def in_flight(self, now: float) -> int:
        """Tasks in status 1 or 2 at `now` (amortised O(log n))."""
        heap = self._in_flight
        while heap and heap[0][0] <= now:
            heapq.heappop(heap)
        return len(heap)

    def create_task(
        self, *, now: float, create_ms: int, video_length: int, credits: int,
        prompt: str, fields: dict[str, Any], only_add_audio: bool = False,
        broken: bool = False,
    ) -> Task:
        """Create, charge and schedule one task; the caller has checked balance and limits.
        `broken`: its input could not be fetched, so it fails (charged all the same)."""
        cfg, ledger = self.config, self.ledger
        fail = broken or any(s in prompt for s in cfg.fail_prompts) or (
            cfg.failure_rate > 0 and self.rng.random() < cfg.failure_rate
        )
        if ledger.tasks_created < len(cfg.task_times):
            queue_s, processing_s = 0.0, cfg.task_times[ledger.tasks_created]
        else:
            queue_s = self.rng.uniform(*span(cfg.queue_time))
            processing_s = self.rng.uniform(*span(cfg.processing_time))
        task = Task(
            id=self.new_id(),
            created=now,
            create_ms=create_ms,
            queue_s=queue_s,
            processing_s=processing_s,
            outcome=4 if fail else 3,
            video_length=video_length,
            duration=round(video_length + self.rng.uniform(0.02, 0.2), 3),
            deduction_credit=credits,
            only_add_audio=only_add_audio,
            static_json=encode_fields(fields),
        )
        self.tasks[task.id] = task
        if self._log is not None:
            self._log.task(task)
        ledger.tasks_created += 1
        ledger.credits_charged += credits
        ledger.balance -= credits
        heapq.heappush(self._in_flight, (task.done_at, task.id))
        ledger.max_in_flight = max(ledger.max_in_flight, self.in_flight(now))
        return task

    def record_create(self, endpoint: str, body: dict[str, Any]) -> None:
        """Count one paid create under its request fingerprint."""
        counts = self.ledger.creates_by_fingerprint
        key = fingerprint(endpoint, body)
        counts[key] += 1
        if counts[key] == 2:
            self.ledger.duplicate_fingerprints += 1

    def authenticate(self, headers: Any) -> int | None:
        """None when the request's credentials are good, else the business code to answer."""
        cfg = self.config
        authorization = headers.get("Authorization", "")
        if authorization:
            scheme, _, token_value = authorization.partition(" ")
            token = self.tokens.get(token_value.strip()) if scheme.lower() == "bearer" else None
            if token is None:
                return CODE_BAD_TOKEN
            if token.client_id in cfg.banned_keys:
                return CODE_BANNED
            token.uses += 1
            if cfg.token_expiry_uses and token.uses > cfg.token_expiry_uses:
                return CODE_BAD_TOKEN
            return None
        key = headers.get("x-api-key", "")
        if not key:
            return CODE_NO_AUTH
        if key in cfg.banned_keys:
            return CODE_BANNED
        if (cfg.api_keys or cfg.client_pairs) and not (
            key in cfg.api_keys or key in cfg.client_pairs.values()
        ):
            return CODE_NO_ACCOUNT
        return None

    def issue_token(self, client_id: str, client_secret: str) -> tuple[int, str]:
        """(CODE_OK, token) for a good clientId/clientSecret pair, else (code, "")."""
        cfg = self.config
        if client_id in cfg.banned_keys or client_secret in cfg.banned_keys:
            return CODE_BANNED, ""
        configured = bool(cfg.client_pairs or cfg.api_keys)
        if configured and cfg.client_pairs.get(client_id) != client_secret:
            return CODE_NO_ACCOUNT, ""
        token = f"sbx.{self.rng.getrandbits(128):032x}.{os.urandom(8).hex()}"
        self.tokens[token] = Token(client_id=client_id)
        return CODE_OK, token

    def stats(self, *, brief: bool = False) -> dict[str, Any]:
        """JSON-ready counters; the ledger tests assert against. `brief`: without the
        map of creates per fingerprint (its duplicates are still counted): a million
        tasks' map is neither copied nor sent."""
        now = time.monotonic()
        ledger = self.ledger
        return {
            "requests": dict(ledger.requests),
            "tasks_created": ledger.tasks_created,
            "tasks_stored": len(self.tasks),
            "credits_charged": ledger.credits_charged,
            "balance": ledger.balance,
            "in_flight": self.in_flight(now),
            "max_in_flight": ledger.max_in_flight,
            **({} if brief else
               {"creates_by_fingerprint": dict(ledger.creates_by_fingerprint)}),
            "duplicate_fingerprints": ledger.duplicate_fingerprints,
            "faults_injected": dict(ledger.faults),
            "tokens_issued": len(self.tokens),
        }
