"""The aiohttp application: routes, the fault/auth middleware and the admin endpoints.

The middleware names each request after its endpoint, counts it, and applies the generic
faults and authentication to Akool routes only: the admin routes under `/__sandbox__/`
must stay reliable, since tests use them to ask what really happened. Download faults
live in the download handler because they act on the body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from batchgen.sandbox.api import AkoolApi
from batchgen.sandbox.config import ConfigError, SandboxConfig, span
from batchgen.sandbox.http import drop, fail
from batchgen.sandbox.state import CODE_TOO_FREQUENT, SandboxState

STATE = web.AppKey("state", SandboxState)
ENDPOINTS = web.AppKey("endpoints", dict)

ADMIN = "/__sandbox__"
V4 = "/api/open/v4"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(state: SandboxState) -> web.Application:
    """A fresh application serving `state`; nothing is shared with other instances."""
    api = AkoolApi(state)
    app = web.Application(middlewares=[_faults_and_auth], client_max_size=4 * 1024**2)
    app[STATE] = state
    routes: list[tuple[str, str, str, Handler]] = [
        ("POST", "/api/open/v3/getToken", "getToken", api.get_token),
        ("POST", f"{V4}/image2Video/createBySourcePrompt", "createBySourcePrompt", api.create),
        ("POST", f"{V4}/image2Video/createBySourcePrompt/batch", "createBySourcePrompt/batch",
         api.create_batch),
        ("POST", f"{V4}/image2Video/resultsByIds", "resultsByIds", api.results),
        ("GET", f"{V4}/image2Video/effects", "effects", api.effects),
        ("POST", f"{V4}/image2Video/updateVideoAudio", "updateVideoAudio", api.update_audio),
        ("POST", f"{V4}/image2Video/delbyids", "delbyids", api.delete),
        ("GET", "/api/open/v3/faceswap/quota/info", "quota", api.quota),
        ("GET", f"{V4}/aigModel/list", "models", api.models_list),
        ("GET", "/videos/{task_id}.mp4", "download", api.download),
    ]
    endpoints: dict[str, str] = {}
    for method, path, name, handler in routes:
        if method == "GET":  # also answers HEAD, which download checks may use
            route = app.router.add_get(path, handler)
        else:
            route = app.router.add_route(method, path, handler)
        assert route.resource is not None  # a route added by path always has its resource
        endpoints[route.resource.canonical] = name
    app[ENDPOINTS] = endpoints
    app.router.add_get(f"{ADMIN}/stats", _admin_stats)
    app.router.add_get(f"{ADMIN}/config", _admin_config_get)
    app.router.add_post(f"{ADMIN}/config", _admin_config_post)
    app.router.add_post(f"{ADMIN}/reset", _admin_reset)
    return app


@web.middleware
async def _faults_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    name = None if resource is None else request.app[ENDPOINTS].get(resource.canonical)
    if name is None:
        return await handler(request)
    state = request.app[STATE]
    state.requests[name] += 1
    if name == "download":
        return await handler(request)
    cfg = state.config
    if state.chance(cfg.reset_rate, "reset"):
        return drop(request)
    lo, hi = span(cfg.latency)
    if hi > 0:
        state.faults["latency"] += 1
        await asyncio.sleep(state.rng.uniform(lo, hi))
    if state.chance(cfg.http_error_rate, "http_error"):
        status = state.rng.choice((500, 502, 503))
        return web.Response(status=status, text=f"{status}: sandbox injected server error")
    if state.chance(cfg.rate_limit_rate, "rate_limit"):
        return web.Response(status=429, text="429: Too Many Requests",
                            headers={"Retry-After": f"{cfg.retry_after:g}"})
    if name != "getToken":
        code = state.authenticate(request.headers)
        if code is not None:
            return fail(code)
    if state.chance(cfg.code_1005_rate, "code_1005"):
        return fail(CODE_TOO_FREQUENT)
    return await handler(request)


async def _admin_stats(request: web.Request) -> web.Response:
    """`?brief=1` leaves out `creates_by_fingerprint`: at a million tasks that map is
    tens of MB of JSON, too heavy to ask for every few seconds while a run goes on."""
    stats = request.app[STATE].stats(brief=request.query.get("brief") == "1")
    return web.json_response(stats)


async def _admin_config_get(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].config.to_dict())


async def _admin_config_post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        patch: Any = json.loads(await request.read() or b"{}")
        apply_config(state, patch)
    except (ValueError, ConfigError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(state.config.to_dict())


async def _admin_reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.reset()
    return web.json_response(state.stats())


def apply_config(state: SandboxState, patch: Any) -> SandboxConfig:
    """Merge a partial config into the live one; a new `seed` reseeds the generator."""
    if not isinstance(patch, dict):
        raise ConfigError("sandbox config must be a JSON object")
    state.config.update(patch)
    if "seed" in patch:
        state.rng.seed(state.config.seed)
    return state.config
