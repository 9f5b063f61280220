"""Benchmark of issue 16's inputs: what pre-flight costs per job, and upload throughput.

1. Pre-flight: --jobs jobs, each with its own image URL on an aiohttp host on 127.0.0.1
   (a 640x480 PNG), run in-process against the emulator (processing 0.05 s) with
   pre-flight on and off (twice each, alternated; the best of each); prints the wall
   times, their difference per job, and the time the checks alone take (8 at a time).
2. Uploads: --files local images of --mb MB each uploaded to moto's S3 server on
   127.0.0.1 (`uploads.upload_all`, 8 at a time): MB/s; then again (all already there).

3. Loading: a manifest over --load-files images of --load-mb MB (a matrix glob x 2 prompts)
   loaded cold (every file hashed) and again (hashes remembered by path, size and mtime:
   file_hashes.py), best of 3 each.

4. Pre-flight at scale (--scale N, e.g. 200000; issue 18): N jobs, each its own image URL
   on a loopback host (a separate process serving one PNG under every path), synced into
   a state; then `batchgen run --preflight` over it (the installed CLI, a subprocess,
   against the emulator, concurrency 100, zero task time): seconds to its first create,
   its peak RSS then and --scale-seconds later (the run going on), and the same run
   without pre-flight to its first create beside it. Each run is killed, not finished.

Loopback numbers: they show batchgen's own overhead, not a real network's.
Usage: python bench/bench_inputs.py [--jobs 200] [--files 50] [--mb 1] [--load-files 300]
       [--load-mb 2] [--only-load] [--scale 200000 [--scale-seconds 20] [--only-scale]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import benchlib
from asset_hosts import asset_host, png
from bench_stream import SYNC, _peak_rss

import batchgen
from batchgen.asset_probe import AssetProber
from batchgen.preflight import Asset, Preflight
from batchgen.sandbox import Sandbox, SandboxConfig


def manifest(urls: list[str], out: str) -> dict[str, object]:
    return {"version": 1, "name": "bench", "output": {"dir": out},
            "api": {"concurrency": 20, "poll_interval": 0.05},
            "jobs": [{"image_url": u, "prompt": f"p{i}"} for i, u in enumerate(urls)]}


async def preflight_cost(n: int, root: Path) -> None:
    files = {f"{i}.png": png(640, 480) for i in range(n)}
    config = SandboxConfig.from_dict({"queue_time": 0, "processing_time": 0.05})
    async with asset_host(files) as host, Sandbox(config) as sb:
        urls = [host.url(f"{i}.png") for i in range(n)]
        walls: dict[bool, float] = {}
        for k, on in enumerate((False, True, True, False)):  # alternated: warm-up is fair
            started = time.monotonic()
            report = await batchgen.arun(manifest(urls, f"out-{k}"), base_dir=root,
                                         api_base=sb.url, api_key="bench-key", env={},
                                         preflight=on)
            walls[on] = min(walls.get(on, 1e9), time.monotonic() - started)
            assert report.ok, report.counts
        async with AssetProber.open() as prober:
            checks = Preflight(prober.check)
            started = time.monotonic()
            checks.start([(str(i), [Asset("image_url", u, "image")])
                          for i, u in enumerate(urls)])
            await checks.wait()
            alone = time.monotonic() - started
    print(f"pre-flight, {n} jobs: run {walls[False]:.2f} s without, {walls[True]:.2f} s with "
          f"({(walls[True] - walls[False]) / n * 1000:+.2f} ms/job wall); the checks alone "
          f"{alone:.2f} s ({alone / n * 1000:.2f} ms/URL, 8 at a time)")


async def upload_rate(count: int, mb: float, root: Path) -> None:
    from moto.server import ThreadedMotoServer

    from batchgen.local_assets import LocalAssets
    from batchgen.uploads import Buckets, upload_all
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/bench", method="PUT"))
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "x",
               "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"}
        local = LocalAssets(root, "s3://bench/in")
        head = png(640, 480)
        for i in range(count):
            path = root / f"img{i}.png"
            path.write_bytes(head + os.urandom(int(mb * 1024 * 1024)))
            local.resolve("image_url", path.name)
        buckets = Buckets(env)
        first = await upload_all(buckets, local.uploads, local.uploads)
        again = await upload_all(buckets, local.uploads, local.uploads)
    finally:
        server.stop()
    print(f"uploads, {count} x {mb:g} MB to moto on loopback: {first.uploaded} uploaded in "
          f"{first.seconds:.2f} s ({first.bytes / 1e6 / first.seconds:.1f} MB/s); again: "
          f"{again.uploaded} uploaded, {again.present} already there, {again.seconds:.2f} s")


def load_cost(count: int, mb: float, root: Path) -> None:
    from batchgen.api import load
    from batchgen.file_hashes import CACHE_PATH
    folder = root / "load" / "images"
    folder.mkdir(parents=True)
    old = time.time() - 60  # older than the 2 s a fresh file is not remembered for
    for i in range(count):
        path = folder / f"img{i:04d}.png"
        path.write_bytes(png(640, 480) + os.urandom(int(mb * 1024 * 1024)))
        os.utime(path, (old, old))
    doc = {"version": 1, "name": "load", "storage": {"upload": "s3://bench/in"},
           "matrix": {"image_url": ["images/*.png"], "prompt": ["a", "b"]}}

    def once() -> float:
        started = time.monotonic()
        assert len(load(doc, folder.parent).jobs) == 2 * count
        return time.monotonic() - started

    cold = warm = 1e9
    for _ in range(3):
        (folder.parent / CACHE_PATH).unlink(missing_ok=True)
        cold = min(cold, once())
        warm = min(warm, once())
    print(f"load, {count} x {mb:g} MB images (page cache warm): {cold:.3f} s hashing every "
          f"file, {warm:.3f} s with the hashes remembered ({cold / warm:.1f}x)")


#: the loopback asset host of part 4: one PNG under every path, in its own process
HOST = """\
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from aiohttp import web
from asset_hosts import png
body = png(640, 480)
async def serve(request):
    return web.Response(body=body, content_type="image/png")
async def main():
    app = web.Application()
    app.router.add_get("/{path:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def preflight_scale(n: int, seconds: float, root: Path) -> None:
    """Part 4: time to the first create and peak RSS of `run --preflight` over n jobs."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    host = subprocess.Popen([sys.executable, "-c", HOST, tests], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert host.stdout is not None
        base = f"http://127.0.0.1:{host.stdout.readline().strip()}"
        manifest = benchlib.write_manifest(root / "scale", 1, concurrency=100)
        with open(manifest.parent / "jobs.jsonl", "w") as f:
            for i in range(n):
                f.write(f'{{"id": "j{i:06d}", "prompt": "p {i}", '
                        f'"image_url": "{base}/img/{i}.png"}}\n')
        subprocess.run([sys.executable, "-c", SYNC, str(manifest)], check=True,
                       cwd=manifest.parent, stdout=subprocess.DEVNULL)
        with benchlib.Emulator("--queue-time", "0", "--processing-time", "0",
                               "--balance", str(n * 100)) as em:
            args = [*benchlib.run_args(manifest, em.url), "--concurrency", "100"]
            # a warm-up, not measured; each run is killed at its first create (the one it
            # leaves unknown is resolved by the next), the last `seconds` later
            _to_create(em, [*args, "--no-preflight"], root, 0)
            load = os.getloadavg()[0]
            without, rss_without, _, _ = _to_create(em, [*args, "--no-preflight"], root, 0)
            first, at_first, peak, sent = _to_create(em, [*args, "--preflight"], root,
                                                     seconds)
            load = max(load, os.getloadavg()[0])
    finally:
        host.kill()
        host.wait()
    print(f"pre-flight at scale, {n:,} jobs (distinct loopback image URLs), load average "
          f"<= {load:.1f}: run --preflight to its first create {first:.2f} s, peak RSS "
          f"{at_first:.0f} MB then, {peak:.0f} MB {seconds:g} s later ({sent:,} jobs "
          f"sent by then); --no-preflight "
          f"{without:.2f} s, {rss_without:.0f} MB", flush=True)


def _to_create(em: benchlib.Emulator, args: list[str], root: Path, seconds: float
               ) -> tuple[float, float, float, int]:
    """`batchgen ARGS` until the emulator's next create, then `seconds` more, killed:
    (seconds to that create, peak RSS MB then, peak RSS MB at the kill, creates made)."""
    before = int(em.stats()["requests"].get("createBySourcePrompt", 0))
    started = time.perf_counter()
    proc, _, err = benchlib.start_cli(args, root / "cli")
    while int(em.stats()["requests"].get("createBySourcePrompt", 0)) <= before:
        if proc.poll() is not None:
            raise RuntimeError(f"run ended before a create: {err.read_text()[-2000:]}")
        time.sleep(0.02)
    first = time.perf_counter() - started
    at_first = _peak_rss(proc.pid)
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    _, _, _, rss = benchlib.reap(proc, started)
    return first, at_first, rss, int(em.stats()["requests"]["createBySourcePrompt"]) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--load-files", type=int, default=300)
    parser.add_argument("--load-mb", type=float, default=2.0)
    parser.add_argument("--only-load", action="store_true", help="skip parts 1 and 2")
    parser.add_argument("--scale", type=int, default=0, help="part 4's jobs (0: skipped)")
    parser.add_argument("--scale-seconds", type=float, default=20.0)
    parser.add_argument("--only-scale", action="store_true", help="part 4 alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.scale:
            preflight_scale(args.scale, args.scale_seconds, Path(tmp))
            if args.only_scale:
                return
        load_cost(args.load_files, args.load_mb, Path(tmp))
        if args.only_load:
            return
        asyncio.run(preflight_cost(args.jobs, Path(tmp)))
        asyncio.run(upload_rate(args.files, args.mb, Path(tmp)))


if __name__ == "__main__":
    main()
