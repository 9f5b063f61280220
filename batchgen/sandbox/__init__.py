"""Emulator of Akool's Image-to-Video API on loopback, with fault injection.

Owns everything the emulator is: the fake API (`api.py`), its state and ledger
(`state.py`), the knobs (`config.py`) and the ways to run it (`server.py`). It deliberately
shares no code with the client side (`client/`): a client bug must not be mirrored here.

    async with Sandbox(SandboxConfig(processing_time=0)) as sb:
        ...  # point the client at sb.url, then assert on sb.stats()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchgen.sandbox.app import create_app
    from batchgen.sandbox.config import ConfigError, SandboxConfig
    from batchgen.sandbox.flags import (
        add_arguments,
        add_knob_arguments,
        config_from_args,
        knobs_given,
    )
    from batchgen.sandbox.server import Sandbox, serve
    from batchgen.sandbox.state import SandboxState, fingerprint

#: public name -> the submodule that defines it; imported on first use, so that the CLI can
#: read the light `flags`/`config` modules without loading the server (aiohttp.web, PyAV).
_WHERE = {
    "ConfigError": "config",
    "Sandbox": "server",
    "SandboxConfig": "config",
    "SandboxState": "state",
    "add_arguments": "flags",
    "add_knob_arguments": "flags",
    "config_from_args": "flags",
    "create_app": "app",
    "fingerprint": "state",
    "knobs_given": "flags",
    "serve": "server",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'batchgen.sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"batchgen.sandbox.{module}"), name)
    globals()[name] = value
    return value
