"""Resume cost: a big run killed half way, then the time from restart to the first new create.

Issue 8 item 5. The emulator (subprocess, queue 0 and processing 0) serves a 10,000-job
`batchgen run` at concurrency 100 (installed CLI, subprocess, AKOOL_API_KEY=bench). When the
emulator has created half the tasks, the runner gets SIGKILL. The same command is started
again, and the emulator's ledger (`GET /__sandbox__/stats`, polled every 10 ms) tells when
the first create of the new process arrives: that interval — interpreter start, manifest
load, state recovery and sync, scheduling — is the figure (goal < 2 s). The resumed run is
then left to finish, to check that nothing was paid twice.

For reference the table also shows `batchgen validate` on the same manifest (the manifest
load alone, in a fresh interpreter).

Usage: python bench/bench_resume.py [--quick] [--jobs 10000] [--c 100]
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

CREATE = "createBySourcePrompt"


def creates(em: benchlib.Emulator) -> int:
    return int(em.stats()["requests"].get(CREATE, 0))


def resume_case(tmp: Path, n: int, c: int) -> list[tuple[Any, ...]]:
    work = tmp / "resume"
    rows: list[tuple[Any, ...]] = []
    with benchlib.Emulator("--queue-time", "0", "--processing-time", "0", "--seed", "5") as em:
        manifest = benchlib.write_manifest(work, n, concurrency=c, poll_interval=1.0,
                                           poll_batch=100)
        args = benchlib.run_args(manifest, em.url)
        validate = benchlib.run_cli(["validate", str(manifest)], work)

        started = time.perf_counter()
        proc, _, _ = benchlib.start_cli(args, work)
        while creates(em) < n // 2:
            if proc.poll() is not None:
                raise RuntimeError(f"run ended before half way (exit {proc.returncode})")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        code, first_wall, _, _ = benchlib.reap(proc, started)
        time.sleep(0.3)
        before = creates(em)

        restarted = time.perf_counter()
        proc, _, err = benchlib.start_cli(args, work)
        first_create = None
        while first_create is None:
            if creates(em) > before:
                first_create = time.perf_counter() - restarted
            elif proc.poll() is not None:
                raise RuntimeError(f"the resumed run ended without a create: "
                                   f"{err.read_text()[-2000:]}")
            else:
                time.sleep(0.01)
        code2, wall2, _, rss2 = benchlib.reap(proc, restarted)
        stats = em.stats()
    summary = json.loads((work / "out" / "summary.json").read_text())
    st = summary["status"]
    rows.append(("validate (manifest load)", n, validate.wall, "-", "-", "-", "-", "-", "-"))
    rows.append((f"run, SIGKILL at {before} creates", n, first_wall, code, "-", "-", "-",
                 "-", "-"))
    rows.append(("restart -> first new create", n, first_create, "-", "-", "-", "-", "-", "-"))
    rows.append(("resumed run to the end", n, wall2, code2, st["completed"], st["unknown"],
                 stats["tasks_created"], stats["duplicate_fingerprints"], rss2))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 jobs")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--c", type=int, default=100)
    args = parser.parse_args()
    if args.quick:
        args.jobs = 2_000
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        rows = resume_case(Path(tmp), args.jobs, args.c)
    header = ("step", "jobs", "seconds", "exit", "completed", "unknown", "tasks created",
              "dup", "peak RSS MB")
    print(benchlib.table("bench_resume: kill -9 at 50 %, then restart", header, rows))
    print("goal: restart -> first new create < 2 s; unknown = creates on the wire at the "
          "kill (sent, answer lost: never resent automatically); dup must be 0")
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
