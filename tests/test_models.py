"""Models decide what is valid: a model job is checked against the API's model list
(validate --online, plan --online, and before a run spends), plan --online prices with it,
and fields the batch endpoint would drop are refused by validate."""

from __future__ import annotations

import io
import json

import pytest
from cli_helpers import run_cli, write_manifest

from batchgen.cli import main
from batchgen.client import check_models
from batchgen.models import parse_models

SEEDANCE = "seedance-1-0-lite-i2v-250428"
FAST = "AkoolImage2VideoFastV1"


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    for var in ("AKOOL_API_KEY", "AKOOL_CLIENT_ID", "AKOOL_CLIENT_SECRET", "BATCHGEN_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("extra, field", [
    ({"model_name": FAST, "audio_type": 1}, "audio_type 1"),
    ({"count": 2, "audio_type": 2, "audio_url": "https://example.com/a.mp3"}, "audio_url"),
    ({"model_name": FAST, "effect_code": "squish_89244231312"}, "effect_code"),
])
def test_audio_and_effects_with_a_model_or_count_are_refused_where_they_are(tmp_path, extra,
                                                                           field):
    path = write_manifest(tmp_path, 1, job_extra=extra)
    code, out, err = cli("validate", str(path))
    assert code == 2 and out == ""
    line = next(line for line in err.splitlines() if field in line)
    assert line.startswith(f"{path}:") and "jobs[0] (id job000)" in line
    assert "batch endpoint" in line
    if field != "effect_code":
        assert "add_audio" in line  # where the sound goes instead


def test_480p_is_for_models_that_offer_it(tmp_path):
    path = write_manifest(tmp_path, 1, job_extra={"resolution": "480p"})
    code, _, err = cli("validate", str(path))
    assert code == 2 and "480p" in err and "model_name" in err
    path.write_text(path.read_text().replace("resolution: 480p",
                                             f"resolution: 480p\n  model_name: {SEEDANCE}"))
    code, out, err = cli("validate", str(path))
    assert code == 0 and out.startswith("ok: 1 jobs"), err
    code, out, err = cli("validate", "--online", "--sandbox", str(path))
    assert code == 0 and err == ""
    code, out, _ = cli("plan", "--online", "--sandbox", "--json", str(path))
    assert code == 0 and json.loads(out)["total_credits"] == 3  # Seedance's 480p unit_credit


def test_a_resolution_the_model_does_not_offer_is_an_error_online(tmp_path):
    path = write_manifest(tmp_path, 2, job_extra={"model_name": SEEDANCE, "resolution": "4k"})
    code, _, _ = cli("validate", str(path))
    assert code == 0  # offline, the model list is not at hand
    code, out, err = cli("validate", "--online", "--sandbox", str(path))
    assert code == 2 and out == ""
    assert f"{path}:" in err and "resolution 4k is not offered by model" in err
    assert "480p, 720p, 1080p" in err
    code, out, err = cli("validate", "--online", "--sandbox", "--json", str(path))
    doc = json.loads(out)["manifests"][0]
    assert code == 2 and not doc["ok"] and len(doc["errors"]) == 2
    code, out, err = cli("plan", "--online", "--sandbox", str(path))
    assert code == 2 and "not offered" in err  # never priced at 0


def test_plan_online_totals_and_budget_use_the_model_prices(tmp_path):
    path = write_manifest(tmp_path, 2, job_extra={"model_name": FAST, "count": 2},
                          extra={"budget": {"max_credits": 30}})
    code, out, _ = cli("plan", "--json", str(path))
    offline = json.loads(out)
    assert offline["total_credits"] == 80 and offline["budget"]["over_budget"]
    code, out, _ = cli("plan", "--online", "--sandbox", "--json", str(path))
    online = json.loads(out)
    assert code == 0
    assert online["total_credits"] == 20 and online["to_submit"]["credits"] == 20
    assert online["budget"]["left"] == 10 and not online["budget"]["over_budget"]
    line = online["by_resolution_length"][0]
    assert line["model"] == FAST and line["price"] == 5 and line["credits"] == 20
    code, out, _ = cli("plan", "--online", "--sandbox", str(path))
    assert "10 left after it" in out


async def test_a_run_checks_the_model_list_before_spending(sandbox, tmp_path):
    sb = await sandbox()
    path = write_manifest(tmp_path, 2, base_url=sb.url,
                          job_extra={"model_name": SEEDANCE, "resolution": "4k"})
    result = await run_cli("run", str(path), cwd=tmp_path)
    assert result.code == 2
    assert "resolution 4k is not offered by model" in result.err and "jobs[0]" in result.err
    stats = sb.stats()
    assert stats["tasks_created"] == 0
    assert "createBySourcePrompt/batch" not in stats["requests"]
    path.write_text(path.read_text().replace("resolution: 4k", "resolution: 480p"))
    result = await run_cli("run", str(path), cwd=tmp_path)
    assert result.code == 0, result.err
    assert sb.stats()["credits_charged"] == 6  # 2 x Seedance 480p


def test_the_model_list_is_untrusted_data():
    models = parse_models([
        None, "x", {"value": 5}, {"value": "a", "resolutionList": "no", "durationList": None},
        {"value": "b", "resolutionList": [None, {"value": "720p", "unit_credit": True},
                                          {"value": "1080p", "unit_credit": -1},
                                          {"value": "4k", "unit_credit": 7}],
         "durationList": [10, "5", 0, 5, True]},
    ])
    assert set(models) == {"a", "b"}
    assert models["a"].unit_credits == {} and models["a"].durations == ()
    assert models["b"].unit_credits == {"4k": 7} and models["b"].durations == (5, 10)
    assert models["b"].credits("4k", 10) == 14 and models["b"].credits("720p", 5) is None


def test_a_model_price_past_a_floats_range_is_no_crash():
    # a JSON integer too large for a float: math.isfinite on it raised OverflowError
    records = [{"value": "m", "resolutionList": [{"value": "720p", "unit_credit": 10**400}],
                "durationList": [5]}]
    assert check_models(records) == records
    assert parse_models(records)["m"].unit_credits == {}
