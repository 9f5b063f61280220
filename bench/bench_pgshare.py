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

Usage: python bench/bench_pgshare.py [--jobs 2000] [--limit 20]
       [--url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import benchlib
import psycopg

from batchgen.jobs import Job
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
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
            with psycopg.connect(args.url, autocommit=True) as conn:
                for (name,) in conn.execute("SELECT schema_name FROM information_schema."
                                            "schemata WHERE schema_name LIKE %s",
                                            (prefix + "%",)).fetchall():
                    conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        rows.append((f"PostgreSQL, {runners} runner(s)", f"{args.jobs / wall:.0f}",
                     f"{pct(lat, .5):.1f}", f"{pct(lat, .99):.1f}"))
    print(benchlib.table(f"{args.jobs} jobs, zero task time, claims of up to {args.limit}",
                         ("state", "jobs/s", "claim p50 ms", "claim p99 ms"), rows))


if __name__ == "__main__":
    main()
