"""Store.sync from a stream (issue 18): written in batches as the jobs come, and skipped when
the manifest's expansion is the one the last sync wrote and no row waits for it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest

from batchgen import store as store_module
from batchgen.jobs import Job
from batchgen.store import JobState, Store


def job(i: int, **kw) -> Job:
    return Job(id=f"j{i}", index=i, image_url=f"https://e.com/{i}.jpg", resolution="720p",
               video_length=5, audio_type=3, prompt=f"p{i}", fingerprint=f"fp{i}", **kw)


class Counted(Sequence[Job]):
    """A job list that counts how often it is read (a sync that is skipped reads none)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        self.reads = 0

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i):  # type: ignore[override]
        return self.jobs[i]

    def __iter__(self) -> Iterator[Job]:
        self.reads += 1
        return iter(self.jobs)


def price(j: Job) -> tuple[int, int]:
    return 20 * (j.count or 1), 0


def _jobs(edit: int | None = None) -> list[Job]:
    out = [job(i, count=3 if i % 4 == 1 else None) for i in range(10)]
    if edit is not None:
        out[edit] = replace(out[edit], prompt="edited", fingerprint="edited")
    return out


def _rows(store: Store) -> list[tuple]:
    return sorted((r.job_id, r.idx, r.fingerprint, r.state, r.credits_estimated, r.changed,
                   r.active, r.error, r.parent, tuple(sorted(r.request.items())))
                  for r in store.rows(active_only=False))


def _both(tmp_path, jobs: list[Job], key: str) -> tuple[Counted, object, object]:
    """Sync the same jobs with the key and without it, each on its own copy of the state."""
    keyed, plain = Store.preview(tmp_path), Store.preview(tmp_path)
    counted = Counted(jobs)
    with keyed, plain:
        a = keyed.sync(counted, price, key=key)
        b = plain.sync(jobs, price)
        assert _rows(keyed) == _rows(plain)
    assert a == b
    return counted, a, b


def test_batches_write_what_one_pass_writes(tmp_path, monkeypatch):
    one, small = tmp_path / "one", tmp_path / "small"
    for folder in (one, small):
        with Store.open(folder) as store:
            store.sync(_jobs(), price)
            store.begin_submit(["j1", "j2"], "t")
            store.mark_sent("j1")
            store.mark_accepted("j1", "task1", 60)
            store.update([("j2", {"state": JobState.FAILED, "error": "refused"})])
    results = []
    for folder, batch in ((one, 1000), (small, 2)):
        monkeypatch.setattr(store_module, "SYNC_BATCH", batch)
        monkeypatch.setattr(store_module, "_LOOKUP", 3)
        with Store.open(folder) as store:
            edited = [*_jobs(edit=1)[:-1], job(42)]
            results.append((store.sync(edited, [price(j) for j in edited]), _rows(store)))
    assert results[0] == results[1]
    assert results[0][0].changed == ("j1",) and results[0][0].added == 1


def test_an_unchanged_expansion_is_not_compared_again(tmp_path):
    with Store.open(tmp_path) as store:
        store.sync(_jobs(), price, key="K")
        store.begin_submit(["j0"], "t")
        store.mark_sent("j0")
        store.mark_accepted("j0", "task0", 20)
    counted, result, _ = _both(tmp_path, _jobs(), "K")
    assert counted.reads == 0 and result.added == 0
    counted, _, _ = _both(tmp_path, _jobs(edit=3), "other")  # another expansion: compared
    assert counted.reads == 1


def test_a_sent_job_edited_in_the_manifest_stays_flagged_when_skipped(tmp_path):
    with Store.open(tmp_path) as store:
        store.sync(_jobs(), price, key="A")
        store.begin_submit(["j0"], "t")
        store.mark_sent("j0")
        store.mark_accepted("j0", "task0", 20)
        store.sync(_jobs(edit=0), price, key="B")
    counted, result, _ = _both(tmp_path, _jobs(edit=0), "B")
    assert counted.reads == 0 and result.changed == ("j0",)


def _pending_with_an_error(store: Store) -> None:
    store.sync(_jobs(edit=2), price, key="E")
    store.update([("j2", {"state": JobState.PENDING, "error": "left by a retry"})])


def _edited_while_on_the_wire_then_never_sent(store: Store) -> None:
    store.begin_submit(["j2"], "t")
    store.sync(_jobs(edit=2), price, key="E")  # flagged changed: it was being sent
    store.recover()                            # it never left: pending, still flagged


def _edited_then_refused(store: Store) -> None:
    store.begin_submit(["j2"], "t")
    store.mark_sent("j2")
    store.sync(_jobs(edit=2), price, key="E")
    store.update([("j2", {"state": JobState.FAILED, "error": "refused"})])


@pytest.mark.parametrize("waiting", [_pending_with_an_error,
                                     _edited_while_on_the_wire_then_never_sent,
                                     _edited_then_refused])
def test_rows_waiting_for_the_manifest_make_the_sync_run_in_full(tmp_path, waiting):
    with Store.open(tmp_path) as store:
        store.sync(_jobs(), price, key="K")
        waiting(store)
    counted, _, _ = _both(tmp_path, _jobs(edit=2), "E")
    assert counted.reads == 1


def test_a_sync_without_a_key_forgets_the_stored_one(tmp_path):
    with Store.open(tmp_path) as store:
        store.sync(_jobs(), price, key="K")
        store.sync(_jobs(edit=5), price)
    counted, _, _ = _both(tmp_path, _jobs(), "K")
    assert counted.reads == 1
