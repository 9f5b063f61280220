"""The network boundary: client.py against hostile servers (small aiohttp apps on loopback).

`serve(app)` starts a server and returns its URL; `tamper(sandbox, mutate)` puts a proxy in
front of the emulator that rewrites JSON answers on their way to the client, so one field at
a time can be made hostile while everything else is a working API.

Each test names a promise of the wire layer: credentials stay with the API's origin,
transient means transient (getToken included), answers are size-capped and checked, and
every exception aiohttp can raise is translated in one place.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.http_exceptions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cli_helpers import cli_env, run_cli, write_manifest

from batchgen import client as wire
from batchgen import errors
from batchgen.client import AkoolClient, Credentials
from batchgen.errors import (
    ApiError,
    CredentialsError,
    FatalApiError,
    OutcomeUnknown,
    RetryableApiError,
)
from batchgen.retry import RetryPolicy
from batchgen.sandbox import Sandbox

V4 = "/api/open/v4/image2Video"
KEY = "x-key-0123456789"
SECRET = "client-secret-abcdef"
FAST = RetryPolicy(base=0.001, cap=0.01, max_attempts=5)
FAST_RETRY = {"BATCHGEN_RETRY_BASE": "0.01", "BATCHGEN_RETRY_CAP": "0.05",
              "BATCHGEN_RETRY_ATTEMPTS": "5"}


#: (request path, request JSON or None, answer JSON) -> answer JSON to send instead
Mutate = Callable[[str, Any, Any], Any]
Serve = Callable[[web.Application], Awaitable[str]]
Tamper = Callable[[Sandbox, Mutate], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Factory: `url = await serve(app)`; every server started is closed at teardown."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def tamper(serve: Serve) -> AsyncIterator[Tamper]:
    """Factory: `url = await tamper(sb, mutate)`: the emulator behind a rewriting proxy."""
    sessions: list[aiohttp.ClientSession] = []

    async def start(sb: Sandbox, mutate: Mutate) -> str:
        session = aiohttp.ClientSession()
        sessions.append(session)

        async def forward(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() in ("x-api-key", "authorization", "content-type")}
            async with session.request(request.method, sb.url + request.path_qs, data=body,
                                       headers=headers) as upstream:
                raw = await upstream.read()
                status, ctype = upstream.status, upstream.content_type
            if ctype != "application/json":
                return web.Response(body=raw, status=status, content_type=ctype)
            sent = json.loads(body) if body else None
            answer = mutate(request.path, sent, json.loads(raw))
            text = answer if isinstance(answer, str) else json.dumps(answer)
            return web.Response(text=text, status=status, content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        return await serve(app)

    yield start
    for session in sessions:
        await session.close()


async def authenticate(client: AkoolClient) -> None:
    await FAST.run(client.authenticate, sleep=_no_sleep, clock=lambda: 0.0,
                   rng=random.Random(0))


async def _no_sleep(_: float) -> None:
    return None


def ok(data: Any) -> web.Response:
    return web.json_response({"code": 1000, "msg": "OK", "data": data})


# -- credentials stay with the API's origin --------------------------------------------


async def test_api_calls_never_follow_a_redirect_so_credentials_stay_with_the_origin(serve):
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers), await request.read()))
        return ok({"result": [], "_id": "t1", "token": "tok"})

    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", elsewhere)
    other_url = await serve(other)

    async def redirect(request: web.Request) -> web.Response:
        status = 307 if request.method == "POST" else 302
        return _redirect(status, other_url + request.path_qs)

    hostile = web.Application()
    hostile.router.add_route("*", "/{tail:.*}", redirect)
    base = await serve(hostile)

    async with AkoolClient.open(base, Credentials(api_key=KEY)) as client:
        with pytest.raises(FatalApiError, match=r"redirect.*never follow"):
            await client.results(["t1"])
        with pytest.raises(FatalApiError, match="redirect"):
            await client.create({"image_url": "https://example.com/a.jpg"})
        with pytest.raises(FatalApiError, match="redirect"):
            await client.models()
    async with AkoolClient.open(base, Credentials(client_id="cid-12345678",
                                                  client_secret=SECRET)) as client:
        with pytest.raises(ApiError, match="redirect"):
            await client.authenticate()
    assert seen == [], "a request reached the second server"
    for _, headers, body in seen:  # belt and braces, should the list ever fill
        assert KEY not in json.dumps(headers) and SECRET.encode() not in body


def _redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


# -- transient means transient, getToken included --------------------------------------


async def test_gettoken_busy_or_unavailable_is_retried_first_fetch_and_refresh(serve):
    token_answers = [web.json_response({"code": 1005, "msg": "too frequent"}),
                     web.Response(status=503), web.Response(status=429),
                     web.json_response({"code": 1000, "token": "tok-1"}),
                     web.json_response({"code": 1005, "msg": "too frequent"}),
                     web.json_response({"code": 1000, "token": "tok-2"})]
    results_answers = [web.json_response({"code": 1101, "msg": "expired"}),
                       web.json_response({"code": 1101, "msg": "expired"}),
                       ok({"result": []})]

    async def token(request: web.Request) -> web.Response:
        return token_answers.pop(0)

    async def results(request: web.Request) -> web.Response:
        return results_answers.pop(0)

    app = web.Application()
    app.router.add_post("/api/open/v3/getToken", token)
    app.router.add_post(f"{V4}/resultsByIds", results)
    base = await serve(app)
    creds = Credentials(client_id="cid-12345678", client_secret=SECRET)
    async with AkoolClient.open(base, creds) as client:
        await authenticate(client)  # 1005, 503, 429, then a token
        # a refresh that meets 1005 is transient too: the caller's retry goes on
        with pytest.raises(errors.AccountBusy):
            await client.results(["t1"])
        assert await FAST.run(lambda: client.results(["t1"]), sleep=_no_sleep,
                              clock=lambda: 0.0, rng=random.Random(0)) == []
    assert token_answers == [] and results_answers == []


async def test_gettoken_refusing_the_pair_is_a_credentials_error(serve):
    async def token(request: web.Request) -> web.Response:
        return web.json_response({"code": 1003, "msg": "clientId or clientSecret wrong"})

    app = web.Application()
    app.router.add_post("/api/open/v3/getToken", token)
    base = await serve(app)
    async with AkoolClient.open(base, Credentials(client_id="cid-12345678",
                                                  client_secret=SECRET)) as client:
        with pytest.raises(CredentialsError, match="refused"):
            await authenticate(client)


# -- credentials that cannot work are refused at start-up -----------------------------


@pytest.mark.parametrize("env", [
    {"AKOOL_API_KEY": "abcdefgh\nInjected: 1"},
    {"AKOOL_API_KEY": "abc"},
    {"AKOOL_API_KEY": "", "AKOOL_CLIENT_ID": "cid-1234", "AKOOL_CLIENT_SECRET": "se\rcret-123"},
])
async def test_a_credential_that_cannot_go_in_a_header_exits_4_before_anything_is_sent(
        sandbox, tmp_path, env):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path,
                           env=cli_env(**env))
    assert result.code == 4, result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert sb.stats()["tasks_created"] == 0
    state = tmp_path / "out" / ".batchgen"
    for db in state.glob("*.db") if state.exists() else []:
        with sqlite3.connect(db) as conn:
            states = {s for (s,) in conn.execute("SELECT state FROM jobs")}
        assert states <= {"pending"}, states


# -- answers are capped and checked ----------------------------------------------------


async def test_an_oversized_answer_is_refused_while_reading(serve):
    big = json.dumps({"code": 1000, "data": {"result": [], "pad": "x" * 200_000}})

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to check up front
        resp.content_type = "application/json"
        await resp.prepare(request)
        for i in range(0, len(big), 4096):
            await resp.write(big[i:i + 4096].encode())
        return resp

    app = web.Application()
    app.router.add_post(f"{V4}/resultsByIds", huge)
    app.router.add_post(f"{V4}/createBySourcePrompt", huge)
    base = await serve(app)
    async with AkoolClient.open(base, Credentials(api_key=KEY),
                                limits=wire.Limits(answer_bytes=64_000)) as client:
        with pytest.raises(RetryableApiError, match="larger than 64000"):
            await client.results(["t1"])
        with pytest.raises(OutcomeUnknown, match="larger than"):  # it may have been made
            await client.create({"image_url": "https://example.com/a.jpg"})


@pytest.mark.parametrize("data, expect", [
    ({"_id": "bad\x00id", "status": 1}, "unusable task id"),
    ({"_id": "a,b", "status": 1}, "unusable task id"),
    ({"_id": ["t1"], "status": 1}, "unusable task id"),
    ({"status": 1}, "without a task id"),
])
async def test_a_create_answered_with_an_unusable_id_is_unknown_never_stored(serve, data,
                                                                             expect):
    async def create(request: web.Request) -> web.Response:
        return ok(data)

    app = web.Application()
    app.router.add_post(f"{V4}/createBySourcePrompt", create)
    base = await serve(app)
    async with AkoolClient.open(base, Credentials(api_key=KEY)) as client:
        with pytest.raises(OutcomeUnknown, match=expect):
            await client.create({"image_url": "https://example.com/a.jpg"})


async def test_result_records_are_checked_field_by_field(serve):
    records = [
        {"_id": "t1", "status": "3", "video_url": "https://cdn.example/a.mp4"},
        {"_id": "t2", "status": 3, "video_url": {"href": "x"}},
        {"_id": "t3", "status": 3, "video_url": "javascript:alert(1)"},
        {"_id": "t4", "status": 4, "error_msg": "bad\x1b[31m image\n" + "y" * 1000},
        {"_id": "t\x005", "status": 3},
        {"_id": "t6", "status": 2, "create_time": 1754377191100, "update_time": "soon"},
        "not a record",
    ]

    async def results(request: web.Request) -> web.Response:
        return ok({"result": records})

    app = web.Application()
    app.router.add_post(f"{V4}/resultsByIds", results)
    base = await serve(app)
    async with AkoolClient.open(base, Credentials(api_key=KEY)) as client:
        got = {r.task_id: r for r in await client.results(["t1", "t2", "t3", "t4", "t6"])}
    assert sorted(got) == ["t1", "t2", "t3", "t4", "t6"]
    assert got["t1"].status is wire.TaskStatus.UNREADABLE
    assert got["t2"].video_url is None and got["t3"].video_url is None
    assert got["t4"].status is wire.TaskStatus.FAILED and got["t4"].reason is not None
    assert "\x1b" not in got["t4"].reason and "\n" not in got["t4"].reason
    assert len(got["t4"].reason) < 400
    assert got["t6"].create_time == 1754377191100 and got["t6"].update_time is None


@pytest.mark.parametrize("answer", [
    {"code": [1000], "data": {"result": []}},
    {"code": 1000, "data": {"successIds": 5, "noPermissionItems": "x"}},
    {"code": 1000, "data": {"result": 7}},
    "[" * 100_000,
])
async def test_malformed_answers_raise_api_errors_never_crash(serve, answer):
    async def anything(request: web.Request) -> web.Response:
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return web.Response(text=text, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    base = await serve(app)
    async with AkoolClient.open(base, Credentials(api_key=KEY)) as client:
        for call in (lambda: client.results(["t1"]), lambda: client.delete(["t1"]),
                     client.effects):
            with contextlib.suppress(ApiError):
                await call()


@pytest.mark.parametrize("models, what", [
    ([{"value": "m1", "resolutionList": "720p", "durationList": [5]}], "resolutionList"),
    ([{"value": "m1", "resolutionList": [{"value": "720p", "unit_credit": 5}],
       "durationList": [0]}], "durationList"),
    ([{"value": "m1", "resolutionList": [{"value": "720p", "unit_credit": "5"}]}],
     "resolutionList"),
    ({"value": "m1"}, "not a list"),
])
async def test_models_with_a_malformed_list_exit_1_with_one_clear_line(serve, tmp_path,
                                                                      models, what):
    async def listing(request: web.Request) -> web.Response:
        return ok(models)

    app = web.Application()
    app.router.add_get("/api/open/v4/aigModel/list", listing)
    base = await serve(app)
    result = await run_cli("models", "--api-base", base, cwd=tmp_path,
                           env=cli_env(AKOOL_API_KEY=KEY))
    assert result.code == 1, result.err
    assert what in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


async def test_plan_online_with_a_zero_duration_model_is_a_clear_error(serve, tmp_path):
    async def listing(request: web.Request) -> web.Response:
        return ok([{"value": "m1", "resolutionList": [{"value": "720p", "unit_credit": 5}],
                    "durationList": [0], "maxCount": 4}])

    app = web.Application()
    app.router.add_get("/api/open/v4/aigModel/list", listing)
    base = await serve(app)
    manifest = write_manifest(tmp_path, 1, job_extra={"model_name": "m1"})
    result = await run_cli("plan", str(manifest), "--online", "--api-base", base,
                           cwd=tmp_path, env=cli_env(AKOOL_API_KEY=KEY))
    assert result.code == 1, result.err
    assert "durationList" in result.err and "Traceback" not in result.err


# -- downloads are capped while streaming ----------------------------------------------


async def test_a_video_over_the_size_limit_is_refused_announced_or_streamed(serve, tmp_path):
    from batchgen.download import fetch_to

    head = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 12

    async def announced(request: web.Request) -> web.Response:
        return web.Response(body=head + b"x" * 5000, content_type="video/mp4")

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(head)
        for _ in range(100):
            await resp.write(b"x" * 1000)
        return resp

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=410)

    app = web.Application()
    app.router.add_get("/announced.mp4", announced)
    app.router.add_get("/streamed.mp4", streamed)
    app.router.add_get("/gone.mp4", gone)
    base = await serve(app)
    async with AkoolClient.open(base, Credentials(api_key=KEY),
                                limits=wire.Limits(video_bytes=4000)) as client:
        for name in ("announced", "streamed"):
            with pytest.raises(FatalApiError, match="limit of 4000"):
                await fetch_to(client, f"{base}/{name}.mp4", tmp_path / f"{name}.mp4")
        with pytest.raises(errors.UrlGone):
            await fetch_to(client, f"{base}/gone.mp4", tmp_path / "gone.mp4")
    assert list(tmp_path.iterdir()) == []  # nothing under a final name, no partial left


# -- one map for every aiohttp exception -----------------------------------------------


def _aiohttp_exception_classes() -> list[type[BaseException]]:
    modules = [aiohttp, aiohttp.http_exceptions]
    found = {c for m in modules for _, c in inspect.getmembers(m, inspect.isclass)
             if issubclass(c, BaseException) and not issubclass(c, Warning)
             and c.__module__.startswith("aiohttp")}
    return sorted(found, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _aiohttp_exception_classes(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("creates", [False, True])
def test_every_aiohttp_exception_class_is_mapped(cls, creates):
    exc = cls.__new__(cls)  # constructors differ; the map looks at the class only
    with pytest.raises(ApiError) as info, wire.map_aiohttp_errors("call", creates=creates):
        raise exc
    assert info.value.__cause__ is exc
    assert "call:" in str(info.value)
    if not creates:
        assert not isinstance(info.value, OutcomeUnknown)  # a read is always safe again
    if issubclass(cls, aiohttp.ClientConnectorError):
        assert type(info.value) is RetryableApiError  # nothing was sent


async def test_real_faults_map_to_the_right_kind(serve):
    async def slow(request: web.Request) -> web.Response:
        import asyncio
        await asyncio.sleep(5)
        return ok({})

    async def hang_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        return ok({})

    app = web.Application()
    app.router.add_post(f"{V4}/resultsByIds", slow)
    app.router.add_post(f"{V4}/createBySourcePrompt", hang_up)
    base = await serve(app)
    from batchgen.client import Timeouts
    async with AkoolClient.open(base, Credentials(api_key=KEY),
                                timeouts=Timeouts(read=0.2, total=2)) as client:
        with pytest.raises(RetryableApiError, match="no answer"):
            await client.results(["t1"])
        with pytest.raises(OutcomeUnknown, match="no answer"):
            await client.create({"image_url": "https://example.com/a.jpg"})
    async with AkoolClient.open("http://127.0.0.1:9", Credentials(api_key=KEY)) as client:
        with pytest.raises(RetryableApiError, match="cannot connect") as info:
            await client.create({"image_url": "https://example.com/a.jpg"})
        assert not isinstance(info.value, OutcomeUnknown)


# -- hostile data through a whole run --------------------------------------------------


def _once(predicate, change):
    """A mutation applied to the first answer that matches, then never again."""
    done = []

    def mutate(path: str, sent: Any, answer: Any) -> Any:
        if not done and predicate(path, sent, answer):
            done.append(path)
            return change(answer)
        return answer
    return mutate


def _first_result_done(path: str, sent: Any, answer: Any) -> bool:
    records = (answer.get("data") or {}).get("result") or [] if isinstance(answer, dict) else []
    return path.endswith("resultsByIds") and any(r.get("status") == 3 for r in records)


def _break_url(answer: Any) -> Any:
    for r in answer["data"]["result"]:
        if r.get("status") == 3:
            r["video_url"] = {"href": r["video_url"]}
            break
    return answer


HOSTILE = {
    "unhashable code": _once(lambda p, s, a: p.endswith("resultsByIds"),
                             lambda a: {**a, "code": [1000]}),
    "video_url of the wrong type": _once(_first_result_done, _break_url),
    "NUL in a created id": _once(lambda p, s, a: p.endswith("createBySourcePrompt"),
                                 lambda a: {**a, "data": {**a["data"], "_id": "x\x00y"}}),
    "delete ids of the wrong type": _once(
        lambda p, s, a: p.endswith("delbyids"),
        lambda a: {**a, "data": {"successIds": 5, "noPermissionItems": 7}}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_data_fails_one_job_at_most_and_never_crashes_the_run(
        sandbox, tamper, tmp_path, name):
    sb = await sandbox()
    base = await tamper(sb, HOSTILE[name])
    manifest = write_manifest(tmp_path, 3, base_url=base,
                              extra={"output": {"delete_remote": True}})
    env = cli_env(**FAST_RETRY)
    first = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path, env=env)
    assert first.code in (0, 1), first.err
    assert "internal error" not in first.err
    rows = _report(tmp_path / "out")
    assert sum(r["status"] == "completed" for r in rows) >= 2, rows
    again = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path, env=env)
    assert again.code in (0, 1) and "internal error" not in again.err, again.err


def _report(out: Path) -> list[dict[str, str]]:
    import csv
    with open(out / "report.csv", newline="") as f:
        return list(csv.DictReader(f))


# -- an outage ends the run, never hangs ------------------------------------------------


async def test_an_outage_mid_run_saves_state_and_exits_75_instead_of_hanging(sandbox, tmp_path):
    import asyncio
    import time

    from cli_helpers import start_cli

    sb = await sandbox(processing_time=60)  # tasks stay in flight while the API goes away
    manifest = write_manifest(tmp_path, 4, base_url=sb.url, concurrency=4)
    env = cli_env(BATCHGEN_OUTAGE_TIMEOUT="2", BATCHGEN_RETRY_BASE="0.01",
                  BATCHGEN_RETRY_CAP="0.2", BATCHGEN_RETRY_ATTEMPTS="1000")
    proc = await start_cli("run", str(manifest), "--no-progress", cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        while sb.stats()["tasks_created"] < 4:
            assert time.monotonic() < deadline, "the run never submitted"
            await asyncio.sleep(0.05)
        await sb.close()  # the API is gone mid-run
        stopped = time.monotonic()
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:  # it hung: do not leave it polling forever
            proc.kill()
            await proc.wait()
    text = err.decode()
    assert proc.returncode == 75, text
    assert time.monotonic() - stopped < 30
    assert "the API is unavailable" in text and "nothing is lost" in text
    assert ": : " not in text  # run-wide notices name no empty job id
    assert "Traceback" not in text
    with sqlite3.connect(next((tmp_path / "out" / ".batchgen").glob("*.db"))) as conn:
        kept = conn.execute("SELECT state, task_id FROM jobs").fetchall()
    assert len(kept) == 4 and all(s == "running" and t for s, t in kept), kept


async def test_the_outage_timeout_is_a_documented_run_option(tmp_path):
    result = await run_cli("run", "--help", cwd=tmp_path)
    assert "--outage-timeout" in result.out
    bad = await run_cli("run", "m.yaml", "--outage-timeout", "nan", cwd=tmp_path)
    assert bad.code == 2 and "seconds" in bad.err


def test_outage_watch_needs_a_failure_past_the_timeout_with_no_success_between():
    from batchgen.retry import OutageWatch

    watch = OutageWatch(timeout=10)
    assert not watch.observe(0, ok=0, failed=1)      # failures begin
    assert not watch.observe(5, ok=0, failed=2)
    assert not watch.observe(30, ok=0, failed=2)     # quiet: nothing asked, no verdict
    assert watch.observe(31, ok=0, failed=3)         # still failing, 31 s on
    again = OutageWatch(timeout=10)
    again.observe(0, ok=0, failed=1)
    again.observe(8, ok=1, failed=1)                 # a usable answer resets the clock
    assert not again.observe(12, ok=1, failed=2)
    assert again.observe(22, ok=1, failed=3)


async def test_a_video_host_that_cannot_be_reached_keeps_the_job_for_the_next_run(
        sandbox, tamper, tmp_path):
    def dead_host(path: str, sent: Any, answer: Any) -> Any:
        if path.endswith("resultsByIds"):
            for record in answer["data"]["result"]:
                if record.get("video_url"):
                    record["video_url"] = "http://127.0.0.1:9/gone.mp4"  # nothing listens
        return answer

    sb = await sandbox()
    base = await tamper(sb, dead_host)
    manifest = write_manifest(tmp_path, 2, base_url=base)
    result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path,
                           env=cli_env(**FAST_RETRY))
    assert result.code == 1, result.err
    assert "kept and the next run fetches them" in result.err
    assert [r["status"] for r in _report(tmp_path / "out")] == ["pending", "pending"]
    assert sb.stats()["tasks_created"] == 2


async def test_a_task_done_without_a_video_url_is_kept_ready_and_never_paid_again(
        sandbox, tamper, tmp_path):
    """Status 3 with no usable URL is paid work: the job waits `ready` (not `failed`), so
    neither a plain re-run nor --retry-failed sends its create again."""
    serving = []

    def no_url_yet(path: str, sent: Any, answer: Any) -> Any:
        if path.endswith("resultsByIds") and not serving:
            for record in answer["data"]["result"]:
                record.pop("video_url", None)
        return answer

    sb = await sandbox()
    base = await tamper(sb, no_url_yet)
    manifest = write_manifest(tmp_path, 2, base_url=base)
    env = cli_env(**FAST_RETRY)
    first = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path, env=env)
    assert first.code == 1, first.err
    assert "gave no usable video_url; kept for the next run" in first.err
    assert "kept and the next run fetches them" in first.err
    with sqlite3.connect(next((tmp_path / "out" / ".batchgen").glob("*.db"))) as conn:
        assert [s for (s,) in conn.execute("SELECT state FROM jobs")] == ["ready", "ready"]
    retried = await run_cli("run", str(manifest), "--retry-failed", "--no-progress",
                            cwd=tmp_path, env=env)
    assert retried.code == 1, retried.err
    serving.append(True)  # the API now names the videos
    last = await run_cli("run", str(manifest), "--retry-failed", "--no-progress",
                         cwd=tmp_path, env=env)
    assert last.code == 0, last.err
    assert [r["status"] for r in _report(tmp_path / "out")] == ["completed", "completed"]
    assert sb.stats()["tasks_created"] == 2  # each video paid for once


def test_the_wire_stays_in_client_py():
    # STYLE.md: only client.py knows aiohttp, codes, HTTP statuses and JSON keys; the
    # scheduler sees TaskStatus, TaskRecord fields and typed errors
    import re

    import batchgen

    wire_words = re.compile(r'\.raw\b|http_status|\.code\b|\b(?:1005|1101|1006)\b|"error_msg"'
                            r'|"_id"|"deduction_credit"|aiohttp|status == [34]')
    root = Path(batchgen.__file__).parent
    scheduler = sorted(f"scheduler/{p.name}" for p in (root / "scheduler").glob("*.py"))
    sessions = sorted(p.name for p in root.glob("session*.py"))
    for name in ("runner.py", *sessions, "api.py", "download.py", *scheduler):
        code = [line for line in (root / name).read_text().splitlines()
                if not line.lstrip().startswith("#")]
        found = [line.strip() for line in code if wire_words.search(line)]
        assert found == [], f"{name} knows the wire: {found}"
