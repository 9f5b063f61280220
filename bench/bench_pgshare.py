"""Claim throughput of the shared PostgreSQL state: 1 vs 3 runners, and SQLite beside it.

Issue 13: N jobs with zero task time, drained through the store's own API the way the
scheduler drives it — a claim of up to `limit` creates, then per job the durable "sent"
mark, the accepted create and the finished task (`TaskDone`: the slot frees). Runners are
threads here, each with its own connection (a runner process does the same calls from
its event loop); the API, the network and downloads are left out on purpose, so the
figures are the state's own cost per job. Reported: jobs/s over the whole drain, and the
p50/p99 latency of one `claim` (the transaction under the manifest's lock that counts
the tasks in flight of every runner and weighs the budget over every row). SQLite is the
same life on `Store` (one runner: its claim is the in-memory queue plus one durable
write), for the overhead of sharing.

`--processes` measures whole runs instead: 1 vs 3 `batchgen run` processes (the installed
CLI) drain one manifest of `--jobs` through one `--state` against one emulator that
refuses any task over `--limit` in flight (so an overshoot shows): wall time from the
first start to the last exit, creates the API received, duplicates (must be 0), the most
tasks in flight the API saw and how many creates it refused for that (must be 0). With
`--lag`, one of the runners runs in this process instead (`batchgen.arun`), its store's
claims, heartbeats and adoptions timed: how many ran on the event loop's thread and how
long they blocked it there (polls and downloads wait that long), beside a probe that
asks the loop for a 1 ms sleep over and over (the lateness of each wake-up: every
stall, the runner's own CPU work included, so it rises with the machine's load).

Usage: python bench/bench_pgshare.py [--jobs 2000] [--limit 20]
       [--url postgresql://postgres@127.0.0.1:5432/test]
       python bench/bench_pgshare.py --processes [--jobs 1000] [--limit 20]
       [--task-time 0] [--lag]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import benchlib
import psycopg

from batchgen.jobs import Job, JobState
from batchgen.pgshare import SharedPgStore
from batchgen.pgstore import PgStore
from batchgen.state_store import parse_state_url
from batchgen.store import Store
from batchgen.transitions import Accepted, Claimed, TaskDone


def jobs(n: int) -> list[Job]:
    return [Job(id=f"j{i:05d}", index=i, image_url=f"https://e.com/{i}.jpg",
                resolution="720p", video_length=5, audio_type=3, prompt=f"p{i}",
                fingerprint=f"fp{i}") for i in range(n)]


def finish(store: Store, rows: list) -> None:
    for row in rows:
        store.mark_sent(row.job_id)
        row = store.apply(row, Accepted(f"t-{row.job_id}", 20), durable=True)
        store.apply(row, TaskDone(row.task_id or "", "http://v/x.mp4"))


def shared(url: str, n: int, runners: int, limit: int) -> tuple[float, list[float]]:
    state = parse_state_url(url)
    with PgStore.open(state, "bench", lock=False) as store:
        store.sync(jobs(n), [(20, 0)] * n)
    latencies: list[float] = []
    lock = threading.Lock()

    def runner() -> None:
        store = SharedPgStore.join(state, "bench", lease=60)
        try:
            while True:
                t0 = time.perf_counter()
                got = store.claim(limit, limit, None, "2026-01-01T00:00:00Z")
                with lock:
                    latencies.append(time.perf_counter() - t0)
                if not got.sends:
                    if not got.claimable and not got.in_flight:  # the rest is ready
                        return
                    time.sleep(0.05)  # the runner's retry_every at its quickest
                    store.heartbeat()
                    continue
                finish(store, [got.rows[j] for j, _ in got.sends])
                store.heartbeat()
        finally:
            store.close()

    threads = [threading.Thread(target=runner) for _ in range(runners)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies


def sqlite(n: int, limit: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp)) as store:
        store.sync(jobs(n), [(20, 0)] * n)
        pending = [r.job_id for r in store.rows()]
        t0 = time.perf_counter()
        while pending:
            c0 = time.perf_counter()
            batch, pending = pending[:limit], pending[limit:]
            rows = store.apply_many([(store.get(j), Claimed("2026-01-01T00:00:00Z"))
                                     for j in batch], durable=True)
            latencies.append(time.perf_counter() - c0)
            finish(store, rows)
        return time.perf_counter() - t0, latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def _drop(url: str, prefix: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT schema_name FROM information_schema."
                                    "schemata WHERE schema_name LIKE %s",
                                    (prefix + "%",)).fetchall():
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


async def _lag_probe(lags: list[float], stop: asyncio.Event) -> None:
    """Lateness of 1 ms sleeps: how long the loop could not run anything else."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(0.001)
        lags.append(max(0.0, loop.time() - t0 - 0.001))


#: the in-process runner's store calls: (seconds, made on the event loop's thread?)
CALLS: list[tuple[float, bool]] = []


def _timed_store_calls(calls: list[tuple[float, bool]]) -> None:
    """Time every claim/heartbeat/adopt of the shared store into `calls`."""
    main = threading.main_thread()
    for name in ("claim", "heartbeat", "adopt"):
        original = getattr(SharedPgStore, name)

        def timed(self: SharedPgStore, *args: object, _original: Any = original) -> Any:
            t0 = time.perf_counter()
            try:
                return _original(self, *args)
            finally:
                calls.append((time.perf_counter() - t0, threading.current_thread() is main))
        setattr(SharedPgStore, name, timed)


async def _in_process(manifest: Path, api: str, state: str, lags: list[float]) -> int:
    import batchgen
    stop = asyncio.Event()
    probe = asyncio.create_task(_lag_probe(lags, stop))
    try:
        report = await batchgen.arun(str(manifest), api_base=api, api_key=benchlib.API_KEY,
                                     state=state, env={})
        return 0 if report.ok else 1
    finally:
        stop.set()
        await probe


def processes(url: str | None, n: int, runners: int, limit: int, task_time: float,
              lag: bool) -> tuple[object, ...]:
    """`runners` `batchgen run` processes on one manifest and state (module docstring);
    `url` None: one run on SQLite, for comparison."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    state = f"{url}{'&' if '?' in url else '?'}schema={prefix}" if url else None
    lags: list[float] = []
    CALLS.clear()
    with tempfile.TemporaryDirectory() as tmp, benchlib.Emulator(
            "--queue-time", "0", "--processing-time", str(task_time), "--seed", "3",
            "--max-in-flight", str(limit)) as em:
        work = Path(tmp)
        manifest = benchlib.write_manifest(work, n, concurrency=limit, poll_interval=1.0,
                                           poll_batch=100)
        args = [*benchlib.run_args(manifest, em.url), *(["--state", state] if state else [])]
        try:
            t0 = time.perf_counter()
            procs = [benchlib.start_cli(args, work / f"r{i}")[0]
                     for i in range(runners - 1 if lag else runners)]
            codes = [asyncio.run(_in_process(manifest, em.url, state, lags))] if lag else []
            codes += [benchlib.reap(p, t0)[0] for p in procs]
            wall = time.perf_counter() - t0
            stats = em.stats()
            done = completed(state, work / "out")
        finally:
            if url:
                _drop(url, prefix)
    refused = stats["faults_injected"].get("max_in_flight", 0)
    blocked = [t for t, on_loop in CALLS if on_loop]
    figures = (f"{len(blocked)} of {len(CALLS)}",
               f"{sum(blocked):.2f} / {max(blocked, default=0) * 1000:.0f}",
               f"{lag_ms(lags, .99):.1f} / {max(lags, default=0) * 1000:.0f}") if lag else ()
    name = "SQLite, 1" if url is None else f"PostgreSQL, {runners}"
    return (name, n, limit, wall, n / wall, done, stats["tasks_created"],
            stats["duplicate_fingerprints"], stats["max_in_flight"], refused,
            " ".join(map(str, codes)), *figures)


def completed(state: str | None, out: Path) -> int:
    """Jobs completed, from the state itself."""
    if state is None:
        with Store.open(out, lock=False, create=False) as store:
            return sum(1 for r in store.rows() if r.state is JobState.COMPLETED)
    with PgStore.open(parse_state_url(state), "bench", lock=False) as store:
        return sum(1 for r in store.rows() if r.state is JobState.COMPLETED)


def lag_ms(values: list[float], p: float) -> float:
    return pct(values, p) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="2000 (1000 with --processes)")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--processes", action="store_true",
                        help="whole `batchgen run` processes against the emulator")
    parser.add_argument("--task-time", type=float, default=0.0,
                        help="with --processes: seconds each task runs at the emulator")
    parser.add_argument("--lag", action="store_true",
                        help="with --processes: one runner in-process, its loop's stalls")
    args = parser.parse_args()
    if args.processes:
        if args.lag:
            _timed_store_calls(CALLS)
        n = args.jobs or 1000
        header = ("state, runners", "jobs", "limit", "wall s", "jobs/s", "completed", "creates",
                  "duplicates", "max in flight", "refused", "exit codes",
                  *(("calls on loop", "loop blocked s / max ms", "loop lag p99 / max ms")
                    if args.lag else ()))
        out = [processes(url, n, k, args.limit, args.task_time, args.lag)
               for url, k in ((None, 1), (args.url, 1), (args.url, 3))]
        print(benchlib.table(f"`batchgen run` processes on one --state, task time "
                             f"{args.task_time:g} s", header, out))
        return
    args.jobs = args.jobs or 2000
    rows = []
    wall, lat = sqlite(args.jobs, args.limit)
    rows.append(("SQLite, 1 runner", f"{args.jobs / wall:.0f}", f"{pct(lat, .5):.1f}",
                 f"{pct(lat, .99):.1f}"))
    for runners in (1, 3):
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        sep = "&" if "?" in args.url else "?"
        try:
            wall, lat = shared(f"{args.url}{sep}schema={prefix}", args.jobs, runners,
                               args.limit)
        finally:
            _drop(args.url, prefix)
        rows.append((f"PostgreSQL, {runners} runner(s)", f"{args.jobs / wall:.0f}",
                     f"{pct(lat, .5):.1f}", f"{pct(lat, .99):.1f}"))
    print(benchlib.table(f"{args.jobs} jobs, zero task time, claims of up to {args.limit}",
                         ("state", "jobs/s", "claim p50 ms", "claim p99 ms"), rows))


if __name__ == "__main__":
    main()
