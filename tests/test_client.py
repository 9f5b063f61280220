"""Wire-level answers the emulator cannot give, via aioresponses: the client's error map."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import aioresponses.core as aioresponses_core
import pytest
from aiohttp import ClientResponse
from aioresponses import aioresponses

from batchgen.client import AkoolClient, Credentials, parse_retry_after, scrub
from batchgen.errors import (
    CredentialsError,
    FatalApiError,
    InsufficientCredits,
    OutcomeUnknown,
    RetryableApiError,
)

BASE = "http://api.test"
CREATE = f"{BASE}/api/open/v4/image2Video/createBySourcePrompt"
RESULTS = f"{BASE}/api/open/v4/image2Video/resultsByIds"


class _Response(ClientResponse):
    """aiohttp 3.14 made `stream_writer` a required argument that aioresponses 0.7.9 does not
    pass (pnuckowski/aioresponses#289, open). aiohttp 3.14 is a security release, so we
    shim the test double instead of pinning aiohttp below it."""

    def __init__(self, *args, **kwargs):
        if _TAKES_STREAM_WRITER:  # older aiohttp (the declared minimum) has no such argument
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


_TAKES_STREAM_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


@pytest.fixture(autouse=True)
def _aioresponses_compat(monkeypatch):
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _Response)


@pytest.fixture
async def client():
    async with AkoolClient.open(BASE, Credentials(api_key="k-secret")) as c:
        yield c


async def test_a_504_on_create_is_an_unknown_outcome_but_a_503_proves_nothing_was_made(client):
    with aioresponses() as m:
        m.post(CREATE, status=504)
        with pytest.raises(OutcomeUnknown):
            await client.create({"image_url": "x"})
        m.post(CREATE, status=503, headers={"Retry-After": "3"})
        with pytest.raises(RetryableApiError) as info:
            await client.create({"image_url": "x"})
        assert not isinstance(info.value, OutcomeUnknown) and info.value.retry_after == 3.0


async def test_a_garbled_success_on_create_is_unknown(client):
    with aioresponses() as m:
        m.post(CREATE, status=200, body="<html>gateway</html>")
        with pytest.raises(OutcomeUnknown):
            await client.create({"image_url": "x"})


async def test_business_codes_map_to_the_right_errors(client):
    cases = [(1003, FatalApiError), (1005, RetryableApiError), (1006, InsufficientCredits),
             (1109, CredentialsError), (1200, CredentialsError), (1102, CredentialsError)]
    with aioresponses() as m:
        for code, kind in cases:
            m.post(CREATE, payload={"code": code, "msg": "m"})
            with pytest.raises(kind):
                await client.create({"image_url": "x"})


async def test_1015_is_retryable_for_a_poll_but_fatal_for_a_create(client):
    with aioresponses() as m:
        m.post(RESULTS, payload={"code": 1015, "msg": "try later"})
        with pytest.raises(RetryableApiError):
            await client.results(["a"])
        m.post(CREATE, payload={"code": 1015, "msg": "try later"})
        with pytest.raises(FatalApiError):
            await client.create({"image_url": "x"})


async def test_ids_are_sent_as_one_comma_joined_string(client):
    with aioresponses() as m:
        m.post(RESULTS, payload={"code": 1000, "data": {"result": []}})
        await client.results(["a", "b", "c"])
        (call,) = [c for calls in m.requests.values() for c in calls]
        assert call.kwargs["json"] == {"_ids": "a,b,c"}


async def test_webhook_field_uses_the_api_casing(client):
    with aioresponses() as m:
        m.post(CREATE, payload={"code": 1000, "data": {"_id": "t1", "status": 1}})
        await client.create({"image_url": "x", "webhook_url": "https://h"})
        (call,) = [c for calls in m.requests.values() for c in calls]
        assert call.kwargs["json"] == {"image_url": "x", "webhookurl": "https://h"}


def test_retry_after_parses_seconds_fractions_and_http_dates():
    assert parse_retry_after("7", now=0) == 7.0
    assert parse_retry_after("0.25", now=0) == 0.25
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


def test_scrub_removes_every_secret():
    assert scrub("key=abc12345 and abc12345", ["abc12345"]) == "key=[redacted] and [redacted]"


def test_scrub_replaces_the_secret_not_every_letter_of_a_short_value():
    # a one-letter "key" is refused at start-up; scrubbing it would garble every word
    assert scrub("Traceback: a bad day", ["a"]) == "Traceback: a bad day"


def test_credentials_repr_hides_secrets():
    creds = Credentials(api_key="k1", client_id="c", client_secret="s3cr3t")
    assert "k1" not in repr(creds) and "s3cr3t" not in repr(creds)


TOKEN = f"{BASE}/api/open/v3/getToken"


async def test_an_expired_token_is_fetched_again_and_the_request_resent():
    creds = Credentials(client_id="cid", client_secret="sec")
    async with AkoolClient.open(BASE, creds) as client:
        with aioresponses() as m:
            m.post(TOKEN, payload={"code": 1000, "token": "t1"})
            await client.authenticate()
            m.post(RESULTS, payload={"code": 1101, "msg": "expired"})
            m.post(TOKEN, payload={"code": 1000, "token": "t2"})
            m.post(RESULTS, payload={"code": 1000, "data": {"result": []}})
            assert await client.results(["a"]) == []
            assert client.requests["getToken"] == 2


async def test_tokens_refused_again_and_again_end_in_a_credentials_error():
    creds = Credentials(client_id="cid", client_secret="sec")
    async with AkoolClient.open(BASE, creds) as client:
        with aioresponses() as m:
            m.post(TOKEN, payload={"code": 1000, "token": "t"}, repeat=True)
            m.post(RESULTS, payload={"code": 1101, "msg": "expired"}, repeat=True)
            await client.authenticate()
            with pytest.raises(CredentialsError, match="1101"):
                await client.results(["a"])
            assert client.requests["getToken"] == 4  # the first and three refreshes
