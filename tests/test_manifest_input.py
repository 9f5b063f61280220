"""Bad input never raises anything but ManifestError, with one located line each."""

from __future__ import annotations

import pytest
from manifest_helpers import HEAD, IMG, load, one, problems

from batchgen.errors import ManifestError
from batchgen.manifest import MAX_MANIFEST_BYTES, load_manifest

JOB = f"jobs:\n  - image_url: {IMG}\n    prompt: waves\n"


def raw_problems(path):
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value.problems


def test_missing_manifest(tmp_path):
    [p] = raw_problems(tmp_path / "nope.yaml")
    assert p.line == 1 and "does not exist" in p.what


def test_directory_instead_of_manifest(tmp_path):
    [p] = raw_problems(tmp_path)
    assert "is a directory" in p.what


def test_unreadable_manifest(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + JOB)
    path.chmod(0)
    try:
        with open(path, "rb"):
            pytest.skip("running as a user that can read anything")
    except PermissionError:
        pass
    [p] = raw_problems(path)
    assert "permission denied" in p.what


@pytest.mark.parametrize("text, line, words", [
    ("", 1, "the manifest is empty"),
    ("# only a comment\n", 1, "the manifest is empty"),
    ("- a\n- b\n", 1, "a list, not a mapping"),
    ("just words\n", 1, "a single value"),
    ("version: 1\njobs: [\n", 3, "not valid YAML"),
    ("version: 1\n  bad: indent\n", 2, "not valid YAML"),
    ("version: 1\n---\nversion: 1\n", 2, "not valid YAML"),
    ("version: 1\njobs:\n\t- x\n", 3, "not valid YAML"),
])
def test_not_yaml(tmp_path, text, line, words):
    found = problems(tmp_path, text)
    assert found[0].line == line and words in found[0].what
    assert "\n" not in str(found[0])


def test_binary_junk(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"version: 1\n\x00\x01\x02\xff\xfe")
    [p] = raw_problems(path)
    assert p.line == 2 and "binary" in p.what


def test_not_utf8(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"version: 1\njobs:\n  - prompt: caf\xe9\n")
    [p] = raw_problems(path)
    assert p.line == 3 and "not UTF-8" in p.what and "UTF-8" in p.fix


def test_utf16(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes((HEAD + JOB).encode("utf-16"))
    [p] = raw_problems(path)
    assert "UTF-16" in p.what


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (HEAD + JOB).encode())
    assert len(load_manifest(path).jobs) == 1


def test_huge_file_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "m.yaml"
    with path.open("wb") as f:
        f.write(b"version: 1\n")
        f.truncate(50 * 1024 * 1024)
    [p] = raw_problems(path)
    assert f"larger than {MAX_MANIFEST_BYTES // 2**20} MB" in p.what


def test_duplicate_keys_are_errors(tmp_path):
    found = problems(tmp_path, HEAD + f"jobs:\n  - image_url: {IMG}\n    prompt: a\n"
                     "    prompt: b\n")
    assert found[0].line == 5 and "duplicate key 'prompt' (first at line 4)" in found[0].what


def test_anchors_aliases_and_merge_keys_work(tmp_path):
    m = load(tmp_path, HEAD + f"""\
x-base: &base
  image_url: {IMG}
  resolution: 1080p
""".replace("x-base", "defaults") + """\
jobs:
  - <<: *base
    prompt: a
    resolution: 4k
  - prompt: b
""")
    assert [(j.resolution, j.prompt) for j in m.jobs] == [("4k", "a"), ("1080p", "b")]


def test_billion_laughs_is_refused_quickly(tmp_path):
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
        for i in range(9))
    p = one(tmp_path, text)
    assert "expands to more than" in p.what


def test_deep_nesting(tmp_path):
    p = one(tmp_path, HEAD + "jobs: " + "[" * 200 + "]" * 200 + "\n")
    assert "nest" in p.what


def test_recursive_alias(tmp_path):
    p = one(tmp_path, HEAD + "jobs: &a [*a]\n")
    assert "contains itself" in p.what


@pytest.mark.parametrize("text", ["version: 1\njobs: 5\n", "version: [1]\nmatrix: x\n",
                                  "version: 1\nname: 5\njobs: [[]]\n", "{5: 1}\n",
                                  "version: 1\n? [a]\n: b\n", "version: 1\njobs: !!int x\n",
                                  "version: 1\njobs:\n  - {image_url: [x], prompt: {}}\n"])
def test_wrong_types_never_raise_anything_else(tmp_path, text):
    assert problems(tmp_path, text)


def test_missing_jobs_file(tmp_path):
    p = one(tmp_path, HEAD + "jobs_file: more.csv\n")
    assert p.file.endswith("m.yaml") and p.line == 2
    assert "does not exist" in p.what and "relative to the manifest" in p.fix


def test_jobs_file_with_unknown_extension(tmp_path):
    p = one(tmp_path, HEAD + "jobs_file: more.txt\n", more_dot_txt="x")
    assert p.line == 2 and ".csv" in p.what


def test_jobs_file_directory(tmp_path):
    (tmp_path / "d.csv").mkdir()
    p = one(tmp_path, HEAD + "jobs_file: d.csv\n")
    assert "directory" in p.what


def test_csv_unknown_column(tmp_path):
    p = one(tmp_path, HEAD + "jobs_file: more.csv\n",
            more_dot_csv=f"image_url,promt\n{IMG},a\n")
    assert p.file == str(tmp_path / "more.csv") and p.line == 1
    assert "unknown column 'promt'" in p.what and p.fix == "did you mean 'prompt'?"


def test_csv_ragged_row(tmp_path):
    p = one(tmp_path, HEAD + "jobs_file: more.csv\n",
            more_dot_csv=f"image_url,prompt\n{IMG},a\n{IMG},b,c\n")
    assert p.file.endswith("more.csv") and p.line == 3 and "3 cells" in p.what


def test_csv_binary_and_non_utf8(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"image_url,prompt\n\xff\xfe,x\n")
    p = one(tmp_path, HEAD + "jobs_file: a.csv\n")
    assert p.file.endswith("a.csv") and p.line == 2 and "UTF-8" in p.what
    (tmp_path / "b.jsonl").write_bytes(b"\x00\x00\x00")
    p = one(tmp_path, HEAD + "jobs_file: b.jsonl\n")
    assert "binary" in p.what


def test_csv_empty_file(tmp_path):
    p = one(tmp_path, HEAD + "jobs_file: a.csv\n", a_dot_csv="")
    assert p.file.endswith("a.csv") and "no header" in p.what


def test_jsonl_bad_lines(tmp_path):
    found = problems(tmp_path, HEAD + "jobs_file: a.jsonl\n",
                     a_dot_jsonl=f'{{"image_url": "{IMG}", "prompt": "a"}}\n{{oops\n[1]\n')
    assert [(p.line, p.what.split(":")[0]) for p in found] == [
        (2, "not valid JSON"), (3, "a JSON array, not an object")]


def test_jsonl_error_at_a_lines_end_names_that_lines_last_column(tmp_path):
    # the row is read with its "\n" (one copy less a row): the error must not be told at
    # "column 1" of the line after it
    row = f'{{"image_url": "{IMG}", "prompt": "a"'
    found = problems(tmp_path, HEAD + "jobs_file: a.jsonl\n", a_dot_jsonl=row + "\n")
    assert [(p.line, p.what) for p in found] == [
        (1, f"not valid JSON: Expecting ',' delimiter (column {len(row) + 1})")]


def test_jsonl_nested_thousands_deep_is_a_located_problem_not_a_crash(tmp_path):
    # json's C parser raises RecursionError (not ValueError) past ~1,000 levels
    deep = "[" * 100_000 + "]" * 100_000
    found = problems(tmp_path, HEAD + "jobs_file: a.jsonl\n",
                     a_dot_jsonl=f'{{"image_url": "{IMG}", "prompt": "a"}}\n'
                                 f'{{"prompt": {deep}}}\n')
    assert [(p.line, p.what) for p in found] == [(2, "the JSON is nested too deeply to read")]
