"""Command line: parse arguments, build settings, run a command, map errors to exit codes.

The only module that reads the environment, prints, draws progress bars or exits.
(skeleton: commands are being filled in)
"""

from __future__ import annotations

import argparse
import sys

from batchgen import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchgen", description=__doc__)
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    parser.parse_args(argv if argv is not None else sys.argv[1:])
    return 0
