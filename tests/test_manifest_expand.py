"""Expansion: defaults, jobs, matrix, jobs_file rows, order, indexes, sources, stable ids."""

from __future__ import annotations

import json
from pathlib import Path

from manifest_helpers import HEAD, IMG, load, one

from batchgen.jobs import (
    BUILTIN_DEFAULTS,
    DEFAULT_NEGATIVE_PROMPT,
    request_fingerprint,
    stable_id,
)


def test_defaults_then_builtin_defaults_under_every_job(tmp_path):
    m = load(tmp_path, HEAD + f"""\
defaults:
  resolution: 1080p
  negative_prompt: blurry
jobs:
  - image_url: {IMG}
    prompt: a
  - image_url: {IMG}
    prompt: b
    resolution: 4k
    video_length: 10
""")
    a, b = m.jobs
    assert (a.resolution, a.video_length, a.audio_type, a.negative_prompt) == \
        ("1080p", BUILTIN_DEFAULTS["video_length"], BUILTIN_DEFAULTS["audio_type"], "blurry")
    assert (b.resolution, b.video_length) == ("4k", 10)


def test_builtin_negative_prompt_is_one_the_create_endpoint_accepts_and_keeps_ids(tmp_path):
    # the single create endpoint requires a non-empty negative_prompt (akool-api.md E1);
    # the batch endpoint does not, and ids stay what they were when "" was sent
    m = load(tmp_path, HEAD + f"""\
jobs:
  - image_url: {IMG}
    prompt: a
  - image_url: {IMG}
    prompt: b
    model_name: AkoolImage2VideoFastV1
""")
    single, batch = m.jobs
    assert single.negative_prompt == DEFAULT_NEGATIVE_PROMPT and DEFAULT_NEGATIVE_PROMPT.strip()
    assert batch.negative_prompt == ""
    assert single.id == stable_id({"image_url": IMG, "prompt": "a", **BUILTIN_DEFAULTS}, None)


def test_matrix_is_a_cross_product_in_written_key_order(tmp_path):
    m = load(tmp_path, HEAD + f"""\
matrix:
  prompt: [p1, p2]
  image_url: ['{IMG}', '{IMG}?2']
  resolution: [720p, 4k]
""")
    got = [(j.prompt, j.image_url[-2:], j.resolution) for j in m.jobs]
    assert got == [
        ("p1", "pg", "720p"), ("p1", "pg", "4k"), ("p1", "?2", "720p"), ("p1", "?2", "4k"),
        ("p2", "pg", "720p"), ("p2", "pg", "4k"), ("p2", "?2", "720p"), ("p2", "?2", "4k")]
    assert [j.index for j in m.jobs] == list(range(8))
    assert {j.source for j in m.jobs} == {f"{tmp_path / 'm.yaml'}:2"}


def test_final_order_is_jobs_then_matrix_then_jobs_file(tmp_path):
    m = load(tmp_path, HEAD + f"""\
jobs_file: rows.jsonl
matrix:
  image_url: ['{IMG}']
  prompt: [m1, m2]
jobs:
  - image_url: {IMG}
    prompt: j1
""", rows_dot_jsonl=f'{{"image_url": "{IMG}", "prompt": "r1"}}\n')
    assert [j.prompt for j in m.jobs] == ["j1", "m1", "m2", "r1"]
    assert [j.index for j in m.jobs] == [0, 1, 2, 3]


def test_csv_rows_typed_conversion_empty_cells_and_locations(tmp_path):
    csv_text = (
        "id,image_url,prompt,video_length,extend_prompt,is_premium_model,count,"
        "add_audio.audio_type,add_audio.audio_url,resolution\n"
        f"r1,{IMG},\"waves, then gulls\",10,true,no,2,2,https://example.com/a.mp3,\n"
        "\n"
        f"r2,{IMG},\"a prompt\non two lines\",,,,,,,4k\n"
        f"r3,{IMG},007,5,0,1,,1,,\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text(csv_text)
    m = load(tmp_path, HEAD + "defaults:\n  resolution: 1080p\njobs_file: data/rows.csv\n")
    r1, r2, r3 = m.jobs
    assert (r1.prompt, r1.video_length, r1.extend_prompt, r1.is_premium_model, r1.count) == \
        ("waves, then gulls", 10, True, False, 2)
    assert r1.add_audio.as_dict() == {"audio_type": 2, "audio_url": "https://example.com/a.mp3"}
    assert r1.resolution == "1080p"                   # empty cell: the default applies
    assert (r2.resolution, r2.video_length, r2.extend_prompt) == ("4k", 5, None)
    assert r3.prompt == "007" and r3.extend_prompt is False and r3.add_audio.audio_type == 1
    rows = tmp_path / "data" / "rows.csv"
    assert [j.source for j in m.jobs] == [f"{rows}:2", f"{rows}:4", f"{rows}:6"]


def test_csv_row_problems_point_at_the_data_file_line(tmp_path):
    p = one(tmp_path, HEAD + "jobs_file: rows.csv\n", rows_dot_csv=(
        f"id,image_url,prompt,video_length\nok,{IMG},a,5\nx,{IMG},\"multi\nline\",5\n"
        f"beach,{IMG},c,seven\n"))
    assert (p.file, p.line, p.where) == (str(tmp_path / "rows.csv"), 5, "jobs[2] (id beach)")
    assert p.what == "video_length is 'seven', not one of 5, 10"


def test_jsonl_rows_and_their_locations(tmp_path):
    lines = [json.dumps({"image_url": IMG, "prompt": "a"}), "",
             json.dumps({"image_url": IMG, "prompt": "b", "resolution": "8k"}),
             json.dumps({"image_url": IMG})]
    found = _problems(tmp_path, HEAD + "jobs_file: rows.ndjson\n",
                      rows_dot_ndjson="\n".join(lines) + "\n")
    assert [(Path(p.file).name, p.line, p.where) for p in found] == [
        ("rows.ndjson", 3, "jobs[1]"), ("rows.ndjson", 4, "jobs[2]")]


def _problems(tmp_path, text, **files):
    from manifest_helpers import problems
    return problems(tmp_path, text, **files)


def test_rows_duplicate_an_inline_job(tmp_path):
    p = one(tmp_path, HEAD + f"jobs:\n  - image_url: {IMG}\n    prompt: a\njobs_file: r.jsonl\n",
            r_dot_jsonl=json.dumps({"image_url": IMG, "prompt": "a"}) + "\n")
    assert p.file.endswith("r.jsonl") and p.line == 1
    assert f"same request as jobs[0] ({tmp_path / 'm.yaml'}:3)" in p.what


def test_job_fields_id_fingerprint_and_source(tmp_path):
    m = load(tmp_path, HEAD + f"""\
jobs:
  - image_url: {IMG}
    prompt: a
    webhook_url: https://hooks.example.com/x
  - id: mine
    image_url: {IMG}
    prompt: b
""")
    a, b = m.jobs
    fields = {"image_url": IMG, "prompt": "a", "webhook_url": "https://hooks.example.com/x",
              **BUILTIN_DEFAULTS}
    assert a.id == stable_id(fields, None) and not a.explicit_id
    assert a.fingerprint == request_fingerprint(fields, None)
    assert b.id == "mine" and b.explicit_id
    assert b.fingerprint == request_fingerprint({"image_url": IMG, "prompt": "b",
                                                 **BUILTIN_DEFAULTS}, None)
    assert a.source.endswith("m.yaml:3") and b.source.endswith("m.yaml:6")


def test_float_lengths_are_normalised_to_int(tmp_path):
    m = load(tmp_path, HEAD + f"jobs:\n  - image_url: {IMG}\n    prompt: a\n"
             "    video_length: 10.0\n    add_audio: {audio_type: 1.0}\n")
    assert type(m.jobs[0].video_length) is int and type(m.jobs[0].add_audio.audio_type) is int


def _ids(tmp_path, prompts):
    body = "".join(f"  - image_url: {IMG}\n    prompt: {p}\n" for p in prompts)
    m = load(tmp_path, HEAD + "jobs:\n" + body)
    return {j.prompt: j.id for j in m.jobs}


def test_ids_are_stable_under_reorder_insert_and_delete(tmp_path):
    base = _ids(tmp_path, ["a", "b", "c"])
    assert len(set(base.values())) == 3
    assert _ids(tmp_path, ["c", "a", "b"]) == base                       # reorder
    inserted = _ids(tmp_path, ["a", "new", "b", "c"])                    # insert
    assert {k: inserted[k] for k in base} == base
    assert _ids(tmp_path, ["a", "c"]) == {"a": base["a"], "c": base["c"]}  # delete


def test_ids_are_stable_across_sources(tmp_path):
    inline = load(tmp_path, HEAD + f"jobs:\n  - image_url: {IMG}\n    prompt: a\n").jobs[0]
    row = load(tmp_path, HEAD + "jobs_file: r.csv\n",
               r_dot_csv=f"image_url,prompt\n{IMG},a\n").jobs[0]
    cell = load(tmp_path, HEAD + f"matrix:\n  image_url: ['{IMG}']\n  prompt: [a]\n").jobs[0]
    assert inline.id == row.id == cell.id


def test_id_changes_with_what_is_generated(tmp_path):
    a = load(tmp_path, HEAD + f"jobs:\n  - image_url: {IMG}\n    prompt: a\n").jobs[0]
    b = load(tmp_path, HEAD + f"jobs:\n  - image_url: {IMG}\n    prompt: a\n"
             "    resolution: 4k\n").jobs[0]
    c = load(tmp_path, HEAD + f"defaults:\n  resolution: 4k\njobs:\n  - image_url: {IMG}\n"
             "    prompt: a\n").jobs[0]
    assert a.id != b.id and b.id == c.id


def test_settings_defaults_and_overrides(tmp_path):
    m = load(tmp_path, HEAD + f"jobs:\n  - image_url: {IMG}\n    prompt: a\n", )
    # relative output dirs are relative to the manifest file, not to the working directory
    assert m.name == "m" and m.output.dir == tmp_path / "output" / "m"
    assert (m.api.base_url, m.api.concurrency, m.api.poll_interval, m.api.poll_batch) == \
        ("https://openapi.akool.com", 5, 5.0, 50)
    assert m.budget.max_credits is None and not m.budget.prices.overridden
    m = load(tmp_path, HEAD + f"""\
name: spring
api: {{base_url: 'http://127.0.0.1:8080/', concurrency: 2, poll_interval: 0.5, poll_batch: 100}}
budget: {{max_credits: 100, prices: {{720p: {{5: 18}}}}}}
output: {{dir: out/x, filename: '{{index}}.mp4', report: r.csv, delete_remote: true}}
jobs:
  - image_url: {IMG}
    prompt: a
""")
    assert m.name == "spring" and m.output.dir == tmp_path / "out" / "x"
    assert m.api.base_url == "http://127.0.0.1:8080" and m.api.poll_batch == 100
    assert m.budget.max_credits == 100 and m.budget.prices.video["720p"][5] == 18
    assert m.budget.prices.overridden == {"720p/5"}
    assert m.output.delete_remote and m.output.report == "r.csv"


def test_name_defaults_to_the_stem_and_an_unusable_stem_is_explained(tmp_path):
    (tmp_path / "my batch.yaml").write_text(HEAD + f"jobs:\n  - image_url: {IMG}\n    prompt: a\n")
    from batchgen.errors import ManifestError
    from batchgen.manifest import load_manifest
    try:
        load_manifest(tmp_path / "my batch.yaml")
    except ManifestError as exc:
        assert "name:" in exc.problems[0].fix
    else:
        raise AssertionError("expected a ManifestError")


def test_example_manifest_loads(tmp_path):
    from batchgen.manifest import load_manifest
    m = load_manifest(Path(__file__).parent.parent / "manifests" / "example.yaml")
    assert len(m.jobs) == 6
    assert any(j.effect_code == "squish_89244231312" and j.prompt is None for j in m.jobs)
    assert any(j.audio_type == 2 and j.audio_url for j in m.jobs)
    assert any(j.explicit_id for j in m.jobs) and any(not j.explicit_id for j in m.jobs)
