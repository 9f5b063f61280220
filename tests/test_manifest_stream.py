"""Streaming the manifest (issue 18): the same jobs, ids, errors and plan as reading it whole,
in memory that does not grow with the number of jobs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from batchgen import manifest_stream
from batchgen.errors import ManifestError
from batchgen.jobs import request_fingerprint, stable_id
from batchgen.manifest import load_manifest
from batchgen.manifest_rows import decode
from batchgen.manifest_stream import KeyLog, check_data_file
from batchgen.planning import build_plan, plan_to_dict
from tests.manifest_helpers import HEAD, IMG, load, problems, write

MIXED = HEAD + """\
defaults:
  negative_prompt: blurry
budget:
  max_credits: 400
jobs_file: rows.jsonl
"""


def _rows(tmp_path: Path, rows: list[dict[str, object]]) -> None:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows),
                                         encoding="utf-8")


def _mixed_rows(n: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(n):
        row: dict[str, object] = {"image_url": f"{IMG}?{i}", "prompt": f"p{i}",
                                  "resolution": ("720p", "1080p", "4k")[i % 3],
                                  "video_length": (5, 10)[i % 2]}
        if i % 4 == 0:
            row["add_audio"] = {"audio_type": 2, "audio_url": f"{IMG}.mp3"}
        if i % 5 == 0:
            row |= {"model_name": "AkoolImage2VideoFastV1", "count": 2, "resolution": "720p"}
        if i % 7 == 0:
            row["webhook_url"] = "https://example.com/hook"
        if i % 11 == 0:
            row["id"] = f"explicit-{i}"
        out.append(row)
    return out


def test_ids_and_fingerprints_follow_the_documented_recipe(tmp_path):
    _rows(tmp_path, _mixed_rows(40))
    for job in load(tmp_path, MIXED).jobs:
        fields = job.request_fields()
        if fields.get("negative_prompt") and not (job.model_name or job.count):
            fields["negative_prompt"] = "blurry"
        audio = job.add_audio.as_dict() if job.add_audio else None
        if not job.explicit_id:
            assert job.id == stable_id(fields, audio)
        assert job.fingerprint == request_fingerprint(fields, audio)


def test_jobs_are_expanded_again_on_each_iteration_and_a_changed_file_is_caught(tmp_path):
    _rows(tmp_path, _mixed_rows(30))
    manifest = load(tmp_path, MIXED)
    first, again = list(manifest.jobs), list(manifest.jobs)
    assert first == again and len(manifest.jobs) == 30
    assert manifest.jobs[-1] == first[-1] and manifest.jobs[3:5] == tuple(first[3:5])
    rows = _mixed_rows(30)
    rows[29]["prompt"] = "edited after validation"
    _rows(tmp_path, rows)
    with pytest.raises(ManifestError, match="changed while batchgen read them"):
        list(manifest.jobs)


def test_a_clash_of_compact_keys_is_checked_exactly(tmp_path, monkeypatch):
    """Every key suspect: the exact pass runs and finds no duplicate where there is none."""
    _rows(tmp_path, _mixed_rows(30))
    plain = load(tmp_path, MIXED)

    def everything(self):
        return ({k >> 1 for k in self.requests}, set(self.ids))

    monkeypatch.setattr(KeyLog, "suspects", everything)
    checked = load(tmp_path, MIXED)
    assert list(checked.jobs) == list(plain.jobs)
    assert checked.jobs.digest == plain.jobs.digest
    rows = _mixed_rows(30)
    rows.append(dict(rows[1]))  # a real duplicate (no explicit id) is still found
    _rows(tmp_path, rows)
    (found,) = problems(tmp_path, MIXED)
    assert found.line == 31 and "same request as jobs[1]" in found.what
    assert "rows.jsonl:2)" in found.what


def test_key_clashes_name_suspects():
    log = KeyLog()
    a = "ab" * 32
    b = "ab" * 7 + "a" + "0" * 49  # the same first 15 hex digits, another digest
    log.add(a, "x", explicit=True)
    log.add(b, "y", explicit=True)
    assert log.suspects() == (set(), set())  # both explicit: one request twice is allowed
    log.add(b, "x", explicit=False)
    requests, ids = log.suspects()
    assert requests == {int(a[:15], 16)} and ids == {hash("x")}


def test_suspects_split_by_top_bits_are_those_of_the_whole_list():
    # the old rule over every key at once (a set, a sorted list) is the reference
    import itertools
    import random
    rng = random.Random(7)
    log = KeyLog()
    for n in range(20_000):
        digest = f"{rng.getrandbits(60):015x}" + "0" * 49
        log.add(digest, f"j{n}", explicit=rng.random() < 0.5)
    for n in range(0, 20_000, 997):  # repeats: same request (tagged either way), same id
        log.requests.append(log.requests[n] ^ 1)
        log.requests.append(log.requests[n + 1])
        log.ids.append(log.ids[n])
    ordered = sorted(log.requests)
    want_requests = {b >> 1 for a, b in itertools.pairwise(ordered)
                     if b & 1 and a >> 1 == b >> 1}
    ordered = sorted(log.ids)
    want_ids = {b for a, b in itertools.pairwise(ordered) if a == b}
    assert any(k < 0 for k in log.ids) and len(want_ids) == 21 and want_requests
    assert log.suspects() == (want_requests, want_ids)


@pytest.mark.parametrize("content", [
    b"\xef\xbb\xbf" + b'{"a": 1}\n' * 5 + b'{"b": "\xc3\xa9\xff"}\n' + b"{}\n" * 3,
    b'{"a": 1}\n' * 4 + b'{"b": "\xe2\x82',
    b'{"a": 1}\n' * 3 + b"\x00" + b"\xff\n" * 2,
    b"\xff\xfe{",
])
def test_data_file_checks_match_reading_it_whole(tmp_path, monkeypatch, content):
    monkeypatch.setattr(manifest_stream, "_BLOCK", 7)  # boundaries inside lines and chars
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    assert check_data_file(path, "rows.jsonl", 1 << 20) == decode(content, "rows.jsonl")


def test_data_file_over_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\x00" * 100)
    what, _ = check_data_file(path, "rows.jsonl", 50)
    assert "larger than" in what


@pytest.mark.parametrize("max_credits", [None, 0, 95, 400, 10_000])
def test_plan_from_price_shapes_equals_plan_from_the_jobs(tmp_path, max_credits):
    _rows(tmp_path, _mixed_rows(60))
    manifest = load(tmp_path, MIXED)
    manifest = replace(manifest, budget=replace(manifest.budget, max_credits=max_credits))
    assert manifest.jobs.shapes is not None
    shaped = build_plan(manifest)
    manifest.jobs.shapes = None
    expanded = build_plan(manifest)
    assert plan_to_dict(shaped) == plan_to_dict(expanded)


def test_a_manifest_with_many_price_shapes_is_planned_from_its_jobs(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_stream.Shapes, "LIMIT", 2)
    _rows(tmp_path, _mixed_rows(20))
    manifest = load(tmp_path, MIXED)
    assert manifest.jobs.shapes is None
    assert build_plan(manifest).jobs == 20


def test_csv_rows_are_streamed_with_their_lines(tmp_path):
    (tmp_path / "rows.csv").write_text(
        "image_url,prompt\n" + "".join(f"{IMG}?{i},\"multi\nline {i}\"\n" for i in range(5)),
        encoding="utf-8")
    m = load_manifest(write(tmp_path, HEAD + "jobs_file: rows.csv\n"))
    assert [j.source.rsplit(":", 1)[1] for j in m.jobs] == ["2", "4", "6", "8", "10"]
