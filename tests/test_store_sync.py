"""Store.sync from a stream (issue 18): written in batches as the jobs come, and skipped when
the manifest's expansion is the one the last sync wrote and no row waits for it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from batchgen import store as store_module
from batchgen.jobs import Job
from batchgen.manifest import load_manifest
from batchgen.session_plan import estimates, sync_key
from batchgen.store import JobState, Store
from batchgen.store_sync import SyncResult


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


def _batch(folder: Path, base_url: str = "") -> Path:
    """A manifest with inline jobs and a jobs_file (both kinds of `source`), in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(
        json.dumps({"id": f"r{i}", "prompt": f"row {i}",
                    "image_url": f"https://example.com/r{i}.jpg"}) + "\n" for i in range(3)))
    api = f"api: {{base_url: '{base_url}', concurrency: 2, poll_interval: 0.05}}\n" \
        if base_url else ""
    manifest = folder / "m.yaml"
    manifest.write_text("version: 1\nname: spelled\noutput: {dir: out}\n" + api +
                        "defaults: {resolution: 720p, video_length: 5}\n"
                        "jobs:\n"
                        "- {id: a, prompt: inline a, image_url: 'https://example.com/a.jpg'}\n"
                        "- {id: b, prompt: inline b, image_url: 'https://example.com/b.jpg'}\n"
                        "jobs_file: rows.jsonl\n")
    return manifest


@pytest.mark.parametrize("spelling", ["absolute", "dotted", "symlinked folder"])
def test_a_manifest_reached_by_another_path_is_not_synced_again(tmp_path, monkeypatch,
                                                                spelling):
    """The expansion digest hashed each job's source as the path was typed: `run m.yaml`
    then cron's `cd / && run /srv/x/m.yaml` re-synced every row (~150 s at 1,000,000
    jobs). The key now names the files relative to the manifest's folder; what the user
    is shown (`source`, errors) keeps the path as typed."""
    folder = tmp_path / "batch"
    manifest = _batch(folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(folder)
    monkeypatch.chdir(folder)
    first = load_manifest("m.yaml")
    with Store.open(tmp_path / "state") as store:
        store.sync(first.jobs, estimates(first), key=sync_key(first))
        assert [r.source for r in store.rows()][:3] == ["m.yaml:6", "m.yaml:7", "rows.jsonl:1"]
        store.begin_submit(["a"], "t")
        store.mark_sent("a")
        store.mark_accepted("a", "task-a", 20)
    monkeypatch.chdir(elsewhere)
    typed = {"absolute": str(manifest), "dotted": "./../batch/../batch/m.yaml",
             "symlinked folder": str(tmp_path / "link" / "m.yaml")}[spelling]
    second = load_manifest(typed)
    assert sync_key(second) == sync_key(first) and second.jobs.digest == first.jobs.digest
    shown = [j.source for j in second.jobs]  # shown to the user: the path as typed
    assert shown[0] == f"{Path(typed)}:6" and shown[2] == f"{Path(typed).parent}/rows.jsonl:1"
    with Store.open(tmp_path / "state") as store:
        counted = Counted(list(second.jobs))
        result = store.sync(counted, estimates(second), key=sync_key(second))
        # skipped: the rows stand as the first sync wrote them, its spelling included
        assert counted.reads == 0 and result == SyncResult(added=0, changed=(), removed=0)
        assert [r.source for r in store.rows()][:3] == ["m.yaml:6", "m.yaml:7", "rows.jsonl:1"]


async def test_a_rerun_by_absolute_path_from_another_cwd_creates_and_syncs_nothing(
        sandbox, tmp_path, monkeypatch):
    """End to end: `run m.yaml` in the manifest's folder, then the same manifest by its
    absolute path from elsewhere (as cron runs it): no create, and no sync of the rows."""
    from batchgen import arun
    from batchgen import store_sync as sync_module

    sb = await sandbox()
    folder = tmp_path / "batch"
    manifest = _batch(folder, sb.url)
    planned: list[int] = []
    real_plan = sync_module.SyncWrites.plan

    def counting(self, batch, existing):  # type: ignore[no-untyped-def]
        planned.append(len(batch))
        return real_plan(self, batch, existing)

    monkeypatch.setattr(sync_module.SyncWrites, "plan", counting)
    monkeypatch.chdir(folder)
    first = await arun("m.yaml", api_key="test-key-1234")
    assert first.counts["completed"] == 5 and sum(planned) == 5
    created = sb.stats()["tasks_created"]
    (tmp_path / "cron").mkdir()
    monkeypatch.chdir(tmp_path / "cron")
    again = await arun(str(manifest), api_key="test-key-1234")
    assert again.counts["completed"] == 5
    assert sb.stats()["tasks_created"] == created
    assert sum(planned) == 5  # the second run's sync was skipped by its key


def test_a_state_synced_before_sync_format_2_is_synced_once_more(tmp_path, monkeypatch):
    """On upgrade, the key an older batchgen stored (its digest hashed the path as typed,
    under SYNC_FORMAT 1) never matches: the state is compared once, a sent job is neither
    flagged nor reopened, and the next sync is skipped."""
    monkeypatch.chdir(_batch(tmp_path / "batch").parent)
    loaded = load_manifest("m.yaml")
    with Store.open(tmp_path / "state") as store:
        store.sync(loaded.jobs, estimates(loaded), key="a key stored under SYNC_FORMAT 1")
        store.begin_submit(["a"], "t")
        store.mark_sent("a")
        store.mark_accepted("a", "task-a", 20)
        upgraded, then = Counted(list(loaded.jobs)), Counted(list(loaded.jobs))
        results = [store.sync(jobs, estimates(loaded), key=sync_key(loaded))
                   for jobs in (upgraded, then)]
        assert store.get("a").state is JobState.RUNNING
    assert (upgraded.reads, then.reads) == (1, 0)
    assert results == [SyncResult(added=0, changed=(), removed=0)] * 2
