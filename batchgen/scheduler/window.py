"""The admission queue read from the store a page at a time (issue 18): a run of a
million jobs holds only the admissions due soon, never every row.

`Window.read` returns the next admissions in manifest order — exactly the admissions of
`budget.queue` over the active rows, computed page by page: a pending `count` job comes
with its later videos still to make (its family rides on its one create), and a later
video whose parent is pending or on the wire is not an admission of its own. The rows
ahead of the cursor are untouched by the run (only a family's later videos, read with
their parent, are), so reading them later gives what reading them at the start would
have. `rest` walks the admissions still unread without keeping them (what the budget
holds back). The store must not be shared: with several runners the store claims.

Deliberately not here: the budget rule (budget.py, admit.py), SQL (store_reads.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from batchgen.jobs import JobRow, JobState
from batchgen.store_reads import Cursor, cursor_of

if TYPE_CHECKING:
    from batchgen.state_store import StateStore

#: admissions read from the store at a time
PAGE = 2_000

#: a pending later video rides on its parent's create while the parent is in one of these
_RIDES_ON = (JobState.PENDING, JobState.SUBMITTING)

#: one admission: its row and, for a pending `count` job, its later videos still to make
Admission = tuple[JobRow, list[JobRow]]


class Window:
    """A cursor over the store's admissions in manifest order."""

    def __init__(self, store: StateStore, page: int | None = None) -> None:
        self._store = store
        self._page = max(1, page or PAGE)
        self._after: Cursor | None = None
        #: every admission has been read
        self.exhausted = False

    def read(self) -> list[Admission]:
        """The next admissions (at least one unless `exhausted`), the cursor past them."""
        while not self.exhausted:
            got, after = self._next(self._after)
            if after is None:
                self.exhausted = True
            else:
                self._after = after
            if got:
                return got
        return []

    def rest(self) -> Iterator[Admission]:
        """The admissions not read yet, in order; the cursor stays where it is."""
        after = self._after
        while True:
            got, after = self._next(after)
            if not got and after is None:
                return
            yield from got

    def _next(self, after: Cursor | None) -> tuple[list[Admission], Cursor | None]:
        """One page: its admissions and the cursor after it (None: nothing after it)."""
        page = self._store.queue_page(after, self._page)
        if not page:
            return [], None
        parents = self._store.parent_states(r.parent for r in page
                                            if r.parent and r.state is JobState.PENDING)
        heads = [r.job_id for r in page if r.state is JobState.PENDING]
        children = self._store.pending_children(heads) if heads else {}
        out: list[Admission] = []
        for row in page:
            if (row.state is JobState.PENDING and row.parent
                    and parents.get(row.parent) in _RIDES_ON):
                continue  # made by its parent's create (budget.queue)
            family = children.get(row.job_id, []) if row.state is JobState.PENDING else []
            out.append((row, family))
        return out, cursor_of(page[-1])
