"""The plan of a run: what a run with these options would do now, without running it.

`plan_now` is what `plan`, `run --dry-run` and `batchgen.plan()` all come through, so
their figures agree. It reads the state without its lock and sends nothing: the run's own
preparation (recover, sync, reopen) runs on a private copy of the state, and the queue is
`budget.queue`'s, as in the runner. `estimates` and `sync_key` are how a manifest is laid
over the state, by the plan and by the run (session.py) alike.

Deliberately not here: the plan's figures themselves (planning.py, pure), running
(session.py), printing (batchgen/cli/).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from batchgen.errors import NoState
from batchgen.settings import Resolved

if TYPE_CHECKING:  # imported lazily at run time, to keep every command's start-up light
    from batchgen.jobs import Job
    from batchgen.manifest import Manifest
    from batchgen.planning import Plan
    from batchgen.state_store import StateStore


def estimates(manifest: Manifest) -> Callable[[Job], tuple[int, int]]:
    """(total, add-audio part) credits of a job, as the store records them (`Store.sync`
    calls it job by job, so no list of a million pairs is built)."""
    from batchgen.pricing import add_audio_credits, job_credits
    prices = manifest.budget.prices

    def estimate(job: Job) -> tuple[int, int]:
        return job_credits(prices, job), add_audio_credits(prices, job)

    return estimate


#: bump when what `Store.sync` writes for one job changes (its stored request, ...), or
#: what the key is made from: a state synced under another format is synced once more.
#: 2: the expansion digest names a job's file relative to the manifest's folder, not as
#: the manifest's path was typed (`ExpansionDigest.add`)
SYNC_FORMAT = 2


def sync_key(manifest: Manifest) -> str | None:
    """What the state's rows were synced from: the manifest's expansion and its prices.

    Equal keys mean a new sync would write what the last one wrote (`Store.sync` skips
    it); None for a job list without an expansion digest. The key is the same however
    the manifest's path is spelled (relative, absolute, from another folder, through a
    symlink): only the rows' `source` text would differ, and rows keep the spelling of
    the run that last wrote them.
    """
    import hashlib

    from batchgen.jobs import DEFAULT_NEGATIVE_PROMPT
    digest = getattr(manifest.jobs, "digest", None)
    if digest is None:
        return None
    made = f"{SYNC_FORMAT}\x1f{digest}\x1f{manifest.budget.prices!r}\x1f{DEFAULT_NEGATIVE_PROMPT}"
    return hashlib.sha256(made.encode()).hexdigest()


def plan_now(resolved: Resolved, *, retry_failed: bool = False, resubmit_unknown: bool = False
             ) -> tuple[Plan, dict[str, int]]:
    """What a run with these options would do now, and what the API charged so far.

    Reads local state (if any) without taking the lock and sends nothing; `plan`,
    `run --dry-run` and `batchgen.plan()` all come through here, so their figures agree.
    The run's own preparation (recover, sync, reopen) runs on a private copy (on disk) of
    the state, and the queue is `budget.queue`'s, as in the runner: plan and run cannot
    disagree about what is sent or about the budget (`jobs_within_budget`).
    """
    from dataclasses import replace

    from batchgen.planning import bucket, build_plan
    from batchgen.state_store import preview_state

    manifest = resolved.manifest
    if resolved.max_credits != manifest.budget.max_credits:
        manifest = replace(manifest, budget=replace(manifest.budget,
                                                    max_credits=resolved.max_credits))
    states: dict[str, str] = {}
    spent, charged = 0, {}
    sends: list[tuple[str, int]] | None = None
    try:
        store = preview_state(resolved.output_dir, resolved.state, manifest.name)
    except NoState:  # nothing run yet; a state that cannot be read is an error, not empty
        pass
    else:
        with store:
            store.recover()
            store.sync(manifest.jobs, estimates(manifest), key=sync_key(manifest))
            store.reopen(unknown=resubmit_unknown, failed=retry_failed)
            spent = store.committed_total()
            from batchgen.plan_state import plan_over
            streamed = plan_over(manifest, store, spent)  # by price shape: flat memory
            if streamed is not None:
                return streamed
            sends = _sends(store)
            sending = {job for job, _ in sends}
            charged = {"jobs": 0, "estimated": 0, "deducted": 0, "differs": 0}
            for r in store.iter_rows():  # one row at a time (the copy is on disk)
                deducted = r.credits_deducted
                if deducted is not None:  # report.charges, streamed
                    charged["jobs"] += 1
                    charged["estimated"] += r.credits_estimated
                    charged["deducted"] += deducted
                    charged["differs"] += deducted != r.credits_estimated
                if not r.parent:
                    states[r.job_id] = ("to_submit" if r.job_id in sending
                                        else bucket(r.state.value))
    return build_plan(manifest, states or None, spent_credits=spent, sends=sends), charged


def _sends(store: StateStore) -> list[tuple[str, int]]:
    """The admissions of `budget.queue` over the state's active rows, as (the job they
    belong to, credits they reserve), read from the store a page at a time."""
    from batchgen import budget
    from batchgen.jobs import JobState
    from batchgen.scheduler.window import Window
    learned = store.learned(active_only=True)
    return [(row.parent or row.job_id,
             budget.need(row, learned, 1 + len(family) if row.state is JobState.PENDING else 1))
            for row, family in Window(store).rest()]
