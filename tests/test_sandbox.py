"""The emulator's endpoints over real HTTP: envelopes, fields, codes, lifecycle, ledger."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import av
import pytest

from batchgen.sandbox import Sandbox, fingerprint
from batchgen.sandbox.video import mp4_bytes

V4 = "/api/open/v4/image2Video"
CREATE = f"{V4}/createBySourcePrompt"
BATCH = f"{V4}/createBySourcePrompt/batch"
RESULTS = f"{V4}/resultsByIds"
AUDIO = f"{V4}/updateVideoAudio"
DELETE = f"{V4}/delbyids"
TOKEN = "/api/open/v3/getToken"
QUOTA = "/api/open/v3/faceswap/quota/info"
MODELS = "/api/open/v4/aigModel/list?types[]=1501"

#: keys of the documented create record (akool-api.md E1)
E1_KEYS = {
    "create_time", "uid", "team_id", "status", "webhookUrl", "resolution", "file_name",
    "effect_name", "_id", "image_url", "prompt", "negative_prompt", "extend_prompt",
    "audio_type", "audio_url", "deduction_credit", "effect_code",
}
#: keys of the documented result record (akool-api.md E3), video_url only at status 3
E3_KEYS = {
    "_id", "create_time", "uid", "team_id", "update_time", "video_duration", "webhookUrl",
    "file_name", "effect_name", "image_url", "prompt", "resolution", "audio_type", "audio_url",
    "deduction_credit", "effect_code", "status", "only_add_audio", "sub_type",
}
#: keys of a documented batch success item (akool-api.md E2)
E2_KEYS = {
    "_id", "create_time", "uid", "team_id", "status", "webhookUrl", "resolution", "file_name",
    "effect_name", "image_url", "prompt", "negative_prompt", "extend_prompt", "last_image_url",
    "deduction_credit", "model_name", "batch_id", "batch_count",
}
SandboxFactory = Callable[..., Awaitable[Sandbox]]
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


def body(**overrides: Any) -> dict[str, Any]:
    """A valid createBySourcePrompt body with `overrides` applied (None removes a key)."""
    base: dict[str, Any] = {
        "image_url": "https://example.com/a.png",
        "prompt": "waves roll onto the sand",
        "negative_prompt": "blurry",
        "resolution": "720p",
        "video_length": 5,
        "audio_type": 3,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


class Api:
    """A thin test client: JSON in, parsed JSON out, plus a bounded poll."""

    def __init__(self, session: aiohttp.ClientSession, sandbox: Sandbox) -> None:
        self.session = session
        self.sandbox = sandbox
        self.headers = {"x-api-key": "test-key"}

    async def post(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> Any:
        async with self.session.post(self.sandbox.url + path, json=payload,
                                     headers=self.headers if headers is None else headers) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        async with self.session.get(self.sandbox.url + path,
                                    headers=self.headers if headers is None else headers) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def create(self, **overrides: Any) -> dict[str, Any]:
        answer = await self.post(CREATE, body(**overrides))
        assert answer["code"] == 1000, answer
        return answer["data"]

    async def results(self, *ids: str) -> list[dict[str, Any]]:
        answer = await self.post(RESULTS, {"_ids": ",".join(ids)})
        assert answer["code"] == 1000, answer
        return answer["data"]["result"]

    async def wait(self, *ids: str, until: frozenset[int] = frozenset({3, 4}),
                   timeout: float = 3.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                records = await self.results(*ids)
                if records and all(r["status"] in until for r in records):
                    return records
                await asyncio.sleep(0.01)


@pytest.fixture
async def api(sandbox: SandboxFactory) -> AsyncIterator[Api]:
    emulator = await sandbox()
    async with aiohttp.ClientSession() as session:
        yield Api(session, emulator)


async def make_api(sandbox: SandboxFactory, session: aiohttp.ClientSession,
                   **settings: Any) -> Api:
    return Api(session, await sandbox(**settings))


# --- create ---------------------------------------------------------------------------------


async def test_create_answers_the_documented_record(api: Api) -> None:
    before = int(time.time() * 1000)
    data = await api.create(webhookurl="https://hook.example/x", effect_code="squish_89244231312")
    assert set(data) == E1_KEYS
    assert OBJECT_ID.match(data["_id"])
    assert before - 1000 <= data["create_time"] <= int(time.time() * 1000) + 1000
    assert data["status"] == 1
    assert data["webhookUrl"] == "https://hook.example/x"  # in: webhookurl, out: webhookUrl
    assert data["effect_name"] == "Squish"
    assert data["file_name"].startswith("Image2Video_") and data["file_name"].endswith(".mp4")
    types = {"create_time": int, "uid": int, "team_id": str, "status": int, "audio_type": int,
             "deduction_credit": int, "extend_prompt": bool, "audio_url": str}
    for key, kind in types.items():
        assert type(data[key]) is kind, key


@pytest.mark.parametrize(
    ("resolution", "length", "credits"),
    [("720p", 5, 20), ("720p", 10, 40), ("1080p", 5, 25), ("1080p", 10, 50),
     ("4k", 5, 30), ("4k", 10, 60)],
)
async def test_create_charges_the_published_price(
    api: Api, resolution: str, length: int, credits: int
) -> None:
    data = await api.create(resolution=resolution, video_length=length)
    assert data["deduction_credit"] == credits
    stats = api.sandbox.stats()
    assert stats["credits_charged"] == credits
    quota = await api.get(QUOTA)
    assert quota == {"code": 1000, "msg": "OK", "data": {"credit": 1_000_000 - credits}}


async def test_price_table_is_configurable(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, prices={"720p": {"5": 100}},
                             add_audio_prices={"5": 1})
        assert (await api.create())["deduction_credit"] == 100
        assert (await api.create(video_length=10))["deduction_credit"] == 40  # merged
        assert (await api.create(resolution="4k"))["deduction_credit"] == 30
        assert api.sandbox.config.add_audio_prices == {5: 1, 10: 10}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"image_url": None}, "image_url"),
        ({"image_url": 5}, "image_url"),
        ({"prompt": None}, "prompt"),
        ({"prompt": ["x"]}, "prompt"),
        ({"negative_prompt": None}, "negative_prompt"),
        ({"resolution": None}, "resolution"),
        ({"resolution": "8k"}, "resolution"),
        ({"video_length": 7}, "video_length"),
        ({"video_length": "5"}, "video_length"),
        ({"audio_type": None}, "audio_type"),
        ({"audio_type": 4}, "audio_type"),
        ({"audio_type": True}, "audio_type"),
        ({"audio_type": 2}, "audio_url"),
        ({"extend_prompt": "yes"}, "extend_prompt"),
        ({"is_premium_model": 1}, "is_premium_model"),
        ({"webhookurl": 3}, "webhookurl"),
    ],
)
async def test_create_rejects_bad_fields_with_1003_naming_the_field(
    api: Api, overrides: dict[str, Any], field: str
) -> None:
    answer = await api.post(CREATE, body(**overrides))
    assert answer["code"] == 1003
    assert field in answer["msg"]
    assert api.sandbox.stats()["tasks_created"] == 0


async def test_create_rejects_a_non_object_body(api: Api) -> None:
    assert (await api.post(CREATE, [1, 2]))["code"] == 1003


async def test_effect_code_makes_prompt_optional(api: Api) -> None:
    data = await api.create(prompt=None, effect_code="cakeify_24743216")
    assert data["effect_code"] == "cakeify_24743216" and data["prompt"] == ""


async def test_negative_prompt_requirement_is_switchable(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, require_negative_prompt=False)
        data = await api.create(negative_prompt=None)
        assert data["negative_prompt"] == ""


async def test_audio_url_accepted_with_audio_type_2(api: Api) -> None:
    data = await api.create(audio_type=2, audio_url="https://example.com/a.mp3")
    assert (data["audio_type"], data["audio_url"]) == (2, "https://example.com/a.mp3")


# --- lifecycle and results --------------------------------------------------------------------


async def test_status_goes_1_2_3_and_video_url_only_at_3(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, queue_time=0.15, processing_time=0.15)
        task_id = (await api.create())["_id"]
        seen: list[int] = []
        async with asyncio.timeout(3):
            while not seen or seen[-1] != 3:
                (record,) = await api.results(task_id)
                assert ("video_url" in record) == (record["status"] == 3)
                if not seen or seen[-1] != record["status"]:
                    seen.append(record["status"])
                await asyncio.sleep(0.02)
        assert seen == [1, 2, 3]
        assert set(record) == E3_KEYS | {"negative_prompt", "extend_prompt", "video_url"}
        assert record["update_time"] >= record["create_time"] + 250
        assert isinstance(record["video_duration"], float) and 5 < record["video_duration"] < 5.3
        assert record["sub_type"] == 1501 and record["only_add_audio"] is False
        assert record["video_url"] == f"{api.sandbox.url}/videos/{task_id}.mp4"


async def test_failure_rate_and_fail_prompt_end_in_status_4(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, fail_prompts=["explode"])
        bad = (await api.create(prompt="make it explode"))["_id"]
        good = (await api.create())["_id"]
        records = {r["_id"]: r for r in await api.wait(bad, good)}
        assert records[bad]["status"] == 4 and "video_url" not in records[bad]
        assert records[good]["status"] == 3
        api.sandbox.config.failure_rate = 1.0
        always = (await api.create(prompt="another"))["_id"]
        (record,) = await api.wait(always)
        assert record["status"] == 4


async def test_results_keep_order_and_leave_unknown_ids_out(api: Api) -> None:
    first = (await api.create(prompt="one"))["_id"]
    second = (await api.create(prompt="two"))["_id"]
    records = await api.results(second, "0" * 24, first)
    assert [r["_id"] for r in records] == [second, first]
    assert await api.results() == []


@pytest.mark.parametrize("payload", [{"_ids": ["x"]}, {"ids": "x"}, {}, {"_ids": 5}])
async def test_results_need_a_comma_joined_string(api: Api, payload: dict[str, Any]) -> None:
    answer = await api.post(RESULTS, payload)
    assert answer["code"] == 1003 and answer["msg"] == "Failed to get results"


# --- auth -------------------------------------------------------------------------------------


async def test_no_credentials_is_1102(api: Api) -> None:
    answer = await api.post(RESULTS, {"_ids": ""}, headers={})
    assert answer["code"] == 1102


async def test_configured_keys_pairs_and_bans(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, api_keys=["good"], banned_keys=["bad", "evil-id"],
                             client_pairs={"cid": "secret", "evil-id": "s2"})
        assert (await api.get(QUOTA, {"x-api-key": "good"}))["code"] == 1000
        assert (await api.get(QUOTA, {"x-api-key": "secret"}))["code"] == 1000  # key = secret
        assert (await api.get(QUOTA, {"x-api-key": "other"}))["code"] == 1109
        assert (await api.get(QUOTA, {"x-api-key": "bad"}))["code"] == 1200
        wrong = await api.post(TOKEN, {"clientId": "cid", "clientSecret": "nope"}, headers={})
        assert wrong["code"] not in (1000, None) and "token" not in wrong
        banned = await api.post(TOKEN, {"clientId": "evil-id", "clientSecret": "s2"}, headers={})
        assert banned["code"] == 1200


async def test_get_token_is_flat_and_bearer_takes_precedence(api: Api) -> None:
    answer = await api.post(TOKEN, {"clientId": "cid", "clientSecret": "sec"}, headers={})
    assert set(answer) == {"code", "token"} and answer["code"] == 1000
    bearer = {"Authorization": f"Bearer {answer['token']}"}
    assert (await api.get(QUOTA, bearer))["code"] == 1000
    # a bad token wins over a good key: Authorization is used when both are sent
    both = {"Authorization": "Bearer forged", "x-api-key": "test-key"}
    assert (await api.get(QUOTA, both))["code"] == 1101
    assert (await api.post(TOKEN, {"clientId": "cid"}, headers={}))["code"] == 1003


async def test_token_expires_after_k_uses(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, token_expiry_uses=2)
        token = (await api.post(TOKEN, {"clientId": "c", "clientSecret": "s"}, {}))["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        codes = [(await api.get(QUOTA, bearer))["code"] for _ in range(4)]
        assert codes == [1000, 1000, 1101, 1101]
        fresh = (await api.post(TOKEN, {"clientId": "c", "clientSecret": "s"}, {}))["token"]
        assert (await api.get(QUOTA, {"Authorization": f"Bearer {fresh}"}))["code"] == 1000


# --- balance and limits -------------------------------------------------------------------------


async def test_short_balance_is_1006_and_creates_nothing(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, balance=30)
        await api.create()  # 20
        answer = await api.post(CREATE, body())
        assert answer["code"] == 1006 and answer["msg"] == "Your quota is not enough"
        assert (await api.get(QUOTA))["data"]["credit"] == 10
        assert api.sandbox.stats()["tasks_created"] == 1


async def test_in_flight_limit_answers_1005_until_tasks_finish(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, max_in_flight=2, processing_time=0.2)
        first = (await api.create(prompt="a"))["_id"]
        await api.create(prompt="b")
        refused = await api.post(CREATE, body(prompt="c"))
        assert refused["code"] == 1005
        assert api.sandbox.stats()["tasks_created"] == 2
        await api.wait(first)
        await api.create(prompt="c")
        stats = api.sandbox.stats()
        assert stats["max_in_flight"] == 2 and stats["tasks_created"] == 3


# --- batch ------------------------------------------------------------------------------------


def batch_body(**overrides: Any) -> dict[str, Any]:
    base = {"image_url": "https://example.com/a.png", "prompt": "spin",
            "model_name": "AkoolImage2VideoFastV1", "resolution": "1080p", "video_length": 5,
            "count": 3, "webhookurl": "https://hook.example/b"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def test_batch_creates_count_videos_priced_by_model(api: Api) -> None:
    answer = await api.post(BATCH, batch_body())
    assert answer["code"] == 1000 and answer["msg"] == "OK"
    items = answer["data"]["successList"]
    assert answer["data"]["errorList"] == [] and len(items) == 3
    for item in items:
        assert set(item) == E2_KEYS
        assert item["model_name"] == "AkoolImage2VideoFastV1" and item["batch_count"] == 3
        assert item["deduction_credit"] == 10 and item["webhookUrl"] == "https://hook.example/b"
    assert len({i["_id"] for i in items}) == 3 and len({i["batch_id"] for i in items}) == 1
    stats = api.sandbox.stats()
    assert stats["credits_charged"] == 30 and stats["tasks_created"] == 3
    assert list(stats["creates_by_fingerprint"].values()) == [1]
    ten = await api.post(BATCH, batch_body(video_length=10, count=None,
                                           model_name="seedance-1-0-lite-i2v-250428"))
    assert [i["deduction_credit"] for i in ten["data"]["successList"]] == [20]  # 1080p: 10 x 2


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"model_name": "nope"}, "model_name"),
     ({"model_name": "seedance-1-0-lite-i2v-250428", "resolution": "4k"}, "resolution"),
     ({"video_length": 7}, "video_length"), ({"count": 11}, "count"), ({"count": 0}, "count"),
     ({"prompt": None}, "prompt")],
)
async def test_batch_rejects_what_the_model_does_not_allow(
    api: Api, overrides: dict[str, Any], field: str
) -> None:
    answer = await api.post(BATCH, batch_body(**overrides))
    assert answer["code"] == 1003 and field in answer["msg"]
    assert api.sandbox.stats()["tasks_created"] == 0


async def test_models_list_is_shaped_like_the_docs(api: Api) -> None:
    answer = await api.get(MODELS)
    assert answer["code"] == 1000 and isinstance(answer["data"], list)
    by_value = {m["value"]: m for m in answer["data"]}
    fast = by_value["AkoolImage2VideoFastV1"]
    assert [(r["value"], r["unit_credit"]) for r in fast["resolutionList"]] == [
        ("720p", 5), ("1080p", 10), ("4k", 20)]
    assert fast["durationList"] == [5, 10] and fast["maxCount"] == 10
    lite = by_value["seedance-1-0-lite-i2v-250428"]
    assert [r["unit_credit"] for r in lite["resolutionList"]] == [3, 5, 10]
    for key in ("sort", "group", "provider", "type", "label", "description", "isPro",
                "generate_audio", "requiresPay", "supportedLastFrame", "supportedExtendPrompt",
                "maxImageCount"):
        assert key in fast
    assert (await api.get("/api/open/v4/aigModel/list"))["code"] == 1003


async def test_effects_list(api: Api) -> None:
    answer = await api.get(f"{V4}/effects")
    assert answer["code"] == 1000 and answer["msg"] == "Success"
    result = answer["data"]["result"]
    assert answer["data"]["count"] == len(result) >= 3
    assert {e["effect_code"] for e in result} >= {"squish_89244231312", "cakeify_24743216"}
    for effect in result:
        assert set(effect) == {"_id", "create_time", "logo", "name", "video_url", "effect_code"}


# --- update audio and delete ------------------------------------------------------------------


async def test_update_audio_needs_a_completed_source(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, processing_time=0.2)
        source = (await api.create(video_length=10))["_id"]
        early = await api.post(AUDIO, {"pre_video_id": source, "audio_type": 1})
        assert early["code"] not in (1000, None) and "pre_video_id" in early["msg"]
        missing = await api.post(AUDIO, {"pre_video_id": "0" * 24, "audio_type": 1})
        assert missing["code"] == 1008
        no_url = await api.post(AUDIO, {"pre_video_id": source, "audio_type": 2})
        assert no_url["code"] == 1003 and "audio_url" in no_url["msg"]
        await api.wait(source)
        answer = await api.post(AUDIO, {"pre_video_id": source, "audio_type": 2,
                                        "audio_url": "https://example.com/a.mp3"})
        assert answer["code"] == 1000
        data = answer["data"]
        assert data["pre_video_id"] == source and data["only_add_audio"] is True
        assert data["deduction_credit"] == 10 and data["status"] == 1 and data["_id"] != source
        (record,) = await api.wait(data["_id"])
        assert record["only_add_audio"] is True and record["status"] == 3
        assert api.sandbox.stats()["credits_charged"] == 40 + 10


async def test_delete_refuses_processing_and_removes_finished(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, processing_time=0.3)
        done = (await api.create(prompt="a"))["_id"]
        await api.wait(done)
        busy = (await api.create(prompt="b"))["_id"]
        (record,) = await api.results(done)
        answer = await api.post(DELETE, {"_ids": f"{done},{busy}"})
        assert answer["code"] == 1000 and answer["msg"] == "Delete successfully"
        assert answer["data"]["successIds"] == [done]
        assert answer["data"]["noPermissionItems"] == [
            {"_id": busy, "msg": "video resource is processing, please try again later"}]
        assert [r["_id"] for r in await api.results(done, busy)] == [busy]
        async with session.get(record["video_url"]) as response:
            assert response.status == 404
        assert (await api.post(DELETE, {"_ids": [done]}))["code"] == 1003


# --- downloads --------------------------------------------------------------------------------


def _decode(data: bytes) -> tuple[float, str, int, list[bytes]]:
    """(seconds, codec, width, rgb of every frame) of an MP4, decoded with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [bytes(f.reformat(format="rgb24").planes[0]) for f in container.decode(stream)]
        seconds = float(container.duration or 0) / 1_000_000
        return seconds, stream.codec_context.name, stream.codec_context.width, frames


async def test_download_is_a_small_playable_h264_mp4_of_the_records_duration(api: Api) -> None:
    ids = [(await api.create(prompt=p, video_length=n))["_id"]
           for p, n in (("a", 5), ("b", 5), ("c", 10))]
    records = await api.wait(*ids)
    bodies = []
    for record in records:
        async with api.session.get(record["video_url"]) as response:
            assert response.status == 200
            data = await response.read()
            assert int(response.headers["Content-Length"]) == len(data)
            assert response.headers["Content-Type"] == "video/mp4"
        assert data[4:8] == b"ftyp" and len(data) < 64_000
        seconds, codec, width, frames = _decode(data)
        assert codec == "h264" and width <= 256
        assert abs(seconds - record["video_duration"]) < 0.5, (seconds, record)
        assert len(set(frames)) > 1  # it moves: a video, not a still
        bodies.append((data, frames[0]))
    async with api.session.get(records[0]["video_url"]) as response:
        assert await response.read() == bodies[0][0]  # deterministic: same task, same bytes
    assert len({data for data, _ in bodies}) == 3  # never two tasks with one file


async def test_videos_of_different_tasks_look_different() -> None:
    # the picture comes from the task id and prompt: a gallery is not one image repeated
    firsts = {_decode(mp4_bytes(f"{i:024x}", 5.1, f"prompt {i}"))[3][0] for i in range(12)}
    assert len(firsts) >= 8


async def test_download_of_unknown_or_unfinished_task_is_404(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, processing_time=5)
        busy = (await api.create())["_id"]
        for task_id in (busy, "0" * 24):
            async with session.get(f"{api.sandbox.url}/videos/{task_id}.mp4") as response:
                assert response.status == 404


async def test_expired_url_is_403(sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, processing_time=0, url_expiry=0.1)
        (record,) = await api.wait((await api.create())["_id"])
        await asyncio.sleep(0.15)
        async with session.get(record["video_url"]) as response:
            assert response.status == 403


async def test_video_url_uses_the_host_the_client_connected_to(api: Api) -> None:
    task_id = (await api.create())["_id"]
    await api.wait(task_id)
    port = api.sandbox.port
    headers = {**api.headers, "Host": f"localhost:{port}"}
    async with api.session.post(api.sandbox.url + RESULTS, json={"_ids": task_id},
                                headers=headers) as response:
        (record,) = (await response.json())["data"]["result"]
    assert record["video_url"] == f"http://localhost:{port}/videos/{task_id}.mp4"


# --- ledger and admin -------------------------------------------------------------------------


async def test_paying_twice_for_one_request_shows_in_the_ledger(api: Api) -> None:
    await api.create(webhookurl="https://a.example/1")
    await api.create(webhookurl="https://a.example/2")  # webhook is not part of the request
    await api.create(prompt="other")
    stats = api.sandbox.stats()
    assert stats["duplicate_fingerprints"] == 1
    assert stats["creates_by_fingerprint"][fingerprint("createBySourcePrompt", body())] == 2


async def test_admin_stats_config_and_reset(api: Api) -> None:
    await api.create()
    await api.post(RESULTS, {"_ids": ""})
    url = api.sandbox.url + "/__sandbox__"
    async with api.session.get(f"{url}/stats") as response:
        stats = await response.json()
    for key in ("requests", "tasks_created", "credits_charged", "balance", "max_in_flight",
                "creates_by_fingerprint", "duplicate_fingerprints", "faults_injected"):
        assert key in stats
    assert stats["requests"] == {"createBySourcePrompt": 1, "resultsByIds": 1}
    async with api.session.post(f"{url}/config", json={"failure_rate": 0.5}) as response:
        assert response.status == 200
        assert (await response.json())["failure_rate"] == 0.5
    assert api.sandbox.config.failure_rate == 0.5
    async with api.session.get(f"{url}/config") as response:
        config = await response.json()
        assert config["failure_rate"] == 0.5 and config["processing_time"] == [0.05, 0.05]
    async with api.session.post(f"{url}/config", json={"failure_rat": 1}) as response:
        assert response.status == 400 and "failure_rat" in (await response.json())["error"]
    async with api.session.post(f"{url}/reset") as response:
        assert response.status == 200
    stats = api.sandbox.stats()
    assert stats["tasks_created"] == 0 and stats["balance"] == 1_000_000
    assert stats["requests"] == {} and stats["creates_by_fingerprint"] == {}


async def test_sandbox_close_is_idempotent_and_url_has_no_trailing_slash() -> None:
    async with Sandbox() as emulator:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emulator.url)
        await emulator.close()
    await emulator.close()


async def test_concurrent_creates_never_overspend_or_overshoot_the_limit(
    sandbox: SandboxFactory,
) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, balance=100, max_in_flight=4, processing_time=5)
        answers = await asyncio.gather(
            *(api.post(CREATE, body(prompt=f"p{i}")) for i in range(20)))
        codes = sorted(a["code"] for a in answers)
        assert codes.count(1000) == 4 and set(codes[4:]) == {1005}
        stats = api.sandbox.stats()
        assert stats["tasks_created"] == 4 and stats["max_in_flight"] == 4
        api.sandbox.config.max_in_flight = 0
        answers = await asyncio.gather(
            *(api.post(CREATE, body(prompt=f"q{i}")) for i in range(10)))
        assert [a["code"] for a in answers].count(1000) == 1  # 100 - 4 x 20 = 20 left
        assert api.sandbox.stats()["balance"] == 0


async def test_finished_record_times_the_task_on_the_api_clock(sandbox: SandboxFactory) -> None:
    # task_times fixes each task's duration in creation order; update_time - create_time
    # of the finished record is exactly that duration (ms), as akool-api.md E3 documents
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, task_times=[0.3, 0.1])
        slow = (await api.create())["_id"]
        fast = (await api.create())["_id"]
        (running,) = await api.results(slow)
        assert running["status"] in (1, 2) and running["update_time"] - running["create_time"] < 300
        records = {r["_id"]: r for r in await api.wait(slow, fast)}
        for task_id, ms in ((slow, 300), (fast, 100)):
            assert records[task_id]["update_time"] - records[task_id]["create_time"] == ms
        # past the list, tasks follow queue_time / processing_time again
        third = (await api.create())["_id"]
        (record,) = await api.wait(third)
        assert 0 <= record["update_time"] - record["create_time"] <= 100


async def test_batch_records_carry_their_own_create_and_update_times(
        sandbox: SandboxFactory) -> None:
    async with aiohttp.ClientSession() as session:
        api = await make_api(sandbox, session, task_times=[0.2, 0.2])
        answer = await api.post(BATCH, {"image_url": "https://example.com/a.png",
                                        "prompt": "p", "resolution": "720p",
                                        "video_length": 5, "count": 2})
        ids = [item["_id"] for item in answer["data"]["successList"]]
        records = await api.wait(*ids)
        assert [r["update_time"] - r["create_time"] for r in records] == [200, 200]
