"""The commands that show what the API offers and what a manifest may say: `effects`,
`models`, `schema`, and `sandbox` (serve the emulator).

`catalog` fetches the API's lists for these and for `validate --online`/`plan --online`.
Deliberately not here: the wire (client/), the emulator itself (batchgen/sandbox/).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any, TextIO

from batchgen.cli.config import Api, Config
from batchgen.cli.exits import EXIT_OK
from batchgen.errors import UsageError
from batchgen.session import (
    ENV_API_BASE,
    api_root,
    authenticate,
    require_credentials,
    retry_policy_from_env,
)


def catalog(api: Api, *, effects: bool = False, models: bool = False,
            base: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Fetch the API's effect and/or model lists (for effects, models and --online)."""
    from batchgen.client import AkoolClient
    from batchgen.manifest import DEFAULT_BASE_URL
    creds = require_credentials(os.environ, api.sandbox)
    base = api.base or os.environ.get(ENV_API_BASE) or base or DEFAULT_BASE_URL

    async def fetch() -> dict[str, list[dict[str, Any]]]:
        async with api_root(base, api.sandbox) as url, AkoolClient.open(url, creds) as client:
            await authenticate(client, retry_policy_from_env(os.environ))
            got: dict[str, list[dict[str, Any]]] = {}
            if effects:
                got["effects"] = await client.effects()
            if models:
                got["models"] = await client.models()
            return got

    return asyncio.run(fetch())


def cmd_models(config: Config, out: TextIO, err: TextIO) -> int:
    models = catalog(config.api, models=True)["models"]
    if config.display.json:
        print(json.dumps(models, indent=2), file=out)
        return EXIT_OK
    rows = []
    for m in models:
        res = " ".join(f"{r.get('value')}:{r.get('unit_credit')}"
                       for r in m.get("resolutionList") or [])
        durations = ",".join(str(d) for d in m.get("durationList") or [])
        rows.append((str(m.get("value", "")), str(m.get("label", "")), res, durations,
                     str(m.get("maxCount", ""))))
    print(_table(("model_name", "label", "credits per video by resolution", "lengths",
                  "max count"), rows), file=out)
    return EXIT_OK


def cmd_effects(config: Config, out: TextIO, err: TextIO) -> int:
    effects = catalog(config.api, effects=True)["effects"]
    if config.display.json:
        print(json.dumps(effects, indent=2), file=out)
        return EXIT_OK
    rows = [(str(e.get("effect_code", "")), str(e.get("name", "")), str(e.get("video_url", "")))
            for e in effects]
    print(_table(("code", "name", "preview"), rows), file=out)
    return EXIT_OK


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


def cmd_schema(config: Config, out: TextIO, err: TextIO) -> int:
    """The manifest's JSON Schema, for editors (`# yaml-language-server: $schema=...`)."""
    from pathlib import Path

    from batchgen.manifest_schema import load_schema
    text = json.dumps(load_schema(), indent=2, ensure_ascii=False) + "\n"
    if config.write:
        target = Path(config.write)
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
        print(f"wrote {target}; start a manifest with: # yaml-language-server: "
              f"$schema={target.name}", file=out)
        return EXIT_OK
    out.write(text)
    return EXIT_OK


def cmd_sandbox(config: Config, out: TextIO, err: TextIO) -> int:
    from batchgen import sandbox
    return sandbox.serve(config.emulator)
