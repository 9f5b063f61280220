"""Helpers shared by the manifest tests: write a manifest, load it, collect problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from batchgen.errors import ManifestError, Problem
from batchgen.manifest import Manifest, load_manifest

HEAD = "version: 1\n"
IMG = "https://example.com/a.jpg"


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **files: str) -> Manifest:
    for name, content in files.items():
        write(tmp_path, content, name.replace("_dot_", "."))
    return load_manifest(write(tmp_path, text))


def problems(tmp_path: Path, text: str, **files: str) -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        load(tmp_path, text, **files)
    return info.value.problems


def one(tmp_path: Path, text: str, **files: str) -> Problem:
    found = problems(tmp_path, text, **files)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]
