"""Print the declared minimum of every dependency as an exact pin, one per line.

`.ci/run` installs these in a second venv and runs the suite there, so a lower bound in
pyproject.toml that is not really enough (say `aiohttp>=3.9` while the client needs
`aiohttp.ConnectionTimeoutError`, new in 3.10) fails CI instead of a user's install.
Runtime dependencies and the test extra are pinned; linters and type stubs are left out
(they do not run in that venv).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

NOT_IN_THE_SUITE = {"ruff", "mypy"}

project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
                        .read_text(encoding="utf-8"))["project"]
for requirement in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][^,;\s]*)\s*", requirement)
    if match is None:
        continue  # unversioned (type stubs) or not a plain lower bound
    name, version = match.groups()
    if name.lower() not in NOT_IN_THE_SUITE:
        print(f"{name}=={version}")
