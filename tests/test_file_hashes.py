"""Local files are hashed once: a re-load of a folder reads only each file's first bytes
when its size and mtime are unchanged (file_hashes.py), and an edit is always seen."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from asset_hosts import png

from batchgen import file_hashes, local_assets
from batchgen.api import load
from batchgen.file_hashes import CACHE_PATH


def images(root: Path, n: int, *, age: float = 60.0) -> list[Path]:
    """n distinct PNGs in root/images, last modified `age` seconds ago."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.png"
        path.write_bytes(png(96 + i, 96))
        old = time.time() - age
        os.utime(path, (old, old))
        paths.append(path)
    return paths


def doc() -> dict[str, Any]:
    return {"version": 1, "name": "hashes", "output": {"dir": "out"},
            "storage": {"upload": "s3://some-bucket/in"},
            "matrix": {"image_url": ["images/*.png"], "prompt": ["a", "b"]}}


@pytest.fixture
def full_reads(monkeypatch) -> list[Path]:
    """Every file read in full to hash it, in order."""
    reads: list[Path] = []
    real = local_assets._hash

    def counting(path: Path) -> tuple[str, bytes, int]:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(local_assets, "_hash", counting)
    # images() wrote the files a moment ago (their ctime is now): trust their times (the
    # 2 s rule has its own test below)
    monkeypatch.setattr(file_hashes, "RACY_NS", 0)
    return reads


def ids_and_urls(root: Path) -> tuple[list[str], list[str]]:
    jobs = list(load(doc(), root).jobs)
    return [j.id for j in jobs], [str(j.request_fields()["image_url"]) for j in jobs]


def test_a_reload_of_a_folder_reads_no_file_in_full(tmp_path, full_reads):
    paths = images(tmp_path, 30)
    first = ids_and_urls(tmp_path)
    assert len(full_reads) == 30 and (tmp_path / CACHE_PATH).is_file()
    full_reads.clear()
    assert ids_and_urls(tmp_path) == first  # same jobs, same objects
    assert full_reads == []  # not one file read in full again
    # an edited file (new mtime) is hashed anew, and only it: its jobs change
    paths[7].write_bytes(png(300, 300))
    old = time.time() - 30
    os.utime(paths[7], (old, old))
    ids, urls = ids_and_urls(tmp_path)
    assert full_reads == [paths[7].absolute()]
    assert len(set(urls) - set(first[1])) == 1 and len(set(ids) - set(first[0])) == 2


def test_a_file_modified_within_two_seconds_is_not_remembered(tmp_path, full_reads,
                                                               monkeypatch):
    monkeypatch.setattr(file_hashes, "RACY_NS", 2_000_000_000)
    images(tmp_path, 2, age=0)  # just written: a same-size edit could share its mtime
    ids_and_urls(tmp_path)
    ids_and_urls(tmp_path)
    assert len(full_reads) == 4


def test_an_unwritable_cache_only_costs_the_re_reads(tmp_path, full_reads):
    images(tmp_path, 3)
    (tmp_path / CACHE_PATH.parent).write_text("a file where the folder should be")
    first = ids_and_urls(tmp_path)
    assert ids_and_urls(tmp_path) == first and len(full_reads) == 6


def test_a_cache_written_by_an_older_batchgen_keeps_working(tmp_path, full_reads):
    """file-hashes.db from before the signature key (table `hashes`: path, size, mtime)."""
    paths = images(tmp_path, 2)
    (tmp_path / CACHE_PATH).parent.mkdir()
    with sqlite3.connect(tmp_path / CACHE_PATH) as db:
        db.execute("CREATE TABLE hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                   "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)")
        st = paths[0].stat()  # a stale row: the old key matches, the hash is wrong
        db.execute("INSERT INTO hashes VALUES (?, ?, ?, ?)",
                   (str(paths[0].absolute()), st.st_size, st.st_mtime_ns, "0" * 64))
    first = ids_and_urls(tmp_path)
    assert len(full_reads) == 2 and not any("0" * 64 in u for u in first[1])
    assert ids_and_urls(tmp_path) == first and len(full_reads) == 2
