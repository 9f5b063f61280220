"""What `run` shows while it runs, and the signals it owns.

`RunDisplay` is handed to the run as its three callbacks: `on_started` (what the state
held: lost creates, changed jobs, reopened ones; then the bars or status lines start),
`on_event` (each `JobEvent` to the progress display) and `on_running` (SIGINT/SIGTERM:
the first stops submitting and saves the state, a second quits at once — every
transition is already committed). `close` undoes all of it. The drawing itself is
console.py's. Deliberately not here: the run (api.py/session.py), exit codes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING

from batchgen.cli.config import Display
from batchgen.cli.exits import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from batchgen.console import Console, Progress
    from batchgen.runner import JobEvent
    from batchgen.session import RunControl, Started


class RunDisplay:
    """The progress of one run on the console, and its signal handlers."""

    def __init__(self, console: Console, display: Display, budget: int | None) -> None:
        self._console = console
        self._display = display
        self._budget = budget
        self._loop = asyncio.get_running_loop()
        self._progress: Progress | None = None
        self._tick: asyncio.Task[None] | None = None
        self._handled: list[signal.Signals] = []
        #: what earlier runs already did, counted from the state before anything is sent
        self._already: dict[str, int] = {}
        self._interrupts = 0

    def on_started(self, found: Started) -> None:
        from batchgen.console import Progress
        console = self._console
        if found.lost:
            console.alert(f"{found.lost} job(s) were being submitted when the last run "
                          "stopped: marked unknown (they may have been charged); "
                          "--resubmit-unknown sends them again")
        if found.changed:
            console.alert(f"{len(found.changed)} job(s) changed in the manifest after "
                          f"submission and are kept as sent (e.g. "
                          f"{', '.join(found.changed[:3])}); give them a new id to generate "
                          "them again")
        if found.reopened:
            console.info(f"{found.reopened} job(s) reopened by --retry-failed/"
                         "--resubmit-unknown")
        bars = not self._display.no_progress and not console.quiet and console.err.isatty()
        self._progress = Progress(total=found.total, budget=self._budget, console=console,
                                  bars=bars, every=self._display.status_interval)
        self._progress.credits = found.committed
        self._already.update(found.already)

    def on_event(self, ev: JobEvent) -> None:
        if self._progress is not None:
            self._progress.event(ev)

    def on_running(self, control: RunControl) -> None:
        def on_signal() -> None:
            self._interrupts += 1
            if self._interrupts == 1:
                # above the bars (tqdm.write), never over them
                self._console.alert("stopping: no new submissions; saving state (Ctrl-C "
                                    "again to quit at once)")
                control.stop()
            else:
                os._exit(EXIT_INTERRUPTED)  # every transition is already committed

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, on_signal)
            self._handled.append(sig)
        assert self._progress is not None  # on_started came first
        self._progress.start(self._already)
        self._tick = asyncio.create_task(self._ticker(self._progress))

    async def _ticker(self, shown: Progress) -> None:
        pause = min(1.0, self._display.status_interval or 1.0)
        while True:
            await asyncio.sleep(pause)
            shown.tick(time.monotonic())

    def close(self) -> None:
        """Stop the ticker, close the bars, give the signals back."""
        if self._tick is not None:
            self._tick.cancel()
        if self._progress is not None:
            self._progress.close()
        for sig in self._handled:
            self._loop.remove_signal_handler(sig)
