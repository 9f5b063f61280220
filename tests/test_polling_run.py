"""The poll schedule inside a real run: the CLI in a subprocess against the emulator.

Asserts on the run's own summary and the emulator's ledger of requests, not on log text.
"""

from __future__ import annotations

import json

from cli_helpers import run_cli, write_manifest


async def test_default_poll_interval_still_finds_short_tasks_soon_after_they_end(
        sandbox, tmp_path):
    # every task takes 0.3 s and the manifest keeps the default poll_interval (5 s). The
    # first wave is found by early probes, the API's timestamps then time the others:
    # 4 waves, bound 1.2 s. Polling by poll_interval (the old schedule) took over 10 s
    sb = await sandbox(processing_time=0.3)
    manifest = write_manifest(tmp_path, 20, base_url=sb.url, concurrency=5,
                              extra={"api": {"poll_interval": 5}})
    result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"]["completed"] == 20
    assert summary["wall_seconds"] < 4.0
    # early probes are cheap (one request asks about every task in flight), and once the
    # duration is known the poller waits for it instead of asking again and again
    assert sb.stats()["requests"]["resultsByIds"] <= 12
