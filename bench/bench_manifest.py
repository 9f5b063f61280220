"""Benchmark of the manifest half: `validate` and `plan` of a 100,000-job manifest.

Generates, in a temporary directory, a manifest with a `matrix` and a `jobs_file` (JSON
Lines) that together expand to --jobs jobs (default 100,000), then runs
`python -m batchgen validate` and `python -m batchgen plan` (and `plan --json`) as
separate processes and prints, for each, the wall time and the peak RSS of that process
(from os.wait4), the best of --repeat runs, each a full load (the load memo, which spares
`plan` an unchanged manifest's check, is removed before each). Goal (issue 3): under 5 s
and under 300 MB each on a 2-core machine; past 100,000 jobs, up to the 1,000,000 limit
(issue 18): under 8 s and 300 MB. bench_stream.py measures the rest of a large
manifest's life (sync, resume, status, report).

Usage: python bench/bench_manifest.py [--jobs 100000] [--repeat 3] [--csv]
"""

from __future__ import annotations

import argparse
import csv as csv_module
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 5.0
GOAL_SECONDS_AT_LIMIT = 8.0  # more than 100,000 jobs
GOAL_MB = 300
MATRIX_IMAGES = 25
MATRIX_PROMPTS = 10
MATRIX_SIZE = MATRIX_IMAGES * MATRIX_PROMPTS * 2 * 2   # x resolutions x lengths = 1,000


def write_manifest(folder: Path, jobs: int, csv: bool, max_credits: int = 5_000_000) -> Path:
    """A realistic large manifest: defaults, a 1,000-job matrix, the rest in a data file.
    The default budget (5,000,000 credits) stops a run after ~130,000 of 1,000,000 jobs."""
    rows = max(jobs - MATRIX_SIZE, 0)
    resolutions = ("720p", "1080p", "4k")
    data = folder / ("rows.csv" if csv else "rows.jsonl")
    columns = ("image_url", "prompt", "resolution", "video_length", "audio_type", "audio_url")
    with data.open("w", encoding="utf-8", newline="") as out:
        writer = csv_module.writer(out)
        if csv:
            writer.writerow(columns)
        for i in range(rows):
            audio = i % 10 == 0
            row = {"image_url": f"https://cdn.example.com/products/{i:06d}.jpg",
                   "prompt": f"slow camera push-in on product {i}, soft studio light",
                   "resolution": resolutions[i % 3], "video_length": (5, 10)[i % 2]}
            if audio:
                row |= {"audio_type": 2, "audio_url": f"https://cdn.example.com/a/{i}.mp3"}
            if csv:
                writer.writerow([row.get(k, "") for k in columns])
            else:
                out.write(json.dumps(row) + "\n")
    images = ", ".join(f"https://cdn.example.com/hero/{i}.jpg" for i in range(MATRIX_IMAGES))
    prompts = ", ".join(f"'variation {i}: orbit around the subject'" for i in
                        range(MATRIX_PROMPTS))
    manifest = folder / "bench.yaml"
    manifest.write_text(f"""\
version: 1
name: bench
budget:
  max_credits: {max_credits}
  prices:
    720p: {{5: 18}}
defaults:
  negative_prompt: blurry, distorted
  audio_type: 3
matrix:
  image_url: [{images}]
  prompt: [{prompts}]
  resolution: [720p, 1080p]
  video_length: [5, 10]
jobs_file: {data.name}
""", encoding="utf-8")
    return manifest


def run(args: list[str], cwd: Path) -> tuple[float, float, int, str, float]:
    """Wall seconds, peak RSS in MB, exit code, the first output line and the CPU seconds
    (user + system) of one process: on a shared machine CPU time says more than wall."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    first = output.decode(errors="replace").strip().splitlines()[:1]
    return (wall, usage.ru_maxrss / 1024, proc.returncode, first[0] if first else "",
            usage.ru_utime + usage.ru_stime)


def forget(folder: Path) -> None:
    """Remove the load memo (manifest/memo.py): `plan` remembers a load, and what is
    measured here is the full check of every job."""
    shutil.rmtree(folder / ".batchgen-work", ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--csv", action="store_true", help="a CSV jobs_file instead of JSONL")
    opts = parser.parse_args()
    print(f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}  jobs: {opts.jobs:,}"
          f"  jobs_file: {'CSV' if opts.csv else 'JSONL'}")
    failed = False
    goal = GOAL_SECONDS if opts.jobs <= 100_000 else GOAL_SECONDS_AT_LIMIT
    with tempfile.TemporaryDirectory(prefix="bench-manifest-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        manifest = write_manifest(folder, opts.jobs, opts.csv)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        print(f"generated in {time.perf_counter() - t:.1f} s ({size:.1f} MB)")
        base = [sys.executable, "-m", "batchgen"]
        commands = {"validate": [*base, "validate", str(manifest)],
                    "plan": [*base, "plan", str(manifest)],
                    "plan --json": [*base, "plan", "--json", str(manifest)]}
        for label, cmd in commands.items():
            runs = [forget(folder) or run(cmd, folder) for _ in range(opts.repeat)]
            wall = min(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            codes = {r[2] for r in runs}
            ok = codes == {0} and wall < goal and rss < GOAL_MB
            failed |= not ok
            cpu = min(r[4] for r in runs)
            print(f"{label:<12} wall {wall:5.2f} s (best of {opts.repeat}; worst "
                  f"{max(r[0] for r in runs):.2f}; CPU {cpu:.2f} s)  peak RSS {rss:6.1f} MB  "
                  f"exit {codes}  "
                  f"{'ok' if ok else 'OVER GOAL'}  | {runs[0][3][:60]}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of any child (RUSAGE_CHILDREN): {children:.1f} MB; "
          f"goal: < {goal:.0f} s and < {GOAL_MB} MB each")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
