"""The public Python API (SPEC §7) in-process against the emulator: no subprocess.

Each test names the promise it protects and checks the emulator's own ledger (what it
received and charged), not only what the report says.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env, write_manifest

import batchgen
from batchgen.cli import main
from batchgen.errors import CredentialsError, ManifestError, OutputDirLocked, UsageError
from batchgen.runner import EventKind, JobEvent

README = Path(__file__).resolve().parent.parent / "README.md"


def mapping(n: int, **extra: Any) -> dict[str, Any]:
    """A manifest built in code, as a pipeline would: n distinct 720p/5 s jobs (20 credits)."""
    return {
        "version": 1, "name": "pipe",
        "api": {"concurrency": 4, "poll_interval": 0.05},
        "output": {"dir": "out"},
        "defaults": {"resolution": "720p", "video_length": 5, "audio_type": 3,
                     "negative_prompt": "blurry"},
        "jobs": [{"id": f"job{i}", "image_url": f"https://example.com/{i}.jpg",
                  "prompt": f"prompt {i}"} for i in range(n)],
        **extra,
    }


async def until(condition: Callable[[], bool], task: asyncio.Task[Any]) -> None:
    """Wait for `condition`; fail at once if the run it waits on ended first."""
    while not condition():
        if task.done():
            task.result()
            pytest.fail("the run ended before the condition held")
        await asyncio.sleep(0.01)


async def test_arun_completes_in_process_with_typed_results_and_prints_nothing(
        sandbox, tmp_path, capsys):
    sb = await sandbox()
    events: list[JobEvent] = []
    report = await batchgen.arun(mapping(3), base_dir=tmp_path, api_base=sb.url,
                                 api_key="test-key", env={}, on_event=events.append)
    assert report.outcome is batchgen.Outcome.COMPLETED and report.ok
    assert report.counts == {"completed": 3, "failed": 0, "pending": 0, "unknown": 0}
    assert report.output_dir == tmp_path / "out"
    assert report.report_file == tmp_path / "out" / "report.csv"
    assert report.report_file.exists()
    assert sb.stats()["tasks_created"] == 3
    assert report.credits_deducted == sb.stats()["credits_charged"] == 60
    assert sorted(j.id for j in report.jobs) == ["job0", "job1", "job2"]
    for job in report.jobs:
        assert job.status == "completed" and job.error is None and job.task_id
        assert job.file is not None and job.file.is_absolute()
        data = job.file.read_bytes()
        assert job.bytes == len(data) and job.sha256 == hashlib.sha256(data).hexdigest()
        assert job.credits_estimated == job.credits_deducted == 20
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.SUBMITTED) == 3 and kinds.count(EventKind.DOWNLOADED) == 3
    assert capsys.readouterr() == ("", "")


async def test_budget_stop_is_an_outcome_not_an_exception(sandbox, tmp_path):
    sb = await sandbox()
    report = await batchgen.arun(mapping(4), base_dir=tmp_path, api_base=sb.url,
                                 api_key="test-key", env={}, max_credits=50)
    assert report.outcome is batchgen.Outcome.BUDGET_STOPPED and not report.ok
    assert report.budget_blocked == 2 and report.budget_needed == 40
    assert report.counts["completed"] == 2 and report.counts["pending"] == 2
    assert sb.stats()["credits_charged"] == 40 <= 50


async def test_resume_from_the_same_output_dir_never_pays_twice(sandbox, tmp_path):
    sb = await sandbox()
    first = await batchgen.arun(mapping(4), base_dir=tmp_path, api_base=sb.url,
                                api_key="test-key", env={}, max_credits=40)
    assert first.counts["completed"] == 2
    done_first = {j.id: j.sha256 for j in first.jobs if j.status == "completed"}
    second = await batchgen.arun(mapping(4), base_dir=tmp_path, api_base=sb.url,
                                 api_key="test-key", env={})
    assert second.outcome is batchgen.Outcome.COMPLETED
    assert sb.stats()["tasks_created"] == 4           # two then the other two, never again
    assert sb.stats()["credits_charged"] == 80
    for job in second.jobs:                             # what was done stays as it was
        if job.id in done_first:
            assert job.sha256 == done_first[job.id]
    third = await batchgen.arun(mapping(4), base_dir=tmp_path, api_base=sb.url,
                                api_key="test-key", env={})
    assert third.outcome is batchgen.Outcome.COMPLETED and third.credits_committed == 80
    assert sb.stats()["tasks_created"] == 4


async def test_mapping_paths_are_relative_to_base_dir(sandbox, tmp_path, monkeypatch):
    sb = await sandbox()
    base = tmp_path / "pipeline"
    base.mkdir()
    (base / "rows.jsonl").write_text(
        '{"id": "row1", "image_url": "https://example.com/r.jpg", "prompt": "from a file"}\n')
    monkeypatch.chdir(tmp_path)                         # cwd is not base_dir
    report = await batchgen.arun(mapping(1, jobs_file="rows.jsonl"), base_dir="pipeline",
                                 api_base=sb.url, api_key="test-key", env={})
    assert report.ok and {j.id for j in report.jobs} == {"job0", "row1"}
    assert (base / "out" / "report.csv").exists() and not (tmp_path / "out").exists()
    assert {p.name for p in (base / "out").glob("*.mp4")} == {"job0.mp4", "row1.mp4"}


async def test_manifest_errors_raise_manifest_error_and_send_nothing(sandbox, tmp_path):
    sb = await sandbox()
    bad = mapping(2)
    bad["jobs"][1]["resolution"] = "8k"
    bad["jobs"].append({"image_url": "ftp://example.com/x.jpg", "prompt": "p"})
    with pytest.raises(ManifestError) as caught:
        await batchgen.arun(bad, base_dir=tmp_path, api_base=sb.url, api_key="test-key", env={})
    text = str(caught.value)
    assert len(caught.value.problems) >= 2
    assert "jobs[1]" in text and "8k" in text and "jobs[2]" in text
    assert all(line.startswith("<mapping>:") for line in text.splitlines())
    with pytest.raises(ManifestError, match="name"):
        await batchgen.arun({k: v for k, v in mapping(1).items() if k != "name"},
                            api_base=sb.url, api_key="test-key", env={})
    path = write_manifest(tmp_path, 1, extra={"budget": {"max_credits": -1}})
    with pytest.raises(ManifestError, match=re.escape(str(path))):
        await batchgen.arun(path, api_base=sb.url, api_key="test-key", env={})
    assert sb.stats()["requests"] == {} or sum(sb.stats()["requests"].values()) == 0
    assert not (tmp_path / "out").exists()


async def test_cancelling_arun_stops_like_sigint_and_the_same_call_resumes(sandbox, tmp_path):
    # every request takes 0.5 s: the cancel lands while four creates are on the wire
    sb = await sandbox(latency=0.5)
    manifest = mapping(12, api={"concurrency": 4, "poll_interval": 0.05})
    task = asyncio.create_task(batchgen.arun(manifest, base_dir=tmp_path, api_base=sb.url,
                                             api_key="test-key", env={}))
    await asyncio.wait_for(until(lambda: sb.stats()["requests"].get(
        "createBySourcePrompt", 0) >= 4, task), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert sb.stats()["tasks_created"] == 4              # no new submissions after it
    assert (tmp_path / "out" / "report.csv").exists()    # reports written on the way out
    status = io.StringIO()
    assert main(["status", "--json", "--output", str(tmp_path / "out"),
                 str(write_manifest(tmp_path, 1, name="pipe"))], out=status) == 0
    # the creates on the wire got their grace and recorded their task: none is unknown
    # (a hard cancel would leave all four unknown, and the resumed run could not finish)
    assert json.loads(status.getvalue())["status"]["unknown"] == 0
    sb.config.latency = (0.0, 0.0)
    report = await batchgen.arun(manifest, base_dir=tmp_path, api_base=sb.url,
                                 api_key="test-key", env={})
    assert report.ok and report.counts["completed"] == 12
    assert sb.stats()["tasks_created"] == 12             # the lock was released; none twice


async def test_a_second_run_on_the_same_output_dir_is_locked_out(sandbox, tmp_path):
    sb = await sandbox(processing_time=0.5)
    first = asyncio.create_task(batchgen.arun(mapping(2), base_dir=tmp_path,
                                              api_base=sb.url, api_key="test-key", env={}))
    await asyncio.wait_for(until(lambda: sb.stats()["tasks_created"] >= 1, first), 30)
    with pytest.raises(OutputDirLocked):
        await batchgen.arun(mapping(2), base_dir=tmp_path, api_base=sb.url, api_key="test-key",
                            env={})
    assert (await first).ok
    assert sb.stats()["tasks_created"] == 2


async def test_credentials_come_from_arguments_or_env_and_are_required(sandbox, tmp_path):
    sb = await sandbox(api_keys=["right-key"])
    with pytest.raises(CredentialsError, match="AKOOL_API_KEY"):
        await batchgen.arun(mapping(1), base_dir=tmp_path, api_base=sb.url, env={})
    with pytest.raises(CredentialsError) as caught:
        await batchgen.arun(mapping(1), base_dir=tmp_path, api_base=sb.url,
                            api_key="wrong-key", env={})
    assert "wrong-key" not in str(caught.value)
    report = await batchgen.arun(mapping(1), base_dir=tmp_path, api_base=sb.url,
                                 env={"AKOOL_API_KEY": "right-key"})
    assert report.ok
    with pytest.raises(UsageError, match="concurrency"):
        await batchgen.arun(mapping(1), base_dir=tmp_path, api_base=sb.url, api_key="test-key",
                            env={}, concurrency=0)


async def test_run_inside_a_running_loop_points_at_arun(tmp_path):
    with pytest.raises(UsageError, match="arun"):
        batchgen.run(mapping(1), base_dir=tmp_path, sandbox=True)


async def test_plan_has_exactly_the_figures_of_plan_json(sandbox, tmp_path):
    sb = await sandbox()
    path = write_manifest(tmp_path, 5, base_url=sb.url,
                          extra={"budget": {"max_credits": 70}},
                          job_extra={"add_audio": {"audio_type": 1}})
    out_dir = tmp_path / "out"

    def cli_plan(*flags: str) -> dict[str, Any]:
        out = io.StringIO()
        assert main(["plan", str(path), "--output", str(out_dir), "--json", *flags],
                    out=out) == 0
        return json.loads(out.getvalue())

    before = batchgen.plan(path, output=out_dir, env={})
    assert before.to_dict() == cli_plan()
    assert before.charged_so_far is None
    report = await batchgen.arun(path, output=out_dir, api_key="test-key", env={})
    assert report.outcome is batchgen.Outcome.BUDGET_STOPPED
    for flags, kwargs in (((), {}), (("--max-credits", "500"), {"max_credits": 500}),
                          (("--retry-failed",), {"retry_failed": True})):
        plan = batchgen.plan(path, output=out_dir, env={}, **kwargs)
        doc = cli_plan(*flags)
        assert plan.to_dict() == doc
        assert plan.to_submit_jobs == doc["to_submit"]["jobs"]
        assert plan.to_submit_credits == doc["to_submit"]["credits"]
        assert plan.total_credits == doc["total_credits"]
        assert plan.spent_credits == doc["budget"]["spent_credits"]
        assert plan.budget_left == doc["budget"]["left"]
        assert plan.state("done").jobs == doc["states"]["done"]["jobs"]
        assert plan.charged_so_far is not None
        assert plan.charged_so_far.deducted == doc["charged_so_far"]["deducted"]
    assert plan.state("done").jobs == report.counts["completed"] > 0


def test_readme_pipeline_example_runs_as_written(tmp_path, monkeypatch, capsys):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    for name in ("AKOOL_API_KEY", "AKOOL_CLIENT_ID", "AKOOL_CLIENT_SECRET",
                 "BATCHGEN_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    report = namespace["report"]
    assert report.ok and len(report.jobs) == 2
    assert all(j.file is not None and j.file.exists() for j in report.jobs)
    assert (tmp_path / "output" / "pipeline-demo" / "report.csv").exists()
    printed = capsys.readouterr().out
    assert "2 jobs to submit for 40 credits" in printed


def test_public_names_are_typed_documented_and_import_lazily():
    import subprocess
    import sys
    for name in ("run", "arun", "plan"):
        assert getattr(batchgen, name).__doc__
    package = Path(batchgen.__file__).parent
    assert (package / "py.typed").exists()
    for name in ("run", "arun", "plan"):  # a submodule would shadow the function once imported
        assert not (package / f"{name}.py").exists() and not (package / name).exists()
    probe = ("import sys, batchgen; assert 'batchgen.api' not in sys.modules; "
             "assert 'batchgen.runner' not in sys.modules; batchgen.run; "
             "assert 'batchgen.api' in sys.modules; "
             "assert issubclass(batchgen.errors.ManifestError, batchgen.errors.BatchgenError)")
    subprocess.run([sys.executable, "-c", probe], check=True)


SCRIPT = """
import sys, batchgen
manifest = {"version": 1, "name": "sig", "api": {"concurrency": 2, "poll_interval": 0.1},
            "output": {"dir": "out"},
            "defaults": {"resolution": "720p", "video_length": 5, "audio_type": 3,
                         "negative_prompt": "blurry"},
            "jobs": [{"id": f"j{i}", "image_url": f"https://example.com/{i}.jpg",
                      "prompt": f"p {i}"} for i in range(8)]}
try:
    report = batchgen.run(manifest, api_base=sys.argv[1], api_key="test-key",
                          on_event=lambda ev: print(ev.kind, ev.job_id, flush=True))
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    raise SystemExit(130)
print("outcome", report.outcome, report.counts["completed"], flush=True)
"""


async def test_ctrl_c_in_a_script_calling_run_stops_gracefully_then_raises(sandbox, tmp_path):
    """README: Ctrl-C during batchgen.run() in the main thread stops as the CLI does on
    SIGINT (no new submissions, state saved), then KeyboardInterrupt; a re-run resumes."""
    import signal
    import sys
    sb = await sandbox(processing_time=0.5)
    (tmp_path / "script.py").write_text(SCRIPT)

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "script.py", sb.url, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    proc = await start()
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line, "the script ended before submitting anything"
        if b"submitted" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 130, err.decode()
    assert rest.decode().splitlines()[-1] == "KeyboardInterrupt"
    assert err == b""                                    # nothing printed by batchgen
    created = sb.stats()["tasks_created"]
    assert 0 < created < 8
    assert (tmp_path / "out" / "report.csv").exists()
    again = await start()
    out, err = await asyncio.wait_for(again.communicate(), 60)
    assert out.decode().splitlines()[-1] == "outcome completed 8", err.decode()
    assert sb.stats()["tasks_created"] == 8              # resumed; nothing paid twice


async def test_an_on_event_that_raises_stops_the_run_safely_and_is_raised(sandbox, tmp_path):
    """A buggy callback must not cut a money path in half: the run stops gracefully,
    state is saved, the caller gets the callback's exception, a re-run completes."""
    sb = await sandbox(processing_time=0.3)

    class Boom(Exception):
        pass

    def explode(ev: JobEvent) -> None:
        if ev.kind is EventKind.SUBMITTED:
            raise Boom(ev.job_id)

    manifest = mapping(8, api={"concurrency": 2, "poll_interval": 0.05})
    with pytest.raises(Boom):
        await batchgen.arun(manifest, base_dir=tmp_path, api_base=sb.url,
                            api_key="test-key", env={}, on_event=explode)
    created = sb.stats()["tasks_created"]
    assert 0 < created < 8                                # it stopped submitting
    report = await batchgen.arun(manifest, base_dir=tmp_path, api_base=sb.url,
                                 api_key="test-key", env={})
    assert report.ok and report.counts["unknown"] == 0
    assert sb.stats()["tasks_created"] == 8               # nothing made twice


async def test_run_works_from_a_worker_thread_without_a_loop(sandbox, tmp_path):
    sb = await sandbox()
    report = await asyncio.to_thread(batchgen.run, mapping(2), base_dir=tmp_path,
                                     api_base=sb.url, api_key="test-key", env={})
    assert report.ok and sb.stats()["tasks_created"] == 2
    with pytest.raises(UsageError, match="outage_timeout"):
        await asyncio.to_thread(batchgen.run, mapping(2), base_dir=tmp_path,
                                api_base=sb.url, api_key="test-key", env={},
                                outage_timeout=0)


@pytest.mark.slow
async def test_readme_sigterm_recipe_stops_an_arun_like_the_cli(sandbox, tmp_path):
    """README, 'Stopping a run': the arun + add_signal_handler recipe, as written."""
    import signal
    import sys
    import textwrap
    sb = await sandbox(processing_time=0.5)
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    recipe = re.search(r"  ```python\n(.*?)  ```", section, re.S)
    assert recipe is not None
    (tmp_path / "manifests").mkdir()
    write_manifest(tmp_path / "manifests", 8, name="spring", base_url=sb.url,
                   concurrency=2).rename(tmp_path / "manifests" / "spring.yaml")
    (tmp_path / "pipeline.py").write_text(
        "import asyncio, signal, sys\nimport batchgen\n\n"
        + textwrap.dedent(recipe.group(1))
        + "\ntry:\n    print('outcome', asyncio.run(main()).outcome, flush=True)\n"
        "except asyncio.CancelledError:\n    print('cancelled', flush=True)\n"
        "    raise SystemExit(130)\n")

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "pipeline.py", cwd=tmp_path,
            env={**cli_env(), "AKOOL_API_KEY": "test-key"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def first_create() -> None:
        while sb.stats()["tasks_created"] < 1:
            await asyncio.sleep(0.02)

    proc = await start()
    await asyncio.wait_for(first_create(), 30)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert (proc.returncode, out.decode().split()) == (130, ["cancelled"]), err.decode()
    created = sb.stats()["tasks_created"]
    assert created < 8
    again = await start()
    out, err = await asyncio.wait_for(again.communicate(), 60)
    assert out.decode().split() == ["outcome", "completed"], err.decode()
    assert sb.stats()["tasks_created"] == 8              # resumed; nothing paid twice
