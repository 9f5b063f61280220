"""The run's poster maker: requests pipelined to one child, a bounded queue.

A 1,000,000-video run at zero task time once made 95 posters/s, one request at a time,
while it downloaded 375 videos/s: the queue grew by 280 entries a second and took the
run past 300 MB. Now `PIPELINE` requests go to the child at once and at most `WAITING`
videos wait; the rest are left to the next run's backfill.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import batchgen.poster_maker as poster_maker
from batchgen.poster_maker import PosterMaker
from batchgen.posters import bad_marker, poster_path
from batchgen.sandbox.video import mp4_bytes


def videos(folder: Path, names: list[str]) -> list[tuple[str, str]]:
    for i, name in enumerate(names):
        (folder / name).write_bytes(mp4_bytes(f"video {i}", 0.5))
    return [(name, f"{i:x}" * 64) for i, name in enumerate(names)]


def made(folder: Path, rows: list[tuple[str, str]]) -> list[bool]:
    return [poster_path(folder, sha).exists() for _, sha in rows]


async def test_requests_are_pipelined_to_the_child(tmp_path, monkeypatch):
    # the child is asked for several posters before it answered the first: lines are
    # written in batches of PIPELINE, so a busy event loop costs one turn per batch
    rows = videos(tmp_path, [f"v{i}.mp4" for i in range(10)])
    sent: list[int] = []
    real = PosterMaker._make

    async def spy(self, batch):
        sent.append(len(batch))
        return await real(self, batch)

    monkeypatch.setattr(PosterMaker, "_make", spy)
    monkeypatch.setattr(poster_maker, "PIPELINE", 4)
    maker = PosterMaker(tmp_path)
    assert maker.backfill(rows) == 10
    await maker.finish()
    assert made(tmp_path, rows) == [True] * 10
    assert sent == [4, 4, 2]


async def test_a_fresh_child_takes_over_every_recycle_posters(tmp_path, monkeypatch):
    # FFmpeg leaves the C heap fragmented (~250 bytes a video): one child over a million
    # videos grew to ~315 MB. Past RECYCLE posters the child is retired (after answering
    # all it was asked: none is given up or marked for it) and a new one goes on
    monkeypatch.setattr(poster_maker, "PIPELINE", 2)
    monkeypatch.setattr(poster_maker, "RECYCLE", 4)
    rows = videos(tmp_path, [f"v{i}.mp4" for i in range(10)])
    children: list[asyncio.subprocess.Process] = []
    real = PosterMaker._make

    async def spy(self, batch):
        answers = await real(self, batch)
        if not children or children[-1] is not self._child:
            children.append(self._child)
        return answers

    monkeypatch.setattr(PosterMaker, "_make", spy)
    maker = PosterMaker(tmp_path)
    assert maker.backfill(rows) == 10
    await maker.finish()
    assert made(tmp_path, rows) == [True] * 10
    assert maker.given_up == 0 and not any(
        bad_marker(poster_path(tmp_path, sha)).exists() for _, sha in rows)
    assert len(children) == 3  # 4 + 4 + 2 posters
    assert len({c.pid for c in children}) == 3
    assert all(c.returncode == 0 for c in children)  # each ended at its end of input


async def test_a_crash_in_a_batch_marks_that_poster_and_makes_the_rest(tmp_path, monkeypatch):
    # the child died on the second of a batch: the first is made, the second marked, and
    # those after it are asked again of a new child (never marked for another's crash)
    monkeypatch.setattr(poster_maker, "PIPELINE", 8)
    names = ["a.mp4", "crash.mp4", "b.mp4", "crash2.mp4", "c.mp4", "d.mp4"]
    rows = videos(tmp_path, names)
    maker = PosterMaker(tmp_path, work="poster_faults:crash_or_hang", seconds=2)
    assert maker.backfill(rows) == 6
    await maker.finish()
    assert made(tmp_path, rows) == [True, False, True, False, True, True]
    assert maker.given_up == 2
    assert [bad_marker(poster_path(tmp_path, sha)).exists() for _, sha in rows] == [
        False, True, False, True, False, False]


async def test_the_queue_is_bounded_and_the_next_run_makes_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(poster_maker, "WAITING", 3)
    rows = videos(tmp_path, [f"v{i}.mp4" for i in range(8)])
    maker = PosterMaker(tmp_path)
    queued = [maker.add(tmp_path / name, sha) for name, sha in rows]
    assert queued.count(True) >= 3 and maker.left == queued.count(False) > 0
    await maker.finish()
    assert sum(made(tmp_path, rows)) == queued.count(True)
    # the next run's backfill makes them, WAITING at a time, and never twice
    while not all(made(tmp_path, rows)):
        again = PosterMaker(tmp_path)
        assert again.backfill(rows) > 0
        await again.finish()
    assert PosterMaker(tmp_path).backfill(rows) == 0


@pytest.mark.parametrize("discard", [False, True])
async def test_a_video_left_to_the_next_run(tmp_path, monkeypatch, discard):
    # a local video stays for the next run's backfill; a bucket output's staged copy is
    # deleted at once (review: a million-video run would have left them all on disk)
    monkeypatch.setattr(poster_maker, "WAITING", 0)
    [(name, sha)] = videos(tmp_path, ["v.mp4"])
    maker = PosterMaker(tmp_path, discard=discard)
    assert maker.add(tmp_path / name, sha) is False
    await asyncio.sleep(0)
    await maker.finish()
    assert (tmp_path / name).exists() is not discard


async def test_a_stop_waits_for_one_poster_at_most(tmp_path):
    # a stop (finish with drop_waiting) ends the batch in the making: the posters after
    # the one the child hung on are not asked again (review: up to 32 x 20 s before exit)
    maker = PosterMaker(tmp_path, work="poster_faults:crash_or_hang", seconds=1)
    for i in range(4):
        name = f"hang{i}.mp4"
        (tmp_path / name).write_bytes(mp4_bytes(f"video {i}", 0.5))
        maker.add(tmp_path / name, f"{i:x}" * 64)
    await asyncio.sleep(0.3)  # the batch of 4 is with the child, stuck on the first
    began = time.monotonic()
    await maker.finish(drop_waiting=True)
    took = time.monotonic() - began
    assert took < 2.0, f"the stop waited {took:.1f} s: posters were started after it"
    assert maker.given_up == 1
