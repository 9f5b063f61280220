"""`batchgen status` (and `plan`) on a half-finished state of 100,000 jobs.

Issue 8 item 4, the part `bench/bench_manifest.py` does not cover: commands that read the
state database. The state is built here from Python through the store's own API, as a run
would leave it: `Store.open` + `sync` (100,000 pending jobs), then half of them marked
completed (task done, file downloaded, credits known) with `Store.update` in one
transaction, and 100 more journaled and accepted (`begin_submit` + `mark_accepted`: in
flight). Then the installed CLI runs in a fresh subprocess each time, with no API access:

* `batchgen status MANIFEST` and `batchgen status MANIFEST --json` (goal < 5 s);
* `batchgen plan MANIFEST` on the same state, for reference.

Usage: python bench/bench_status.py [--quick] [--jobs 100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

from batchgen.manifest import load_manifest
from batchgen.session_plan import estimates, sync_key
from batchgen.store import JobState, Store


def build_state(manifest_path: Path, out: Path) -> tuple[int, float]:
    """A state with half the jobs completed and 100 in flight; (jobs, seconds taken)."""
    started = time.perf_counter()
    manifest = load_manifest(manifest_path)
    jobs = list(manifest.jobs)
    with Store.open(out) as store:
        # as a run syncs: with the key, so a later command finds the expansion unchanged
        store.sync(manifest.jobs, estimates(manifest), key=sync_key(manifest))
        half = len(jobs) // 2
        now = "2025-01-01T00:00:00Z"
        store.update((j.id, {"state": JobState.COMPLETED, "credits_video": 20,
                             "video_url": f"https://cdn.example.com/{j.id}.mp4",
                             "file": f"{j.id}.mp4", "bytes": 4096, "sha256": "0" * 64,
                             "completed_at": now}) for j in jobs[:half])
        running = [j.id for j in jobs[half:half + 100]]
        store.begin_submit(running, now)
        for i, job_id in enumerate(running):
            store.mark_accepted(job_id, f"task{i:020d}", 20)
    return len(jobs), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 jobs")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each command (best kept)")
    args = parser.parse_args()
    if args.quick:
        args.jobs = 20_000
    started = time.perf_counter()
    rows: list[tuple[Any, ...]] = []
    status_out = ""
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        work = Path(tmp)
        out = work / "out"
        manifest = benchlib.write_manifest(work, args.jobs, output=out)
        n, build = build_state(manifest, out)
        db = sum(p.stat().st_size for p in (out / ".batchgen").glob("state.db*"))
        rows.append(("build the state (Store API, in-process)", n, build, "-", "-", "-"))
        for label, cmd in (("status", ["status", str(manifest)]),
                           ("status --json", ["status", str(manifest), "--json"]),
                           ("plan (state half done)", ["plan", str(manifest)])):
            runs = [benchlib.run_cli(cmd, work) for _ in range(max(1, args.repeat))]
            best = min(runs, key=lambda r: r.wall)
            if best.code != 0:
                raise RuntimeError(f"{label} exited {best.code}: {best.stderr[-2000:]}")
            rows.append((f"batchgen {label}", n, best.wall, best.cpu, best.max_rss_mb,
                         best.code))
            if label == "status":
                status_out = best.stdout
    header = ("step", "jobs", "wall s", "cpu s", "peak RSS MB", "exit")
    print(benchlib.table("bench_status: commands over a half-finished state", header, rows))
    print(f"state database: {db / 2**20:.1f} MB; goal: status < 5 s")
    print(status_out.rstrip())
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
