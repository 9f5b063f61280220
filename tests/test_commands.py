"""The read-mostly commands through `cli.main`: effects, models, validate/plan --online,
status, report, and plan's view of local state."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from cli_helpers import write_manifest

from batchgen.cli import main


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch, tmp_path):
    for var in ("AKOOL_API_KEY", "AKOOL_CLIENT_ID", "AKOOL_CLIENT_SECRET", "BATCHGEN_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def test_effects_and_models_list_the_api_catalogue():
    code, out, _ = cli("effects", "--sandbox")
    assert code == 0 and "squish_89244231312" in out and "preview" in out
    code, out, _ = cli("effects", "--sandbox", "--json")
    assert code == 0 and {"effect_code", "name", "video_url"} <= set(json.loads(out)[0])
    code, out, _ = cli("models", "--sandbox")
    assert code == 0 and "AkoolImage2VideoFastV1" in out and "720p:5" in out
    code, out, _ = cli("models", "--sandbox", "--json")
    assert code == 0 and json.loads(out)[0]["resolutionList"]


def test_catalogue_commands_without_credentials_exit_4():
    code, _, err = cli("effects")
    assert code == 4 and "AKOOL_API_KEY" in err


def test_validate_online_warns_about_an_unlisted_effect_with_its_location(tmp_path):
    path = write_manifest(tmp_path, 1, job_extra={"effect_code": "no_such_effect"})
    code, out, err = cli("validate", "--online", "--sandbox", str(path))
    assert code == 0 and out.startswith("ok: 1 jobs")
    assert f"{path}:" in err and "no_such_effect" in err and "batchgen effects" in err
    code, _, err = cli("validate", str(path))
    assert code == 0 and err == ""  # offline: no list at hand, no warning


def test_plan_online_prices_model_jobs_from_the_model_list(tmp_path):
    path = write_manifest(tmp_path, 2, job_extra={"model_name": "AkoolImage2VideoFastV1",
                                                  "count": 2})
    code, out, _ = cli("plan", "--online", "--sandbox", str(path))
    assert code == 0
    assert "2 jobs, 20 credits" in out and "the published table would say 80" in out
    code, out, _ = cli("plan", "--online", "--sandbox", "--json", str(path))
    assert json.loads(out)["model_prices"]["credits"] == 20


def test_status_report_and_plan_read_the_state_of_a_run(tmp_path):
    path = write_manifest(tmp_path, 4)
    doc = yaml.safe_load(path.read_text())
    code, _, err = cli("run", str(path), "--sandbox", "--max-credits", "40")
    assert code == 3, err  # two of four fit the budget
    code, out, _ = cli("status", str(path))
    assert code == 0 and "completed" in out and "pending" in out and "budget 40" not in out
    code, out, _ = cli("status", str(path), "--json")
    status = json.loads(out)
    assert status["status"] == {"completed": 2, "failed": 0, "pending": 2, "unknown": 0}
    assert status["credits_committed"] == 40
    code, out, _ = cli("plan", str(path), "--json")
    plan = json.loads(out)
    assert plan["states"]["done"]["jobs"] == 2 and plan["to_submit"]["jobs"] == 2
    report = Path(doc["output"]["dir"]) / "report.csv"
    report.unlink()
    code, out, _ = cli("report", str(path))
    assert code == 0 and report.exists() and len(report.read_text().splitlines()) == 5


def test_status_of_a_manifest_never_run_says_so():
    path = write_manifest(Path.cwd(), 1)
    code, out, _ = cli("status", str(path))
    assert code == 0 and "not run yet" in out and "pending" in out


def test_dry_run_prints_the_plan_and_sends_nothing(tmp_path):
    path = write_manifest(tmp_path, 3, base_url="http://127.0.0.1:9")
    code, out, _ = cli("run", str(path), "--dry-run")
    assert code == 0 and "60" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, needle", [
    (["run", "missing.yaml", "--sandbox"], "missing.yaml"),
    (["run", "m.yaml", "--concurrency", "0"], "--concurrency"),
    (["plan", "m.yaml", "--max-credits", "lots"], "--max-credits"),
    (["frobnicate"], "invalid choice"),
    ([], "COMMAND"),
])
def test_usage_errors_exit_2_with_one_line_and_no_traceback(argv, needle):
    code, out, err = cli(*argv)
    assert code == 2
    assert needle in err and "Traceback" not in err + out


@pytest.mark.parametrize("base", ["ftp://nope", "http://localhost:99999", "http://"])
def test_a_bad_api_base_is_a_usage_error(tmp_path, base):
    path = write_manifest(tmp_path, 1)
    code, _, err = cli("run", str(path), "--api-base", base)
    assert code == 2 and "--api-base" in err


def test_an_internal_error_is_one_line_and_a_scrubbed_crash_file(tmp_path, monkeypatch):
    import batchgen.cli as cli_module
    import batchgen.cli.check as check_module

    def explode(args, out, err):
        raise RuntimeError("bug with secret-key-123 inside")

    monkeypatch.setenv("AKOOL_API_KEY", "secret-key-123")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(check_module, "cmd_validate", explode)
    monkeypatch.setattr(cli_module.tempfile, "tempdir", None)
    code, _, err = cli("validate", "x.yaml")
    assert code == 70
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (crash,) = tmp_path.glob("batchgen-crash-*.log")
    text = crash.read_text()
    assert "RuntimeError" in text and "secret-key-123" not in text


def test_plan_prices_what_retry_flags_would_send(tmp_path):
    path = write_manifest(tmp_path, 3)
    code, _, _ = cli("run", str(path), "--sandbox")
    assert code == 0
    from batchgen.store import JobState, Store
    out_dir = Path(yaml.safe_load(path.read_text())["output"]["dir"])
    with Store.open(out_dir) as store:  # job001's video task failed; job002's download did
        store.update([("job001", {"state": JobState.FAILED, "error": "x", "video_url": None}),
                      ("job002", {"state": JobState.FAILED, "error": "HTTP 403"})])
    _, out, _ = cli("plan", str(path), "--json")
    assert json.loads(out)["to_submit"] == {"jobs": 0, "credits": 0}
    _, out, _ = cli("plan", str(path), "--json", "--retry-failed")
    doc = json.loads(out)
    assert doc["to_submit"] == {"jobs": 1, "credits": 20}  # the download is fetched, not paid
    assert doc["states"]["in_flight"]["jobs"] == 1


@pytest.mark.parametrize("where", ["manifest", "env", "option"])
def test_a_bad_api_base_url_is_refused_without_echoing_its_password(tmp_path, monkeypatch,
                                                                    where):
    """A URL with credentials that fails to parse is quoted in the error: redacted."""
    bad = "https://deploy:hunter2-secret@api.example.com:99999/"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AKOOL_API_KEY", "test-key-1234")
    extra = {"api": {"base_url": bad, "concurrency": 5}} if where == "manifest" else None
    path = write_manifest(tmp_path, 1, extra=extra)
    if where == "env":
        monkeypatch.setenv("BATCHGEN_API_BASE", bad)
    argv = ["run", str(path), "--no-progress"]
    if where == "option":
        argv += ["--api-base", bad]
    code, out, err = cli(*argv)
    assert code in (2, 4), err
    assert "hunter2" not in out + err
    assert "deploy:***@api.example.com" in err


@pytest.mark.parametrize("option, value", [("--concurrency", "1001"),
                                           ("--concurrency", "0"),
                                           ("--max-credits", str(10**12 + 1)),
                                           ("--max-credits", "-1")])
def test_overrides_keep_to_the_manifest_keys_ranges(tmp_path, option, value):
    # a typo of a few digits in a cron line must not lift the budget or flood the API
    path = write_manifest(tmp_path, 1)
    code, _, err = cli("run", str(path), option, value)
    assert code == 2 and ("must be 1..1000" in err or "must be 0..1000000000000" in err), err


def test_the_override_ranges_are_the_schemas():
    from batchgen.jobs import MAX_CONCURRENCY, MAX_CREDITS
    schema = json.loads((Path(__file__).parent.parent / "schemas" /
                         "manifest.schema.json").read_text())
    props = schema["properties"]
    assert props["api"]["properties"]["concurrency"]["maximum"] == MAX_CONCURRENCY
    assert props["budget"]["properties"]["max_credits"]["maximum"] == MAX_CREDITS


def test_the_python_api_takes_the_same_ranges(tmp_path):
    import batchgen
    from batchgen.errors import UsageError
    path = write_manifest(tmp_path, 1)
    for kwargs in ({"concurrency": 1001}, {"max_credits": 10**12 + 1}, {"concurrency": True}):
        with pytest.raises(UsageError, match=r"must be a whole number \d+\.\.\d+"):
            batchgen.plan(str(path), **kwargs) if "max_credits" in kwargs else \
                batchgen.run(str(path), sandbox=True, **kwargs)
