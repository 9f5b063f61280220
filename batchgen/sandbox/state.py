"""The emulator's memory: tasks (tasks.py), balance, tokens, counters and the one seeded RNG.

Task status is computed lazily from the monotonic clock when read, so a task costs a small
object and no timer: 100,000 tasks are free. Tasks still in flight sit in a heap ordered by
the time they finish, which keeps "how many are in flight" at O(log n) per create instead of
a scan. Knows nothing about HTTP; `app.py` translates requests into calls here.

With a `journal` file (what `run --sandbox` passes: the output dir's state folder), every
task is appended to it *before* its create is answered, and deletions after; a new
emulator on the same journal knows every task an earlier one told a client about, so a
run killed with `kill -9` resumes against the sandbox as it would against the real API.
A line cut short by a kill is skipped on load; times are kept as wall-clock instants.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from batchgen.sandbox.config import SandboxConfig, span
from batchgen.sandbox.tasks import SUB_TYPE as SUB_TYPE
from batchgen.sandbox.tasks import TEAM_ID as TEAM_ID
from batchgen.sandbox.tasks import UID as UID
from batchgen.sandbox.tasks import Task as Task
from batchgen.sandbox.tasks import encode_fields as encode_fields
from batchgen.sandbox.tasks import fingerprint as fingerprint
from batchgen.sandbox.tasks import well_formed

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
class SandboxState:
    """All mutable emulator state, owned by one app; `reset()` returns it to the start."""

    config: SandboxConfig
    #: where tasks are kept across processes (None: in memory only)
    journal: Path | None = None
    rng: random.Random = field(init=False)
    tasks: dict[str, Task] = field(init=False)
    tokens: dict[str, Token] = field(default_factory=dict)
    requests: Counter[str] = field(init=False)
    faults: Counter[str] = field(init=False)
    creates_by_fingerprint: Counter[str] = field(init=False)
    tasks_created: int = 0
    credits_charged: int = 0
    balance: float = 0
    max_in_flight: int = 0
    _in_flight: list[tuple[float, str]] = field(init=False)
    _id_prefix: bytes = field(init=False)
    _id_counter: int = 0
    _journal_file: IO[str] | None = None

    def __post_init__(self) -> None:
        self.reset()
        if self.journal is not None:
            self._load_journal(self.journal)

    def reset(self) -> None:
        """Forget tasks and counters, refill the balance, reseed; issued tokens stay valid."""
        self.rng = random.Random(self.config.seed)
        self.tasks = {}
        self.requests = Counter()
        self.faults = Counter()
        self.creates_by_fingerprint = Counter()
        self.tasks_created = 0
        self.credits_charged = 0
        self.balance = self.config.balance
        self.max_in_flight = 0
        self._in_flight = []
        self._id_prefix = os.urandom(5)
        self._id_counter = int.from_bytes(os.urandom(3), "big")
        for token in self.tokens.values():
            token.uses = 0
        if self._journal_file is not None:
            self._journal_file.seek(0)
            self._journal_file.truncate()

    # -- journal -------------------------------------------------------------------------

    def _load_journal(self, path: Path) -> None:
        """Take over the tasks of earlier emulators on `path`, then keep appending to it."""
        tasks: dict[str, Task] = {}
        wall, mono = time.time(), time.monotonic()
        names = {f.name for f in fields(Task)}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
                if entry.get("deleted"):
                    tasks.pop(str(entry["deleted"]), None)
                    continue
                values = {k: v for k, v in entry.items() if k in names}
                values["created"] = mono - (wall - float(entry["created_wall"]))
                task = Task(**values)
                if not well_formed(task):
                    continue  # not a line an emulator wrote: ignored, never a crash
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # a line cut short by a kill: that create was never answered
            tasks[task.id] = task
        for task in tasks.values():
            self.tasks[task.id] = task
            self.balance -= task.deduction_credit
            if task.done_at > mono:
                heapq.heappush(self._in_flight, (task.done_at, task.id))
        path.parent.mkdir(parents=True, exist_ok=True)
        # rewritten without deleted tasks, so the file does not grow run after run
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(self._journal_line(t, wall, mono) for t in tasks.values()),
                       encoding="utf-8")
        os.replace(tmp, path)
        self._journal_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - close()

    @staticmethod
    def _journal_line(task: Task, wall: float, mono: float) -> str:
        entry = asdict(task)
        entry["created_wall"] = wall - (mono - entry.pop("created"))
        return json.dumps(entry, separators=(",", ":")) + "\n"

    def _journal(self, text: str) -> None:
        """Append and flush: in the kernel before the answer leaves, so kill -9 keeps it."""
        if self._journal_file is not None:
            self._journal_file.write(text)
            self._journal_file.flush()

    def delete_task(self, task_id: str) -> None:
        """Forget a task (delbyids), in the journal too."""
        del self.tasks[task_id]
        self._journal(json.dumps({"deleted": task_id}) + "\n")

    def close(self) -> None:
        """Close the journal (the tasks stay in it for the next emulator)."""
        if self._journal_file is not None:
            self._journal_file.close()
            self._journal_file = None

    def new_id(self) -> str:
        """A 24-hex ObjectId-like id: seconds, a random per-instance part, a counter."""
        self._id_counter = (self._id_counter + 1) & 0xFFFFFF
        raw = int(time.time()).to_bytes(4, "big") + self._id_prefix
        return (raw + self._id_counter.to_bytes(3, "big")).hex()

    def chance(self, rate: float, kind: str) -> bool:
        """Draw a fault of probability `rate`; counts it in `faults` when it fires."""
        if rate <= 0 or self.rng.random() >= rate:
            return False
        self.faults[kind] += 1
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
        cfg = self.config
        fail = broken or any(s in prompt for s in cfg.fail_prompts) or (
            cfg.failure_rate > 0 and self.rng.random() < cfg.failure_rate
        )
        if self.tasks_created < len(cfg.task_times):
            queue_s, processing_s = 0.0, cfg.task_times[self.tasks_created]
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
        self._journal(self._journal_line(task, time.time(), time.monotonic()))
        self.tasks_created += 1
        self.credits_charged += credits
        self.balance -= credits
        heapq.heappush(self._in_flight, (task.done_at, task.id))
        self.max_in_flight = max(self.max_in_flight, self.in_flight(now))
        return task

    def record_create(self, endpoint: str, body: dict[str, Any]) -> None:
        """Count one paid create under its request fingerprint."""
        self.creates_by_fingerprint[fingerprint(endpoint, body)] += 1

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

    def stats(self) -> dict[str, Any]:
        """JSON-ready counters; the ledger tests assert against."""
        now = time.monotonic()
        return {
            "requests": dict(self.requests),
            "tasks_created": self.tasks_created,
            "tasks_stored": len(self.tasks),
            "credits_charged": self.credits_charged,
            "balance": self.balance,
            "in_flight": self.in_flight(now),
            "max_in_flight": self.max_in_flight,
            "creates_by_fingerprint": dict(self.creates_by_fingerprint),
            "duplicate_fingerprints": sum(1 for n in self.creates_by_fingerprint.values() if n > 1),
            "faults_injected": dict(self.faults),
            "tokens_issued": len(self.tokens),
        }
