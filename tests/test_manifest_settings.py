"""Bad settings are refused by `validate`, before anything is paid: numbers out of range or
not finite, control characters in names, a report that could overwrite a video, a
jobs_file that is not a regular file, an empty negative_prompt; and relative output dirs
belong to the manifest, not to the working directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli, write_manifest
from manifest_helpers import HEAD, IMG, load, one, problems

JOB = f"jobs:\n  - image_url: {IMG}\n    prompt: a\n"


@pytest.mark.parametrize("setting, said", [
    ("api:\n  poll_interval: .nan\n", "api.poll_interval is nan, not a finite number"),
    ("api:\n  poll_interval: .inf\n", "api.poll_interval is"),
    ("api:\n  poll_interval: -.inf\n", "api.poll_interval is"),
    ("api:\n  poll_interval: 0.000001\n", "below 0.01 s"),
    ("api:\n  poll_interval: 86400\n", "above the maximum 3600"),
    ("api:\n  concurrency: 1000000000\n", "above the maximum 1000"),
    ("api:\n  concurrency: 1.0e+300\n", "above the maximum 1000"),
    ("budget:\n  max_credits: 1.0e+300\n", "above the maximum 1000000000000"),
    ("budget:\n  prices:\n    720p: {5: 99999999999999999999}\n", "above the maximum 1000000"),
])
def test_every_number_is_finite_and_in_a_sane_range(tmp_path, setting, said):
    p = one(tmp_path, HEAD + setting + JOB)
    assert said in p.what and p.line == len(setting.splitlines()) + 1, p


@pytest.mark.parametrize("filename", ['"{id}\\0.mp4"', '"{id}\\n.mp4"', '"{id}\\t.mp4"',
                                      '"{id}\\x7f.mp4"'])
def test_control_characters_in_output_filename_are_refused(tmp_path, filename):
    p = one(tmp_path, HEAD + f"output:\n  filename: {filename}\n" + JOB)
    assert "control character" in p.what and p.line == 3


def test_control_characters_in_output_dir_and_report_are_refused(tmp_path):
    found = problems(tmp_path, HEAD + 'output:\n  dir: "out\\0x"\n  report: "r\\n.csv"\n' + JOB)
    assert sorted(p.line for p in found) == [3, 4]
    assert all("control character" in p.what for p in found)


@pytest.mark.parametrize("output, said", [
    ("  report: summary.json\n", "a name batchgen writes itself"),
    ("  report: .batchgen\n", "a name batchgen writes itself"),
    ("  report: report.html\n", "a name batchgen writes itself"),
    ("  report: Posters\n", "a name batchgen writes itself"),
    ("  report: x.mp4\n", "could also be the file name of a job's video"),
    ("  report: BEACH.MP4\n", "could also be the file name of a job's video"),
    ("  filename: '{id}'\n", "could also be the file name of a job's video"),
    ("  filename: 'clip-{index:03d}'\n  report: clip-007\n", "could also be the file name"),
])
def test_the_report_can_never_be_a_video_file(tmp_path, output, said):
    found = problems(tmp_path, HEAD + "output:\n" + output + JOB)
    assert any(said in p.what for p in found), found


def test_a_filename_that_could_be_summary_json_is_refused(tmp_path):
    found = problems(tmp_path, HEAD + "output:\n  filename: '{task_id}'\n  report: r.mp4\n"
                     + JOB)
    assert any("could name a video summary.json" in p.what for p in found), found


@pytest.mark.parametrize("template", ["{id}.html", "{id}s", "{prompt}"])
def test_a_filename_that_could_be_report_html_or_the_posters_folder_is_refused(tmp_path,
                                                                              template):
    # a job id "report" (or "poster", or a prompt) would overwrite the HTML report or
    # stand where the posters folder must be
    found = problems(tmp_path, HEAD + f"output:\n  filename: '{template}'\n" + JOB)
    assert any("a name batchgen writes itself" in p.what and "output.filename" in p.what
               for p in found), found


def test_the_names_batchgen_reserves_are_the_ones_it_writes():
    from batchgen.manifest import OWN_NAMES
    from batchgen.posters import POSTER_DIR
    from batchgen.report_html import HTML_NAME
    assert {HTML_NAME, POSTER_DIR} <= set(OWN_NAMES)


def test_the_usual_names_pass(tmp_path):
    m = load(tmp_path, HEAD + "name: shoes\noutput:\n  filename: '{name}-{id}.mp4'\n"
             "  report: shoes.csv\n" + JOB)
    assert m.output.report == "shoes.csv"


def _validate_in_subprocess(path: Path) -> tuple[int, str]:
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "batchgen", "validate", str(path)],
                          capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_jobs_file_or_manifest_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "rows.csv")
    (tmp_path / "m.yaml").write_text(HEAD + "jobs_file: rows.csv\n")
    code, err = _validate_in_subprocess(tmp_path / "m.yaml")  # hung forever before
    assert code == 2 and "rows.csv is not a regular file" in err, err
    os.mkfifo(tmp_path / "fifo.yaml")
    code, err = _validate_in_subprocess(tmp_path / "fifo.yaml")
    assert code == 2 and "is not a regular file" in err, err


# -- negative_prompt: validation, the default and the emulator agree (akool-api.md E1) -----

@pytest.mark.parametrize("where", ["defaults:\n  negative_prompt: ''\n",
                                   "defaults:\n  negative_prompt: '   '\n"])
def test_an_empty_negative_prompt_is_refused_for_the_create_endpoint(tmp_path, where):
    p = one(tmp_path, HEAD + where + JOB)
    assert "negative_prompt is empty" in p.what and "1003" in p.what


def test_an_empty_negative_prompt_is_fine_where_the_api_does_not_need_one(tmp_path):
    m = load(tmp_path, HEAD + JOB + "    negative_prompt: ''\n"
             "    model_name: AkoolImage2VideoFastV1\n")
    assert m.jobs[0].negative_prompt == ""


async def test_a_manifest_without_negative_prompt_runs_against_the_emulator(sandbox, tmp_path):
    # before: the default "" passed validate and the emulator refused every job with 1003
    sb = await sandbox()
    manifest = tmp_path / "m.yaml"
    manifest.write_text(HEAD + f"api: {{base_url: '{sb.url}', poll_interval: 0.05}}\n"
                        "output: {dir: out}\n" + JOB + f"  - image_url: {IMG}\n    prompt: b\n")
    assert (await run_cli("validate", str(manifest), cwd=tmp_path)).code == 0
    result = await run_cli("run", str(manifest), cwd=tmp_path)
    assert result.code == 0, result.err
    assert sb.stats()["tasks_created"] == 2


# -- issue 17: relative output dirs belong to the manifest ---------------------------------

async def test_the_same_manifest_from_another_directory_finds_its_state(sandbox, tmp_path):
    sb = await sandbox()
    batch = tmp_path / "batch"
    batch.mkdir()
    manifest = write_manifest(batch, 3, base_url=sb.url)  # output.dir: out (relative)
    elsewhere = tmp_path / "cron-home"
    elsewhere.mkdir()
    first = await run_cli("run", str(manifest), cwd=batch)
    assert first.code == 0, first.err
    assert sb.stats()["tasks_created"] == 3 and (batch / "out" / "report.csv").exists()
    second = await run_cli("run", str(manifest), cwd=elsewhere)  # as cron would
    assert second.code == 0, second.err
    assert sb.stats()["tasks_created"] == 3  # paid nothing again
    assert not (elsewhere / "out").exists()
    # the default output/<name> too
    manifest.write_text(manifest.read_text().replace("output:\n  dir: out\n", ""))
    assert "dir:" not in manifest.read_text()
    plan = await run_cli("plan", str(manifest), "--json", cwd=elsewhere)
    assert f'"output_dir": "{batch / "output" / "t"}"' in plan.out, plan.out


async def test_output_on_the_command_line_stays_relative_to_the_working_directory(
        sandbox, tmp_path):
    sb = await sandbox()
    batch = tmp_path / "batch"
    batch.mkdir()
    manifest = write_manifest(batch, 1, base_url=sb.url)
    result = await run_cli("run", str(manifest), "--output", "mine", cwd=tmp_path)
    assert result.code == 0, result.err
    assert (tmp_path / "mine" / "report.csv").exists() and not (batch / "mine").exists()

