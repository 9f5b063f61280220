"""A plain `batchgen run` imports only what it uses.

Every import is paid at each start (cron runs, short batches: issue 15 measured ~1 s of
imports in a 5 s run). Optional features import their heavy modules where they are used:
PyAV in the poster child only, psycopg with a postgresql:// state, obstore with an s3://
bucket, pre-flight against the real API, uploads with local files. These tests fail when
one of them slips back into the run path's module tops.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from cli_helpers import cli_env, write_manifest

#: never in the CLI process of a run with remote URLs, a local state and a local output
#: dir against a loopback API (pre-flight off there); jinja2 is allowed, for report.html
NOT_IN_A_PLAIN_RUN = ("av", "psycopg", "obstore", "batchgen.pgconn", "batchgen.pglease",
                      "batchgen.pgstore", "batchgen.pgshare", "batchgen.pgloop",
                      "batchgen.preflight", "batchgen.asset_probe", "batchgen.uploads",
                      "batchgen.sandbox.server", "aiohttp.web")
#: also not before the run starts: the reports' modules come at its end
NOT_AT_START = (*NOT_IN_A_PLAIN_RUN, "jinja2", "batchgen.report_html")

PROBE = """
import json, sys
from batchgen import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_importing_the_run_path_loads_no_optional_feature():
    """What `batchgen run` imports before it starts running (the CLI, the API, the
    session, the runner, the client, the manifest loader and the store)."""
    probe = ("import sys\n"
             "import batchgen.cli, batchgen.cli.run, batchgen.api, batchgen.session\n"
             "import batchgen.runner, batchgen.client, batchgen.manifest, batchgen.store\n"
             "import batchgen.state_store\n"
             f"loaded = [m for m in {NOT_AT_START!r} if m in sys.modules]\n"
             "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", probe], check=True)


async def test_a_plain_run_to_its_end_loads_no_optional_feature(sandbox, tmp_path):
    """A whole run (submit, poll, download, posters, reports) in a CLI process: still none
    of them (the posters' decoder runs in a child process of its own)."""
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROBE, "run", str(manifest), "--api-base", sb.url,
        "--no-progress", cwd=tmp_path, env=cli_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().splitlines()[-1])
    assert result["code"] == 0, err.decode()
    assert (tmp_path / "out" / "report.html").exists()
    assert any((tmp_path / "out" / "posters").glob("*.jpg"))  # the child made them
    loaded = [m for m in NOT_IN_A_PLAIN_RUN if m in result["modules"]]
    assert not loaded, loaded
