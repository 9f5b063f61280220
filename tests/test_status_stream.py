"""`status` reads the state one row at a time (issue 18): the same figures as from a list."""

from __future__ import annotations

from dataclasses import replace

from batchgen.audit import not_downloaded
from batchgen.cli.local import _stream_totals
from batchgen.jobs import Job
from batchgen.report import summarize
from batchgen.store import JobState, Store


def job(i: int, **kw) -> Job:
    return Job(id=f"j{i}", index=i, image_url=f"https://e.com/{i}.jpg", resolution="720p",
               video_length=5, audio_type=3, prompt=f"p{i}", fingerprint=f"fp{i}", **kw)


def test_streamed_status_figures_equal_the_listed_ones(tmp_path):
    jobs = [job(i, count=2 if i == 3 else None) for i in range(8)]
    when = "2026-01-01T00:00:00Z"
    with Store.open(tmp_path) as store:
        store.sync(jobs, [(40 if j.count else 20, 0) for j in jobs])
        store.begin_submit(["j0", "j1", "j2", "j4"], when)
        for job_id in ("j0", "j1", "j2", "j4"):
            store.mark_sent(job_id)
            store.mark_accepted(job_id, f"task-{job_id}", 25)
        store.update([
            ("j0", {"state": JobState.COMPLETED, "file": "j0.mp4", "sha256": "0" * 64,
                    "completed_at": when}),
            ("j1", {"state": JobState.READY, "video_url": "https://v/1.mp4",
                    "finished_at": when}),
            ("j2", {"state": JobState.FAILED, "video_url": "https://v/2.mp4",
                    "finished_at": "2026-01-02T00:00:00Z", "error": "download broke"}),
        ])
        # j4 was sent, then left the manifest: inactive, its credits still held
        store.sync([replace(j, index=i) for i, j in enumerate(jobs) if j.id != "j4"],
                   [(20, 0)] * 7)
        rows, spent = store.rows_and_committed()
        summary, streamed_spent, waiting = _stream_totals(store.iter_rows(active_only=False))
    assert any(not r.active for r in Store.preview(tmp_path).rows(active_only=False))
    assert summary == summarize(rows)
    assert streamed_spent == spent > 0
    assert waiting.count == 2 and waiting.items == not_downloaded(rows)[:1]


def test_the_oldest_waiting_videos_are_kept_in_bounded_memory():
    # `status` and report.html keep a count and the most urgent few, never every one
    import random

    from batchgen.audit import Oldest
    from batchgen.jobs import JobRow
    rng = random.Random(3)
    rows = [JobRow(job_id=f"j{i:04d}", idx=i, fingerprint="f", request={},
                   state=JobState.READY, credits_estimated=20, task_id=f"t{i}",
                   finished_at=f"2026-01-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}"
                               ":00:00Z") for i in range(2_000)]
    oldest = Oldest(7)
    for row in rows:
        oldest.add(row)
        assert len(oldest._items) < 14
    assert oldest.count == 2_000 and oldest.items == not_downloaded(rows)[:7]
