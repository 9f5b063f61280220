"""Schema and SPEC §3 rules: one minimal bad manifest per rule, checking file, line, text."""

from __future__ import annotations

import pytest
from manifest_helpers import HEAD, IMG, load, one, problems

JOB = f"""\
jobs:
  - image_url: {IMG}
    prompt: waves
"""


def test_unknown_top_level_key_suggests_the_right_one(tmp_path):
    p = one(tmp_path, HEAD + JOB + "budjet:\n  max_credits: 5\n")
    assert (p.file, p.line) == (str(tmp_path / "m.yaml"), 5)
    assert "unknown key 'budjet'" in p.what
    assert p.fix == "did you mean 'budget'?"
    assert str(p).startswith(f"{tmp_path / 'm.yaml'}:5: unknown key 'budjet' — did you mean")


def test_unknown_job_key_is_located_at_the_key_with_the_job(tmp_path):
    p = one(tmp_path, HEAD + f"""\
jobs:
  - id: beach
    image_url: {IMG}
    prompt: waves
    resoluton: 1080p
""")
    assert p.line == 6
    assert p.where == "jobs[0] (id beach)"
    assert "unknown key 'resoluton'" in p.what and "'resolution'" in p.fix
    assert str(p).endswith("jobs[0] (id beach): unknown key 'resoluton' — did you mean "
                           "'resolution'?")


@pytest.mark.parametrize("section, body, line", [
    ("api", "api:\n  concurency: 3\n", 6),
    ("output", "output:\n  filname: x\n", 6),
    ("budget", "budget:\n  prices:\n    720: {5: 3}\n", 7),
    ("defaults", "defaults:\n  promt: x\n", 6),
    ("add_audio", "defaults:\n  add_audio: {audio_type: 1, url: x}\n", 6),
    ("matrix", "matrix:\n  prompts: [a]\n", 6),
])
def test_unknown_keys_are_errors_at_every_level(tmp_path, section, body, line):
    p = one(tmp_path, HEAD + JOB + body)
    assert p.line == line
    assert "unknown key" in p.what


def test_id_in_defaults_explains_where_ids_go(tmp_path):
    p = one(tmp_path, HEAD + JOB + "defaults:\n  id: x\n")
    assert "single jobs" in p.fix


@pytest.mark.parametrize("field, value, hint", [
    ("resolution", "1080", "did you mean '1080p'?"),
    ("video_length", "7", "use one of 5, 10"),
    ("audio_type", "4", "use one of 1, 2, 3"),
])
def test_enums(tmp_path, field, value, hint):
    p = one(tmp_path, HEAD + JOB + f"    {field}: {value}\n")
    assert p.line == 5 and p.where == "jobs[0]"
    assert p.what.startswith(f"{field} is ") and "not one of" in p.what
    assert p.fix == hint


def test_version_is_required(tmp_path):
    p = one(tmp_path, JOB)
    assert p.line == 1 and "missing 'version'" in p.what and "version: 1" in p.fix


def test_version_must_be_1(tmp_path):
    p = one(tmp_path, "version: 2\n" + JOB)
    assert p.line == 1 and "reads version 1" in p.what


def test_version_true_is_not_1(tmp_path):
    p = one(tmp_path, "version: true\n" + JOB)
    assert "version" in p.what


def test_needs_jobs_matrix_or_jobs_file(tmp_path):
    p = one(tmp_path, HEAD + "name: x\n")
    assert p.line == 1 and "nothing to run" in p.what


@pytest.mark.parametrize("body, text", [
    ("api:\n  concurrency: 0\n", "below the minimum 1"),
    ("api:\n  poll_interval: 0\n", "must be more than 0"),
    ("api:\n  poll_batch: 101\n", "1 to 100"),
    ("api:\n  poll_batch: 0\n", "1 to 100"),
    ("api:\n  concurrency: many\n", "must be a whole number, not text"),
    ("budget:\n  max_credits: -1\n", "below the minimum 0"),
])
def test_api_and_budget_ranges(tmp_path, body, text):
    p = one(tmp_path, HEAD + JOB + body)
    assert p.line == 6 and text in p.what


def test_price_keys_must_be_video_lengths(tmp_path):
    p = one(tmp_path, HEAD + JOB + "budget:\n  prices:\n    720p:\n      7: 3\n")
    assert p.line == 8 and "'7' is not a video length" in p.what


def test_price_must_be_a_whole_number(tmp_path):
    p = one(tmp_path, HEAD + JOB + "budget:\n  prices:\n    add_audio: {5: lots}\n")
    assert p.line == 7 and "whole number" in p.what


@pytest.mark.parametrize("template, text", [
    ("{id}/{index}.mp4", "leaves the output dir"),
    ("../{id}.mp4", "leaves the output dir"),
    ("{idx}.mp4", "unknown field {idx}"),
    ("{resolution}.mp4", "same file name"),
    ("{}.mp4", "without a name"),
    ("{id.mp4", "not a valid template"),
    ("{index:zz}.mp4", "cannot be filled in"),
])
def test_output_filename_template(tmp_path, template, text):
    p = one(tmp_path, HEAD + JOB + f"output:\n  filename: '{template}'\n")
    assert p.line == 6 and text in p.what


def test_output_filename_with_format_spec_is_fine(tmp_path):
    m = load(tmp_path, HEAD + JOB + "output:\n  filename: '{index:05d}-{id}.mp4'\n")
    assert m.output.filename == "{index:05d}-{id}.mp4"


def test_report_stays_inside_the_output_dir(tmp_path):
    p = one(tmp_path, HEAD + JOB + "output:\n  report: ../r.csv\n")
    assert p.line == 6 and "leaves the output dir" in p.what


def test_audio_url_required_when_audio_type_2(tmp_path):
    p = one(tmp_path, HEAD + JOB + "    audio_type: 2\n")
    assert p.line == 5 and "audio_url is missing" in p.what


def test_audio_url_only_when_audio_type_2(tmp_path):
    p = one(tmp_path, HEAD + JOB + "    audio_url: https://example.com/a.mp3\n")
    assert p.line == 5 and "audio_type is 3, not 2" in p.what


def test_audio_url_from_defaults_can_be_dropped_with_null(tmp_path):
    m = load(tmp_path, HEAD + JOB + "    audio_type: 3\n    audio_url: null\n"
             "defaults:\n  audio_type: 2\n  audio_url: https://example.com/a.mp3\n")
    assert m.jobs[0].audio_type == 3 and m.jobs[0].audio_url is None


@pytest.mark.parametrize("add_audio, text", [
    ("{audio_type: 2}", "add_audio.audio_url is missing"),
    ("{audio_type: 1, audio_url: 'https://x.com/a.mp3'}", "add_audio.audio_type is 1, not 2"),
    ("{audio_type: 2, audio_url: 'x.mp3'}", "not an http(s) URL"),
])
def test_add_audio_rules(tmp_path, add_audio, text):
    found = problems(tmp_path, HEAD + JOB + f"    add_audio: {add_audio}\n")
    assert found[0].line == 5 and text in found[0].what


@pytest.mark.parametrize("add_audio, text", [
    ("{audio_type: 3}", "add_audio.audio_type is 3, not one of 1, 2"),
    ("{audio_url: 'https://x.com/a.mp3'}", "missing 'audio_type' in add_audio"),
    ("yes", "must be a mapping"),
])
def test_add_audio_schema(tmp_path, add_audio, text):
    p = one(tmp_path, HEAD + JOB + f"    add_audio: {add_audio}\n")
    assert p.line == 5 and text in p.what


def test_prompt_required_unless_effect_code(tmp_path):
    p = one(tmp_path, HEAD + f"jobs:\n  - image_url: {IMG}\n")
    assert p.line == 3 and p.what == "missing prompt" and "effect_code" in p.fix
    m = load(tmp_path, HEAD + f"jobs:\n  - image_url: {IMG}\n    effect_code: squish_1\n")
    assert m.jobs[0].prompt is None


def test_image_url_required(tmp_path):
    p = one(tmp_path, HEAD + "jobs:\n  - prompt: x\n")
    assert p.line == 3 and p.what == "missing image_url"


@pytest.mark.parametrize("field, value", [
    ("image_url", "ftp://example.com/a.jpg"),
    ("image_url", "/local/a.jpg"),
    ("image_url", "https://exa mple.com/a.jpg"),
    ("webhook_url", "example.com/hook"),
])
def test_urls_are_http(tmp_path, field, value):
    text = HEAD + f"jobs:\n  - prompt: p\n    image_url: {IMG}\n" if field != "image_url" else \
        HEAD + "jobs:\n  - prompt: p\n"
    p = one(tmp_path, text + f"    {field}: '{value}'\n")
    assert p.line >= 4 and "not an http(s) URL" in p.what and p.what.startswith(field)


def test_bad_default_url_is_reported_once(tmp_path):
    p = one(tmp_path, HEAD + "defaults:\n  image_url: ftp://bucket/a.jpg\n"
            "jobs:\n  - prompt: a\n  - prompt: b\n")
    assert p.line == 3 and p.what.startswith("defaults.image_url")


def test_ids_are_unique(tmp_path):
    p = one(tmp_path, HEAD + f"""\
jobs:
  - id: beach
    image_url: {IMG}
    prompt: a
  - id: beach
    image_url: {IMG}
    prompt: b
""")
    assert p.line == 6 and p.where == "jobs[1] (id beach)"
    assert "duplicate id 'beach'" in p.what and "m.yaml:3" in p.what


def test_same_request_twice_is_an_error_naming_both(tmp_path):
    p = one(tmp_path, HEAD + f"""\
jobs:
  - image_url: {IMG}
    prompt: a
  - image_url: {IMG}
    prompt: a
""")
    assert p.line == 5 and p.where == "jobs[1]"
    assert "same request as jobs[0]" in p.what and "m.yaml:3" in p.what
    assert "explicit id" in p.fix


def test_same_request_with_one_explicit_id_is_an_error(tmp_path):
    p = one(tmp_path, HEAD + f"""\
jobs:
  - id: one
    image_url: {IMG}
    prompt: a
  - image_url: {IMG}
    prompt: a
""")
    assert "same request as jobs[0]" in p.what


def test_same_request_with_two_explicit_ids_is_fine(tmp_path):
    m = load(tmp_path, HEAD + f"""\
jobs:
  - id: one
    image_url: {IMG}
    prompt: a
  - id: two
    image_url: {IMG}
    prompt: a
""")
    assert [j.id for j in m.jobs] == ["one", "two"]


def test_webhook_url_alone_does_not_make_a_different_request(tmp_path):
    p = one(tmp_path, HEAD + f"""\
jobs:
  - image_url: {IMG}
    prompt: a
  - image_url: {IMG}
    prompt: a
    webhook_url: https://hooks.example.com/x
""")
    assert "same request" in p.what


def test_duplicate_in_matrix_is_reported_once(tmp_path):
    p = one(tmp_path, HEAD + f"matrix:\n  image_url: ['{IMG}']\n  prompt: [a, b, a]\n")
    assert p.line == 2 and "same request as jobs[0]" in p.what
    assert p.where == "matrix, jobs[2]"


def test_matrix_rule_problem_is_reported_once_for_all_combinations(tmp_path):
    p = one(tmp_path, HEAD + f"matrix:\n  image_url: ['{IMG}', '{IMG}?b']\n"
            "  prompt: [a, b]\n  audio_type: [2]\n")
    assert p.line == 5 and p.where == "matrix, jobs[0] and 3 more"


def test_matrix_value_errors_point_at_the_item(tmp_path):
    p = one(tmp_path, HEAD + f"matrix:\n  image_url: ['{IMG}']\n  resolution:\n"
            "    - 720p\n    - 8k\n")
    assert p.line == 6 and p.what.startswith("matrix.resolution[1] is '8k'")


@pytest.mark.parametrize("body, text", [
    ("matrix: {}\n", "matrix has no keys"),
    ("matrix:\n  prompt: []\n", "matrix.prompt is an empty list"),
    ("matrix:\n  prompt: a\n", "matrix.prompt must be a list"),
])
def test_matrix_shape(tmp_path, body, text):
    assert text in one(tmp_path, HEAD + body).what


def test_count_and_model_name_are_accepted(tmp_path):
    m = load(tmp_path, HEAD + JOB + "    count: 3\n    model_name: AkoolImage2VideoFastV1\n")
    assert (m.jobs[0].count, m.jobs[0].model_name) == (3, "AkoolImage2VideoFastV1")


def test_count_is_1_to_10(tmp_path):
    p = one(tmp_path, HEAD + JOB + "    count: 11\n")
    assert p.line == 5 and "above the maximum 10" in p.what


@pytest.mark.parametrize("name, ok", [("spring-2025.v1_b", True), ("a b", False),
                                      ("x/y", False), ("..", False)])
def test_name_pattern(tmp_path, name, ok):
    text = HEAD + f"name: '{name}'\n" + JOB
    if ok:
        assert load(tmp_path, text).name == name
    else:
        assert one(tmp_path, text).line == 2


def test_all_problems_are_reported_sorted_by_line(tmp_path):
    found = problems(tmp_path, HEAD + f"""\
api:
  poll_batch: 500
jobs:
  - image_url: {IMG}
    resolution: 8k
    prompt: a
  - image_url: {IMG}
  - image_url: nope
    prompt: c
""")
    assert [p.line for p in found] == [3, 6, 8, 9]


def test_wrong_types_are_explained(tmp_path):
    p = one(tmp_path, HEAD + JOB + "    prompt: 5\n".replace("prompt", "negative_prompt"))
    assert p.what == "negative_prompt must be text, not a number"
    assert "quotes" in p.fix
    p = one(tmp_path, HEAD + "jobs:\n  - just a string\n")
    assert p.line == 3 and "the job must be a mapping" in p.what
    p = one(tmp_path, HEAD + "jobs: {a: 1}\n")
    assert p.line == 2 and "jobs must be a list" in p.what


def test_a_matrix_beyond_the_job_limit_is_refused_before_expanding(tmp_path):
    values = ", ".join(f"p{i}" for i in range(101))
    p = one(tmp_path, HEAD + f"matrix:\n  image_url: ['{IMG}']\n  prompt: [{values}]\n"
            f"  negative_prompt: [{values}]\n  webhook_url: [{', '.join([repr(IMG)] * 100)}]\n")
    assert p.line == 2 and "1,020,100 jobs" in p.what and "limit of 1,000,000" in p.what
