"""`plan` (and `run --dry-run`): what a run would send now and what it would cost, with
--online pricing model jobs from the API's model list.

The figures are the API's (`api.plan_resolved`, planning.py); this only prints them.
Deliberately not here: the budget rule (budget.py), prices (pricing.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from batchgen.cli.check import asset_checks, model_checks
from batchgen.cli.config import Config
from batchgen.cli.exits import EXIT_OK
from batchgen.cli.info import catalog
from batchgen.errors import ManifestError

if TYPE_CHECKING:
    from batchgen.api import RunPlan
    from batchgen.manifest import Manifest
    from batchgen.session import Resolved


def resolve(config: Config, env: Mapping[str, str]) -> Resolved:
    """The manifest with the command line's and the environment's overrides applied."""
    from batchgen.cli.check import load
    from batchgen.session import resolve as resolve_manifest
    target = config.need_target()
    return resolve_manifest(load(target.manifest, recall=True), env, output=target.output,
                            api_base=config.api.base, concurrency=target.concurrency,
                            max_credits=target.max_credits, state=target.state)


def cmd_plan(config: Config, out: TextIO, err: TextIO) -> int:
    from batchgen.api import plan_resolved
    resolved = resolve(config, os.environ)
    online = None
    if config.api.online:
        from dataclasses import replace

        from batchgen.pricing import with_models
        manifest = resolved.manifest
        records = catalog(config.api, models=True, base=manifest.api.base_url)["models"]
        errors, warnings = model_checks(manifest, records)
        bad, unreachable = asset_checks(config, manifest)
        errors += bad
        if errors:
            raise ManifestError(errors + warnings + unreachable)
        for warning in unreachable:
            print(f"warning: {warning}", file=err)
        online = _online_prices(records, manifest)
        # the totals and the budget use the model list's prices for model jobs
        budget = replace(manifest.budget, prices=with_models(manifest.budget.prices, records))
        resolved = replace(resolved, manifest=replace(manifest, budget=budget))
    result = plan_resolved(resolved, retry_failed=config.run.retry_failed,
                           resubmit_unknown=config.run.resubmit_unknown)
    if config.display.json:
        doc = result.to_dict()
        if online is not None:
            doc["model_prices"] = online
        print(json.dumps(doc, indent=2), file=out)
    else:
        _print_plan(result, online, out)
    return EXIT_OK


def _print_plan(result: RunPlan, online: dict[str, Any] | None, out: TextIO) -> None:
    from batchgen.planning import render_plan
    print(render_plan(result), file=out)
    charged = result.charged_so_far
    if charged is not None and charged.jobs:
        note = (f"; the API charged differently from the table for {charged.differs} "
                "of them" if charged.differs else "")
        print(f"\ncharged so far: {charged.jobs} jobs, {charged.deducted} credits "
              f"deducted by the API against {charged.estimated} estimated{note}",
              file=out)
    if online is not None:
        print(f"\nmodel jobs priced from the API's model list (aigModel/list), in the "
              f"totals and budget above: {online['jobs']} jobs, {online['credits']} "
              f"credits (the published table would say {online['table_credits']})"
              + (f"; not in the list: {', '.join(online['unlisted'])}"
                 if online["unlisted"] else ""), file=out)


def _online_prices(models: Sequence[Mapping[str, Any]], manifest: Manifest
                   ) -> dict[str, Any]:
    from batchgen.pricing import model_credits, video_credits
    model_jobs = [j for j in manifest.jobs if j.model_name]
    priced = {j.id: model_credits(models, j) for j in model_jobs}
    return {
        "jobs": len(model_jobs),
        "credits": sum(c for c in priced.values() if c is not None),
        "table_credits": sum(video_credits(manifest.budget.prices, j) for j in model_jobs),
        "unlisted": sorted({j.model_name for j in model_jobs if priced[j.id] is None}),
    }
