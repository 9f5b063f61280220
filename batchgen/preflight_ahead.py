"""Pre-flight's lookahead: the jobs read ahead of the submitter and the URL verdicts they
need, in memory bounded by the lookahead, not by the manifest (issue 18).

Owns the bookkeeping, none of the fetching. Jobs are read from their source (the
admission queue, a page at a time: session_setup.py) only while fewer than `size` are
held; a job is held until the submitter is given its verdict (`answer`), which also lets
go of every job read before it (the submitter asks in queue order: a job it went past was
sent by another runner, or is no longer to send). A URL's verdict is kept while a held job
needs it, then among the `size` most recent spare ones, so jobs sharing an image within
and near the lookahead share one check. A job asked for out of order (a re-ask after its
answer was forgotten, a job another runner's claims put beyond the reader) is read alone
with `lookup` and checked first: nothing is ever cleared unchecked.

Synchronous and without I/O of its own: the caller's source and lookup read the store.
Deliberately not here: fetching and the per-host rules (preflight.py, asset_probe.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from batchgen.assets import Check
    from batchgen.preflight import Asset

#: what the caller keeps as a job's answer (preflight.Cleared)
A = TypeVar("A")

#: one job: its id and the assets to check
Job = tuple[str, Sequence["Asset"]]


class Lookahead(Generic[A]):
    """Jobs held ahead of the submitter, the URLs they need and the verdicts known."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._source: Iterator[Job] = iter(())
        self._lookup: Callable[[str], Sequence[Asset]] = lambda job_id: ()
        #: jobs read from the source and not answered yet, in queue order
        self.held: dict[str, Sequence[Asset]] = {}
        #: jobs asked for out of order (`ask`), checked before the others
        self._extra: dict[str, Sequence[Asset]] = {}
        self._refs: dict[str, int] = {}         #: url -> held and extra jobs that need it
        self.done: dict[str, Check] = {}        #: url -> verdict (needed, or spare)
        self._spare: dict[str, None] = {}       #: verdicts no job holds, oldest first
        self._todo: deque[tuple[str, str]] = deque()  #: (url, kind) to check, in order
        self._queued: set[str] = set()          #: in `_todo` or being checked
        #: the most recent answers (a head held back by the budget is asked again)
        self.answered: dict[str, A] = {}
        #: the source has been read to its end
        self.exhausted = False

    def feed(self, jobs: Iterable[Job], lookup: Callable[[str], Sequence[Asset]] | None
             ) -> None:
        """Read jobs from `jobs` as room frees; `lookup` reads one job asked out of order
        (no lookup: a job never read has nothing to check, the caller gave them all)."""
        self._source = iter(jobs)
        if lookup is not None:
            self._lookup = lookup

    def next_url(self) -> tuple[str, str] | None:
        """The next (url, kind) to check, reading jobs while there is room; None when
        there is nothing to check now (the source is `exhausted`, or the lookahead full)."""
        while not self._todo and self._read():
            pass
        return self._todo.popleft() if self._todo else None

    def holds(self, job_id: str) -> bool:
        """Whether the job is held, reading on (within the lookahead) to find it: the
        submitter may ask before the workers have had a turn to read."""
        while job_id not in self.held and job_id not in self._extra and self._read():
            pass
        return job_id in self.held or job_id in self._extra

    def ask(self, job_id: str) -> bool:
        """Read a job not held (`lookup`) to check it first; False: nothing to check."""
        assets = tuple(self._lookup(job_id))
        if assets:
            self._hold(self._extra, job_id, assets, first=True)
        return bool(assets)

    def land(self, url: str, check: Check) -> None:
        """A URL's verdict is known."""
        self._queued.discard(url)
        self.done[url] = check
        if url not in self._refs:
            self._spare_one(url)

    def answer(self, job_id: str, judge: Callable[[list[tuple[Asset, Check]]], A]
               ) -> A | None:
        """The held job's answer (`judge` of its assets' verdicts), None while one is
        missing; once answered the job is let go, with every job read before it."""
        extra = job_id in self._extra
        assets = self._extra[job_id] if extra else self.held[job_id]
        checks = [(a, self.done.get(a.url)) for a in assets]
        known = [(a, c) for a, c in checks if c is not None]
        if len(known) < len(checks):
            return None
        answer = self.answered[job_id] = judge(known)
        if len(self.answered) > self.size:
            del self.answered[next(iter(self.answered))]
        if extra:
            self._let_go(self._extra.pop(job_id))
            return answer
        while self.held:
            first = next(iter(self.held))
            self._let_go(self.held.pop(first))
            if first == job_id:
                break
        return answer

    def ripe(self) -> Iterator[tuple[str, list[tuple[Asset, Check]]]]:
        """The held jobs at the head whose verdicts are all known, let go as they are
        given (validate/plan --online: every job, nobody asks)."""
        while self.held:
            job_id, assets = next(iter(self.held.items()))
            if any(a.url not in self.done for a in assets):
                return
            checks = [(a, self.done[a.url]) for a in assets]
            del self.held[job_id]
            self._let_go(assets)
            yield job_id, checks

    def _read(self) -> bool:
        """Read one job from the source when there is room; False when none was read."""
        if self.exhausted or len(self.held) >= self.size:
            return False
        job = next(self._source, None)
        if job is None:
            self.exhausted = True
            return False
        if job[0] not in self.held:
            self._hold(self.held, job[0], tuple(job[1]), first=False)
        return True

    def _hold(self, into: dict[str, Sequence[Asset]], job_id: str,
              assets: Sequence[Asset], *, first: bool) -> None:
        into[job_id] = assets
        for asset in assets:
            url = asset.url
            self._refs[url] = self._refs.get(url, 0) + 1
            if url in self.done:
                self._spare.pop(url, None)
            elif url not in self._queued:
                self._queued.add(url)
                if first:
                    self._todo.appendleft((url, asset.kind))
                else:
                    self._todo.append((url, asset.kind))

    def _let_go(self, assets: Sequence[Asset]) -> None:
        for asset in assets:
            url = asset.url
            left = self._refs[url] - 1
            if left:
                self._refs[url] = left
                continue
            del self._refs[url]
            if url in self.done:
                self._spare_one(url)

    def _spare_one(self, url: str) -> None:
        """Keep a verdict no job needs among the `size` most recent such."""
        self._spare[url] = None
        if len(self._spare) > self.size:
            oldest = next(iter(self._spare))
            del self._spare[oldest]
            del self.done[oldest]
