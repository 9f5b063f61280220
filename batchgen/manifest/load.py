"""The entry points: a manifest file (or a mapping built in code) in, a `Manifest` out.

Owns reading the manifest file within its size limit, parsing its YAML (manifest_yaml.py),
turning a mapping given from Python into the values YAML could hold, and handing the
document to the loader (loader.py), which checks and expands it. Reading files is the only
I/O here; the cyclic garbage collector is paused for a load (see `load_manifest`).
"""

from __future__ import annotations

import gc
import os
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePath
from typing import Any

from batchgen.errors import ManifestError, Problem
from batchgen.manifest.loader import Loader
from batchgen.manifest.memo import LoadMemo
from batchgen.manifest.model import MAPPING_FILE, MAX_MANIFEST_BYTES, Manifest
from batchgen.manifest_rows import decode
from batchgen.manifest_schema import Validators, load_schema
from batchgen.manifest_yaml import MAX_DEPTH, ParsedYaml, parse_yaml


def load_manifest(path: str | Path, *, recall: bool = False) -> Manifest:
    """Load, validate and expand a manifest; raise ManifestError with every problem.

    With `recall` (`run`, `plan`, `status`, `report`), a load that passes is remembered
    (manifest/memo.py), and one whose inputs are all unchanged since is not expanded and
    checked again; `validate` always checks in full and leaves nothing behind."""
    # A 100,000-job manifest allocates a few hundred thousand small containers and no
    # cycles; the cyclic collector would rescan them again and again (a third of the
    # time). Pause it for the load and restore it whatever happens.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(Path(path), recall)
    finally:
        if was_enabled:
            gc.enable()


def load_manifest_data(doc: Mapping[str, Any], base_dir: str | Path | None = None
                       ) -> Manifest:
    """Validate and expand a manifest given as a mapping (a pipeline builds jobs in code).

    The same schema and rules as a YAML file apply. `base_dir` stands for the folder a
    manifest file would sit in: relative paths in it (`jobs_file`, `output.dir`) are taken
    from there; the current directory when None. A mapping has no file name to default
    `name` from, so it needs `name:`. Problems are located as `<mapping>:1: WHERE: ...`
    (there are no lines; WHERE names the job). Values must be what YAML could hold:
    mappings with text keys, lists/tuples, text, numbers, booleans, None (paths become
    text).
    """
    problems: list[Problem] = []
    value = _plain(doc, "", 0, problems)
    if problems:
        raise ManifestError(problems)
    if not isinstance(value, dict):
        raise ManifestError([Problem(MAPPING_FILE, 1, "", "the manifest is not a mapping",
                                     "pass a dict such as {'version': 1, 'name': ..., "
                                     "'jobs': [...]}")])
    if value.get("name") is None:
        raise ManifestError([Problem(MAPPING_FILE, 1, "", "a manifest given as a mapping "
                                     "has no file name to take its name from",
                                     "add 'name': 'my-batch' (letters, digits, '.', '_', '-')")])
    base = Path.cwd() if base_dir is None else Path(base_dir).absolute()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        manifest = Loader(base / MAPPING_FILE, ParsedYaml(value, {}),
                           Validators(load_schema()), [], file=MAPPING_FILE).load()
    finally:
        if was_enabled:
            gc.enable()
    if manifest.output.dir.is_absolute():
        return manifest
    # output.dir, like jobs_file, is relative to where the manifest "sits": base_dir
    return replace(manifest, output=replace(manifest.output, dir=base / manifest.output.dir))


def _plain(value: Any, where: str, depth: int, problems: list[Problem]) -> Any:
    """A copy of `value` made of the types a YAML document yields, or problems."""
    if depth > MAX_DEPTH:
        problems.append(Problem(MAPPING_FILE, 1, where, f"nested more than {MAX_DEPTH} levels "
                                "deep", "a manifest needs only a few levels"))
        return None
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(Problem(MAPPING_FILE, 1, where, f"key {key!r} is not text",
                                        "use text keys, as in YAML"))
                continue
            out[key] = _plain(item, f"{where}.{key}" if where else key, depth + 1, problems)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]", depth + 1, problems)
                for i, item in enumerate(value)]
    problems.append(Problem(MAPPING_FILE, 1, where, f"a {type(value).__name__} is not a "
                            "manifest value", "use text, numbers, booleans, lists and dicts"))
    return None


def _load(path: Path, recall: bool) -> Manifest:
    file = str(path)
    data, problem = read_limited(path, MAX_MANIFEST_BYTES)
    if problem is not None:
        raise ManifestError([Problem(file, 1, "", *problem)])
    text = decode(data, file)
    if isinstance(text, Problem):
        raise ManifestError([text])
    parsed, problems = parse_yaml(text, file)
    if parsed is None:
        raise ManifestError(problems)
    if not isinstance(parsed.value, dict):
        kind = "a list" if isinstance(parsed.value, list) else "a single value"
        raise ManifestError([*problems, Problem(
            file, 1, "", f"the manifest is {kind}, not a mapping of keys",
            "start with `version: 1` and put jobs under `jobs:`; see manifests/example.yaml")])
    return Loader(path, parsed, Validators(load_schema()), problems,
                  memo=LoadMemo(path, data) if recall else None).load()


def read_limited(path: Path, limit: int) -> tuple[bytes, tuple[str, str] | None]:
    """A file's bytes, or (what, fix) when it is missing, unreadable or over `limit`."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it would hang validate)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                return b"", (f"{path} is not a regular file (a pipe, socket or device)",
                             "name a file saved on disk")
            data = handle.read(limit + 1)
    except FileNotFoundError:
        return b"", (f"{path} does not exist", "check the path")
    except IsADirectoryError:
        return b"", (f"{path} is a directory, not a file", "name the file itself")
    except PermissionError:
        return b"", (f"{path} cannot be read: permission denied", "check its permissions")
    except OSError as exc:
        return b"", (f"{path} cannot be read: {exc.strerror or exc}", "check the path")
    if len(data) > limit:
        return b"", (f"{path} is larger than {limit // (1024 * 1024)} MB",
                     "check that it is the right file; put long job lists in a jobs_file")
    return data, None
