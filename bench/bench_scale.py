"""Overhead of `batchgen run` at scale: throughput, requests, CPU, memory and state size.

Issue 8 item 3 and the figures of issue 5's closing note. The emulator (a subprocess we
never wait on) finishes every task at once (queue 0, processing 0, no faults); `batchgen
run` (installed CLI, subprocess, AKOOL_API_KEY=bench) is reaped with `os.wait4`, so its CPU
time and peak RSS are its own. Cases:

* 10,000 jobs at concurrency 100 (issue 8: goals >= 300 jobs/s end-to-end, peak RSS
  <= 200 MB);
* 2,000 jobs at concurrency 50 (issue 5's closing-note figures).

Manifest: `poll_interval: 1` (the first wait; the runner adapts it once tasks finish),
`poll_batch: 100`. "jobs/s" divides the jobs by the process's wall time from exec to exit
(interpreter start, manifest load, report included); "runner jobs/s" uses the run's own
wall time from summary.json. The emulator shares the 2 cores with the runner, so both
figures include its competition for CPU.

Usage: python bench/bench_scale.py [--quick] [--jobs 10000] [--c 100] [--no-small]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib


def case(tmp: Path, n: int, c: int) -> tuple[Any, ...]:
    work = tmp / f"n{n}-c{c}"
    with benchlib.Emulator("--queue-time", "0", "--processing-time", "0", "--seed", "3",
                           "--max-in-flight", str(c)) as em:
        manifest = benchlib.write_manifest(work, n, concurrency=c, poll_interval=1.0,
                                           poll_batch=100)
        run = benchlib.run_cli(benchlib.run_args(manifest, em.url), work)
        stats = em.stats()
    if run.code != 0:
        raise RuntimeError(f"batchgen run exited {run.code}: {run.stderr[-2000:]}")
    out = work / "out"
    summary = json.loads((out / "summary.json").read_text())
    state = out / ".batchgen"
    db = sum(p.stat().st_size for p in state.glob("state.db*"))
    req = stats["requests"]
    total = benchlib.api_requests(stats)
    return (n, c, summary["status"]["completed"], run.wall, n / run.wall,
            n / summary["wall_seconds"], total / n, req.get("resultsByIds", 0) / n,
            run.cpu, run.cpu / n * 1000, run.max_rss_mb, db / 2**20,
            stats["duplicate_fingerprints"], stats["max_in_flight"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 jobs at c=100 only")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--c", type=int, default=100)
    parser.add_argument("--no-small", action="store_true",
                        help="skip the 2,000 jobs / c=50 case")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.no_small = 2_000, True
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        rows.append(case(Path(tmp), args.jobs, args.c))
        if not args.no_small:
            rows.append(case(Path(tmp), 2_000, 50))
    header = ("jobs", "c", "done", "wall s", "jobs/s", "runner jobs/s", "req/job",
              "results/job", "cpu s", "cpu s/1k jobs", "peak RSS MB", "state MB", "dup",
              "max in flight")
    print(benchlib.table("bench_scale: batchgen run, zero processing time", header, rows))
    print("goals (10,000 jobs, c=100): >= 300 jobs/s end-to-end, peak RSS <= 200 MB")
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
