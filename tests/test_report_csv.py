"""report.csv is safe to open in a spreadsheet and to parse: rows round-trip exactly through
Python's csv module, and text from the manifest or the API cannot become a formula."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from batchgen.report import write_reports
from batchgen.report_csv import COLUMNS, EXTRA_COLUMNS, csv_safe, render_csv
from batchgen.store import JobRow, JobState


def job(job_id: str, prompt: str, **kw: object) -> JobRow:
    request = {"image_url": "https://example.com/a.jpg", "prompt": prompt,
               "resolution": "720p", "video_length": 5, "audio_type": 3}
    return JobRow(job_id=job_id, idx=0, fingerprint="f", request=request,
                  state=kw.pop("state", JobState.FAILED), credits_estimated=20, **kw)  # type: ignore[arg-type]


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("text", ["a\rb", "a\r\nb\nc", "a\r\r\nb", "ends with CR\r", "q\"uo,te",
                                  "nul\x00inside", "tab\tinside", "ünï €"])
def test_every_row_round_trips_exactly(text):
    rows = [job("a", text, error=f"API said: {text}"), job("b", "plain")]
    back = parse(render_csv(rows))
    assert [r["job_id"] for r in back] == ["a", "b"]  # a bare CR never splits a row
    assert back[0]["prompt"] == text and back[0]["error"] == f"API said: {text}"
    assert list(back[0]) == [*COLUMNS, *EXTRA_COLUMNS]


@pytest.mark.parametrize("hostile", ["=HYPERLINK(\"http://evil\",\"x\")", "+1+cmd|'/c calc'!A0",
                                     "-2+3", "@SUM(A1:A9)", "\tsneaky", "\r=1+1"])
def test_formula_cells_from_the_manifest_or_the_api_are_neutralised(hostile):
    rows = [job("a", hostile, error=hostile, task_id=hostile, video_url=hostile)]
    back = parse(render_csv(rows))[0]
    for column in ("prompt", "error", "task_id", "video_url"):
        assert back[column] == "'" + hostile, column  # OWASP: a leading quote, nothing lost


def test_numbers_and_ordinary_text_are_left_alone():
    assert csv_safe("-5") == "-5" and csv_safe("+1.5") == "+1.5" and csv_safe("-.5e3") == "-.5e3"
    assert csv_safe("waves roll in") == "waves roll in" and csv_safe("") == ""
    back = parse(render_csv([job("a", "p", credits_video=-3)]))[0]
    assert back["credits_deducted"] == "-3" and back["credits_estimated"] == "20"


def test_text_that_utf8_cannot_hold_does_not_crash_the_report(tmp_path):
    rows = [job("a", "p", error="bad \ud800 surrogate")]
    report, _ = write_reports(tmp_path, "report.csv", rows, {"jobs": 1})
    with open(report, newline="", encoding="utf-8") as f:
        assert next(csv.DictReader(f))["error"] == "bad \ufffd surrogate"


def test_the_written_file_reads_back_exactly(tmp_path):
    rows = [job("a", "line one\rline two", error="=cmd"), job("b", "ok", state=JobState.PENDING)]
    report, summary = write_reports(tmp_path, "report.csv", rows, {"jobs": 2})
    with open(report, newline="", encoding="utf-8") as f:
        back = list(csv.DictReader(f))
    assert [(r["job_id"], r["status"], r["prompt"], r["error"]) for r in back] == [
        ("a", "failed", "line one\rline two", "'=cmd"), ("b", "pending", "ok", "")]
    assert json.loads(Path(summary).read_text()) == {"jobs": 2}
