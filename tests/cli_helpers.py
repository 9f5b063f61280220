"""Helpers to run the real CLI in a subprocess against an emulator, and to write manifests."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a batchgen subprocess: no real credentials, no terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKOOL_", "BATCHGEN_"))}
    env["AKOOL_API_KEY"] = "test-key"
    env.update(extra)
    return env


async def start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None
                    ) -> asyncio.subprocess.Process:
    """Start `python -m batchgen ARGS` without waiting (for kill tests)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchgen", *args, cwd=cwd, env=env or cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
                  timeout: float = 60) -> CliResult:
    """Run the real CLI in a subprocess while the test's emulator keeps serving."""
    proc = await start_cli(*args, cwd=cwd, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()  # a hung run must not outlive its test
        await proc.wait()
        raise
    return CliResult(proc.returncode or 0, out.decode(), err.decode())


def write_manifest(directory: Path, n_jobs: int, *, name: str = "t", base_url: str = "",
                   concurrency: int = 5, poll_interval: float = 0.05, poll_batch: int = 50,
                   extra: dict[str, Any] | None = None, job_extra: dict[str, Any] | None = None,
                   prompt: str = "prompt") -> Path:
    """A manifest of `n_jobs` distinct jobs (each with its own prompt) writing to out/."""
    doc: dict[str, Any] = {
        "version": 1, "name": name,
        "api": {"concurrency": concurrency, "poll_interval": poll_interval,
                "poll_batch": poll_batch, **({"base_url": base_url} if base_url else {})},
        "output": {"dir": "out"},
        "defaults": {"resolution": "720p", "video_length": 5, "audio_type": 3,
                     "negative_prompt": "blurry"},
        "jobs": [{"id": f"job{i:03d}", "image_url": f"https://example.com/{i}.jpg",
                  "prompt": f"{prompt} {i}", **(job_extra or {})} for i in range(n_jobs)],
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    path = directory / "manifest.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
