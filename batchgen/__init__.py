"""batchgen: run Akool image-to-video jobs in bulk from YAML manifests.

The public Python API (SPEC §7; README "Python API")::

    import batchgen
    report = batchgen.run("manifests/spring.yaml", sandbox=True)
    plan = batchgen.plan("manifests/spring.yaml")
    report = await batchgen.arun(manifest_mapping, base_dir="pipelines/")

This module holds only the public names. They are imported on first use, so
`batchgen validate` (which imports this package) does not pay for the run's machinery.
Errors are the exceptions of `batchgen.errors`. No submodule may be called `run`, `arun`
or `plan`: importing it would replace the function of that name on this package (hence
`batchgen.planning`; tests/test_api.py checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from batchgen import errors
    from batchgen.api import (
        Charges,
        JobResult,
        Outcome,
        RunPlan,
        RunReport,
        arun,
        plan,
        run,
    )
    from batchgen.runner import EventKind, JobEvent

__all__ = [
    "Charges",
    "EventKind",
    "JobEvent",
    "JobResult",
    "Outcome",
    "RunPlan",
    "RunReport",
    "__version__",
    "arun",
    "errors",
    "plan",
    "run",
]

_HOMES = {"EventKind": "batchgen.runner", "JobEvent": "batchgen.runner"}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module 'batchgen' has no attribute {name!r}")
    import importlib
    if name == "errors":  # the module: `batchgen.errors.ManifestError` after `import batchgen`
        return importlib.import_module("batchgen.errors")
    value = getattr(importlib.import_module(_HOMES.get(name, "batchgen.api")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names only (what `help(batchgen)` and completion should offer)."""
    return sorted(__all__)
