"""`python -m batchgen` runs the same entry point as the console script."""

from batchgen.cli import main

raise SystemExit(main())
