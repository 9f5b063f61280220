"""`python -m batchgen.sandbox`: the same as `batchgen sandbox`, without the main CLI."""

from __future__ import annotations

import argparse
import sys

from batchgen.sandbox.flags import add_arguments
from batchgen.sandbox.server import serve


def main(argv: list[str] | None = None) -> int:
    """Parse sandbox flags and serve until stopped; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m batchgen.sandbox", description="Serve the Akool API emulator."
    )
    add_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
