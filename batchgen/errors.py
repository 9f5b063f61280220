"""The exception hierarchy: every error batchgen raises on purpose.

    BatchgenError
    ├── UsageError            bad command-line use                    (exit 2)
    ├── ManifestError         unreadable or invalid manifest          (exit 2)
    ├── CredentialsError      missing or rejected credentials         (exit 4)
    ├── OutputDirLocked       another run holds the output dir        (exit 5)
    ├── StateError            the state database is unusable / mismatched
    │   └── NoState               no run has written state in this output dir yet
    ├── StateUnavailable      the shared state database (--state) cannot be reached (exit 75)
    ├── ClaimLost             this runner's lease ran out: others may hold its jobs now
    ├── OutputNotWritable     the output dir or its state cannot be written      (exit 73)
    ├── StorageError          a bucket (storage.upload, an s3:// output) refused (exit 73)
    │   └── StorageUnavailable    the object store could not be reached             (exit 75)
    ├── ApiError              the API answered (or failed to) in a way we understand
    │   ├── RetryableApiError     429, 5xx, timeouts, connection errors: try again
    │   │   └── AccountBusy       1005: too many requests or tasks for the account now
    │   ├── OutcomeUnknown        a create that was sent but whose answer never came:
    │   │                         NOT retryable (it may have made a paid task) unless a
    │   │                         caller opts in
    │   └── FatalApiError         anything else: retrying will not help
    │       ├── InsufficientCredits   1006/1104: the account cannot pay for more
    │       └── UrlGone               a video URL answered 403/404/410 (expired or deleted)
    └── DownloadError         truncated, wrong size, not an MP4, or not writable

Exit codes are mapped in one place only: `batchgen.cli`. Messages never contain secrets:
`client/` builds them from the endpoint name, never from headers or full URLs.
"""

from __future__ import annotations

from dataclasses import dataclass


class BatchgenError(Exception):
    """Base for every error we raise on purpose."""


class UsageError(BatchgenError):
    """The command line asks for something that cannot be done."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One located problem in a manifest or data file.

    Rendered as ``FILE:LINE: WHERE: WHAT — HOW TO FIX``; sorted by (file, line).
    """

    file: str
    line: int
    where: str
    what: str
    fix: str = ""

    def __str__(self) -> str:
        where = f" {self.where}:" if self.where else ""
        fix = f" — {self.fix}" if self.fix else ""
        return f"{self.file}:{self.line}:{where} {self.what}{fix}"


class ManifestError(BatchgenError):
    """The manifest is unreadable or breaks the schema or a rule; carries every problem."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.where, p.what))
        super().__init__("\n".join(str(p) for p in self.problems))


class CredentialsError(BatchgenError):
    """Missing or rejected credentials (no variables set, or 1101/1102/1109/1200)."""


class OutputDirLocked(BatchgenError):
    """Another run holds this output dir's lock."""


class StateError(BatchgenError):
    """The state database cannot be used (corrupt, tampered, from a newer batchgen)."""


class NoState(StateError):
    """No run has written state in this output dir yet (not an error for plan/status)."""


class StateUnavailable(BatchgenError):
    """The PostgreSQL state (--state) cannot be reached or stopped answering. The state
    is intact up to its last commit; run again when the server is back."""


class ClaimLost(BatchgenError):
    """A runner sharing a manifest (--state) no longer holds a job it meant to write or
    send: its lease ran out and another runner may have taken the job over. Nothing is
    sent; the run stops and a new one rejoins."""


class OutputNotWritable(BatchgenError):
    """The environment refuses a write: read-only dir or database, full disk, a file
    where the output dir should be. Nothing is lost; fix it and run again."""


class StorageError(BatchgenError):
    """A bucket refused (no such bucket, access denied, a file that changed under its
    content-hash name): named by s3:// URL, never with credentials. Fix it and run
    again; nothing sent is lost (objstore.py)."""


class StorageUnavailable(StorageError):
    """The object store could not be reached (connection refused, timeout, 5xx through
    every retry): run again later."""


class ApiError(BatchgenError):
    """The API answered, or failed to answer, in a way we understand."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after


class RetryableApiError(ApiError):
    """A transient fault: 429, 5xx, code 1005/1015, a timeout or a connection error."""


class AccountBusy(RetryableApiError):
    """Code 1005: the account sends too much or has too many tasks in flight right now.

    Retryable like any transient fault; a scheduler may also take it as a hint to keep
    fewer tasks in flight.
    """


class OutcomeUnknown(ApiError):
    """A create was sent but no usable answer arrived: the server may have acted on it.

    Deliberately not a `RetryableApiError`: the task may exist and be charged, so catching
    "everything transient" never repeats it by accident; a caller must opt in
    (`RetryPolicy.run(retry_unknown=True)`). Reads never raise it (for them a lost answer
    is a plain `RetryableApiError`).
    """


class FatalApiError(ApiError):
    """Any other answer: bad parameters, a failed task, permission. Retrying won't help."""


class InsufficientCredits(FatalApiError):
    """The account's balance is too low (1006/1104): further creates would all fail."""


class UrlGone(FatalApiError):
    """A video URL answered 403/404/410: expired or deleted. Asking the API for a fresh URL
    may help; fetching this one again will not."""


class DownloadError(BatchgenError):
    """A download was truncated, of the wrong size, not an MP4, or could not be written."""
