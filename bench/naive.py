"""The naive baseline: what Akool's official demo does, as a reference for the benchmarks.

Submit every job (one createBySourcePrompt after another), then poll resultsByIds every
`--poll` seconds (5, as the demo) with the fixed list of submitted ids until each one is
done (status 3) or failed (4), then download the videos one after another. No adaptive
timing, no slot refill, no state, no retries.

An account allows only so many tasks in flight (the emulator's `max_in_flight`, the
`concurrency` a batchgen manifest states). "Submit all" cannot exceed it, so with
`--wave C` the demo runs the batch as consecutive waves of C jobs — submit the wave, poll
its fixed id list, download its videos, next wave. `--wave 0` submits everything at once.

Usage: python bench/naive.py --api-base URL --jobs N [--wave C] [--poll 5] [--out DIR]
Prints one JSON object: wall seconds, requests by endpoint, completed/failed counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

V4 = "/api/open/v4/image2Video"
HEADERS = {"x-api-key": "bench"}
#: ids per resultsByIds request (the demo sends its whole list; we cap it like the API docs)
MAX_IDS = 100


async def naive(base: str, jobs: int, wave: int, poll: float, out: Path) -> dict[str, Any]:
    requests: Counter[str] = Counter()
    done = failed = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def post(name: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            requests[name] += 1
            async with session.post(base + V4 + path, json=body, headers=HEADERS) as resp:
                return await resp.json()

        step = wave or jobs
        for first in range(0, jobs, step):
            ids = []
            for i in range(first, min(jobs, first + step)):
                answer = await post("createBySourcePrompt", "/createBySourcePrompt", {
                    "image_url": f"https://example.com/img/{i % 97}.jpg",
                    "prompt": f"naive job {i}", "negative_prompt": "blurry",
                    "resolution": "720p", "video_length": 5, "audio_type": 3})
                if answer.get("code") != 1000:
                    raise SystemExit(f"create refused: {answer}")
                ids.append(answer["data"]["_id"])
            urls: dict[str, str] = {}
            while len(urls) < len(ids):
                await asyncio.sleep(poll)
                urls.clear()
                for k in range(0, len(ids), MAX_IDS):
                    answer = await post("resultsByIds", "/resultsByIds",
                                        {"_ids": ",".join(ids[k:k + MAX_IDS])})
                    for record in (answer.get("data") or {}).get("result") or []:
                        if record.get("status") in (3, 4):
                            urls[record["_id"]] = record.get("video_url") or ""
            for task_id in ids:
                url = urls[task_id]
                if not url:
                    failed += 1
                    continue
                requests["download"] += 1
                async with session.get(url) as resp:
                    (out / f"{task_id}.mp4").write_bytes(await resp.read())
                done += 1
    return {"wall": time.perf_counter() - started, "requests": dict(requests),
            "completed": done, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--wave", type=int, default=0, help="jobs per wave (0 = all)")
    parser.add_argument("--poll", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="naive-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(naive(args.api_base.rstrip("/"), args.jobs, args.wave,
                                   args.poll, out))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
