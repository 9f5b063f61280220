"""The command line's grammar (SPEC §1): every subcommand, flag, help text and value type.

`build_parser` returns the argparse parser; `cli.config` turns what it parses into typed
values and `cli.main` dispatches on the command's name, so this module imports no
command. A usage error is one line and exit 2 (`_Parser.error` raises `UsageError`).
Deliberately not here: what a command does, the environment, exit codes.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from batchgen import __version__
from batchgen.console import STATUS_EVERY
from batchgen.errors import UsageError
from batchgen.jobs import MAX_CONCURRENCY, MAX_CREDITS
from batchgen.session import ENV_API_BASE
from batchgen.state_store import ENV_STATE


def _whole(minimum: int, maximum: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number in [minimum, maximum] (`what` names it in errors),
    the same range as the manifest key it overrides."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {what}"
                                             ) from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{what} must be {minimum}..{maximum}")
        return value
    return parse


def _number_of_seconds(text: str, *, zero: bool) -> float:
    """A finite number of seconds, above 0 (or 0 too, with `zero`), for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError("seconds must be 0 or more" if zero
                                         else "seconds must be a positive number")
    return value


def _positive_seconds(text: str) -> float:
    """An argparse type: a finite, positive number of seconds."""
    return _number_of_seconds(text, zero=False)


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    return _number_of_seconds(text, zero=True)


_positive_int = _whole(1, MAX_CONCURRENCY, "tasks")
_credits = _whole(0, MAX_CREDITS, "credits")

class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line, as every usage error should."""

    def error(self, message: str) -> NoReturn:
        # main() prefixes "batchgen: "; the subcommand's name is in the hint
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser(sandbox_flags: bool = True) -> argparse.ArgumentParser:
    """The whole command line (SPEC §1).

    The emulator's flags need its server code; commands other than `sandbox` and `run`
    skip importing it (`sandbox_flags=False`), which keeps their start-up light.
    """
    parser = _Parser(prog="batchgen", description="Run Akool image-to-video jobs in bulk "
                     "from YAML manifests.")
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_validate(sub)
    _add_plan(sub)
    _add_run(sub, sandbox_flags)
    _add_local(sub)
    _add_catalogs(sub)
    p = sub.add_parser("sandbox", help="serve the built-in API emulator on loopback")
    if sandbox_flags:
        from batchgen.sandbox import flags
        flags.add_arguments(p)
    return parser


def _online(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--online", action="store_true",
                   help=what + "; and check every image and audio URL as a run's "
                   "pre-flight does, listing each bad asset")
    p.add_argument("--sandbox", action="store_true",
                   help="with --online: ask the built-in emulator (no account needed)")
    p.add_argument("--api-base", metavar="URL", help=f"API root (over {ENV_API_BASE})")
    _preflight_flags(p)


def _preflight_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--no-preflight", dest="preflight", action="store_false",
                       default=None, help="do not check image/audio URLs before paying")
    group.add_argument("--preflight", dest="preflight", action="store_true",
                       default=None, help="check image/audio URLs before paying even "
                       "against an emulator (--sandbox or a loopback --api-base)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", metavar="MANIFEST", help="the manifest file (YAML)")
    p.add_argument("--output", metavar="DIR", help="overrides output.dir")
    p.add_argument("--state", metavar="URL",
                   help="keep the state in PostgreSQL (postgresql://USER@HOST/DB; over "
                        f"{ENV_STATE}) instead of SQLite in the output dir: it outlives "
                        "the host, and several runners may share it")


def _add_validate(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("validate", help="check manifests; print 'ok: N jobs' or every error")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST",
                   help="manifest files (YAML) to check")
    p.add_argument("--json", action="store_true",
                   help="one JSON document: per manifest, ok and the job count or every "
                        "error as {file, line, job, message, fix}")
    _online(p, "also check effect codes and model names against the API's lists")


def _add_plan(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("plan", help="what a run would do now, and what it would cost")
    _common(p)
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--max-credits", type=_credits, metavar="N",
                   help="overrides the budget, as run --max-credits would")
    p.add_argument("--retry-failed", action="store_true",
                   help="plan what run --retry-failed would send")
    p.add_argument("--resubmit-unknown", action="store_true",
                   help="plan what run --resubmit-unknown would send")
    _online(p, "price model jobs from the API's model list")


def _add_run(sub: argparse._SubParsersAction[_Parser],
             sandbox_flags: bool) -> None:
    p = sub.add_parser("run", help="submit, poll, download and report (resumable)")
    _common(p)
    p.add_argument("--sandbox", action="store_true",
                   help="run against the built-in emulator (no account needed); it keeps "
                        "its tasks in the output dir's .batchgen/, so a re-run resumes")
    p.add_argument("--api-base", metavar="URL", help=f"API root (over {ENV_API_BASE})")
    p.add_argument("--concurrency", type=_positive_int, metavar="N",
                   help="tasks in flight at the API")
    p.add_argument("--max-credits", type=_credits, metavar="N", help="overrides the budget")
    p.add_argument("--dry-run", action="store_true", help="print the plan; send nothing")
    p.add_argument("--json", action="store_true",
                   help="the plan (with --dry-run) or the run's summary as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true",
                   help="print nothing unless a human is needed (errors, failed or unknown "
                        "jobs, the budget holding jobs back): for cron")
    p.add_argument("--log-file", metavar="PATH",
                   help="append status lines and notices, with ISO 8601 UTC times, to PATH")
    p.add_argument("--status-interval", type=_seconds, metavar="SECONDS",
                   default=STATUS_EVERY,
                   help=f"seconds between status lines without bars (default "
                        f"{STATUS_EVERY:g}; 0 = none)")
    p.add_argument("--retry-failed", action="store_true",
                   help="resubmit jobs that failed in an earlier run")
    p.add_argument("--resubmit-unknown", action="store_true",
                   help="resubmit jobs whose submission outcome is unknown (may pay twice)")
    p.add_argument("--outage-timeout", type=_positive_seconds, metavar="SECONDS",
                   help="end the run (exit 75, state saved) when the API has answered "
                   "nothing usable for this long (default 600, or BATCHGEN_OUTAGE_TIMEOUT)")
    _preflight_flags(p)
    if sandbox_flags:
        from batchgen.sandbox import flags
        group = p.add_argument_group("emulator settings (with --sandbox; as batchgen sandbox)")
        flags.add_knob_arguments(group)  # type: ignore[arg-type]


def _add_local(sub: argparse._SubParsersAction[_Parser]) -> None:
    """The commands that read the local state only."""
    p = sub.add_parser("status", help="counts per state and credits, from local state only")
    _common(p)
    p.add_argument("--json", action="store_true",
                   help="one JSON document: the counts, and every job with its state, "
                        "task id, file and credits")
    p = sub.add_parser("report", help="rewrite report.csv and summary.json from local state")
    _common(p)


def _add_catalogs(sub: argparse._SubParsersAction[_Parser]) -> None:
    """The API's lists, and the manifest's schema."""
    for name, what in (("effects", "list the API's effects"),
                       ("models", "list the API's video models with their prices")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--json", action="store_true", help="the API's records as JSON")
        p.add_argument("--sandbox", action="store_true",
                       help="ask the built-in emulator (no account needed)")
        p.add_argument("--api-base", metavar="URL", help=f"API root (over {ENV_API_BASE})")
    p = sub.add_parser("schema", help="print the manifest's JSON Schema (for editors)")
    p.add_argument("--write", metavar="FILE",
                   help="write it to FILE (e.g. beside your manifests) instead of stdout")
