"""Soak: a faulty API, random `kill -9`s of the runner, restarts until the run ends itself.

Issue 6's soak. The emulator (subprocess) injects every fault at a realistic rate: HTTP
5xx 5 %, 429 3 % (Retry-After 1 s), business code 1005 3 %, connection reset 1 %, create
charged but its answer dropped 1 %, truncated download 5 %, download HTTP 500 3 %, task
failure (status 4) 2 %, 0–20 ms latency per request; tasks take 0.2–0.5 s queued plus
0.5–2 s processing. `batchgen run` (installed CLI, subprocess, AKOOL_API_KEY=bench) is
killed with SIGKILL at a random moment (0.5–5 s after each start) `--kills` times, then
left to finish; every exit other than SIGKILL counts as final.

Phase 1 ("budget fits"): N jobs with `budget.max_credits` = N x 20, exactly what the batch
costs if every video is paid once, so the budget is never the reason a job is held back,
and any double payment shows as overshoot too. Phase 2 ("budget hit", N/4 jobs, budget
for half of them) hits the budget on purpose while being killed: the final exit must be
3 and the credits the emulator charged must not pass the budget.

Printed per phase: kills, final exit, jobs completed / unknown / failed / pending, tasks
created, duplicate fingerprints at the emulator (must be 0), credits charged, budget,
overshoot (must be 0), API requests per job, partial files left (must be 0), wall time.

Usage: python bench/soak.py [--jobs 2000] [--kills 12] [--quick] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

FAULTS = ["--http-error-rate", "0.05", "--rate-limit-rate", "0.03", "--retry-after", "1",
          "--code-1005-rate", "0.03", "--reset-rate", "0.01", "--lost-create-rate", "0.01",
          "--truncate-rate", "0.05", "--download-error-rate", "0.03", "--failure-rate", "0.02",
          "--latency", "0,0.02", "--queue-time", "0.2,0.5", "--processing-time", "0.5,2"]
PRICE = 20  # 720p, 5 s
FINAL_WAIT = 900.0


def drive(args: list[str], work: Path, kills: int, rng: random.Random
          ) -> tuple[int, int, int, float]:
    """Run, kill -9 `kills` times at random moments, restart until a final exit.

    Returns (final exit code, kills done, starts, wall seconds).
    """
    started = time.perf_counter()
    done = starts = 0
    while True:
        proc, _, err = benchlib.start_cli(args, work)
        starts += 1
        if done < kills:
            try:
                proc.wait(rng.uniform(0.5, 5.0))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                benchlib.reap(proc, started)
                done += 1
                continue
            code = proc.returncode
        else:
            try:
                proc.wait(FINAL_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError("the final run did not end in time") from None
            code = proc.returncode
        if code == -signal.SIGKILL:
            continue
        if code not in (0, 1, 3):
            raise RuntimeError(f"batchgen run exited {code}: {err.read_text()[-2000:]}")
        return code, done, starts, time.perf_counter() - started


def phase(em: benchlib.Emulator, tmp: Path, label: str, n: int, budget: int, kills: int,
          c: int, rng: random.Random) -> tuple[Any, ...]:
    em.reset()
    work = tmp / label.replace(" ", "-")
    manifest = benchlib.write_manifest(work, n, name=label.replace(" ", "-"), concurrency=c,
                                       poll_interval=1.0, max_credits=budget)
    code, done, starts, wall = drive(benchlib.run_args(manifest, em.url), work, kills, rng)
    stats = em.stats()
    out = work / "out"
    summary = json.loads((out / "summary.json").read_text())
    st = summary["status"]
    partial = len(list(out.glob(".*.part")))
    files = len(list(out.glob("*.mp4")))
    overshoot = max(0, stats["credits_charged"] - budget)
    return (label, n, done, starts, code, st["completed"], files, st["unknown"],
            st["failed"], st["pending"], stats["tasks_created"],
            stats["duplicate_fingerprints"], stats["credits_charged"], budget, overshoot,
            benchlib.api_requests(stats) / n, partial, wall,
            sum(stats["faults_injected"].values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--kills", type=int, default=12, help="SIGKILLs in phase 1")
    parser.add_argument("--c", type=int, default=50, help="concurrency")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="400 jobs, 10 kills")
    parser.add_argument("--no-budget-phase", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.kills = 400, 10
    rng = random.Random(args.seed)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp, \
            benchlib.Emulator("--seed", str(args.seed), *FAULTS) as em:
        rows.append(phase(em, Path(tmp), "budget fits", args.jobs, args.jobs * PRICE,
                          args.kills, args.c, rng))
        if not args.no_budget_phase:
            n2 = max(8, args.jobs // 4)
            rows.append(phase(em, Path(tmp), "budget hit", n2, n2 // 2 * PRICE,
                              max(3, args.kills // 3), args.c, rng))
    header = ("phase", "jobs", "kills", "starts", "exit", "completed", "mp4 files",
              "unknown", "failed", "pending", "tasks created", "dup", "charged", "budget",
              "overshoot", "req/job", ".part", "wall s", "faults")
    print(benchlib.table("soak: faults + random kill -9, restarted until done", header, rows))
    print("must hold: dup = 0, overshoot = 0, .part = 0, mp4 files = completed; unknown = "
          "creates whose answer was lost (dropped by the emulator or on the wire at a kill), "
          "never resent automatically")
    print(f"(soak took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
