"""What `Store.sync` writes when it lays the manifest's jobs over the state.

Owns the comparison of one batch of jobs with their stored rows (`SyncWrites.plan`: add,
take the manifest's request, flag a changed entry, keep what was sent) and its writes,
one `executemany` per kind (`flush`); `batches` cuts the jobs into batches, so a
1,000,000-job manifest is never held whole. The transaction, the batch size and the
lookups of stored rows are `Store.sync`'s (store.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from batchgen.jobs import Job, JobState
from batchgen.store_rows import job_request

#: the meta key holding the last sync's expansion key (see `Store.sync`)
SYNC_KEY = "sync_key"

def batches(pairs: Iterable[tuple[Job, tuple[int, int]]], size: int
            ) -> Iterator[list[tuple[Job, tuple[int, int]]]]:
    """(job, estimates) pairs, `size` at a time (the last batch may be shorter)."""
    batch: list[tuple[Job, tuple[int, int]]] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class SyncWrites:
    """What `Store.sync` writes for each batch of jobs, one executemany per kind."""

    def __init__(self, free: set[str]) -> None:
        self.free = free
        self.changed: list[str] = []
        self.seen = self.matched = 0
        self.inserts: list[tuple[Any, ...]] = []
        self.resets: list[tuple[Any, ...]] = []
        self.children: list[tuple[Any, ...]] = []
        self.sent: list[tuple[Any, ...]] = []

    def plan(self, batch: list[tuple[Job, tuple[int, int]]],
             existing: dict[str, tuple[str, str]]) -> None:
        for job, (total, audio) in batch:
            self.seen += 1
            count = job.count or 1
            total, audio = total // count, audio // count  # per video
            prev = existing.get(job.id)
            self.matched += prev is not None
            # a job that cost nothing and whose entry changed is sent as corrected
            fresh = prev is not None and job.id in self.free and prev[1] != job.fingerprint
            open_ = prev is None or prev[0] == JobState.PENDING or fresh
            if prev is not None and not open_:
                is_changed = prev[1] != job.fingerprint
                if is_changed:
                    self.changed.append(job.id)
                self.sent.append((job.index, int(is_changed),
                                  job.fingerprint if is_changed else None, job.id))
                if count == 1:
                    continue  # its recorded request stays: no need to build the new one
            req = json.dumps(job_request(job, audio), sort_keys=True)
            for k in range(2, count + 1):
                child = f"{job.id}#{k}"
                if child not in existing:
                    if open_:  # else: count raised after sending: flagged, not paid
                        self.inserts.append((child, job.index, job.fingerprint, req, total,
                                             job.id))
                elif fresh and child in self.free:
                    self.resets.append((job.index, job.fingerprint, req, total, child))
                else:
                    self.children.append((req, total, child))
            if prev is None:
                self.inserts.append((job.id, job.index, job.fingerprint, req, total, None))
            elif open_:
                self.resets.append((job.index, job.fingerprint, req, total, job.id))

    def flush(self, conn: Any) -> None:
        conn.executemany(
            "INSERT INTO jobs(job_id, idx, fingerprint, request, state, credits_estimated, "
            f"parent) VALUES (?,?,?,?,'{JobState.PENDING.value}',?,?)", self.inserts)
        # a job not (or no longer) bound by an earlier create takes the manifest's request
        conn.executemany(
            "UPDATE jobs SET idx=?, fingerprint=?, request=?, credits_estimated=?, active=1, "
            "changed=0, new_fingerprint=NULL, error=NULL, unknown_step=NULL, "
            f"state='{JobState.PENDING.value}' WHERE job_id=?", self.resets)
        conn.executemany(
            f"UPDATE jobs SET active=1, request=CASE state WHEN '{JobState.PENDING.value}' "
            "THEN ? ELSE request END, credits_estimated=CASE state WHEN "
            f"'{JobState.PENDING.value}' THEN ? ELSE credits_estimated END WHERE job_id=?",
            self.children)
        conn.executemany("UPDATE jobs SET idx=?, active=1, changed=?, new_fingerprint=? "
                         "WHERE job_id=?", self.sent)
        self.inserts, self.resets, self.children, self.sent = [], [], [], []


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What `Store.sync` found when it laid the manifest over the state."""

    added: int
    changed: tuple[str, ...]      #: ids whose entry changed after submission (kept, reported)
    removed: int                  #: jobs in the state that the manifest no longer lists
