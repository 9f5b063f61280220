"""The emulator's task journal: its tasks kept across processes.

With a journal file (what `run --sandbox` passes: the output dir's state folder), every
task is appended to it *before* its create is answered, and deletions after; a new
emulator on the same journal knows every task an earlier one told a client about, so a
run killed with `kill -9` resumes against the sandbox as it would against the real API.
A line cut short by a kill is skipped on load; times are kept as wall-clock instants (a
task's `created` is on the monotonic clock of the process that holds it).

Deliberately not here: what a task is (tasks.py), the balance, counters and the heap of
tasks in flight (state.py).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO

from batchgen.sandbox.tasks import Task, well_formed


class TaskJournal:
    """One emulator's journal file, appended to (`TaskJournal.open` reads it first)."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file

    @classmethod
    def open(cls, path: Path, *, wall: float, mono: float
             ) -> tuple[TaskJournal, dict[str, Task]]:
        """The tasks of earlier emulators on `path` (their times moved onto this process's
        monotonic clock: `mono` is the instant `wall` on it), and the journal that keeps
        appending to it. The file is rewritten without deleted tasks first, so it does
        not grow run after run."""
        tasks = _read(path, wall, mono)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(_line(t, wall, mono) for t in tasks.values()),
                       encoding="utf-8")
        os.replace(tmp, path)
        return cls(open(path, "a", encoding="utf-8")), tasks  # closed by close()

    def task(self, task: Task) -> None:
        """Keep a task just created (before its create is answered)."""
        self._append(_line(task, time.time(), time.monotonic()))

    def deleted(self, task_id: str) -> None:
        """Forget a task (delbyids) for the emulators to come."""
        self._append(json.dumps({"deleted": task_id}) + "\n")

    def clear(self) -> None:
        """Forget every task (the emulator was reset)."""
        self._file.seek(0)
        self._file.truncate()

    def close(self) -> None:
        """Close the file (the tasks stay in it for the next emulator)."""
        self._file.close()

    def _append(self, text: str) -> None:
        """Append and flush: in the kernel before the answer leaves, so kill -9 keeps it."""
        self._file.write(text)
        self._file.flush()


def _read(path: Path, wall: float, mono: float) -> dict[str, Task]:
    """The tasks a journal holds: created and not deleted, well formed."""
    tasks: dict[str, Task] = {}
    names = {f.name for f in fields(Task)}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        try:
            entry = json.loads(line)
            if entry.get("deleted"):
                tasks.pop(str(entry["deleted"]), None)
                continue
            values = {k: v for k, v in entry.items() if k in names}
            values["created"] = mono - (wall - float(entry["created_wall"]))
            task = Task(**values)
            if not well_formed(task):
                continue  # not a line an emulator wrote: ignored, never a crash
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # a line cut short by a kill: that create was never answered
        tasks[task.id] = task
    return tasks


def _line(task: Task, wall: float, mono: float) -> str:
    entry = asdict(task)
    entry["created_wall"] = wall - (mono - entry.pop("created"))
    return json.dumps(entry, separators=(",", ":")) + "\n"
