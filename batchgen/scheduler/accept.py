"""What an accepted create records: the task ids (paid work, durably, at once), what each
task holds against the budget, the prices learnt, and the tasks handed to the poller.

A single create makes one task; a batch create (`count`, `model_name`) makes the videos
of a family, and its answer may list fewer (the rest were refused: nothing made), some
under ids we cannot use (made and charged: unknown, never resent) or more than asked
(charged: held against the budget). Called by the submitter (submit.py) right after the
API's answer, with the run's `RunState` and the poller passed in. Deliberately not here:
sending or retrying (submit.py), the meaning of a charge (budget.py).
"""

from __future__ import annotations

from batchgen import budget
from batchgen.client import TaskRecord
from batchgen.scheduler.poll import Poll
from batchgen.scheduler.state import EventKind, JobEvent, RunState
from batchgen.transitions import (
    Accepted,
    AnswerLost,
    CreateRefused,
    Event,
    FamilyAccepted,
    Held,
)

#: why a video the batch answer listed under an unusable id is not resent
UNREADABLE = ("the batch create listed this video under an unusable task id: it may exist "
              "and be charged; not sent again (re-run with --resubmit-unknown to send it "
              "anyway)")


async def accepted(state: RunState, poll: Poll, job_id: str, audio: bool,
                   records: list[TaskRecord]) -> None:
    """Record the API's answer to a create of `job_id` and start polling its tasks.

    A single create's task id shares the loop turn's durable commit (journal.py): the
    task is tracked only once that is written."""
    row = state.rows[job_id]
    req = row.request
    if not audio and (req.get("model_name") or req.get("count")):
        _adopt_family(state, poll, job_id, records)
        return
    (record,) = records
    # the task id is recorded whatever else the answer says: it is paid work
    credits = state.charge(row, record, audio)
    (row,) = await state.apply_shared([(job_id, Accepted(record.task_id, credits, audio))])
    if not audio:
        state.ledger.learn(row, credits)
    state.commit(job_id, row.committed_credits)
    note = state.charge_note(row, record, audio)
    if note is not None:
        (row,) = state.apply([(job_id, note)])
    poll.track(record.task_id, row, audio, state.ports.clock())
    state.ports.emit(JobEvent(EventKind.SUBMITTED, job_id, record.task_id,
                              credits=credits or 0))


def _adopt_family(state: RunState, poll: Poll, job_id: str,
                  records: list[TaskRecord]) -> None:
    """Give each video of a batch create its own row, and hold what the API made beyond
    them: all in one durable write, so no crash can keep a charged video off the budget."""
    members = state.family(job_id)
    assigned = list(zip(members, records, strict=False))
    missing = members[len(assigned):]
    # videos listed under an id we cannot use were made and charged: never take them
    # for videos the API refused (that would free their credits and make them again)
    unusable = getattr(records, "unusable", 0)
    unreadable, missing = missing[:unusable], missing[unusable:]
    error = f"the batch create returned {len(records)} of {len(members)} videos"
    charged = [state.charge(state.rows[j], r, False) for j, r in assigned]
    at = state.ports.now_iso()
    steps: list[tuple[str, Event]] = [
        (j, FamilyAccepted(r.task_id, c, at)) for (j, r), c in zip(assigned, charged,
                                                                    strict=True)]
    steps += [(j, AnswerLost(UNREADABLE)) for j in unreadable]
    steps += [(j, CreateRefused(error)) for j in missing]
    family = len(steps)
    steps += [(j, note) for j, r in assigned
              if (note := state.charge_note(state.rows[j], r, False)) is not None]
    holds = _holds(state, job_id, records[len(members):], unusable - len(unreadable))
    steps += [(job_id, held) for held in holds]
    rows = state.apply(steps, durable=True)
    now = state.ports.clock()
    for (j, record), credits, row in zip(assigned, charged, rows, strict=False):
        state.commit(j, row.committed_credits)
        state.ledger.learn(row, credits)
        poll.track(record.task_id, row, False, now)
        state.ports.emit(JobEvent(EventKind.SUBMITTED, j, record.task_id, credits=credits or 0))
    lost_rows = rows[len(assigned):len(assigned) + len(unreadable)]
    for j, row in zip(unreadable, lost_rows, strict=True):
        state.commit(j, row.committed_credits)
        state.ports.emit(JobEvent(EventKind.UNKNOWN, j, UNREADABLE))
    for j, row in zip(missing, rows[len(assigned) + len(unreadable):family], strict=True):
        state.commit(j, row.committed_credits)
        state.ports.emit(JobEvent(EventKind.FAILED, j, error))
    for held, row in zip(holds, rows[len(rows) - len(holds):], strict=True):
        state.commit(job_id, row.committed_credits)
        state.ports.emit(JobEvent(EventKind.NOTICE, job_id, held.note))


def _holds(state: RunState, job_id: str, surplus: list[TaskRecord], unnamed: int
           ) -> list[Held]:
    """What a batch create made beyond what was asked: charged, so held by the job."""
    holds = [_hold_surplus(state, job_id, surplus)] if surplus else []
    if unnamed > 0:
        holds.append(_hold_unnamed(state, job_id, unnamed))
    return holds


def _hold_surplus(state: RunState, job_id: str, surplus: list[TaskRecord]) -> Held:
    """The API made more videos than asked: they were charged, so the job holds them
    (the API's figure where usable, else the estimate) and their ids are recorded."""
    estimate = budget.video_estimate(state.rows[job_id])
    charged = [budget.charge(r.charged, estimate).credits for r in surplus]
    prior = sum(c for c in charged if c is not None)
    lost = estimate * sum(1 for c in charged if c is None)
    ids = ", ".join(r.task_id for r in surplus)
    note = (f"the batch create made {len(surplus)} video(s) more than asked ({ids}); "
            f"they are held against the budget ({prior + lost} credits)")
    return Held(prior, lost, note)


def _hold_unnamed(state: RunState, job_id: str, extra: int) -> Held:
    """Surplus videos listed under ids we cannot even name: held at the estimate."""
    lost = budget.video_estimate(state.rows[job_id]) * extra
    note = (f"the batch create made {extra} video(s) more than asked under unusable "
            f"task ids; they are held against the budget ({lost} credits)")
    return Held(0, lost, note)
