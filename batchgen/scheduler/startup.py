"""A run's start-up: the store's state into the run's view (issue 18: without every row).

`load` gives the workers what the state asks of them: the budget's total and the prices
the API charged (aggregates the store computes: `committed_total`, `learned`), the
add-audio steps already reserved, the admission queue (read a page at a time as it drains:
scheduler/window.py), the tasks to poll again, the videos to fetch, the copies to delete
and the posters to make. With a shared state (`load_shared`) the view is every row, as
the claims and adoption of share.py expect.

`check_filenames` refuses a run that would give two jobs one file, streaming the names;
it is skipped when the state's rows are those of the last sync that passed it under the
same template (a meta key), since nothing a run does can make two names equal then.
Deliberately not here: the workers' loops, SQL (store_reads.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from batchgen import budget
from batchgen.download import render_filename, template_fields
from batchgen.errors import UsageError
from batchgen.jobs import IN_FLIGHT, JobRow, JobState
from batchgen.scheduler.fetch import target_path
from batchgen.scheduler.state import COUNT_FILE_SEPARATOR
from batchgen.scheduler.window import Window

if TYPE_CHECKING:
    from batchgen.poster_maker import PosterMaker
    from batchgen.scheduler.cleanup import Cleanup
    from batchgen.scheduler.fetch import Fetch
    from batchgen.scheduler.poll import Poll
    from batchgen.scheduler.state import RunState
    from batchgen.scheduler.submit import Submit

#: the meta key of the last filename check that passed (see `check_filenames`)
NAMES_KEY = "names_checked"


def load(state: RunState, submit: Submit, poll: Poll, fetch: Fetch, cleanup: Cleanup,
         posters: PosterMaker) -> None:
    """The state into the run's view, holding only the jobs in play."""
    store, settings = state.store, state.settings
    now = state.ports.clock()
    state.ledger.total = store.committed_total()
    state.ledger.learned = store.learned()
    check_filenames(state)
    # add-audio steps already reserved go first and are not admissions (budget.queue)
    for row in store.rows_in([JobState.AUDIO_PENDING], where="audio_held != 0"):
        state.admit(row)
        state.handoffs.audio_due.append(row.job_id)
    submit.admissions.feed(Window(store))
    for row in store.rows_in(IN_FLIGHT):
        state.admit(row)
        _track(poll, row, now)
    for job_id in store.ids_in([JobState.READY]):
        fetch.stale.add(job_id)
        state.handoffs.ready.put_nowait(job_id)
    if settings.delete_remote:
        for row in store.rows_in([JobState.COMPLETED],
                                 where="sha256 IS NOT NULL AND remote_deleted = 0"):
            cleanup.schedule(row, now)
    posters.backfill(store.downloaded_files())


def load_shared(state: RunState) -> None:
    """Every row into the view (a shared state: the store claims, share.py adopts)."""
    every = state.store.rows(active_only=False)
    state.ledger.learned = budget.learned_prices(every)
    files: dict[str, str] = {}
    for row in every:
        if row.committed_credits:
            state.commit(row.job_id, row.committed_credits)
        if row.file:
            files[row.file] = row.job_id
        if not row.active:
            continue
        state.rows[row.job_id] = row
        if row.parent:
            state.children.setdefault(row.parent, []).append(row.job_id)
    _refuse_clash(state, (r for r in every if r.active), files)


def _track(poll: Poll, row: JobRow, now: float) -> None:
    audio = row.state is JobState.AUDIO_RUNNING
    task_id = row.audio_task_id if audio else row.task_id
    if task_id:
        # its age is unknown: timed by what its finished record will tell
        poll.track(task_id, row, audio, now, timed=False)


def _names_key(state: RunState) -> str | None:
    """What a passed check covered: the rows' sync and the names' template."""
    synced = state.store.meta_value("sync_key")
    if synced is None:
        return None
    settings = state.settings
    made = f"{synced}\x1f{settings.filename}\x1f{settings.name}"
    return hashlib.sha256(made.encode()).hexdigest()


def check_filenames(state: RunState) -> None:
    """Refuse a run that would give two jobs one file: a finished video would be lost.

    Names are compared with each other and with the files earlier runs recorded, since a
    template with `{index}` renames jobs when the manifest's order changes. The names are
    kept as 8-byte digests (made from a few columns, not whole rows: `target_path`'s
    fields); a digest seen twice is looked at again, by name, row by row.
    """
    settings, store = state.settings, state.store
    if "{task_id}" in settings.filename:
        return
    key = _names_key(state)
    if key is not None and store.meta_value(NAMES_KEY) == key:
        return
    fields = template_fields(settings.filename)
    if "task_id" in fields:  # named by a task id (with a format): the exact check, by row
        _refuse_clash(state, store.iter_rows(), dict(store.files()))
    else:
        seen: set[int] = {_digest(name) for name, _ in store.files()}
        for job_id, idx, res, length in store.naming_fields():
            digest = _digest(render_filename(settings.filename, {
                "id": job_id.replace("#", COUNT_FILE_SEPARATOR), "name": settings.name,
                "index": idx, "resolution": res, "video_length": length}, fields))
            if digest in seen:  # two names alike, or two digests: the exact check says
                seen.clear()
                _refuse_clash(state, store.iter_rows(), dict(store.files()))
                break
            seen.add(digest)
        seen.clear()
    if key is not None:
        store.set_meta_value(NAMES_KEY, key)


def _digest(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def _refuse_clash(state: RunState, rows: Iterable[JobRow], files: dict[str, str]) -> None:
    """The exact check, by name: `files` maps recorded file names to their jobs."""
    settings = state.settings
    if "{task_id}" in settings.filename:
        return
    seen: dict[str, str] = {}
    for row in _unnamed(rows):
        name = target_path(settings, row).name
        owner = seen.get(name) or files.get(name)
        if owner is not None and owner != row.job_id:
            raise UsageError(
                f"output.filename {settings.filename!r} would write job {row.job_id} "
                f"to {name!r}, which belongs to job {owner}; use {{id}} in the template "
                "(ids never change) or another output dir")
        seen[name] = row.job_id


def _unnamed(rows: Iterable[JobRow]) -> Iterator[JobRow]:
    """Rows not on disk yet (one with a file keeps its recorded name)."""
    return (r for r in rows if not r.file)
