"""Manifests from spreadsheets: every error in one pass, and columns a user keeps.

A user fixes a file once: a bad CSV header does not hide the rows' errors, and schema
errors do not hide the rules'. With `jobs_file: {path: ..., extra_columns: keep}`, the
user's own columns (SKU, campaign) are allowed, never sent, and land in report.csv after
the report's own columns.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from cli_helpers import run_cli, write_manifest
from manifest_helpers import HEAD, IMG, load, problems

from batchgen.cli import main


def texts(found) -> list[str]:
    return [f"{p.file.rsplit('/', 1)[-1]}:{p.line}: {p.what}" for p in found]


# -- every error at once -----------------------------------------------------------------


def test_a_bad_csv_header_does_not_hide_the_row_errors(tmp_path):
    found = problems(tmp_path, HEAD + "jobs_file: jobs.csv\n", jobs_dot_csv=(
        "image_url,prompt,colour\n"
        f"{IMG},a cat,red\n"
        "ftp://nope,a dog,blue\n"
        f"{IMG},,green\n"))
    got = texts(found)
    assert any("jobs.csv:1: unknown column 'colour'" in t for t in got), got
    assert any(t.startswith("jobs.csv:3:") and "not an http(s) URL" in t for t in got), got
    assert any(t.startswith("jobs.csv:4:") and "missing prompt" in t for t in got), got
    assert len(found) == 3


def test_a_typo_in_a_header_is_not_repeated_on_every_row(tmp_path):
    found = problems(tmp_path, HEAD + "jobs_file: jobs.csv\n", jobs_dot_csv=(
        "image_url,promt\n" f"{IMG},a cat\n" f"{IMG},a dog\n" "not-a-url,a cow\n"))
    got = texts(found)
    assert "did you mean 'prompt'?" in found[0].fix
    assert not any("missing prompt" in t for t in got), got  # the typo explains them
    assert any(t.startswith("jobs.csv:4:") and "image_url" in t for t in got), got


def test_schema_errors_do_not_hide_the_rule_errors_of_the_same_job(tmp_path):
    found = problems(tmp_path, HEAD + f"""\
jobs:
  - image_url: {IMG}
    resolution: 9k
  - image_url: {IMG}
    prompt: fine
    audio_type: 2
    video_length: 7
""")
    got = texts(found)
    assert any("m.yaml:4:" in t and "9k" in t for t in got), got
    assert any("m.yaml:3:" in t and "missing prompt" in t for t in got), got
    assert any("m.yaml:8:" in t and "video_length" in t for t in got), got
    assert any("audio_url is missing" in t for t in got), got


def test_a_broken_default_does_not_hide_the_jobs_errors(tmp_path):
    found = problems(tmp_path, HEAD + f"""\
defaults:
  resolution: 8k
  negative_prompt: blurry
jobs:
  - image_url: {IMG}
  - image_url: ftp://example.com/b.jpg
    prompt: b
""")
    got = texts(found)
    assert any("m.yaml:3:" in t and "8k" in t for t in got), got
    assert any("m.yaml:6:" in t and "missing prompt" in t for t in got), got
    assert any("m.yaml:7:" in t and "not an http(s) URL" in t for t in got), got
    assert not any("resolution" in t and "m.yaml:6" in t for t in got), got


def test_a_jsonl_row_with_schema_and_rule_errors_reports_both(tmp_path):
    found = problems(tmp_path, HEAD + "jobs_file: jobs.jsonl\n", jobs_dot_jsonl=(
        json.dumps({"image_url": "nope", "video_length": 3}) + "\n"))
    got = texts(found)
    assert any("video_length" in t for t in got) and any("image_url" in t for t in got), got
    assert any("missing prompt" in t for t in got), got


# -- columns a user keeps ----------------------------------------------------------------


def test_extra_columns_are_errors_unless_the_manifest_keeps_them(tmp_path):
    data = f"SKU,Image_URL,Prompt,Campaign\nA-1,{IMG},a cat,spring\n"
    found = problems(tmp_path, HEAD + "jobs_file: jobs.csv\n", jobs_dot_csv=data)
    assert sorted(p.what for p in found) == ["unknown column 'Campaign'",
                                             "unknown column 'SKU'"]
    assert "extra_columns: keep" in found[0].fix
    manifest = load(tmp_path, HEAD + "jobs_file: {path: jobs.csv, extra_columns: keep}\n",
                    jobs_dot_csv=data)
    (job,) = manifest.jobs
    assert job.image_url == IMG and job.prompt == "a cat"  # header case does not matter
    assert job.extra == (("SKU", "A-1"), ("Campaign", "spring"))
    plain = load(tmp_path, HEAD + "jobs_file: plain.csv\n",
                 plain_dot_csv=f"image_url,prompt\n{IMG},a cat\n")
    assert plain.jobs[0].id == job.id  # the user's columns are not part of what is made


def test_a_semicolon_separated_file_gets_a_hint(tmp_path):
    found = problems(tmp_path, HEAD + "jobs_file: jobs.csv\n",
                     jobs_dot_csv=f"image_url;prompt\n{IMG};a cat\n")
    assert len(found) == 1
    assert "semicolons" in found[0].what and "comma" in found[0].fix.lower()


def test_jobs_file_mapping_is_checked(tmp_path):
    found = problems(tmp_path, HEAD + "jobs_file: {path: jobs.csv, extra_columns: maybe}\n")
    assert "extra_columns" in found[0].what and "keep" in found[0].what + found[0].fix
    found = problems(tmp_path, HEAD + "jobs_file: [jobs.csv]\n")
    assert "jobs_file must be a file path or a mapping" in found[0].what


def test_jsonl_keys_of_the_users_own_are_kept_too(tmp_path):
    row = {"image_url": IMG, "prompt": "p", "sku": "B-2", "tags": ["x", "y"]}
    manifest = load(tmp_path, HEAD + "jobs_file: {path: j.jsonl, extra_columns: keep}\n",
                    j_dot_jsonl=json.dumps(row) + "\n")
    assert manifest.jobs[0].extra == (("sku", "B-2"), ("tags", '["x", "y"]'))


@contextlib.asynccontextmanager
async def recording_proxy(target: str) -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTP proxy in front of the emulator that keeps every request body it passes on."""
    bodies: list[bytes] = []

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        bodies.append(body)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession() as session, session.request(
                request.method, target + request.path_qs, data=body,
                headers=headers) as answer:
            return web.Response(body=await answer.read(), status=answer.status,
                                content_type=answer.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", bodies
    finally:
        await runner.cleanup()


async def test_kept_columns_reach_the_report_and_never_the_api(sandbox, tmp_path):
    sb = await sandbox()
    async with recording_proxy(sb.url) as (url, bodies):
        await _kept_columns(tmp_path, url, bodies)


async def _kept_columns(tmp_path, url: str, bodies: list[bytes]) -> None:
    path = write_manifest(tmp_path, 0, base_url=url)
    text = path.read_text().replace("jobs: []\n", "jobs_file: {path: products.csv, "
                                    "extra_columns: keep}\n")
    path.write_text(text)
    (tmp_path / "products.csv").write_text(
        "SKU,image_url,prompt,status\n"
        f"A-1,{IMG},a red shoe,draft\n"
        f"B-2,https://example.com/b.jpg,a blue shoe,final\n")
    result = await run_cli("run", str(path), "--no-progress", cwd=tmp_path)
    assert result.code == 0, result.err
    with open(tmp_path / "out" / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[-2:] == ["SKU", "extra.status"]  # after the report's own columns
    assert header.index("source") < header.index("SKU")
    assert rows[0]["status"] == "completed"  # the SPEC column is never shadowed
    assert [(r["SKU"], r["extra.status"]) for r in rows] == [("A-1", "draft"),
                                                              ("B-2", "final")]
    sent = b"".join(bodies)
    assert b"a red shoe" in sent  # the proxy saw the creates...
    assert b"A-1" not in sent and b"SKU" not in sent and b"draft" not in sent  # ...not these
    out, err = io.StringIO(), io.StringIO()
    assert main(["validate", str(path)], out, err) == 0
