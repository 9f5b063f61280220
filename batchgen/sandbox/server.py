"""Running the emulator: the `Sandbox` context manager and the `batchgen sandbox` command.

`Sandbox` serves in the caller's event loop (tests, `run --sandbox`), so no thread and no
second loop are involved. `add_arguments`/`serve` are the hooks `batchgen.cli` calls; `serve` is
the only place here that prints, and it turns every bad flag or config into one line on
stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from batchgen.sandbox.app import create_app
from batchgen.sandbox.config import ConfigError, SandboxConfig
from batchgen.sandbox.flags import DEFAULT_PORT, _port, config_from_args
from batchgen.sandbox.state import SandboxState


class Sandbox:
    """The emulator on a loopback port, started and stopped with `async with`."""

    def __init__(
        self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0,
        journal: Path | None = None,
    ) -> None:
        """`journal`: a file that keeps the tasks across processes (see state.py)."""
        self.host = host
        self.port = port
        #: root URL without trailing slash, set once started
        self.url = ""
        self.state = SandboxState(config if config is not None else SandboxConfig(),
                                  journal=journal)
        self._runner: web.AppRunner | None = None

    @property
    def config(self) -> SandboxConfig:
        """The live config: attribute changes apply from the next request on."""
        return self.state.config

    def stats(self) -> dict[str, Any]:
        """The server-side ledger (same as GET /__sandbox__/stats)."""
        return self.state.stats()

    def reset(self) -> None:
        """Forget tasks and counters, refill the balance (same as POST /__sandbox__/reset)."""
        self.state.reset()

    async def start(self) -> None:
        """Bind the port (0 = any free one) and start serving in the running loop."""
        if self._runner is not None:
            return
        runner = web.AppRunner(
            create_app(self.state), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.state.close()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT (exit 130) or SIGTERM (exit 0); 2 on bad flags, 1 if unbindable."""
    try:
        config = config_from_args(args)
        port = _port(getattr(args, "sbx_port", DEFAULT_PORT))
    except ConfigError as exc:
        print(f"batchgen sandbox: error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(config, getattr(args, "sbx_host", "127.0.0.1"), port))


async def _serve(config: SandboxConfig, host: str, port: int) -> int:
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[signal.Signals] = loop.create_future()

    def stop(signum: signal.Signals) -> None:
        if not stopped.done():
            stopped.set_result(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    sandbox = Sandbox(config, host=host, port=port)
    try:
        await sandbox.start()
    except OSError as exc:
        print(f"batchgen sandbox: error: cannot listen on {host}:{port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    try:
        print(f"sandbox listening on {sandbox.url}", flush=True)
        signum = await stopped
    finally:
        await sandbox.close()
    return 130 if signum == signal.SIGINT else 0
