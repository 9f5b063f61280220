"""bench/code_shape.py measures what issue 12's size targets mean (lines, attributes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "bench" / "code_shape.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["code_shape"] = module
    spec.loader.exec_module(module)
    return module


SAMPLE = '''\
from enum import StrEnum
from typing import ClassVar


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Holder:
    LIMIT = 3
    kinds: ClassVar[set[str]] = set()
    name: str
    size = 0
    __slots__ = ("a", "b")

    def __init__(self) -> None:
        self.a, self.b = 1, 2
        self.c: int = 3
        self.size = 4

    def bump(self) -> None:
        self.d += 1

    @property
    def double(self) -> int:
        return self.size * 2


@staticmethod
def decorated(x):
    def inner():
        return x
    return inner
'''


def test_lengths_and_attributes_of_a_sample(tmp_path):
    shape_mod = _load()
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE)
    shape = shape_mod.measure(path, tmp_path)
    assert shape.lines == len(SAMPLE.splitlines())
    functions = {name: length for name, _line, length in shape.functions}
    assert functions == {"Holder.__init__": 4, "Holder.bump": 2, "Holder.double": 3,
                         "decorated": 5, "decorated.<locals>.inner": 2}
    classes = {name: attrs for name, _line, attrs in shape.classes}
    assert classes["Colour"] == []  # enum members are values, not state
    assert sorted(classes["Holder"]) == ["a", "b", "c", "d", "name", "size"]


def test_the_table_runs_on_the_package_and_check_reports_overruns(capsys):
    shape_mod = _load()
    assert shape_mod.main([str(ROOT / "batchgen")]) == 0
    out = capsys.readouterr().out
    assert "batchgen/store.py" in out and "modules," in out
    # with limits nothing can meet, --check says so
    assert shape_mod.main([str(ROOT / "batchgen"), "--max-module", "1", "--check"]) == 1
