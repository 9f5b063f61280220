"""What a command shows a person: the terminal (bars or status lines) and the log file.

Part of the command line (batchgen/cli/ calls it; nothing below the CLI does): it owns deciding
which line goes where. Three audiences:

* a person at a terminal: progress bars, and every notice written above them;
* a cron job or a pipeline (`--quiet`): nothing at all unless a human is needed — an
  error, a failed job, an outcome left unknown, a budget that held jobs back — so that a
  run that went well mails nothing;
* a log file (`--log-file PATH`, appended): every status line, notice and result,
  each prefixed with a full ISO 8601 UTC date-time, whatever `--quiet` says.

Deliberately does not decide exit codes or read the environment (batchgen/cli/ does both).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from batchgen.runner import JobEvent

#: default seconds between two status lines when no bars are drawn
STATUS_EVERY = 5.0


def iso_now() -> str:
    """The current UTC date-time, ISO 8601 to the second (`2026-11-28T09:00:00Z`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GuardedStream:
    """A stream whose failed write cannot fail the run that writes to it.

    Progress lines are written from inside the runner's event callback, between state
    changes: a closed pipe (`batchgen run … | head`), a full disk under the log file or a
    terminal that went away must not cut a money path in half or change the exit code.
    The first failure silences the stream and is reported once through `on_fail`; the
    run goes on and ends on its own outcome.
    """

    def __init__(self, stream: TextIO, on_fail: Callable[[OSError | ValueError], None]
                 ) -> None:
        self.stream = stream
        self.failed: OSError | ValueError | None = None
        self._on_fail = on_fail

    def write(self, text: str) -> int:
        if self.failed is None:
            try:
                return self.stream.write(text)
            except (OSError, ValueError) as exc:  # ValueError: the file was closed
                self._fail(exc)
        return len(text)

    def flush(self) -> None:
        if self.failed is None:
            try:
                self.stream.flush()
            except (OSError, ValueError) as exc:
                self._fail(exc)

    def __getattr__(self, name: str) -> Any:
        # isatty, fileno, encoding...: what tqdm and print ask of a real stream
        return getattr(self.stream, name)

    def _fail(self, exc: OSError | ValueError) -> None:
        self.failed = exc
        if isinstance(exc, BrokenPipeError) and self.stream in (sys.stdout, sys.stderr):
            # the reader is gone: point the descriptor at /dev/null so the interpreter's
            # last flush at exit does not print "Exception ignored … BrokenPipeError"
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
        self._on_fail(exc)


@dataclass(slots=True)
class Console:
    """Where a command's lines go: stdout, stderr, a log file, above progress bars.

    `result` lines (the run's summary) go to stdout; `info` lines (reassurance, progress)
    to stderr; `alert` lines (a human must act) to stderr even under `quiet`. Every line
    also goes to the log file when there is one.
    """

    out: TextIO
    err: TextIO
    quiet: bool = False
    log: TextIO | None = None
    #: set while progress bars are drawn, so lines are written above them
    bars_active: bool = False

    def __post_init__(self) -> None:
        # a terminal that cannot be written to is simply not written to; the log file's
        # failure is told on stderr once (GuardedStream says why)
        self.out = GuardedStream(self.out, lambda exc: None)  # type: ignore[assignment]
        self.err = GuardedStream(self.err, lambda exc: None)  # type: ignore[assignment]
        if self.log is not None:
            self.log = GuardedStream(self.log, self._log_failed)  # type: ignore[assignment]

    def _log_failed(self, exc: OSError | ValueError) -> None:
        name = getattr(self.log, "name", "the log file")
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.log = None
        self._write(f"batchgen: cannot write to the log file {name} ({why}); logging stops "
                    "here and the run goes on", self.err)

    def log_only(self, text: str) -> None:
        """A line for the log file alone (the terminal has it in another form, or not)."""
        log = self.log
        if log is not None:
            for line in text.splitlines() or [""]:
                log.write(f"{iso_now()} {line}\n")
            log.flush()

    def _write(self, text: str, stream: TextIO) -> None:
        if self.bars_active and stream is self.err:
            from tqdm import tqdm
            tqdm.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

    def result(self, text: str) -> None:
        """A command's answer (stdout), silent under --quiet."""
        self.log_only(text)
        if not self.quiet:
            self._write(text, self.out)

    def info(self, text: str) -> None:
        """A line that helps but needs no action (stderr), silent under --quiet."""
        self.log_only(text)
        if not self.quiet:
            self._write(text, self.err)

    def alert(self, text: str) -> None:
        """A line a human must read (stderr), printed even under --quiet."""
        self.log_only(text)
        self._write(text, self.err)

    def status(self, text: str) -> None:
        """A periodic status line: stderr with the time of day (not under --quiet)."""
        self.log_only(text)
        if not self.quiet:
            self._write(f"[{time.strftime('%H:%M:%S')}] {text}", self.err)

    def close(self) -> None:
        log = self.log
        if log is not None:
            log.flush()  # a failure here is told like any other (GuardedStream)
            with contextlib.suppress(OSError, ValueError):
                log.close()
            self.log = None


#: event kinds a human must see (errors and unknown outcomes), even under --quiet
_ALERTS = ("failed", "unknown")


@dataclass(slots=True)
class Progress:
    """Turns runner events into tqdm bars (terminal) or a periodic status line (logs)."""

    total: int
    budget: int | None
    console: Console
    bars: bool
    #: seconds between status lines when no bars are drawn (0: none)
    every: float = STATUS_EVERY
    counts: Counter[str] = field(default_factory=Counter)
    credits: int = 0
    _bars: dict[str, Any] = field(default_factory=dict)
    _last: float = 0.0
    #: notices already shown: one cause reported by many concurrent jobs shows once
    _seen: set[str] = field(default_factory=set)

    def start(self, already: Mapping[str, int], now: float | None = None) -> None:
        self.counts.update(already)
        self._last = time.monotonic() if now is None else now
        if not self.bars:
            return
        from tqdm import tqdm
        err = self.console.err
        labels = (("submitted", "submitted "), ("task_done", "completed "),
                  ("downloaded", "downloaded"))
        for pos, (key, label) in enumerate(labels):
            self._bars[key] = tqdm(total=self.total, desc=label, position=pos, file=err,
                                   initial=self.counts[key], leave=True, dynamic_ncols=True)
        budget = "/{total_fmt}" if self.budget is not None else ""
        self._bars["credits"] = tqdm(total=self.budget, desc="credits   ", position=3,
                                     file=err, initial=self.credits, leave=True,
                                     dynamic_ncols=True,
                                     bar_format="{desc}: {n_fmt}" + budget + " credits")
        self.console.bars_active = True
        self._postfix()

    def _postfix(self) -> None:
        """Failed and unknown jobs next to the downloaded bar: why it stops short of 100%."""
        bar = self._bars.get("downloaded")
        c = self.counts
        if bar is not None and (c["failed"] or c["unknown"]):
            bar.set_postfix_str(f"failed {c['failed']}, unknown {c['unknown']}")

    def event(self, ev: JobEvent) -> None:
        kind = ev.kind.value
        self.counts[kind] += 1
        if kind == "submitted":
            self.credits += ev.credits
        bar = self._bars.get(kind)
        if bar is not None:
            bar.update(1)
        if kind == "submitted" and "credits" in self._bars:
            self._bars["credits"].update(ev.credits)
        if kind in _ALERTS:
            self._postfix()
            self.console.alert(f"{kind}: {ev.job_id}: {ev.message}")
        elif kind == "notice" and ev.message not in self._seen:
            self._seen.add(ev.message)
            self.console.info(f"notice: {ev.job_id}: {ev.message}" if ev.job_id
                              else f"notice: {ev.message}")

    def line(self) -> str:
        c = self.counts
        budget = f"/{self.budget}" if self.budget is not None else ""
        return (f"submitted {c['submitted']}/{self.total}, completed {c['task_done']}, "
                f"downloaded {c['downloaded']}, failed {c['failed']}, unknown {c['unknown']}, "
                f"retries {c['retry']}, credits {self.credits}{budget}")

    def tick(self, now: float) -> None:
        """A status line when one is due (not with bars; the log file gets it regardless)."""
        if self.every <= 0 or now - self._last < self.every:
            return
        self._last = now
        if self.bars:
            self.console.log_only(self.line())
        else:
            self.console.status(self.line())

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self.console.bars_active = False
