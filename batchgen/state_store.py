"""Where a run's state lives: the store interface, and which backend a run opens.

`StateStore` is what the session, the runner and the commands use of a store — open it,
lay the manifest over it, apply transitions, read rows. Two backends conform:
`store.Store` (SQLite under the output dir, the embedded default) and
`pgstore.PgStore` (PostgreSQL, chosen with ``--state postgresql://...`` or
BATCHGEN_STATE: the journal outlives the host, so a run killed with its container
resumes elsewhere with nothing paid twice).

`StateUrl` is the one holder of a state URL. Its password is a secret like an API key:
`str()`/`repr()` show the URL with the password replaced, and `secrets()` lists it for
`client.scrub`, so it never reaches output, files, logs or errors.

Deliberately not here: SQL (store.py, pgstore.py), reading the environment (the callers
pass what they read), scheduling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from batchgen.errors import UsageError
from batchgen.redact import MASK as _MASK
from batchgen.redact import redact_url

if TYPE_CHECKING:
    from batchgen.claims import Claim
    from batchgen.jobs import Job, JobRow, JobState
    from batchgen.pgloop import OffLoop
    from batchgen.store import Store, SyncResult
    from batchgen.transitions import Event

ENV_STATE = "BATCHGEN_STATE"
#: the query parameter naming the schemas' prefix (batchgen's own; not sent to the server)
SCHEMA_PARAM = "schema"
DEFAULT_SCHEMA = "batchgen"
#: the query parameter setting the runners' lease in seconds (also batchgen's own)
LEASE_PARAM = "lease"
DEFAULT_LEASE = 30.0
_SCHEMES = ("postgresql", "postgres")


class StateStore(Protocol):
    """What the rest of batchgen uses of a state store (both backends provide it)."""

    #: several runners drain this state at once (`SharedState`): the store hands out work
    shared: bool

    def __enter__(self) -> StateStore: ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...
    def sync(self, jobs: Sequence[Job],
             estimates: Sequence[tuple[int, int]] | Callable[[Job], tuple[int, int]],
             *, key: str | None = None) -> SyncResult: ...
    def recover(self) -> int: ...
    def reopen(self, *, unknown: bool, failed: bool) -> int: ...
    def rows(self, *, active_only: bool = True) -> list[JobRow]: ...
    def iter_rows(self, *, active_only: bool = True) -> Iterator[JobRow]: ...
    def plan_fields(self) -> Iterator[tuple[str, int, str | None, str, int, int | None,
                                            int | None, int]]: ...
    def rows_and_committed(self) -> tuple[list[JobRow], int]: ...
    def get(self, job_id: str) -> JobRow: ...
    def committed_total(self) -> int: ...
    def learned(self, *, active_only: bool = False) -> dict[Any, int]: ...
    def counts(self) -> dict[str, int]: ...
    def rows_with_extra(self) -> Iterator[JobRow]: ...
    def rows_in(self, states: Iterable[JobState], *, where: str = "",
                params: tuple[Any, ...] = ()) -> Iterator[JobRow]: ...
    def queue_page(self, after: tuple[int, int, str] | None, limit: int) -> list[JobRow]: ...
    def parent_states(self, parents: Iterable[str]) -> dict[str, JobState]: ...
    def pending_children(self, parents: Iterable[str]) -> dict[str, list[JobRow]]: ...
    def apply(self, row: JobRow, event: Event, *, durable: bool = False) -> JobRow: ...
    def apply_many(self, steps: Sequence[tuple[JobRow, Event]], *,
                   durable: bool = False, sent: Sequence[str] = ()) -> list[JobRow]: ...
    def mark_sent(self, job_id: str, sent: bool = True) -> None: ...
    def record_run(self, *, wall_seconds: float, requests: Mapping[str, int],
                   budget: int | None, finished_at: str) -> dict[str, Any]: ...
    def run_history(self) -> dict[str, Any]: ...
    def abandoned(self) -> list[dict[str, Any]]: ...
    def asset_check(self, key: str) -> str | None: ...
    def holders(self) -> dict[str, str]: ...
    def record_asset_check(self, key: str, value: str) -> None: ...


class SharedState(StateStore, Protocol):
    """A state several runners drain at once (pgshare.SharedPgStore): the store claims."""

    #: seconds a runner's lease lasts unless renewed
    lease: float
    #: names this runner in the temporary names of its downloads (download.py)
    part_tag: str

    def claim(self, free: int, limit: int, max_credits: int | None, now: str) -> Claim: ...
    def heartbeat(self) -> None: ...
    def adopt(self) -> list[JobRow]: ...
    def offload(self) -> OffLoop: ...
    def departed(self) -> set[str]: ...


@dataclass(frozen=True, slots=True)
class StateUrl:
    """A PostgreSQL state URL: what to connect to, and the schema prefix to use.

    Printing it never shows the password (`redacted`); `conninfo` (for the driver only)
    is the URL without batchgen's own ``schema`` parameter.
    """

    redacted: str
    schema: str
    conninfo: str = field(repr=False)
    password: str | None = field(default=None, repr=False)
    #: seconds a runner's lease lasts (``?lease=``): a runner silent for longer is taken
    #: for dead, and its jobs go to the others
    lease: float = DEFAULT_LEASE

    def __str__(self) -> str:
        return self.redacted

    def secrets(self) -> list[str]:
        """Values to scrub from any text that might quote the URL (`client.scrub`)."""
        if not self.password:
            return []
        return list(dict.fromkeys([self.password, quote(self.password, safe="")]))

    def scrub(self, text: str) -> str:
        """`text` with the password (plain or URL-encoded) replaced."""
        for secret in self.secrets():
            text = text.replace(secret, _MASK)
        return text


def parse_state_url(text: str) -> StateUrl:
    """Check and split a ``--state``/BATCHGEN_STATE value (UsageError when unusable).

    The error never quotes the password: a URL is shown only redacted.
    """
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018  (raises ValueError when out of range)
    except ValueError:
        raise UsageError(f"--state {redact_url(text)!r} is not a valid URL; expected "
                         "postgresql://USER@HOST[:PORT]/DATABASE") from None
    if parts.scheme not in _SCHEMES:
        raise UsageError(f"--state {redact_url(text)!r}: only postgresql:// URLs are "
                         "supported (without --state the state is SQLite in the output dir)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    password = parts.password
    schema, lease = DEFAULT_SCHEMA, str(DEFAULT_LEASE)
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key == SCHEMA_PARAM:
            schema = value
        elif key == LEASE_PARAM:
            lease = value
        else:
            kept.append((key, value))
            if key == "password":
                password = value
    if not schema.isidentifier() or not schema.isascii() or len(schema) > 20:
        raise UsageError(f"--state: schema={schema!r} must be a short name of letters, digits "
                         "and _ (at most 20 characters)")
    try:
        seconds = float(lease)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise UsageError(f"--state: lease={lease!r} must be a number of seconds from 0.1 to "
                         "3600 (how long a silent runner keeps its jobs)")
    conninfo = urlunsplit(parts._replace(query=urlencode(kept)))
    shown = [(k, _MASK if k == "password" else v) for k, v in query]
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{_MASK}@{host}"
    redacted = urlunsplit(parts._replace(netloc=netloc, query=urlencode(shown, safe="*")))
    return StateUrl(redacted=redacted, schema=schema.lower(), conninfo=conninfo,
                    password=unquote(password) if password else None, lease=seconds)


def state_url_from(option: str | None, env: Mapping[str, str]) -> StateUrl | None:
    """``--state`` first, then BATCHGEN_STATE; None means SQLite in the output dir."""
    text = option if option else env.get(ENV_STATE, "").strip()
    return parse_state_url(text) if text else None


def open_state(output_dir: Path, url: StateUrl | None, scope: str, *, lock: bool = True,
               create: bool = True, runner: bool = False) -> Store:
    """Open the state of one manifest: SQLite under `output_dir`, or PostgreSQL at `url`
    where the manifest's rows are kept under `scope` (its name). A `runner` joins the
    runners sharing it (pgshare.SharedPgStore); other commands read it without a lock.

    Typed as `Store`, which both backends are (PgStore reuses its SQL); `StateStore` is
    the part of it the rest of batchgen may rely on.
    """
    if url is None:
        from batchgen.store import Store
        return Store.open(output_dir, lock=lock, create=create)
    pgstore = _pgstore()
    if create:
        output_dir.mkdir(parents=True, exist_ok=True)  # the videos and reports go there
    if runner:
        from batchgen.pgshare import SharedPgStore
        joined: Store = SharedPgStore.join(url, scope, lease=url.lease)
        return joined
    opened: Store = pgstore.PgStore.open(url, scope, lock=False, create=create)
    return opened


def preview_state(output_dir: Path, url: StateUrl | None, scope: str) -> Store:
    """A private copy of the state that `plan` may change freely (NoState when none)."""
    if url is None:
        from batchgen.store import Store
        return Store.preview(output_dir)
    _pgstore()
    from batchgen.pgshare import SharedPgStore
    preview: Store = SharedPgStore.preview(url, scope)
    return preview


def _pgstore() -> Any:
    try:
        from batchgen import pgstore
    except ImportError as exc:
        raise UsageError(f"--state postgresql://... needs the PostgreSQL driver ({exc}); "
                         "install it with: pip install 'batchgen[postgres]'") from None
    return pgstore
