"""The content hashes of local files, remembered so a re-run does not read every file again.

A manifest over a folder of 300 images names each by its SHA-256 (local_assets.py), and
every command that loads it (`validate`, `plan`, `run`, `status`) used to read every byte
of every file to get it. Here a file's hash is kept by its absolute path and `signature`
(device, inode, size, mtime_ns, ctime_ns), as git's index keeps it: a file whose signature
is unchanged is not read in full again (only its first bytes, which the format check
needs). An edit in place changes the ctime even when the mtime is set back (`touch -d`,
a tool that restores times), a file replaced by another changes the inode: either is
hashed anew. Like git's index, a file modified within the last 2 seconds is not
remembered: a same-size edit in the same clock tick of a coarse filesystem would
otherwise go unseen. (Before, the key was (path, size, mtime) alone, in the table
`hashes`; the table is now `signed_hashes`, and an old file's `hashes` is left as it is.)
(The run checks each file's bytes against its hash once more as it uploads it, so even
then no object is stored under another content's name: uploads.py.)

The cache is a small SQLite file in the manifest folder's working folder,
`.batchgen-work/file-hashes.db` (where a bucket output keeps its state): the manifest is
loaded, and job ids derived from these hashes, before any output dir or `--state` is
known, and `validate`/`plan` benefit as much as `run`. It is only a cache: a folder that
cannot be written, or a damaged file, means files are hashed as before, never an error.

Deliberately not here: what a file is (assets.py), which files a manifest names
(local_assets.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

#: the cache's file, in the manifest folder's working folder (outputs.WORK_DIR)
CACHE_PATH = Path(".batchgen-work") / "file-hashes.db"
#: files modified more recently than this (ns) are hashed but not remembered
RACY_NS = 2_000_000_000

log = logging.getLogger(__name__)

#: (device, inode, size, mtime_ns, ctime_ns): a file as stat saw it
Signature = tuple[int, int, int, int, int]


def signature(st: os.stat_result) -> Signature:
    """What of a stat says the file is the same one, unedited (this cache, the load memo)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileHashes:
    """(path, signature) -> sha256 hex, opened on first use; never raises."""

    def __init__(self, db_path: Path | None) -> None:
        self._path = db_path
        self._db: sqlite3.Connection | None = None
        #: lookups answered from the cache / files hashed anew (for tests and benches)
        self.hits = 0
        self.misses = 0

    @classmethod
    def beside(cls, base_dir: Path) -> FileHashes:
        """The cache of a manifest whose folder is `base_dir`."""
        return cls(base_dir / CACHE_PATH)

    def get(self, path: Path, st: os.stat_result) -> str | None:
        """The remembered hash of this file, when its signature is unchanged."""
        db = self._open()
        found = None
        if db is not None:
            try:
                row = db.execute("SELECT sha256 FROM signed_hashes WHERE path = ? AND "
                                 "dev = ? AND ino = ? AND size = ? AND mtime_ns = ? AND "
                                 "ctime_ns = ?", (str(path), *signature(st))).fetchone()
                found = row[0] if row else None
            except sqlite3.Error as exc:
                self._give_up(exc)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, path: Path, st: os.stat_result, sha256: str) -> None:
        """Remember a file's hash (unless it changed within the last 2 seconds)."""
        if max(st.st_mtime_ns, st.st_ctime_ns) > time.time_ns() - RACY_NS:
            return
        db = self._open()
        if db is None:
            return
        try:
            db.execute("INSERT OR REPLACE INTO signed_hashes (path, dev, ino, size, "
                       "mtime_ns, ctime_ns, sha256) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (str(path), *signature(st), sha256))
        except sqlite3.Error as exc:
            self._give_up(exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _open(self) -> sqlite3.Connection | None:
        if self._db is not None or self._path is None:
            return self._db
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, timeout=5, isolation_level=None)
            # a cache: losing the last entries to a power cut costs a re-hash, nothing more
            db.execute("PRAGMA synchronous = OFF")
            # a new table, so a file written by an older batchgen (`hashes`, keyed on
            # size and mtime only) keeps working for both
            db.execute("CREATE TABLE IF NOT EXISTS signed_hashes (path TEXT PRIMARY KEY, "
                       "dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL, "
                       "mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, "
                       "sha256 TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            self._give_up(exc)
            return None
        self._db = db
        return db

    def _give_up(self, exc: Exception) -> None:
        """No cache for the rest of this load: files are hashed as before."""
        log.debug("file hash cache %s not used: %s", self._path, exc)
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None
        self._path = None
