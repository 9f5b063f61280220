"""Local images and audio in a manifest: checked, hashed and named by their content.

Akool only takes URLs. A job's `image_url`, `audio_url` or `add_audio.audio_url` may
instead be a path relative to the manifest's folder (or, in a `matrix`, a glob such as
`images/*.png`, one job per file). Each such file is checked the way pre-flight checks a
URL (assets.judge: an image or audio by its first bytes, within the limits) and named by
its content: `s3://bucket/prefix/<sha256>.<ext>` under `storage.upload`. That object URL
is what the job records, so a job's stable id follows the file's bytes, not its path
(moving or renaming a folder makes no new jobs), and the same file is one object
whatever manifest names it. `uploads` maps each object URL back to a file, for the run to
upload (once: the key is the hash) and presign at submit time.

Reads files; no network. Deliberately not here: the bucket (objstore.py), YAML (manifest).
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen.assets import AUDIO, HEAD_BYTES, IMAGE, judge, sniff
from batchgen.file_hashes import FileHashes
from batchgen.objstore import S3Location, is_s3_url

if TYPE_CHECKING:
    from batchgen.manifest.memo import Inputs

#: presigned URLs live this long unless storage.url_lifetime says otherwise (seconds)
DEFAULT_URL_LIFETIME = 24 * 3600


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """The manifest's `storage:` section."""

    upload: str | None = None        #: s3://bucket/prefix that local files are uploaded to
    url_lifetime: int = DEFAULT_URL_LIFETIME  #: seconds a presigned URL lives (<= 7 days)


#: the fields that may name a local file, and what it must be
LOCAL_FIELDS = {"image_url": IMAGE, "audio_url": AUDIO, "add_audio.audio_url": AUDIO}
_EXT = {"jpeg": "jpg"}
_GLOB = frozenset("*?[")


def is_local(value: object) -> bool:
    """A value that names a file rather than a URL: no scheme, and a folder or a file
    extension (`images/a.png`, `a.jpg`), so a word like `none` is still a bad URL."""
    return (isinstance(value, str) and "://" not in value
            and ("/" in value or "." in value.rpartition("/")[2].strip(".")))


def is_glob(value: str) -> bool:
    return any(c in _GLOB for c in value)


@dataclass
class LocalAssets:
    """The local files of one manifest load: `resolve` them, then read `uploads`."""

    base_dir: Path
    upload: str | None               #: storage.upload (s3://bucket/prefix), or None
    #: storage.upload is set but is no s3:// URL (reported by the manifest, once)
    upload_broken: bool = False
    #: object URL -> the local file to upload there
    uploads: dict[str, Path] = field(default_factory=dict)
    #: content hashes remembered across loads (file_hashes.py); None: beside the manifest
    hashes: FileHashes | None = None
    #: the files and globs this load read, for the load memo (manifest/memo.py); None
    #: when nothing is remembered
    inputs: Inputs | None = None
    _seen: dict[tuple[str, str], tuple[str | None, tuple[str, str] | None]] = field(
        default_factory=dict)

    def expand(self, value: object) -> list[str] | None:
        """A glob's matching files (relative, sorted), or None when `value` is no glob."""
        if not is_local(value) or not is_glob(str(value)):
            return None
        pattern = str(value)
        found = glob.glob(pattern, root_dir=self.base_dir, recursive=True)
        files = sorted(p for p in found if (self.base_dir / p).is_file())
        if self.inputs is not None:
            self.inputs.glob(self.base_dir, pattern, files)
        return files

    def resolve(self, field_name: str, value: str) -> tuple[str | None, tuple[str, str] | None]:
        """(object URL, None) for a good local file, or (None, (what, fix)); (None, None)
        when storage.upload is wrong (the manifest says so once)."""
        key = (field_name, value)
        if key not in self._seen:
            self._seen[key] = self._resolve(field_name, value)
        return self._seen[key]

    def _resolve(self, field_name: str, value: str) -> tuple[str | None, tuple[str, str] | None]:
        kind = LOCAL_FIELDS[field_name]
        path = self.base_dir / value
        if not path.is_file():
            what = "no such file exists" if not path.exists() else "it names a folder"
            return None, (f"{field_name} {value!r} is not an http(s) URL, and {what}",
                          "use a public http(s) URL the API can fetch, or a file path "
                          "relative to the manifest's folder")
        try:
            digest, head, size = self._read(path)
        except OSError as exc:
            return None, (f"{field_name} {value!r} cannot be read ({exc.strerror or exc})",
                          "check the file's permissions")
        check = judge(kind, head, size)
        if check.bad:
            return None, (f"{field_name} {value!r}: {check.reason}",
                          "use a PNG or JPEG image" if kind == IMAGE else "use an MP3 file")
        if self.upload_broken:
            return None, None
        if self.upload is None or not is_s3_url(self.upload):
            return None, (f"{field_name} names a local file, and the API only fetches URLs",
                          "add storage: {upload: s3://bucket/prefix} to the manifest "
                          "(batchgen uploads it there and sends a presigned URL)")
        found = sniff(head)
        ext = _EXT.get(found.format, found.format) if found else "bin"
        location = S3Location.parse(self.upload)
        assert location is not None
        url = str(location.child(f"{digest}.{ext}"))
        self.uploads[url] = path.resolve()
        return url, None


    def _read(self, path: Path) -> tuple[str, bytes, int]:
        """(sha256, first bytes, size) of a file; a file unchanged since an earlier load
        (the same signature: file_hashes.py) is not read in full again, only its first bytes."""
        if self.hashes is None:
            self.hashes = FileHashes.beside(self.base_dir)
        path = path.absolute()
        st = path.stat()
        if self.inputs is not None:
            self.inputs.file(path, st)
        digest = self.hashes.get(path, st)
        if digest is not None:
            with path.open("rb") as f:
                return digest, f.read(HEAD_BYTES), st.st_size
        digest, head, size = _hash(path)
        if size == st.st_size:  # not changed while it was read
            self.hashes.put(path, st, digest)
        return digest, head, size


def _hash(path: Path) -> tuple[str, bytes, int]:
    """sha256 hex, the first bytes and the size of a file, in one read."""
    h = hashlib.sha256()
    head = b""
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            if len(head) < HEAD_BYTES:
                head += chunk[:HEAD_BYTES - len(head)]
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), head, size

