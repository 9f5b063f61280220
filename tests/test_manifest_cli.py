"""`validate` and `plan` through cli.main: exit 2, located errors, never a traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from batchgen.cli import main

EXAMPLE = Path(__file__).parent.parent / "manifests" / "example.yaml"
IMG = "https://example.com/a.jpg"


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_validate_example_ok():
    code, out, err = cli("validate", str(EXAMPLE))
    assert code == 0 and out.startswith("ok: 6 jobs") and not err


def test_plan_json_of_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("plan", "--json", str(EXAMPLE))
    assert code == 0 and json.loads(out)["total_credits"] == 125


BAD = {
    "not_yaml": (b"version: 1\njobs: [\n", 3),
    "empty": (b"", 1),
    "list": (b"- a\n", 1),
    "binary": (b"\x00\x01\x02\x03", 1),
    "latin1": (b"version: 1\nname: caf\xe9\n", 2),
    "wrong_types": (b"version: 1\njobs: 5\n", 2),
    "unknown_key": (b"version: 1\nmatrix: {image_url: [x]}\nbudjet: {}\n", 3),
    "missing_jobs_file": (b"version: 1\njobs_file: nope.csv\n", 2),
    "duplicate_key": (b"version: 1\nversion: 1\njobs: []\n", 2),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_bad_manifests_exit_2_with_a_located_line(tmp_path, monkeypatch, case, command):
    monkeypatch.chdir(tmp_path)
    data, line = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    code, out, err = cli(command, str(path))
    assert code == 2
    assert "Traceback" not in out + err
    assert f"{path}:{line}:" in err


def test_bad_csv_rows_are_located_in_the_data_file(tmp_path):
    (tmp_path / "rows.csv").write_text(f"image_url,promt\n{IMG},a\n")
    (tmp_path / "m.yaml").write_text("version: 1\njobs_file: rows.csv\n")
    code, _, err = cli("validate", str(tmp_path / "m.yaml"))
    assert code == 2 and f"{tmp_path / 'rows.csv'}:1: unknown column 'promt'" in err


def test_huge_manifest_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    with path.open("wb") as f:
        f.truncate(50 * 1024 * 1024)
    code, _, err = cli("validate", str(path))
    assert code == 2 and "larger than 20 MB" in err and "Traceback" not in err
