"""Shared plumbing of the batchgen benchmarks (not a benchmark itself, not a test).

* `Emulator`: `python -m batchgen.sandbox --port 0 [flags]` in a subprocess, with its admin
  endpoints (`stats`, `configure`, `reset`);
* `write_manifest`: a manifest of N distinct jobs (a JSONL jobs_file, as a user with a big
  batch would write it);
* `run_cli`: the installed `batchgen` console script in a subprocess, reaped with
  `os.wait4` so its CPU time and peak RSS are its own (the emulator, a sibling process we
  never wait on, is not counted);
* `table`: one plain-text table, headed by the machine's core count.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
BATCHGEN = str(VENV_BIN / "batchgen") if (VENV_BIN / "batchgen").exists() else (
    shutil.which("batchgen") or "batchgen")
ADMIN = "/__sandbox__"
API_KEY = "bench-api-key"  # the CLI refuses keys shorter than 8 characters


def cores() -> str:
    """Cores of the machine, and those this process may use when fewer."""
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    where = f"{platform.machine()}, Python {platform.python_version()}"
    return f"{total} cores ({where})" if usable == total else f"{total} cores, {usable} usable"


class Emulator:
    """The emulator as a subprocess on a free loopback port; stopped on exit."""

    def __init__(self, *flags: str) -> None:
        self.flags = list(flags)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Emulator:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchgen.sandbox", "--port", "0", *self.flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"emulator did not start: {line!r} {self.proc.stderr.read()!r}")
        self.url = line.rsplit(" ", 1)[1].strip()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + ADMIN + path, data=data,
                                     method="GET" if data is None else "POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def stats(self, *, brief: bool = False) -> dict[str, Any]:
        """The emulator's ledger; `brief` leaves out the creates per fingerprint."""
        return self._call("/stats?brief=1" if brief else "/stats")

    def configure(self, **patch: Any) -> None:
        self._call("/config", patch)

    def reset(self) -> None:
        self._call("/reset", {})


def write_manifest(directory: Path, n: int, *, name: str = "bench", concurrency: int = 20,
                   poll_interval: float | None = 5.0, poll_batch: int = 50,
                   max_credits: int | None = None, output: Path | None = None) -> Path:
    """A manifest of `n` distinct 720p/5 s jobs (ids j000001...) in a JSONL jobs_file.

    `poll_interval=None` leaves the key out, so the manifest's default applies."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "jobs.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"j{i:06d}", "prompt": f"bench job {i}",
                                "image_url": f"https://example.com/img/{i % 97}.jpg"}) + "\n")
    out = output or directory / "out"
    lines = [
        "version: 1", f"name: {name}",
        "api:", f"  concurrency: {concurrency}",
        *([f"  poll_interval: {poll_interval}"] if poll_interval is not None else []),
        f"  poll_batch: {poll_batch}",
        *(["budget:", f"  max_credits: {max_credits}"] if max_credits is not None else []),
        "output:", f"  dir: {out}",
        "defaults:", "  resolution: 720p", "  video_length: 5", "  audio_type: 3",
        "  negative_prompt: blurry",
        "jobs_file: jobs.jsonl",
    ]
    path = directory / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(slots=True)
class CliRun:
    """One finished `batchgen` process, measured from outside."""

    code: int
    wall: float
    cpu: float          #: user + system seconds of the batchgen process alone
    max_rss_mb: float   #: its peak resident set size
    stdout: str
    stderr: str


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AKOOL_CLIENT_ID", "AKOOL_CLIENT_SECRET", "BATCHGEN_API_BASE")}
    env["AKOOL_API_KEY"] = API_KEY
    return env


def start_cli(args: list[str], workdir: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start `batchgen ARGS` with AKOOL_API_KEY=bench; output goes to files in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    out, err = workdir / "cli.out", workdir / "cli.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([BATCHGEN, *args], stdout=o, stderr=e, env=cli_env(),
                                cwd=workdir)
    return proc, out, err


def reap(proc: subprocess.Popen[bytes], started: float) -> tuple[int, float, float, float]:
    """Wait for `proc` with wait4: (exit code, wall, cpu seconds, peak RSS MB) of it; the
    peak is the larger of its own and that of its children it reaped (a run's poster
    process), the CPU its own and theirs."""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    return code, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_cli(args: list[str], workdir: Path) -> CliRun:
    """Run `batchgen ARGS` to the end and measure it."""
    started = time.perf_counter()
    proc, out, err = start_cli(args, workdir)
    code, wall, cpu, rss = reap(proc, started)
    return CliRun(code, wall, cpu, rss, out.read_text(), err.read_text())


def run_args(manifest: Path, url: str) -> list[str]:
    return ["run", str(manifest), "--api-base", url, "--no-progress"]


def table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """A plain table; floats with 3 significant decimals at most."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)
    cells = [tuple(fmt(v) for v in r) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    lines = [f"{title} — {cores()}",
             "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(r, widths, strict=True))) for r in cells]
    return "\n".join(lines)


def api_requests(stats: dict[str, Any]) -> int:
    """API requests the emulator served (downloads included, admin calls excluded)."""
    return sum(n for k, n in stats.get("requests", {}).items() if not k.startswith("__"))
