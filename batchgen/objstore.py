"""Object storage (S3 and S3-compatible: MinIO, R2, ...): the only module that imports obstore.

Owns talking to a bucket: whether an object exists, uploading a file under a key that
is never overwritten (a conditional create: the key is a content hash, so an object
already there is the same bytes), and presigning GET URLs. obstore is an optional
dependency (`pip install 'batchgen[s3]'`) imported on first use, so a default install
stays small. Credentials come from the standard environment of the store (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL for MinIO/R2/...),
read from the mapping the caller passes, and never appear in a message: errors name the
bucket and key only.

Deliberately not here: which files go where (local_assets.py) or when (session.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from batchgen.errors import StorageError, StorageUnavailable, UsageError

__all__ = ["MAX_URL_LIFETIME", "Bucket", "S3Location", "StorageError", "StorageUnavailable",
           "is_s3_url"]

#: retries of one bucket request (obstore retries 10 times by default, with backoff up to
#: 15 s, for about 6 s against a port nothing listens on, minutes against a 5xx)
ENV_STORAGE_RETRIES = "BATCHGEN_STORAGE_RETRIES"
#: SigV4 presigned URLs live at most 7 days
MAX_URL_LIFETIME = 7 * 24 * 3600
_S3_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?")


@dataclass(frozen=True, slots=True)
class S3Location:
    """`s3://bucket/key-or-prefix`, parsed."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> S3Location | None:
        m = _S3_URL.fullmatch(url)
        if m is None:
            return None
        return cls(m.group(1), (m.group(2) or "").strip("/"))

    def child(self, name: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key}/{name}" if self.key else name)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_s3_url(value: str) -> bool:
    """An `s3://bucket/key` URL (a bucket name S3 accepts)."""
    return _S3_URL.fullmatch(value) is not None


def _config(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(S3 config, client options) from the standard AWS variables in `env`."""
    config: dict[str, Any] = {}
    names = {"access_key_id": ("AWS_ACCESS_KEY_ID",),
             "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
             "session_token": ("AWS_SESSION_TOKEN",),
             "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
             "endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")}
    for key, variables in names.items():
        for var in variables:
            if env.get(var):
                config[key] = env[var]
                break
    options: dict[str, Any] = {}
    if str(config.get("endpoint", "")).startswith("http://"):
        options["allow_http"] = True
    return config, options


def _retry_config(env: Mapping[str, str]) -> dict[str, Any] | None:
    """obstore's retry settings with BATCHGEN_STORAGE_RETRIES retries, when it is set."""
    text = env.get(ENV_STORAGE_RETRIES, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > 100:
        raise UsageError(f"{ENV_STORAGE_RETRIES}={text!r}: give a whole number of retries "
                         "from 0 to 100")
    return {"max_retries": int(text), "retry_timeout": timedelta(minutes=3),
            "backoff": {"init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=15), "base": 2}}


class Bucket:
    """One bucket, used by key; open with `Bucket.open`."""

    def __init__(self, store: Any, location: S3Location) -> None:
        self._store = store
        self.location = location

    @classmethod
    def open(cls, url: str, env: Mapping[str, str]) -> Bucket:
        """The bucket of `s3://bucket[/...]` (UsageError when obstore is not installed)."""
        location = S3Location.parse(url)
        if location is None:
            raise UsageError(f"{url!r} is not an s3://bucket/prefix URL")
        try:
            from obstore.store import S3Store
        except ImportError:
            raise UsageError("s3:// storage needs the s3 extra: pip install 'batchgen[s3]'"
                             ) from None
        config, options = _config(env)
        retry = _retry_config(env)
        store = S3Store(location.bucket, config=config,  # type: ignore[arg-type]
                        client_options=options,  # type: ignore[arg-type]
                        **({"retry_config": retry} if retry else {}))  # type: ignore[arg-type]
        return cls(store, location)

    def _error(self, doing: str, key: str, exc: Exception) -> StorageError:
        """What went wrong, said for a user: which object, why, what to do. obstore's own
        message names the endpoint URL (no query, no credentials) and the S3 error code."""
        where = f"s3://{self.location.bucket}/{key}: {doing} failed"
        why, unreachable = _classify(exc)
        if unreachable:
            return StorageUnavailable(f"{where}: {why}; check AWS_ENDPOINT_URL and the "
                                      "network, or run again later")
        return StorageError(f"{where}: {why}")

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        import obstore
        try:
            await obstore.head_async(self._store, key)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._error("HEAD", key, exc) from None
        return True

    async def size(self, key: str) -> int | None:
        """The size of the object under `key`, None when there is none."""
        import obstore
        try:
            meta = await obstore.head_async(self._store, key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._error("HEAD", key, exc) from None
        return int(meta["size"])

    async def require(self, key: str) -> None:
        """StorageError when the bucket itself does not exist. A HEAD cannot tell: S3
        answers it for a missing bucket as for a missing object (404, no body), so a run
        would pay for videos it cannot store. A listing under `key` names the code
        (NoSuchBucket). A listing refused for another reason proves nothing (batchgen needs
        no s3:ListBucket otherwise) and is let go; an unreachable store is not."""
        import obstore
        try:
            await obstore.list_with_delimiter_async(self._store, key)
        except Exception as exc:
            error = self._error("listing", key, exc)
            if isinstance(error, StorageUnavailable) or "<Code>NoSuchBucket</Code>" in str(exc):
                raise error from None

    async def put_file(self, key: str, path: Path, *, overwrite: bool = False) -> bool:
        """Upload a file under `key`; True if uploaded. Without `overwrite`, a conditional
        create (If-None-Match): an object already there is kept (False).

        Files over 5 MB go in parts; either way the object appears under `key` only once
        the whole upload completed, so a key never holds a partial file.
        """
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError
        try:
            f = path.open("rb")
        except OSError as exc:
            raise StorageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        try:
            with f:
                await obstore.put_async(self._store, key, f,
                                        mode="overwrite" if overwrite else "create")
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as exc:  # a missing bucket is a FileNotFoundError: not the file's
            raise self._error("upload", key, exc) from None
        return True

    async def sign_get(self, key: str, lifetime: float) -> str:
        """A presigned GET URL for `key`, valid `lifetime` seconds (at most 7 days)."""
        import obstore
        seconds = max(1, min(int(lifetime), MAX_URL_LIFETIME))
        try:
            return await obstore.sign_async(self._store, "GET", key, timedelta(seconds=seconds))
        except Exception as exc:
            raise self._error("presigning", key, exc) from None


#: S3 error codes (in obstore's message) -> what they mean for a user
_CODES = {"NoSuchBucket": "the bucket does not exist (create it, or fix the s3:// URL)",
          "AccessDenied": "access denied (check the AWS_* credentials and the bucket's "
                          "policy: batchgen needs s3:GetObject and s3:PutObject)",
          "InvalidAccessKeyId": "the AWS_ACCESS_KEY_ID is not known to this store",
          "SignatureDoesNotMatch": "the AWS_SECRET_ACCESS_KEY does not match the key id",
          "ExpiredToken": "the AWS_SESSION_TOKEN has expired"}


def _classify(exc: Exception) -> tuple[str, bool]:
    """(why, whether the store could not be reached) for an obstore exception."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
    text = str(exc)
    for code, why in _CODES.items():
        if f"<Code>{code}</Code>" in text:
            return why, False
    if (isinstance(exc, PermissionDeniedError | UnauthenticatedError)
            or re.search(r"status code: 40[13]", text)):
        return _CODES["AccessDenied"], False
    first = text.splitlines()[0][:200] if text else type(exc).__name__
    if ("error sending request" in text or "timed out" in text.lower()
            or re.search(r"status code: 5\d\d", text)):
        return f"the store could not be reached ({first})", True
    return f"{type(exc).__name__}: {first}", False
