"""Command line: parse arguments, type them once, run a command, map errors to exit codes.

The only package that reads the environment, prints, draws progress bars, installs
signal handlers or exits. Everything below it receives plain values and reports back
through return values, exceptions and `JobEvent` callbacks. Exit codes (SPEC §6) are
decided in exactly one place, `main` (with the tables of exits.py). An error that is not a
`BatchgenError` is a bug: its traceback goes to a crash file (with secrets scrubbed) and
the user reads one line about it.

    parser.py    the grammar (argparse)       config.py    Namespace -> typed Config
    check.py     validate                     plan.py      plan, run --dry-run
    run.py       run                          progress.py  run's display and signals
    local.py     status, report               info.py      effects, models, schema, sandbox
    exits.py     exit codes
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from batchgen.cli.config import Config, from_namespace
from batchgen.cli.exits import (
    EXIT_BUG,
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)
from batchgen.cli.parser import build_parser
from batchgen.errors import BatchgenError, ManifestError
from batchgen.session import credentials_from_env
from batchgen.state_store import ENV_STATE

__all__ = ["build_parser", "command", "main"]

Command = Callable[[Config, TextIO, TextIO], int]


#: command name -> the module of batchgen.cli that runs it (as `cmd_<name>`)
COMMANDS: Mapping[str, str] = {
    "validate": "check", "plan": "plan", "run": "run", "status": "local", "report": "local",
    "effects": "info", "models": "info", "schema": "info", "sandbox": "info"}


def command(name: str) -> Command:
    """The function that runs command `name`; only its own module is imported."""
    module = importlib.import_module(f"batchgen.cli.{COMMANDS[name]}")
    found: Command = getattr(module, f"cmd_{name}")
    return found


def _crash(exc: BaseException, err: TextIO, argv: Sequence[str]) -> int:
    from batchgen.client import scrub
    from batchgen.state_store import parse_state_url
    creds = credentials_from_env(os.environ)
    secrets = creds.secrets() if creds else []
    # the state URL's password, from the environment or the command line
    for arg in (os.environ.get(ENV_STATE, ""), *argv):
        text = arg.removeprefix("--state=")
        if "://" in text:
            with contextlib.suppress(BatchgenError):
                secrets += parse_state_url(text).secrets()
    text = scrub("".join(traceback.format_exception(exc)), secrets)
    fd, path = tempfile.mkstemp(prefix="batchgen-crash-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"batchgen: internal error ({type(exc).__name__}); this is a bug in batchgen. "
          f"Details: {path}. State is saved: re-running resumes.", file=err)
    return EXIT_BUG


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Entry point of the console script; returns the process exit code.

    Called without `argv` (the console script, `python -m batchgen`) it is the program
    itself, and the process ends when it returns: the heap is then frozen (`gc.freeze`), so
    the interpreter's last collections skip every object aiohttp, the manifest and the run
    made. They walked all of them for nothing (the OS takes the memory back): 0.1-0.3 s of
    every run's wall time on the loaded 2-core VM (issue 15). Everything that must reach
    the disk is closed by then (state, reports, log); callers passing `argv` (tests, a
    host process) keep their collector as it was.
    """
    if argv is not None:
        return _main(argv, out, err)
    try:
        return _main(sys.argv[1:], out, err)
    finally:
        gc.freeze()


def _main(argv: list[str], out: TextIO | None, err: TextIO | None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        first = next((a for a in argv if not a.startswith("-")), "")
        args = build_parser(sandbox_flags=first in ("sandbox", "run")).parse_args(argv)
        config = from_namespace(args)
        return int(command(config.command)(config, out, err))
    except ManifestError as exc:
        for problem in exc.problems:
            print(str(problem), file=err)
        return EXIT_USAGE
    except BatchgenError as exc:
        code = next((c for t, c in EXIT_CODES if isinstance(exc, t)), EXIT_FAILED)
        print(f"batchgen: {exc}", file=err)
        return code
    except KeyboardInterrupt:
        print("batchgen: interrupted", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug: one line for the user, the traceback to a file
        return _crash(exc, err, argv or [])
