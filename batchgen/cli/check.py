"""`validate`: check manifests offline, and with --online against the API's lists and
every asset, as a run's pre-flight would.

Deliberately not here: the schema and its messages (manifest*.py), the model rules
(models.py), the asset checks themselves (preflight.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from batchgen.cli.config import Config
from batchgen.cli.exits import EXIT_OK, EXIT_USAGE
from batchgen.cli.info import catalog
from batchgen.errors import ManifestError, Problem
from batchgen.session import ENV_API_BASE, preflight_from_env

if TYPE_CHECKING:
    from batchgen.manifest import Manifest


def load(path: str, *, recall: bool = False) -> Manifest:
    """The manifest; with `recall`, a load remembered with the same inputs is taken as
    it was validated (manifest/memo.py): `validate` itself always checks in full."""
    from batchgen.manifest import load_manifest
    return load_manifest(path, recall=recall)


def cmd_validate(config: Config, out: TextIO, err: TextIO) -> int:
    worst = EXIT_OK
    docs: list[dict[str, Any]] = []
    as_json = config.display.json
    for path in config.manifests:
        try:
            manifest = load(path)
        except ManifestError as exc:
            worst = EXIT_USAGE
            if as_json:
                docs.append({"manifest": path, "ok": False, "jobs": None,
                             "errors": [_problem_dict(p) for p in exc.problems],
                             "warnings": []})
                continue
            for problem in exc.problems:
                print(str(problem), file=err)
            print(f"{path}: {len(exc.problems)} problem(s); nothing was sent", file=err)
            continue
        errors, warnings = _online_checks(config, manifest) if config.api.online else ([], [])
        if errors:
            worst = EXIT_USAGE
            if as_json:
                docs.append({"manifest": path, "ok": False, "jobs": len(manifest.jobs),
                             "errors": [_problem_dict(p) for p in errors],
                             "warnings": [_problem_dict(w) for w in warnings]})
                continue
            for problem in (*errors, *warnings):
                print(str(problem), file=err)
            print(f"{path}: {len(errors)} problem(s) with the API's lists or the assets; "
                  "nothing was sent", file=err)
            continue
        if as_json:
            docs.append({"manifest": path, "ok": True, "jobs": len(manifest.jobs),
                         "errors": [], "warnings": [_problem_dict(w) for w in warnings]})
            continue
        # SPEC §1: exactly `ok: N jobs`; the path only tells several manifests apart
        suffix = f" ({path})" if len(config.manifests) > 1 else ""
        print(f"ok: {len(manifest.jobs)} jobs{suffix}", file=out)
        for warning in warnings:
            print(f"warning: {warning}", file=err)
    if as_json:
        print(json.dumps({"ok": worst == EXIT_OK, "manifests": docs}, indent=2), file=out)
    return worst


def _problem_dict(problem: Problem) -> dict[str, Any]:
    """A located problem for --json: file, line, job (or null), message, fix."""
    return {"file": problem.file, "line": problem.line, "job": problem.where or None,
            "message": problem.what, "fix": problem.fix or None}


def model_checks(manifest: Manifest, records: Sequence[Mapping[str, Any]]
                 ) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) of the manifest's model jobs against the API's model list."""
    from batchgen.models import model_problems, parse_models
    errors, warnings = model_problems(manifest.jobs, parse_models(records))
    return [p.problem() for p in errors], [p.problem() for p in warnings]


def _online_checks(config: Config, manifest: Manifest
                   ) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) against the API's lists: a model that cannot make a job's
    resolution or length is an error (the create would be refused); effect codes and model
    names the lists do not name are warnings."""
    lists = catalog(config.api, effects=True, models=True, base=manifest.api.base_url)
    effects = {e.get("effect_code") for e in lists["effects"] if isinstance(e, Mapping)}
    errors, warnings = model_checks(manifest, lists["models"])
    bad, unreachable = asset_checks(config, manifest)
    errors += bad
    warnings += unreachable
    from batchgen.models import ModelProblem
    for job in manifest.jobs:
        if job.effect_code and job.effect_code not in effects:
            warnings.append(ModelProblem(job, "effect_code", f"effect_code {job.effect_code!r} "
                                         "is not in the API's effect list",
                                         "pick one from `batchgen effects`").problem())
    return errors, warnings


def asset_checks(config: Config, manifest: Manifest) -> tuple[list[Problem], list[Problem]]:
    """--online's pre-flight: (every bad asset, each host that could not be reached)."""
    from batchgen.asset_probe import AssetProber
    from batchgen.preflight import check_jobs
    settings = preflight_from_env(os.environ, config.api.preflight)
    base = config.api.base or os.environ.get(ENV_API_BASE) or manifest.api.base_url
    if not settings.on(config.api.sandbox, base):
        return [], []

    from batchgen.uploads import Buckets, bucket_probe

    async def check() -> tuple[list[Problem], list[Problem]]:
        async with AssetProber.open(timeout=settings.timeout) as prober:
            probe = bucket_probe(prober.check, Buckets(os.environ))
            return await check_jobs(manifest.jobs, probe, concurrency=settings.concurrency,
                                    skip=manifest.uploads)

    return asyncio.run(check())
