"""The state folder on disk (``.batchgen/`` in the output dir): its file names, the run
lock, and what an operating-system or SQLite refusal there means for the user.

The output dir is not trusted: ``.batchgen`` must be a real directory and its files
regular files (a planted symlink is refused, never followed), the lock is opened with
O_NOFOLLOW and taken with ``fcntl`` (it dies with the process, so kill -9 never leaves it).
A write the environment refuses (read-only, full disk) is `OutputNotWritable`; a database
that cannot be used is named, and an intact one is never advised away. Used by store.py,
which alone speaks SQL over the database these functions guard.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import stat
from pathlib import Path

from batchgen.errors import OutputDirLocked, OutputNotWritable, StateError

STATE_DIR = ".batchgen"
DB_NAME = "state.db"
LOCK_NAME = "lock"
#: files SQLite and the lock keep beside the database: each must be a regular file
STATE_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", LOCK_NAME)
#: primary SQLite result codes that mean "the environment refused", not "a bad database"
_SQLITE_ENV = {3: "permission denied", 5: "the database is locked by another program",
               8: "the state database or its folder is read-only",
               10: "a disk I/O error (is the disk full or failing?)", 13: "the disk is full",
               14: "the state database cannot be opened (check the folder's permissions)"}


def _check_state_dir(state_dir: Path) -> None:
    """Refuse a `.batchgen` (or a file in it) that is a symlink or not what it should be.

    A link planted there could make batchgen write its lock or its database elsewhere.
    """
    try:
        mode = os.lstat(state_dir).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputNotWritable(f"cannot read {state_dir}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        what = "a symlink" if stat.S_ISLNK(mode) else "not a directory"
        raise StateError(f"{state_dir} is {what}; batchgen keeps its state only in a real "
                         "directory and never follows a link there — remove it, or restore "
                         "the real .batchgen folder")
    for name in STATE_FILES:
        try:
            mode = os.lstat(state_dir / name).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OutputNotWritable(f"cannot read {state_dir / name}: "
                                    f"{exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):
            what = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
            raise StateError(f"{state_dir / name} is {what}; batchgen never follows a link "
                             "in its state folder — remove it, or restore the real file")


def _env_error(db_path: Path, exc: sqlite3.Error) -> OutputNotWritable | None:
    """The environment's refusal behind a SQLite error, or None when it is something else."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    what = _SQLITE_ENV.get(primary) if primary is not None else None
    if what is None:
        return None
    if primary == 10 and _disk_is_full(db_path.parent):
        what = _SQLITE_ENV[13]  # an I/O error on a full disk (SQLite's -shm map) is that
    return OutputNotWritable(
        f"{db_path}: cannot write the state: {what}; the state is intact (nothing is lost) "
        "— fix that, then run the same command again")


def _disk_is_full(directory: Path) -> bool:
    try:
        vfs = os.statvfs(directory)
    except OSError:
        return False
    return vfs.f_bavail * vfs.f_frsize < 64 * 1024


def _intact(db_path: Path) -> bool:
    """True when SQLite's own integrity check passes, read-only."""
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def _open_error(db_path: Path, exc: sqlite3.DatabaseError) -> BaseException:
    """The one-line error for a state database that could not be opened."""
    env = _env_error(db_path, exc)
    if env is not None:
        return env
    if _intact(db_path):
        return StateError(f"{db_path}: cannot be used ({exc}), although the database itself "
                          "is intact; keep it — without it the next run would pay again")
    return StateError(f"{db_path}: the state database is damaged ({exc}); restore it from a "
                      "backup — starting over without it would pay again for every video "
                      "already made (completed files stay on disk)")


def _take_lock(path: Path) -> int:
    """Take the run lock with fcntl; it dies with the process, so kill -9 never leaves it.

    O_NOFOLLOW: a symlink planted as the lock is refused, never truncated through.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(f"{path} is a symlink; batchgen never follows a link in its "
                             "state folder — remove it") from None
        raise OutputNotWritable(f"cannot open the lock {path}: {exc.strerror or exc}; "
                                "check the output dir's permissions") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputDirLocked(
            f"{path.parent.parent}: another batchgen run (pid {holder}) is using this output "
            "dir; wait for it to finish or stop it, then run again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
