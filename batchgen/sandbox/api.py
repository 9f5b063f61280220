"""Handlers of the emulated Akool endpoints (akool-api.md §2–3) and of video downloads.

Business errors are HTTP 200 with `{code, msg, data}`, as the real API answers. Every check
and charge of a create runs without an `await` in between, so concurrent creates can never
overspend the balance or overshoot the in-flight limit. Authentication and the generic
faults (5xx, 429, latency, resets) are applied by the middleware in `app.py`, not here.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from batchgen.sandbox import catalog, validate
from batchgen.sandbox.config import SandboxConfig
from batchgen.sandbox.fetch import image_fails
from batchgen.sandbox.http import base_url, drop, fail, json_object, now_ms, ok, split_ids, stream
from batchgen.sandbox.state import (
    CODE_NOT_FOUND,
    CODE_OK,
    CODE_PARAM,
    CODE_QUOTA,
    CODE_TOO_FREQUENT,
    UID,
    SandboxState,
)
from batchgen.sandbox.video import mp4_bytes

PROCESSING_MSG = "video resource is processing, please try again later"


class AkoolApi:
    """The endpoints; one instance per app, holding the catalogues built for it."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.models = catalog.models()
        self.effect_names = catalog.effect_names()
        self.started_ms = now_ms()

    @property
    def config(self) -> SandboxConfig:
        return self.state.config

    def _limit_error(self, now: float, new_tasks: int, credits: int) -> web.Response | None:
        limit = self.config.max_in_flight
        if limit and self.state.in_flight(now) + new_tasks > limit:
            return fail(CODE_TOO_FREQUENT)
        if credits > self.state.balance:
            return fail(CODE_QUOTA)
        return None

    def _answer_create(self, request: web.Request, data: Any) -> web.Response:
        if self.state.chance(self.config.lost_create_rate, "lost_create"):
            return drop(request)
        return ok(data)

    async def get_token(self, request: web.Request) -> web.Response:
        body = await json_object(request) or {}
        client_id, secret = body.get("clientId"), body.get("clientSecret")
        if not isinstance(client_id, str) or not client_id:
            return fail(CODE_PARAM, "Parameter error: clientId is required")
        if not isinstance(secret, str) or not secret:
            return fail(CODE_PARAM, "Parameter error: clientSecret is required")
        code, token = self.state.issue_token(client_id, secret)
        if code != CODE_OK:
            return fail(code)
        return web.json_response({"code": CODE_OK, "token": token})

    async def create(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        if body is None:
            return fail(CODE_PARAM, "Parameter error: body must be a JSON object")
        cfg = self.config
        error, fields = validate.single_create(
            body, resolutions=list(cfg.prices), effect_names=self.effect_names,
            require_negative_prompt=cfg.require_negative_prompt,
        )
        if error:
            return fail(CODE_PARAM, error)
        broken = cfg.fetch_images and await image_fails(body.get("image_url"))
        length = body["video_length"]
        credits = _price(cfg.prices.get(body["resolution"], {}), length)
        if credits is None:
            return fail(CODE_PARAM, f"Parameter error: no price for {body['resolution']}/{length}")
        now = time.monotonic()
        refused = self._limit_error(now, 1, credits)
        if refused is not None:  # a web.Response is falsy before aiohttp 3.12
            return refused
        task = self.state.create_task(
            now=now, create_ms=now_ms(), video_length=length, credits=credits,
            prompt=fields["prompt"], fields=fields, broken=broken,
        )
        self.state.record_create("createBySourcePrompt", body)
        return self._answer_create(request, task.created_record())

    async def create_batch(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        if body is None:
            return fail(CODE_PARAM, "Parameter error: body must be a JSON object")
        error, fields = validate.batch_create(body, self.models)
        if error:
            return fail(CODE_PARAM, error)
        broken = self.config.fetch_images and await image_fails(body.get("image_url"))
        length = body["video_length"]
        unit = fields.pop("_unit_credit") * (2 if length == 10 else 1)
        count = fields["batch_count"]
        now = time.monotonic()
        refused = self._limit_error(now, count, unit * count)
        if refused is not None:  # a web.Response is falsy before aiohttp 3.12
            return refused
        create_ms = now_ms()
        batch_id = f"{create_ms}_{UID}"
        items = []
        for index in range(count):
            task = self.state.create_task(
                now=now, create_ms=create_ms + index, video_length=length, credits=unit,
                prompt=fields["prompt"], fields={**fields, "batch_id": batch_id}, broken=broken,
            )
            items.append(task.created_record())
        self.state.record_create("createBySourcePrompt/batch", body)
        return self._answer_create(request, {"successList": items, "errorList": []})

    async def update_audio(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        if body is None:
            return fail(CODE_PARAM, "Parameter error: body must be a JSON object")
        error = validate.update_audio(body)
        if error:
            return fail(CODE_PARAM, error)
        now = time.monotonic()
        source = self.state.tasks.get(body["pre_video_id"])
        if source is None:
            return fail(CODE_NOT_FOUND)
        status = source.status(now)
        if status != 3:
            return fail(CODE_PARAM, f"Parameter error: pre_video_id is not a completed video "
                                    f"(status {status})")
        credits = _price(self.config.add_audio_prices, source.video_length)
        if credits is None:
            return fail(CODE_PARAM, f"Parameter error: no audio price for {source.video_length}")
        refused = self._limit_error(now, 1, credits)
        if refused is not None:  # a web.Response is falsy before aiohttp 3.12
            return refused
        src = source.fields
        fields = {
            "webhookUrl": "",
            "resolution": src["resolution"],
            "file_name": src["file_name"],
            "effect_name": src.get("effect_name", ""),
            "image_url": src["image_url"],
            "prompt": src["prompt"],
            "audio_type": body["audio_type"],
            "audio_url": body.get("audio_url") or "",
            "effect_code": src.get("effect_code", ""),
            "pre_video_id": source.id,
        }
        task = self.state.create_task(
            now=now, create_ms=now_ms(), video_length=source.video_length, credits=credits,
            prompt="", fields=fields, only_add_audio=True,
        )
        keys = ("pre_video_id", "audio_type", "audio_url")
        fingerprint_body: dict[str, Any] = {k: body[k] for k in keys if k in body}
        self.state.record_create("updateVideoAudio", fingerprint_body)
        return self._answer_create(request, task.created_record())

    async def results(self, request: web.Request) -> web.Response:
        ids = split_ids(await json_object(request))
        if ids is None:
            return fail(CODE_PARAM, "Failed to get results")
        now = time.monotonic()
        prefix = json.dumps(f"{base_url(request)}/videos/", ensure_ascii=False)[:-1]
        tasks = self.state.tasks
        found = (tasks.get(task_id) for task_id in ids)
        records = ",".join(t.result_json(now, prefix) for t in found if t is not None)
        return web.Response(
            text=f'{{"code":{CODE_OK},"msg":"OK","data":{{"result":[{records}]}}}}',
            content_type="application/json",
        )

    async def delete(self, request: web.Request) -> web.Response:
        ids = split_ids(await json_object(request))
        if ids is None:
            return fail(CODE_PARAM, "Parameter error: _ids must be a comma-separated string")
        now = time.monotonic()
        deleted: list[str] = []
        refused: list[dict[str, str]] = []
        for task_id in ids:
            task = self.state.tasks.get(task_id)
            if task is None:
                refused.append({"_id": task_id, "msg": "video resource does not exist"})
            elif task.status(now) in (1, 2) or self.state.chance(
                    self.state.config.delete_refusal_rate, "delete_refused"):
                refused.append({"_id": task_id, "msg": PROCESSING_MSG})
            else:
                self.state.delete_task(task_id)
                deleted.append(task_id)
        return ok({"successIds": deleted, "noPermissionItems": refused},
                  msg="Delete successfully")

    async def effects(self, request: web.Request) -> web.Response:
        result = catalog.effects(self.started_ms)
        return ok({"result": result, "count": len(result)}, msg="Success")

    async def models_list(self, request: web.Request) -> web.Response:
        raw = request.query.getall("types[]", []) + request.query.getall("types", [])
        if not raw:
            return fail(CODE_PARAM, "Parameter error: types is required")
        types = {t.strip() for value in raw for t in value.split(",")}
        return ok([m for m in self.models if str(m["type"]) in types])

    async def quota(self, request: web.Request) -> web.Response:
        return ok({"credit": self.state.balance})

    async def download(self, request: web.Request) -> web.StreamResponse:
        state, cfg = self.state, self.config
        task = state.tasks.get(request.match_info["task_id"])
        now = time.monotonic()
        if task is None or task.status(now) != 3:
            raise web.HTTPNotFound(text="video not found")
        if cfg.url_expiry and now > task.done_at + cfg.url_expiry:
            raise web.HTTPForbidden(text="video URL has expired")
        if state.chance(cfg.download_error_rate, "download_error"):
            raise web.HTTPInternalServerError(text="download failed")
        body = mp4_bytes(task.id, task.duration, str(task.fields.get("prompt") or ""))
        truncate = state.chance(cfg.truncate_rate, "truncate")
        if request.method == "HEAD" or not (truncate or cfg.slow_download > 0):
            return web.Response(body=body, content_type="video/mp4")
        return await stream(request, body, truncate=truncate, seconds=cfg.slow_download)


def _price(row: dict[int, int], length: int) -> int | None:
    return row.get(length, row.get(str(length)))  # type: ignore[call-overload]
