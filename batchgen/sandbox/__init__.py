"""Emulator of Akool's Image-to-Video API on loopback, with fault injection.

Owns everything the emulator is: the fake API (`api.py`), its state and ledger
(`state.py`), the knobs (`config.py`) and the ways to run it (`server.py`). It deliberately
shares no code with the client side (`client.py`): a client bug must not be mirrored here.

    async with Sandbox(SandboxConfig(processing_time=0)) as sb:
        ...  # point the client at sb.url, then assert on sb.stats()
"""

from batchgen.sandbox.app import create_app
from batchgen.sandbox.config import ConfigError, SandboxConfig
from batchgen.sandbox.server import (
    Sandbox,
    add_arguments,
    add_knob_arguments,
    config_from_args,
    knobs_given,
    serve,
)
from batchgen.sandbox.state import SandboxState, fingerprint

__all__ = [
    "ConfigError",
    "Sandbox",
    "SandboxConfig",
    "SandboxState",
    "add_arguments",
    "add_knob_arguments",
    "config_from_args",
    "create_app",
    "fingerprint",
    "knobs_given",
    "serve",
]
