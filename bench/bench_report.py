"""report.html for 10,000 jobs: how long `batchgen report` takes, and whether the page stays
responsive in a real browser.

The state is built through the store's own API, as a long run would leave it: 10,000 jobs
over ~2 hours with concurrency 100 — 85 % completed (with a poster each, as the download
path leaves them), 6 % failed after being charged, 3 % unknown, 4 % finished at the API but
not downloaded, 2 % pending — and charges that differ from the estimate on 1 job in 20.
Then:

1. `batchgen report MANIFEST` in a fresh subprocess (report.csv, summary.json, report.html;
   goal: under 3 s), and `render_html` alone in-process;
2. where Chromium exists (Debian's package, by path), the page opened from file://: time to
   the first rendered table page, and the time to re-render after a status filter change,
   a sort by credits and a search (each should stay well under 100 ms to feel instant).

Usage: python bench/bench_report.py [--jobs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import benchlib

from batchgen.manifest import load_manifest
from batchgen.posters import extract_poster, poster_path
from batchgen.pricing import add_audio_credits, job_credits
from batchgen.report_html import render_html
from batchgen.sandbox.video import mp4_bytes
from batchgen.store import JobState, Store

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_state(manifest_path: Path, out: Path) -> tuple[int, float]:
    """A finished 10,000-job state with posters; (jobs, seconds taken)."""
    started = time.perf_counter()
    manifest = load_manifest(manifest_path)
    prices = manifest.budget.prices
    jobs = manifest.jobs
    sample = out / "sample.mp4"
    out.mkdir(parents=True, exist_ok=True)
    sample.write_bytes(mp4_bytes("0" * 24, 5.0, "bench"))
    poster = out / "sample.jpg"
    assert extract_poster(sample, poster)
    t0 = datetime.now(UTC) - timedelta(hours=3)
    with Store.open(out) as store:
        store.sync(jobs, [(job_credits(prices, j), add_audio_credits(prices, j)) for j in jobs])
        changes: list[tuple[str, dict[str, Any]]] = []
        for i, job in enumerate(jobs):
            sub = t0 + timedelta(seconds=i * 0.7)
            fin = sub + timedelta(seconds=60 + (i * 37) % 90)
            dl = fin + timedelta(seconds=2)
            charged = 25 if i % 20 == 0 else 20
            kind = i % 100
            cols: dict[str, Any] = {"credits_video": charged, "completed_at": None}
            if kind < 85:
                sha = hashlib.sha256(job.id.encode()).hexdigest()
                cols.update(state=JobState.COMPLETED, video_url=f"https://cdn/{job.id}.mp4",
                            file=f"{job.id}.mp4", bytes=4096, sha256=sha,
                            completed_at=iso(dl), finished_at=iso(fin))
                target = poster_path(out, sha)
                target.parent.mkdir(exist_ok=True)
                shutil.copyfile(poster, target)
            elif kind < 91:
                cols.update(state=JobState.FAILED, finished_at=iso(fin),
                            error=f"task t{i} failed at the API (status 4): content policy")
            elif kind < 94:
                cols.update(state=JobState.UNKNOWN, credits_video=None, unknown_step="video",
                            error="create sent, answer lost")
            elif kind < 98:
                cols.update(state=JobState.READY, video_url=f"https://cdn/{job.id}.mp4",
                            finished_at=iso(fin))
            else:
                cols = {}
            if cols:
                changes.append((job.id, cols))
        # journal and accept first (as a run does), then the outcomes
        # (10 jobs share a submission second: 1,000 journal transactions, not 10,000)
        for start in range(0, len(jobs), 10):
            chunk = [(i, j.id) for i, j in enumerate(jobs[start:start + 10], start)
                     if i % 100 < 98]
            store.begin_submit([j for _, j in chunk], iso(t0 + timedelta(seconds=start * 0.7)))
            for i, job_id in chunk:
                if i % 100 < 91 or i % 100 >= 94:
                    store.mark_accepted(job_id, f"{i:024x}", None)
        store.update(changes)
    sample.unlink()
    poster.unlink()
    return len(jobs), time.perf_counter() - started


async def browse(report: Path) -> list[tuple[str, float]]:
    """Milliseconds for the page's first render and its re-renders, in Chromium."""
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    got: list[tuple[str, float]] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            started = time.perf_counter()
            await page.goto(report.as_uri())
            await page.wait_for_selector("#job-rows tr")
            got.append(("open from file:// to first table page",
                        (time.perf_counter() - started) * 1000))
            got.append(("  of which the browser's load event (ms after navigation)",
                        await page.evaluate("performance.timing.loadEventEnd - "
                                            "performance.timing.navigationStart")))
            for label, script in (
                ("status filter -> failed", "s => { s.value = 'failed'; "
                 "s.dispatchEvent(new Event('change')); }"),
                ("status filter -> all", "s => { s.value = ''; "
                 "s.dispatchEvent(new Event('change')); }"),
            ):
                ms = await page.eval_on_selector("#f-status", f"""s => {{
                    const t = performance.now(); ({script})(s); return performance.now() - t; }}""")
                got.append((label, ms))
            ms = await page.evaluate("""() => { const t = performance.now();
                document.querySelector('#job-table th[data-key=chg] button').click();
                return performance.now() - t; }""")
            got.append(("sort by credits charged", ms))
            started = time.perf_counter()
            await page.fill("#f-text", "bench job 9999")
            await page.wait_for_function(
                "document.querySelectorAll('#job-rows tr').length === 1")
            got.append(("search 'bench job 9999' (includes a 120 ms debounce)",
                        (time.perf_counter() - started) * 1000))
            ms = await page.evaluate("""() => { const t = performance.now();
                document.querySelector('#gallery-pager [data-go="1"]').click();
                return performance.now() - t; }""")
            got.append(("gallery: next page of 24 videos", ms))
        finally:
            await browser.close()
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    rows: list[tuple[Any, ...]] = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        work = Path(tmp)
        out = work / "out"
        manifest = benchlib.write_manifest(work, args.jobs, output=out)
        n, build = build_state(manifest, out)
        rows.append(("build the state + posters (in-process)", n, build, "-", "-"))
        runs = [benchlib.run_cli(["report", str(manifest)], work) for _ in range(2)]
        best = min(runs, key=lambda r: r.wall)
        if best.code != 0:
            raise RuntimeError(f"report exited {best.code}: {best.stderr[-2000:]}")
        rows.append(("batchgen report (csv + json + html)", n, best.wall, best.cpu,
                     best.max_rss_mb))
        with Store.open(out, lock=False) as store:
            state, committed = store.rows_and_committed()
            abandoned = store.abandoned()
        started = time.perf_counter()
        page = render_html(state, name="bench", output_dir=out, abandoned=abandoned,
                           committed=committed, budget=250_000)
        rows.append(("render_html alone (in-process)", n, time.perf_counter() - started,
                     "-", "-"))
        size = (out / "report.html").stat().st_size
        posters = sum(1 for _ in (out / "posters").iterdir())
        print(benchlib.table("bench_report: report.html of a finished run",
                             ("step", "jobs", "wall s", "cpu s", "peak RSS MB"), rows))
        print(f"report.html {size / 2**20:.1f} MB ({len(page)} characters), {posters} posters; "
              f"goal: written in < 3 s")
        if shutil.which("chromium") or Path("/usr/bin/chromium").exists():
            for label, ms in asyncio.run(browse(out / "report.html")):
                print(f"  {label:<55} {ms:8.1f} ms")
        else:
            print("no Chromium: page timings skipped (apt-get install chromium)")


if __name__ == "__main__":
    main()
