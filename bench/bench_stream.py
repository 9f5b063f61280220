"""Flat memory at the manifest limit (issue 18): each step of a 1,000,000-job manifest's life,
with its time and the peak RSS of its own process.

Generates, in a temporary directory, the JSONL manifest of `bench_manifest.py` (a 1,000-job
matrix plus a jobs_file; --jobs, default 1,000,000), then measures, each as a separate
process (wall time, peak RSS from os.wait4):

- `batchgen validate` and `batchgen plan` with no state;
- the first run's sync: the manifest loaded (and remembered, as `run` does) and its jobs
  written into a new state (what a first `run` does before its first create, in a small
  script);
- `batchgen plan` again, now over that state (it replays the run's preparation on a copy;
  the manifest's load is remembered);
- `batchgen run` over that state, against the emulator (queue and processing time 0,
  concurrency 100), until the emulator sees its first create, then killed (its start-up
  loads the manifest and checks a million file names, once); then a re-run of the same
  unchanged manifest over that state, to its first create (issue 18's goal: < 5 s; the
  manifest's load is remembered, manifest/memo.py, and the state's checks read no row);
- `batchgen status` and `batchgen report` (report.csv, summary.json, report.html) of it;
- with --long, that re-run goes on to the end (about 40 minutes at 1,000,000 jobs; the
  emulator's balance is raised so it does not run out), with the moment its last video
  was downloaded and its peak RSS by then (the reports follow).

Goals (issue 18): validate and plan < 8 s and < 300 MB each; a re-run of an unchanged
manifest reaches its first create in < 5 s; a whole run < 300 MB at >= 412 jobs/s. The
whole run's peak (`os.wait4`: the larger of its own and its children's) is shown split
into the run's own process and its poster process, each sampled every second.

Usage: python bench/bench_stream.py [--jobs 1000000] [--long] [--skip-run] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import benchlib
from bench_manifest import write_manifest

CREATE = "createBySourcePrompt"
SYNC = """\
import sys, time
from batchgen.manifest import load_manifest
from batchgen.session_plan import estimates, sync_key
from batchgen.store import Store
started = time.perf_counter()
manifest = load_manifest(sys.argv[1], recall=True)  # as run: remembered
loaded = time.perf_counter()
with Store.open(manifest.output.dir) as store:
    result = store.sync(manifest.jobs, estimates(manifest), key=sync_key(manifest))
print(f"load {loaded - started:.2f} s, sync {time.perf_counter() - loaded:.2f} s, "
      f"{result.added:,} rows added")
"""


def measure(args: list[str], cwd: Path, env: dict[str, str] | None = None
            ) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS MB, exit code and the last output line of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace").strip().splitlines()
    code, wall, _, rss = benchlib.reap(proc, started)
    return wall, rss, code, output[-1][:90] if output else ""


def _until_create(proc: subprocess.Popen[bytes], em: benchlib.Emulator, err: Path,
                  before: int) -> None:
    """Wait until the emulator has seen a create beyond `before`."""
    while int(em.stats(brief=True)["requests"].get(CREATE, 0)) <= before:
        if proc.poll() is not None:
            raise RuntimeError(f"run ended before a create: {err.read_text()[-2000:]}")
        time.sleep(0.02)


def first_create(manifest: Path, cwd: Path, jobs: int, long: bool) -> list[tuple[Any, ...]]:
    """`run` over the synced state until the emulator's first create (killed there: its
    start-up checks the file names once), then a re-run of the unchanged manifest over
    that state, against the same emulator: seconds to its first create (issue 18's goal,
    < 5 s), and with `long` the whole run."""
    rows: list[tuple[Any, ...]] = []
    # the default balance (1,000,000 credits) ends a long run at ~27,000 videos
    balance = str(max(10**9, jobs * 100))
    with benchlib.Emulator("--queue-time", "0", "--processing-time", "0", "--seed", "5",
                           "--balance", balance) as em:
        args = [*benchlib.run_args(manifest, em.url), "--concurrency", "100"]
        for label in ("run over that state -> first create (killed there)",
                      "re-run -> first create"):
            before = int(em.stats(brief=True)["requests"].get(CREATE, 0))
            started = time.perf_counter()
            proc, _, err = benchlib.start_cli(args, cwd)
            _until_create(proc, em, err, before)
            seen = time.perf_counter() - started
            if long and label.startswith("re-run"):
                break
            proc.send_signal(signal.SIGKILL)
            _, _, _, rss = benchlib.reap(proc, started)
            rows.append((label, seen, rss, "-", ""))
        if not long:
            return rows
        rows.append(("re-run -> first create", seen, "-", "-", ""))
        downloaded, hwm_run, hwm_own, hwm_children = _watch(proc, em, jobs, started)
        code, wall, _, rss = benchlib.reap(proc, started)
        if downloaded is not None:
            rows.append(("run to the last download", downloaded, hwm_run, "-",
                         f"{jobs / downloaded:,.0f} jobs/s"))
        rows.append(("whole run (+ reports)", wall, rss, code, f"{jobs / wall:,.0f} jobs/s"))
        rows.append(("  of it, the run's own process", "-", hwm_own, "-",
                     "its VmHWM, sampled every second"))
        rows.append(("  of it, its poster process", "-", hwm_children, "-",
                     "the largest child's VmHWM, sampled every second"))
    return rows


def _peak_rss(pid: int) -> float:
    """The process's peak RSS so far (VmHWM), MB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children_peak(pid: int) -> float:
    """The largest peak RSS among the process's children now (its poster process), MB."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return max((_peak_rss(int(c)) for c in f.read().split()), default=0.0)
    except OSError:
        return 0.0


def _running(pid: int) -> bool:
    """The child has not ended (WNOWAIT: it stays to be reaped, with its rusage)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def _watch(proc: subprocess.Popen[bytes], em: benchlib.Emulator, jobs: int,
           started: float) -> tuple[float | None, float, float, float]:
    """Until the run ends: when its last video was downloaded (the emulator's count,
    asked every 5 s, brief: the poll that first saw its final value, so to within 5 s)
    the run's peak RSS by then (the reports follow), its own peak to the end, and the
    largest peak of its children (the poster process: `os.wait4`'s figure is the larger
    of the process's own and its children's). Not "when the count reaches `jobs`": the
    jobs the bench's killed runs left unknown are never downloaded. Returns (seconds, MB,
    MB, MB); seconds None if nothing was downloaded."""
    downloaded: float | None = None
    hwm = hwm_then = children = 0.0
    seen = -1
    asked = 0.0
    while _running(proc.pid):
        time.sleep(1.0)
        hwm = max(hwm, _peak_rss(proc.pid))
        children = max(children, _children_peak(proc.pid))
        if time.perf_counter() - asked >= 5:
            asked = time.perf_counter()
            try:
                done = int(em.stats(brief=True)["requests"].get("download", 0))
            except Exception:  # the emulator is busy: ask later
                continue
            if done > seen:
                seen, downloaded, hwm_then = done, asked - started, hwm
                if done >= jobs:
                    print(f"  all {jobs:,} downloaded by {downloaded:.0f} s, peak RSS so "
                          f"far {hwm:.0f} MB", flush=True)
    return downloaded, hwm_then, hwm, children


@contextlib.contextmanager
def _folder(keep: Path | None) -> Iterator[Path]:
    """Where the bench works: a temporary folder, or `keep` (emptied first, then kept)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
            yield Path(tmp)
        return
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    yield keep.resolve()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--long", action="store_true", help="also run every job to the end")
    parser.add_argument("--skip-run", action="store_true", help="no emulator, no run")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR (made empty) and leave the manifest and state there")
    opts = parser.parse_args()
    rows: list[tuple[Any, ...]] = []
    began = time.perf_counter()
    with _folder(opts.keep) as folder:
        # a whole run must not stop at the default budget (~130,000 videos of 1,000,000)
        manifest = write_manifest(folder, opts.jobs, csv=False,
                                  max_credits=opts.jobs * 1000 if opts.long else 5_000_000)
        base = [sys.executable, "-m", "batchgen"]
        env = {**os.environ, "AKOOL_API_KEY": benchlib.API_KEY}
        for label, cmd in (("validate", [*base, "validate", str(manifest)]),
                           ("plan (no state)", [*base, "plan", str(manifest)]),
                           ("first-run sync (load + write)",
                            [sys.executable, "-c", SYNC, str(manifest)]),
                           ("plan (over the state)", [*base, "plan", str(manifest)])):
            rows.append((label, *measure(cmd, folder, env)))
        if not opts.skip_run:
            rows += first_create(manifest, folder, opts.jobs, opts.long)
        for label, cmd in (("status", [*base, "status", str(manifest)]),
                           ("report (csv + html)", [*base, "report", str(manifest)])):
            rows.append((label, *measure(cmd, folder, env)))
    header = ("step", "seconds", "peak RSS MB", "exit", "output")
    print(benchlib.table(f"bench_stream: {opts.jobs:,} jobs (JSONL)", header, rows))
    print("goals: validate, plan < 8 s and < 300 MB; resume -> first create < 5 s; "
          "a whole run < 300 MB at >= 412 jobs/s")
    print(f"(bench took {time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
