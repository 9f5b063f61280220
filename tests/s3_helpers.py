"""An S3 server on loopback (moto's ThreadedMotoServer) for the storage tests, and ways to
read a bucket back the way a pipeline would (through obstore)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

BUCKET = "batchgen-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """An S3 server on loopback with one bucket; the AWS_* environment to reach it."""
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"))
    yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test-id",
           "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}
    server.stop()


def raw_store(s3: dict[str, str], bucket: str) -> object:
    """An obstore S3Store on the test server (bypassing batchgen)."""
    from obstore.store import S3Store
    return S3Store(bucket, endpoint=s3["AWS_ENDPOINT_URL"],
                   access_key_id=s3["AWS_ACCESS_KEY_ID"],
                   secret_access_key=s3["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                   client_options={"allow_http": True})


def bucket_objects(s3: dict[str, str], bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under prefix, read back through obstore (what a pipeline would see)."""
    import obstore
    store = raw_store(s3, bucket)
    out: dict[str, bytes] = {}
    for batch in obstore.list(store, prefix=prefix):  # type: ignore[arg-type]
        for meta in batch:
            out[meta["path"]] = bytes(obstore.get(store, meta["path"]).bytes())  # type: ignore[arg-type]
    return out


def make_bucket(s3: dict[str, str], name: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{s3['AWS_ENDPOINT_URL']}/{name}",
                                                  method="PUT"))
