"""Injected faults, seen from a real client: each one off by default, seeded, switchable live."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from batchgen.sandbox import Sandbox

SandboxFactory = Callable[..., Awaitable[Sandbox]]

V4 = "/api/open/v4/image2Video"
CREATE = f"{V4}/createBySourcePrompt"
BATCH = f"{V4}/createBySourcePrompt/batch"
RESULTS = f"{V4}/resultsByIds"
AUDIO = f"{V4}/updateVideoAudio"
KEY = {"x-api-key": "k"}
BODY = {"image_url": "https://example.com/a.png", "prompt": "p", "negative_prompt": "n",
        "resolution": "720p", "video_length": 5, "audio_type": 3}
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # a fresh connection per request, so one dropped connection can't taint the next
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


async def post(session: aiohttp.ClientSession, url: str, payload: Any = BODY) -> Any:
    async with session.post(url, json=payload, headers=KEY) as response:
        assert response.status == 200, response.status
        return await response.json()


async def finished_video_url(session: aiohttp.ClientSession, sb: Sandbox) -> str:
    task_id = (await post(session, sb.url + CREATE))["data"]["_id"]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        (record,) = (await post(session, sb.url + RESULTS, {"_ids": task_id}))["data"]["result"]
        if record["status"] == 3:
            return record["video_url"]
    raise AssertionError("task did not finish")


async def test_faults_are_off_by_default(sandbox: SandboxFactory,
                                         session: aiohttp.ClientSession) -> None:
    sb = await sandbox()
    for _ in range(20):
        assert (await post(session, sb.url + CREATE))["code"] == 1000
    assert sb.stats()["faults_injected"] == {}


async def test_http_errors_are_500_502_or_503_and_admin_is_spared(
    sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    sb = await sandbox(http_error_rate=1.0)
    statuses = set()
    for _ in range(30):
        async with session.post(sb.url + CREATE, json=BODY, headers=KEY) as response:
            statuses.add(response.status)
    assert statuses <= {500, 502, 503} and len(statuses) > 1
    async with session.get(sb.url + "/__sandbox__/stats") as response:
        assert response.status == 200
        stats = await response.json()
    assert stats["faults_injected"] == {"http_error": 30} and stats["tasks_created"] == 0


async def test_brief_stats_leave_out_the_creates_per_fingerprint(
    sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    sb = await sandbox()
    for _ in range(2):  # the same request twice: one duplicate
        await post(session, sb.url + CREATE)
    async with session.get(sb.url + "/__sandbox__/stats", params={"brief": "1"}) as response:
        brief = await response.json()
    full = sb.stats()
    assert "creates_by_fingerprint" not in brief and len(full["creates_by_fingerprint"]) == 1
    assert brief == {k: v for k, v in full.items()
                     if k not in ("creates_by_fingerprint", "in_flight")} | {
        "in_flight": brief["in_flight"]}
    assert brief["duplicate_fingerprints"] == 1 and brief["tasks_created"] == 2


def test_brief_stats_neither_copy_nor_count_the_whole_map():
    # asked every few seconds by a bench at a million tasks: the map is not copied
    import tracemalloc
    from collections import Counter

    from batchgen.sandbox import SandboxConfig
    from batchgen.sandbox.state import SandboxState
    state = SandboxState(SandboxConfig())
    state.ledger.creates_by_fingerprint = Counter({f"fp{i:07d}": 1 for i in range(200_000)})
    tracemalloc.start()
    try:
        state.stats(brief=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000  # the copy alone is ~7.7 MB


async def test_rate_limit_is_429_with_retry_after(sandbox: SandboxFactory,
                                                  session: aiohttp.ClientSession) -> None:
    sb = await sandbox(rate_limit_rate=1.0, retry_after=2)
    async with session.post(sb.url + CREATE, json=BODY, headers=KEY) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "2"
    assert sb.stats()["tasks_created"] == 0


async def test_code_1005_rate(sandbox: SandboxFactory, session: aiohttp.ClientSession) -> None:
    sb = await sandbox(code_1005_rate=1.0)
    answer = await post(session, sb.url + CREATE)
    assert answer["code"] == 1005
    assert sb.stats()["tasks_created"] == 0


async def test_latency_delays_api_requests(sandbox: SandboxFactory,
                                           session: aiohttp.ClientSession) -> None:
    sb = await sandbox(latency=[0.2, 0.25])
    start = time.monotonic()
    await post(session, sb.url + RESULTS, {"_ids": ""})
    assert time.monotonic() - start >= 0.2
    start = time.monotonic()
    async with session.get(sb.url + "/__sandbox__/stats") as response:
        assert response.status == 200
    assert time.monotonic() - start < 0.2


async def test_reset_drops_the_connection_and_creates_nothing(
    sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    sb = await sandbox(reset_rate=1.0)
    with pytest.raises(DISCONNECTED):
        await post(session, sb.url + CREATE)
    stats = sb.stats()
    assert stats["tasks_created"] == 0 and stats["credits_charged"] == 0
    assert stats["faults_injected"] == {"reset": 1}


@pytest.mark.parametrize("endpoint", ["single", "batch", "audio"])
async def test_lost_create_charges_then_disconnects(
    sandbox: SandboxFactory, session: aiohttp.ClientSession, endpoint: str
) -> None:
    sb = await sandbox()
    source = (await post(session, sb.url + CREATE))["data"]["_id"]
    if endpoint == "audio":
        await _wait_done(session, sb, source)
    before = sb.stats()
    sb.config.lost_create_rate = 1.0  # takes effect on the next request
    url, payload = {
        "single": (CREATE, {**BODY, "prompt": "lost"}),
        "batch": (BATCH, {"image_url": "https://example.com/a.png", "prompt": "lost",
                          "resolution": "720p", "video_length": 5, "count": 2}),
        "audio": (AUDIO, {"pre_video_id": source, "audio_type": 1}),
    }[endpoint]
    with pytest.raises(DISCONNECTED):
        await post(session, sb.url + url, payload)
    after = sb.stats()
    created = after["tasks_created"] - before["tasks_created"]
    assert created == (2 if endpoint == "batch" else 1)
    assert after["credits_charged"] > before["credits_charged"]
    assert after["faults_injected"] == {"lost_create": 1}
    assert len(after["creates_by_fingerprint"]) == len(before["creates_by_fingerprint"]) + 1


async def _wait_done(session: aiohttp.ClientSession, sb: Sandbox, task_id: str) -> None:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        (record,) = (await post(session, sb.url + RESULTS, {"_ids": task_id}))["data"]["result"]
        if record["status"] == 3:
            return
    raise AssertionError("task did not finish")


async def test_truncated_download_raises_payload_error(
    sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    sb = await sandbox()
    url = await finished_video_url(session, sb)
    sb.config.truncate_rate = 1.0
    async with session.get(url) as response:
        assert response.status == 200
        promised = int(response.headers["Content-Length"])
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert promised > 1000 and sb.stats()["faults_injected"] == {"truncate": 1}


async def test_download_error_and_slow_download(
    sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    sb = await sandbox()
    url = await finished_video_url(session, sb)
    async with session.get(url) as response:
        whole = await response.read()
    sb.config.download_error_rate = 1.0
    async with session.get(url) as response:
        assert response.status == 500
    sb.config.download_error_rate = 0.0
    sb.config.slow_download = 0.3
    start = time.monotonic()
    async with session.get(url) as response:
        assert await response.read() == whole
    assert time.monotonic() - start >= 0.25


async def test_faults_can_be_switched_through_the_admin_endpoint(
    sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    sb = await sandbox()
    async with session.post(sb.url + "/__sandbox__/config", json={"code_1005_rate": 1}) as r:
        assert r.status == 200
    assert (await post(session, sb.url + CREATE))["code"] == 1005
    async with session.post(sb.url + "/__sandbox__/config", json={"code_1005_rate": 0}) as r:
        assert r.status == 200
    assert (await post(session, sb.url + CREATE))["code"] == 1000


async def test_same_seed_gives_the_same_faults(sandbox: SandboxFactory,
                                               session: aiohttp.ClientSession) -> None:
    outcomes = []
    for _ in range(2):
        sb = await sandbox(seed=7, code_1005_rate=0.5)
        codes = [(await post(session, sb.url + CREATE))["code"] for _ in range(20)]
        outcomes.append(codes)
    assert outcomes[0] == outcomes[1] and {1000, 1005} == set(outcomes[0])
