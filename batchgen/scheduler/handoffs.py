"""What the run's workers hand each other, and the wake-up their loops wait on.

`Handoffs` carries add-audio steps due (poller -> submitter), videos ready (poller ->
download workers) and the end of sending (submitter -> poller); `Wakeup` is the
edge-triggered signal every loop waits on. The pause of the submitter while downloads are
behind (`Handoffs.behind`) lives here because the ready queue does: paying for videos
faster than they can be fetched gains nothing (a URL may expire, a waiting video costs
memory; at zero task time a 1,000,000-job run once had 700,000 waiting, its creates
starving its downloads of CPU). Deliberately not here: the rows and the writes (state.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable


class Wakeup:
    """Edge-triggered wake-up for loops that wait on state changes, or for a while.

    A timed wait sleeps on the runner's injected `sleep`, so a test that injects a fake
    clock and sleep runs every loop on fake time.
    """

    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._event = asyncio.Event()
        self._sleep = sleep

    def token(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, token: asyncio.Event, timeout: float | None) -> None:
        """Until `token` is set (a state change) or `timeout` seconds have passed."""
        if token.is_set():
            return
        if timeout is None:
            await token.wait()
            return
        woken = asyncio.ensure_future(token.wait())
        slept = asyncio.ensure_future(self._sleep(max(0.0, timeout)))
        try:
            await asyncio.wait({woken, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()


class Handoffs:
    """What the workers hand each other, in memory: add-audio steps due (poller ->
    submitter), videos ready (poller -> download workers), and the end of sending
    (submitter -> poller)."""

    def __init__(self) -> None:
        #: add-audio steps of admitted jobs (their credits are reserved), sent as slots
        #: free: the poller adds a job once its video is done, the submitter sends
        self.audio_due: deque[str] = deque()
        #: jobs whose final video is ready: the poller adds, the download workers fetch;
        #: None ends one worker
        self.ready: asyncio.Queue[str | None] = asyncio.Queue()
        #: the submitter has ended: nothing more will be sent in this run
        self.submitting_done = False

    def close_ready(self, workers: int) -> None:
        """No more videos will become ready: each download worker ends once it drains."""
        for _ in range(max(1, workers)):
            self.ready.put_nowait(None)

    def behind(self, limit: int) -> bool:
        """At least `limit` videos wait for their download: the submitter sends nothing
        more until a worker takes one below it (`took`)."""
        return self.ready.qsize() >= limit

    def took(self, limit: int, wake: Wakeup) -> None:
        """A download worker took a video: the one that brings the queue below `limit`
        wakes the submitter, which may have paused for it."""
        if self.ready.qsize() == limit - 1:
            wake.notify()
