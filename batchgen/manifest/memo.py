"""A validated load remembered, so a re-run of an unchanged manifest does not expand it again.

Loading a 1,000,000-job manifest checks every row (8 s on a quiet 2-core VM); `run`,
`plan`, `status` and `report` then need only what that pass produced: the number of jobs,
the expansion's digest (`Jobs.digest`, which `Store.sync` compares with the state's),
the price shapes and the local files to upload. A load is a function of its inputs, so
when none of them changed, its result is the one already validated (issue 18).

The inputs, all compared before a remembered result is used:
- the manifest's own bytes (SHA-256) and its resolved path (symlinks followed: the same
  file is one row however its path is spelled, from whatever cwd). The path as typed is
  no input, so `run m.yaml` then cron's `cd / && run /srv/x/m.yaml` recall one load: the
  remembered digest names files relative to the manifest's folder
  (`ExpansionDigest.add`), and the memo sits in the folder the path names, the one
  relative paths are read from (a symlink to the manifest from another folder reads
  that folder's `jobs_file`, and has that folder's memo);
- every other file the load read — the `jobs_file`, each local image or audio — by
  (device, inode, size, mtime_ns, ctime_ns), as git's index and file_hashes.py do: an
  edit in place changes the mtime and the ctime (which no one can set back), a file
  replaced by another changes the inode. A file changed within 2 s of the load's start is
  never remembered (a second edit in the same clock tick would keep its times), judged by
  the clock of the memo's filesystem (`.batchgen-work/loads.clock`, written as the load
  starts: a file server's clock may be seconds behind this host's); a file on another
  filesystem, whose clock is not known, is not remembered either. The files are looked at
  again once the load ends (changed while it read them: not remembered);
- the `jobs_file`'s bytes too (BLAKE2b, hashed before the load reads it and again after):
  on NFS, sshfs or SMB a client's attribute cache serves the old stat() for seconds after
  another host rewrote a file, while open() reads the new bytes, so a signature alone
  would recall the old jobs (and a state synced from them would send the old prompts).
  0.3-0.4 s for the 95 MB of a 1,000,000-row JSONL on a loaded 2-core VM, against 8 s and
  more for the full load. (Local images are named by their SHA-256 through
  file_hashes.py, keyed on their signature: not hashed again here);
- each glob's list of files (`images/*.png`), matched again (from its absolute folder);
- batchgen itself (the bytes of each of its files: another version, or an edited rule,
  checks anew, even where installs fix every mtime) and the versions of Python,
  jsonschema and PyYAML.
Anything different, missing or unreadable, or a row not exactly as it was written
(memo_row.py checks each value, and the row's seal): the manifest is loaded and validated
in full, as before. `validate` always loads in full (and remembers nothing).

The memo is a small SQLite file beside file-hashes.db, `.batchgen-work/loads.db` in the
manifest's folder: the load happens before any output dir or `--state` is known. It is a
cache: a folder that cannot be written, or a damaged file, only means a full load.
Deliberately not here: the checks themselves (loader.py and below).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.file_hashes import RACY_NS, Signature, signature
from batchgen.manifest import memo_row
from batchgen.manifest.memo_row import Remembered

#: the memo's file, in the manifest folder's working folder (beside file-hashes.db)
MEMO_PATH = Path(".batchgen-work") / "loads.db"
#: a file written beside it at the start of a full load: its mtime is that filesystem's now
CLOCK_PATH = MEMO_PATH.with_suffix(".clock")
#: bump when what is remembered, or how it is keyed, changes (4: the resolved path, not
#: the path as typed; globs' folders absolute)
FORMAT = 4
#: the memo's table; a file from before the row's seal (memo_row.py) has it dropped
_TABLE = ("CREATE TABLE IF NOT EXISTS loads (manifest TEXT PRIMARY KEY, key TEXT NOT NULL, "
          "count INTEGER NOT NULL, digest TEXT NOT NULL, shapes_kinds TEXT NOT NULL, "
          "shapes_order BLOB NOT NULL, uploads TEXT NOT NULL, inputs TEXT NOT NULL, "
          "seal TEXT NOT NULL)")

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """The files and globs one load read besides the manifest (recorded as it reads)."""

    #: absolute path -> its signature when first read
    files: dict[str, Signature] = field(default_factory=dict)
    #: absolute path -> the BLAKE2b of its bytes (a jobs_file: see the module's docstring)
    contents: dict[str, str] = field(default_factory=dict)
    #: [base folder, pattern] -> the files it matched
    globs: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: (device, now in ns) by the clock of the filesystem holding the memo, taken before
    #: any file is read (LoadMemo.clock); None: unknown, so nothing is remembered
    clock: tuple[int, int] | None = None
    #: a file changed within RACY_NS of being read, could not be looked at, or is on
    #: another filesystem than the clock's (whose clock is not known)
    racy: bool = False

    def file(self, path: Path, st: os.stat_result | None = None, *,
             content: bool = False) -> None:
        """A file the load reads (stat it, and hash it with `content`, before reading it)."""
        key = str(path.absolute())
        if key in self.files:
            return
        try:
            st = st if st is not None else os.stat(key)
            if content:
                self.contents[key] = content_digest(key)
        except OSError:
            self.racy = True
            return
        if self.clock is None or st.st_dev != self.clock[0] or \
                max(st.st_mtime_ns, st.st_ctime_ns) > self.clock[1] - RACY_NS:
            self.racy = True
        self.files[key] = signature(st)

    def glob(self, base: Path, pattern: str, found: list[str]) -> None:
        """A glob's files; its folder kept absolute (a recall may come from another cwd)."""
        self.globs[(str(base.absolute()), pattern)] = list(found)

    def unchanged(self) -> bool:
        """Every file as recorded and every glob matching the same files."""
        for path, sig in self.files.items():
            try:
                if signature(os.stat(path)) != sig:
                    return False
            except OSError:
                return False
        for path, digest in self.contents.items():
            try:
                if content_digest(path) != digest:
                    return False
            except OSError:
                return False
        for (base, pattern), found in self.globs.items():
            if glob_files(Path(base), pattern) != found:
                return False
        return True

    def to_json(self) -> str:
        return json.dumps({"files": self.files, "contents": self.contents,
                           "globs": [[b, p, f] for (b, p), f in self.globs.items()]})

    @classmethod
    def from_json(cls, text: str) -> Inputs:
        """The inputs of a remembered row (ValueError when anything is not as written)."""
        files, contents, globs = memo_row.inputs(text)
        return cls(files=files, contents=contents, globs=globs)


def content_digest(path: str) -> str:
    """A file's bytes as BLAKE2b hex (faster than SHA-256 without SHA extensions)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()


def glob_files(base: Path, pattern: str) -> list[str]:
    """A glob's matching files, relative to `base`, sorted (local_assets.expand's rule)."""
    found = glob.glob(pattern, root_dir=base, recursive=True)
    return sorted(p for p in found if (base / p).is_file())


def _code_identity() -> str:
    """batchgen's files (names and bytes) and the versions its checks depend on.

    The bytes, not (size, mtime): installs with fixed mtimes (Nix sets every file's to 1,
    reproducible images use SOURCE_DATE_EPOCH) make two releases that differ in one rule
    look the same. Reading and hashing the package's .py and .json files (119, 0.87 MB)
    takes ~8 ms on a loaded 2-core VM, once per load (their stats alone took ~4 ms)."""
    from importlib import metadata
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(f"{FORMAT}\x1f{sys.version}".encode())
    for dist in ("jsonschema", "PyYAML"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            h.update(f"\x1f{dist}={metadata.version(dist)}".encode())
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".json") and path.is_file():
            data = path.read_bytes()
            h.update(f"\x1f{path.relative_to(root)}:{len(data)}\x1f".encode() + data)
    return h.hexdigest()


def _canonical(manifest: Path) -> str:
    """The manifest's resolved path: one name however it is spelled (`./`, `..`, another
    cwd, a symlink); its absolute path if it cannot be resolved (a cache never fails)."""
    try:
        return str(manifest.resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return str(manifest.absolute())


class LoadMemo:
    """The memo of one manifest file: `recall` a remembered load, `remember` a new one."""

    def __init__(self, manifest: Path, content: bytes) -> None:
        self._db_path = manifest.absolute().parent / MEMO_PATH
        self._name = _canonical(manifest)
        self._key = hashlib.sha256(
            f"{_code_identity()}\x1f{self._name}\x1f".encode()
            + hashlib.sha256(content).digest()).hexdigest()

    def recall(self) -> Remembered | None:
        """The remembered load, when every input is as it was; else None."""
        row = self._query()
        if row is None:
            return None
        try:
            made, inputs = memo_row.decode(self._key, row)
            return made if Inputs.from_json(inputs).unchanged() else None
        except Exception as exc:  # a cache: any doubt about a row means a full load
            log.debug("load memo %s not used: %s", self._db_path, exc)
            return None

    def clock(self) -> tuple[int, int] | None:
        """(device, now in ns) as the filesystem beside the memo tells it: a file written
        there, and its mtime read back (None when it cannot be written).

        A file's times are stamped by its file server's clock, so "changed within 2 s" is
        judged against that clock, as git judges against its index file's mtime: this
        host's time.time_ns() may run seconds ahead of an NFS or SMB server's."""
        stamp = self._db_path.parent.parent / CLOCK_PATH
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_bytes(b"now\n")
            st = os.stat(stamp)
        except OSError as exc:
            log.debug("load memo clock %s not written: %s", stamp, exc)
            return None
        return st.st_dev, st.st_mtime_ns

    def remember(self, made: Remembered, inputs: Inputs) -> None:
        """Keep a validated load (unless an input changed too recently, or since)."""
        if inputs.racy or not inputs.unchanged():
            return
        values = (*made.values(), inputs.to_json())
        with contextlib.suppress(OSError, sqlite3.Error), self._open() as db:
            db.execute("INSERT OR REPLACE INTO loads (manifest, key, count, digest, "
                       "shapes_kinds, shapes_order, uploads, inputs, seal) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (self._name, self._key, *values, memo_row.seal(self._key, values)))

    def _query(self) -> tuple[Any, ...] | None:
        """This manifest's remembered row under the current key, if any."""
        if not self._db_path.is_file():
            return None
        try:
            with self._open() as db:
                row: tuple[Any, ...] | None = db.execute(
                    "SELECT count, digest, shapes_kinds, shapes_order, uploads, inputs, "
                    "seal FROM loads WHERE manifest = ? AND key = ?",
                    (self._name, self._key)).fetchone()
                return row
        except (OSError, sqlite3.Error) as exc:
            log.debug("load memo %s not used: %s", self._db_path, exc)
            return None

    @contextlib.contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        self._db_path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._db_path, timeout=5, isolation_level=None)
        try:
            # a cache: losing the last entry to a power cut costs one full load
            db.execute("PRAGMA synchronous = OFF")
            db.execute(_TABLE)
            if "seal" not in {c[1] for c in db.execute("PRAGMA table_info(loads)")}:
                db.execute("DROP TABLE loads")  # written before rows were sealed
                db.execute(_TABLE)
            yield db
        finally:
            db.close()
