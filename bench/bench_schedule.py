"""Scheduling efficiency and request economy of `batchgen run`, beside an oracle and the naive demo.

Issue 15. The emulator runs in a subprocess with every task's duration fixed in advance
(config `task_times`: the n-th task created takes the n-th figure, no queueing) and an
account limit of `concurrency` tasks in flight (`max_in_flight`). Because the durations are
known, each case prints its **oracle**: greedy list scheduling of the same durations, in
submission order, on c slots, refilling a slot the instant its task ends (for a fixed T it
equals the bound ceil(N/c) * T). Three cases, all with the manifest's DEFAULT poll_interval
(the key is left out of the manifest):

* **fixed 1 s** - N=100, c=20, every task 1 s; goal wall/oracle <= 1.25;
* **uniform 4-12 s** - N=200, c=20, durations drawn uniformly from [4, 12] s (seeded);
  goal wall/oracle <= 1.05 with <= 0.8 results requests per job;
* **fixed 30 s** - N=60, c=20, every task 30 s; goal wall/oracle <= 1.05 with <= 0.3
  results requests per job.

Each case runs `batchgen run` (installed CLI, subprocess, AKOOL_API_KEY=bench) `--repeat`
times and `bench/naive.py` once (the demo: submit a wave of c, poll every 5 s with its fixed
id list, download one by one) on a second emulator with the same durations, at the same
time as the first batchgen run (both sleep almost all the time; the short fixed 1 s case
runs them one after the other).

"wall" is the batchgen process from exec to exit (interpreter start and the report
included); "runner wall" is the run's own figure from summary.json. Before the timed runs
each emulator encodes its sample videos once (`warm`): encoding one costs it ~10 ms of CPU
on its single event loop, which on a shared 2-core machine would be charged to the client.

Usage: python bench/bench_schedule.py [--case fixed1|uniform|fixed30 ...] [--repeat 2]
       [--poll SECONDS] [--no-naive] [--seed 8]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import benchlib

NAIVE = Path(__file__).with_name("naive.py")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    n: int
    c: int
    #: (low, high) seconds: fixed when equal, else uniform per task
    span: tuple[float, float]
    #: goals from issue 15: wall/oracle, results requests per job (None = no goal)
    ratio_goal: float
    requests_goal: float | None
    naive_parallel: bool

    def durations(self, seed: int) -> list[float]:
        low, high = self.span
        if low == high:
            return [low] * self.n
        rng = random.Random(seed)
        return [round(rng.uniform(low, high), 3) for _ in range(self.n)]


CASES = {
    "fixed1": Case("fixed 1 s", 100, 20, (1.0, 1.0), 1.25, None, False),
    "uniform": Case("uniform 4-12 s", 200, 20, (4.0, 12.0), 1.05, 0.8, True),
    "fixed30": Case("fixed 30 s", 60, 20, (30.0, 30.0), 1.05, 0.3, True),
}


def oracle(durations: list[float], c: int) -> float:
    """Makespan of greedy list scheduling in submission order on `c` slots."""
    slots = [0.0] * max(1, c)
    end = 0.0
    for d in durations:
        start = heapq.heappop(slots)
        heapq.heappush(slots, start + d)
        end = max(end, start + d)
    return end


V4 = "/api/open/v4/image2Video"


async def _warm(url: str, tasks: int) -> None:
    """Create and download `tasks` instant 720p/5 s videos, so that the emulator's cache
    holds (nearly) every sample video the timed run will download."""
    headers = {"x-api-key": benchlib.API_KEY}
    gate = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: dict[str, Any]) -> Any:
            async with gate, session.post(url + V4 + path, json=body, headers=headers) as r:
                return (await r.json())["data"]

        async def get(video: str) -> None:
            async with gate, session.get(video) as r:
                await r.read()

        made = await asyncio.gather(*(post("/createBySourcePrompt", {
            "image_url": "https://example.com/w.jpg", "prompt": f"warm {i}",
            "negative_prompt": "blurry", "resolution": "720p", "video_length": 5,
            "audio_type": 3}) for i in range(tasks)))
        ids = [m["_id"] for m in made]
        chunks = [ids[i:i + 100] for i in range(0, len(ids), 100)]
        answers = await asyncio.gather(*(post("/resultsByIds", {"_ids": ",".join(c)})
                                         for c in chunks))
        await asyncio.gather(*(get(r["video_url"]) for a in answers for r in a["result"]))


def warm(em: benchlib.Emulator, durations: list[float], c: int) -> None:
    """Warm the video cache with instant tasks, then set the case's durations and reset."""
    em.configure(task_times=[], queue_time=0, processing_time=0, max_in_flight=0)
    asyncio.run(_warm(em.url, 800))
    em.configure(task_times=durations, max_in_flight=c, seed=8)
    em.reset()


def start_naive(url: str, n: int, c: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(NAIVE), "--api-base", url, "--jobs", str(n),
                             "--wave", str(c), "--poll", "5"], stdout=subprocess.PIPE,
                            text=True)


def finish_naive(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"naive.py failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def row(case: Case, client: str, best: float, wall: float, runner_wall: float | None,
        stats: dict[str, Any], completed: int) -> tuple[Any, ...]:
    req = stats["requests"]
    results = req.get("resultsByIds", 0)
    return (case.name, client, case.n, case.c, completed, best, wall,
            "-" if runner_wall is None else runner_wall, wall / best,
            "-" if runner_wall is None else runner_wall / best,
            results, results / case.n, benchlib.api_requests(stats) / case.n,
            stats["max_in_flight"], stats["duplicate_fingerprints"])


def run_case(tmp: Path, key: str, case: Case, repeat: int, poll: float | None,
             with_naive: bool, seed: int) -> list[tuple[Any, ...]]:
    durations = case.durations(seed)
    best = oracle(durations, case.c)
    rows: list[tuple[Any, ...]] = []
    label = "batchgen" + ("" if poll is None else f" (poll_interval {poll:g})")
    with benchlib.Emulator() as em, benchlib.Emulator() as em2:
        for emulator in (em, em2):
            warm(emulator, durations, case.c)
        naive_proc = start_naive(em2.url, case.n, case.c) \
            if with_naive and case.naive_parallel else None
        for i in range(repeat):
            if i:
                em.reset()
            work = tmp / f"{key}-{i}"
            manifest = benchlib.write_manifest(work, case.n, concurrency=case.c,
                                               poll_interval=poll)
            run = benchlib.run_cli(benchlib.run_args(manifest, em.url), work)
            if run.code != 0:
                raise RuntimeError(f"batchgen run exited {run.code}: {run.stderr[-2000:]}")
            summary = json.loads((work / "out" / "summary.json").read_text())
            rows.append(row(case, label, best, run.wall, summary["wall_seconds"], em.stats(),
                            summary["status"]["completed"]))
        if with_naive:
            if naive_proc is None:
                naive_proc = start_naive(em2.url, case.n, case.c)
            naive = finish_naive(naive_proc)
            rows.append(row(case, "naive demo (poll 5 s, waves)", best, naive["wall"], None,
                            em2.stats(), naive["completed"]))
    return rows


def _compiled() -> bool:
    """Whether the batchgen that runs has .pyc files for its modules (a wheel install has;
    an editable install under PYTHONDONTWRITEBYTECODE=1 has not)."""
    import importlib.util
    spec = importlib.util.find_spec("batchgen")
    if spec is None or spec.origin is None:
        return True
    return any((Path(spec.origin).parent / "__pycache__").glob("*.pyc"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES),
                        help="run only this case (repeatable; default: all three)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="batchgen runs per case (the machine may be shared: report the "
                             "range)")
    parser.add_argument("--poll", type=float, default=None,
                        help="manifest poll_interval (default: leave it out, i.e. 5 s)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--seed", type=int, default=8, help="seed of the uniform durations")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: list[tuple[Any, ...]] = []
    keys = args.case or list(CASES)
    with tempfile.TemporaryDirectory(prefix="bench-schedule-") as tmp:
        for key in keys:
            rows += run_case(Path(tmp), key, CASES[key], max(1, args.repeat), args.poll,
                             not args.no_naive, args.seed)
    header = ("case", "client", "N", "c", "done", "oracle s", "wall s", "runner wall s",
              "wall/oracle", "runner/oracle", "results", "results/job", "total req/job",
              "max in flight", "dup")
    print(benchlib.table("bench_schedule: wall beside the oracle (greedy list scheduling of "
                         "the same durations on c slots)", header, rows))
    for key in keys:
        case = CASES[key]
        goal = f"wall/oracle <= {case.ratio_goal}"
        if case.requests_goal is not None:
            goal += f", results/job <= {case.requests_goal}"
        print(f"goal {case.name}: {goal}")
    print("(every job also needs 1 create + 1 download; results/job is what polling spends)")
    if not _compiled():
        print("(batchgen has no compiled bytecode here (PYTHONDONTWRITEBYTECODE is set?): each "
              "run compiles its modules as it starts, 0.1-0.25 s of its wall on the 2-core VM "
              "that an installed wheel, shipped with .pyc files, does not pay)")
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
