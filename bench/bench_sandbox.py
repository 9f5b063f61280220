"""Benchmark of the emulator: requests/s it serves, and whether 100,000 tasks slow it down.

Starts `python -m batchgen.sandbox --port 0` in a subprocess (faults off, zero queue and
processing time) and drives it from this process with aiohttp:

1. a mixed load (create / resultsByIds of 50 ids / download) for --duration seconds;
2. resultsByIds alone, with a few hundred tasks stored;
3. fills the store to --tasks tasks through the batch endpoint (10 per call);
4. resultsByIds alone again, and the mixed load again, with the store full.

Usage: python bench/bench_sandbox.py [--duration 5] [--concurrency 32] [--tasks 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

V4 = "/api/open/v4/image2Video"
KEY = {"x-api-key": "bench"}
BODY = {"image_url": "https://example.com/a.png", "prompt": "bench", "negative_prompt": "n",
        "resolution": "720p", "video_length": 5, "audio_type": 3}


class Bench:
    """One client session against one emulator, with the ids it created."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.ids: list[str] = []
        self.rng = random.Random(1)

    async def create(self) -> None:
        body = {**BODY, "prompt": f"bench {len(self.ids)}"}
        async with self.session.post(f"{self.url}{V4}/createBySourcePrompt", json=body,
                                     headers=KEY) as response:
            answer = await response.json()
        assert answer["code"] == 1000, answer
        self.ids.append(answer["data"]["_id"])

    async def create_batch(self) -> None:
        body = {"image_url": "https://example.com/a.png", "prompt": "fill",
                "resolution": "720p", "video_length": 5, "count": 10}
        async with self.session.post(f"{self.url}{V4}/createBySourcePrompt/batch", json=body,
                                     headers=KEY) as response:
            answer = await response.json()
        assert answer["code"] == 1000, answer
        self.ids.extend(item["_id"] for item in answer["data"]["successList"])

    async def results(self) -> None:
        ids = ",".join(self.rng.choices(self.ids, k=50))
        async with self.session.post(f"{self.url}{V4}/resultsByIds", json={"_ids": ids},
                                     headers=KEY) as response:
            answer = await response.json()
        assert len(answer["data"]["result"]) == 50

    async def download(self) -> None:
        task_id = self.rng.choice(self.ids)
        async with self.session.get(f"{self.url}/videos/{task_id}.mp4") as response:
            assert response.status == 200
            await response.read()

    async def mixed(self) -> None:
        roll = self.rng.random()
        if roll < 0.25:
            await self.create()
        elif roll < 0.75:
            await self.results()
        else:
            await self.download()


async def measure(concurrency: int, seconds: float | None, total: int | None,
                  op: Callable[[], Awaitable[None]]) -> tuple[int, float]:
    """Run `op` from `concurrency` workers for `seconds` or `total` calls; (calls, elapsed)."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds if seconds else None

    async def worker() -> None:
        nonlocal done
        while (deadline is None or time.perf_counter() < deadline) and (
            total is None or done < total
        ):
            done += 1
            await op()

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return done, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Reporter:
    """Prints wall-clock req/s and the emulator's own CPU time per request.

    On a shared 2-core box the client competes with the server for CPU, so wall-clock
    req/s understates the server; CPU µs/req says what one server core could sustain.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid

    async def phase(self, label: str, run: Awaitable[tuple[int, float]]) -> float:
        cpu_before = cpu_seconds(self.pid)
        calls, elapsed = await run
        cpu_us = (cpu_seconds(self.pid) - cpu_before) / calls * 1e6
        rate = calls / elapsed
        print(f"{label:<46} {calls:>7} req {elapsed:5.2f} s {rate:7.0f} req/s | "
              f"server {cpu_us:5.0f} us CPU/req = {1e6 / cpu_us:6.0f} req/s per core",
              flush=True)
        return cpu_us


async def run(url: str, pid: int, args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        bench = Bench(session, url)
        out = Reporter(pid)
        conc, secs = args.concurrency, args.duration
        await measure(conc, None, 400, bench.create)  # warm up + ids to query
        await out.phase("mixed (25% create/50% results x50/25% dl)",
                        measure(conc, secs, None, bench.mixed))
        small = await out.phase(f"resultsByIds x50, {len(bench.ids)} tasks stored",
                                measure(conc, secs, None, bench.results))
        missing = max(0, args.tasks - len(bench.ids))
        await out.phase(f"batch create x10 until {args.tasks} tasks",
                        measure(conc, None, -(-missing // 10), bench.create_batch))
        big = await out.phase(f"resultsByIds x50, {len(bench.ids)} tasks stored",
                              measure(conc, secs, None, bench.results))
        await out.phase(f"mixed, {len(bench.ids)} tasks stored",
                        measure(conc, secs, None, bench.mixed))
    print(f"server CPU per results query, full store vs small: {big / small:.2f}x; "
          f"emulator RSS {rss_mb(pid):.0f} MB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per timed phase")
    parser.add_argument("--concurrency", type=int, default=32, help="client connections")
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks to fill the store to")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  python {sys.version.split()[0]}  "
          f"aiohttp {aiohttp.__version__}", flush=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "batchgen.sandbox", "--port", "0", "--seed", "1",
         "--queue-time", "0", "--processing-time", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        url = line.removeprefix("sandbox listening on ")
        if not url.startswith("http://"):
            print(f"emulator did not start: {line!r}", file=sys.stderr)
            return 1
        print(f"emulator at {url} (pid {server.pid})", flush=True)
        asyncio.run(run(url, server.pid, args))
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
