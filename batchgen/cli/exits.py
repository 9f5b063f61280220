"""Exit codes (SPEC §6): the one table from errors and run outcomes to a process's code.

Plain constants and two tables; `cli.main` applies them, the `run` command maps its
outcome. Deliberately not here: printing, parsing.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchgen.errors import (
    ApiError,
    CredentialsError,
    ManifestError,
    OutputDirLocked,
    OutputNotWritable,
    RetryableApiError,
    StateError,
    StateUnavailable,
    StorageError,
    StorageUnavailable,
    UsageError,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET, EXIT_CREDENTIALS, EXIT_LOCKED = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
#: EX_TEMPFAIL: the API stayed unavailable; state saved, nothing lost, re-run later
EXIT_UNAVAILABLE = 75
EXIT_BUG = 70
#: EX_CANTCREAT: the output dir or its state cannot be written (read-only, disk full, a
#: file where the dir should be); nothing is lost, fix it and re-run
EXIT_NOT_WRITABLE = 73
#: a run's outcome (api.Outcome values) -> exit code (SPEC §6)
RUN_EXIT_CODES: Mapping[str, int] = {"completed": EXIT_OK, "failed": EXIT_FAILED,
                                     "budget_stopped": EXIT_BUDGET,
                                     "interrupted": EXIT_INTERRUPTED,
                                     "unavailable": EXIT_UNAVAILABLE}
#: error type -> exit code (SPEC §6); 0/1/3/130 come from the run's outcome
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ManifestError, EXIT_USAGE),
    (UsageError, EXIT_USAGE),
    (StateError, EXIT_USAGE),
    (CredentialsError, EXIT_CREDENTIALS),
    (OutputDirLocked, EXIT_LOCKED),
    (RetryableApiError, EXIT_UNAVAILABLE),
    (StateUnavailable, EXIT_UNAVAILABLE),
    (OutputNotWritable, EXIT_NOT_WRITABLE),
    # a bucket is where files are written (SPEC has no code for it): refused -> 73 as a
    # dir that cannot be written, unreachable -> 75 as an API that cannot be reached
    (StorageUnavailable, EXIT_UNAVAILABLE),
    (StorageError, EXIT_NOT_WRITABLE),
    (ApiError, EXIT_FAILED),
)
