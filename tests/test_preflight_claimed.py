"""A job claimed before pre-flight's reader reached it is still checked before it is paid.

With a shared state (`--state postgresql://...`) the store claims a job (`submitting`)
before its create asks the gate (Submit._cleared). Pre-flight reads the queue a page at a
time; a job claimed before its page was read is not in the queue any more, and was once
looked up as "no longer pending": cleared unchecked, its bad image paid for (found in
review). Several runners make it likely: the others' claims fill the lookahead."""

from __future__ import annotations

import asyncio

import batchgen.uploads as uploads
from batchgen.assets import Check, Verdict
from batchgen.jobs import Job
from batchgen.preflight import PreflightSettings
from batchgen.scheduler import window
from batchgen.session_setup import preflight_gate
from batchgen.store import Store
from batchgen.transitions import Claimed


def jobs(n: int) -> list[Job]:
    return [Job(id=f"j{i:03d}", index=i, image_url=f"https://e.com/{i}.jpg",
                resolution="720p", video_length=5, audio_type=3, prompt=f"p{i}",
                negative_prompt="blurry", fingerprint=f"fp{i}") for i in range(n)]


async def test_a_job_claimed_before_the_reader_reached_it_is_still_checked(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(window, "PAGE", 5)
    probed: list[str] = []

    async def probe(url: str, kind: str) -> Check:
        probed.append(url)
        await asyncio.sleep(0.05)
        return Check(Verdict.BAD, "not an image")  # every image is bad

    monkeypatch.setattr(uploads, "bucket_probe", lambda p, b: probe)
    with Store.open(tmp_path) as store:
        store.sync(jobs(40), [(20, 0)] * 40)
        async with preflight_gate(PreflightSettings(enabled=True), False,
                                  "https://openapi.akool.com", store,
                                  lambda m: None) as gate:
            await asyncio.sleep(0.01)  # the checks have started
            # the shared store's claim: 12 jobs become `submitting` (concurrency 12)...
            claimed = [f"j{i:03d}" for i in range(12)]
            store.apply_many([(store.get(j), Claimed("t")) for j in claimed], durable=True)
            # ...then each create asks the gate (Submit._cleared)
            verdicts = {}
            for job_id in claimed:
                for _ in range(500):
                    v = gate.verdict(job_id)
                    if v is not None:
                        break
                    await asyncio.sleep(0.01)
                verdicts[job_id] = v
    unchecked = [j for j, v in verdicts.items() if v.ok]
    assert unchecked == [], f"cleared without a check, then paid: {unchecked}"
