"""The API's endpoints (akool-api.md): creates, results, deletes, the effect and model
lists, and video downloads, each turning its answer into typed values.

`AkoolClient` is the one object the rest of batchgen holds; open it with
``async with AkoolClient.open(...)``. Part of the client package: `Transport`
(transport.py) sends and translates, answers.py checks what comes back.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from batchgen.client.answers import (
    _as_dict,
    _as_list,
    _created,
    _task,
    check_models,
    clean_text,
    scrub,
    task_id_of,
    video_url_of,
)
from batchgen.client.exceptions import map_aiohttp_errors
from batchgen.client.transport import Transport
from batchgen.client.wire import (
    HTTP_GONE,
    PREFIX_I2V,
    WIRE_NAMES,
    BatchTasks,
    OnSend,
    TaskRecord,
)
from batchgen.errors import FatalApiError, OutcomeUnknown, RetryableApiError, UrlGone


class AkoolClient(Transport):
    """The API's endpoints over one account (see `Transport` for opening and closing)."""

    # -- endpoints ---------------------------------------------------------------------

    async def create(self, fields: dict[str, Any],
                     on_send: OnSend | None = None) -> TaskRecord:
        """createBySourcePrompt: one video task. Charged at creation.

        `on_send` is called right before the request is written (see `_about_to_send`).
        """
        body = {WIRE_NAMES.get(k, k): v for k, v in fields.items()}
        data = (await self._request("createBySourcePrompt", "POST",
                                    f"{PREFIX_I2V}/createBySourcePrompt", json_body=body,
                                    creates=True, on_send=on_send)).get("data")
        return _created("createBySourcePrompt", data)

    async def create_batch(self, fields: dict[str, Any],
                           on_send: OnSend | None = None) -> BatchTasks:
        """createBySourcePrompt/batch: `count` videos of one request, model selectable.

        Videos listed under an id we cannot use were made (and charged) all the same: they
        are counted in `BatchTasks.unusable`, so the caller never takes them for videos
        the API refused to make.
        """
        name = "createBySourcePrompt/batch"
        body = {WIRE_NAMES.get(k, k): v for k, v in fields.items()}
        data = _as_dict((await self._request(name, "POST", f"{PREFIX_I2V}/{name}",
                                             json_body=body, creates=True,
                                             on_send=on_send)).get("data"))
        listed = [r for r in _as_list(data.get("successList")) if isinstance(r, dict)]
        tasks = [t for t in map(_task, listed) if t is not None]
        if not tasks:
            if listed:  # tasks were made, but we cannot tell which
                raise OutcomeUnknown(f"{name}: the API answered with unusable task ids; "
                                     "the tasks may exist and be charged")
            errors = clean_text(scrub(repr(_as_list(data.get("errorList"))), self._secrets()),
                                200)
            raise FatalApiError(f"{name}: no task created: {errors}")
        return BatchTasks(tasks, unusable=len(listed) - len(tasks))

    async def update_audio(self, pre_video_id: str, audio_type: int, audio_url: str | None,
                           on_send: OnSend | None = None) -> TaskRecord:
        """updateVideoAudio: a new task that adds audio to a completed video."""
        body: dict[str, Any] = {"pre_video_id": pre_video_id, "audio_type": audio_type}
        if audio_url:
            body["audio_url"] = audio_url
        data = (await self._request("updateVideoAudio", "POST", f"{PREFIX_I2V}/updateVideoAudio",
                                    json_body=body, creates=True, on_send=on_send)).get("data")
        return _created("updateVideoAudio", data)

    async def results(self, task_ids: list[str]) -> list[TaskRecord]:
        """resultsByIds for up to a batch of ids, sent as one comma-joined string.

        Records with an unusable id are left out (they cannot be ours: we only ask about
        ids that passed the same check).
        """
        data = _as_dict((await self._request("resultsByIds", "POST", f"{PREFIX_I2V}/resultsByIds",
                                    json_body={"_ids": ",".join(task_ids)})).get("data"))
        result = data.get("result")
        if not isinstance(result, list):
            self.answers_ok -= 1  # a code-1000 answer without the list is no answer
            self.answers_failed += 1
            raise RetryableApiError("resultsByIds: answer without a result list")
        return [t for t in (_task(r) for r in result if isinstance(r, dict)) if t is not None]

    async def delete(self, task_ids: list[str]) -> tuple[list[str], dict[str, str]]:
        """delbyids: returns (deleted ids, {id: reason} for those refused)."""
        data = _as_dict((await self._request("delbyids", "POST", f"{PREFIX_I2V}/delbyids",
                                    json_body={"_ids": ",".join(task_ids)})).get("data"))
        refused: dict[str, str] = {}
        for item in _as_list(data.get("noPermissionItems")):
            if isinstance(item, dict) and (tid := task_id_of(item.get("_id"))) is not None:
                refused[tid] = clean_text(item.get("msg", ""))
        deleted = [t for t in map(task_id_of, _as_list(data.get("successIds"))) if t]
        return deleted, refused

    async def effects(self) -> list[dict[str, Any]]:
        body = await self._request("effects", "GET", f"{PREFIX_I2V}/effects")
        data = _as_dict(body.get("data"))
        return [r for r in _as_list(data.get("result")) if isinstance(r, dict)]

    async def models(self) -> list[dict[str, Any]]:
        """aigModel/list, checked by `check_models` (a malformed list is a FatalApiError)."""
        data = (await self._request("models", "GET", "/api/open/v4/aigModel/list",
                                    params={"types[]": "1501"})).get("data")
        return check_models(data if data is not None else [])

    # -- downloads ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def stream(self, url: str, chunk_size: int = 256 * 1024
                     ) -> AsyncIterator[tuple[int | None, AsyncIterator[bytes]]]:
        """GET a video: yields (Content-Length or None, async iterator of chunks).

        No credential is sent (a video URL is signed on its own), so following a CDN's
        redirects is safe here. Raises `UrlGone` for 403/404/410 (expired or deleted),
        `FatalApiError` for a video over `Limits.video_bytes` (announced or streamed: the
        count is kept while reading) or an unusable URL, `RetryableApiError` for anything
        that may work on a second try.
        """
        self.requests["download"] += 1
        limit = self._limits.video_bytes
        if video_url_of(url) is None:
            raise FatalApiError(f"download: the video URL is unusable: {clean_text(url, 80)}")
        timeout = aiohttp.ClientTimeout(total=self._timeouts.download_total,
                                        sock_connect=self._timeouts.connect,
                                        sock_read=self._timeouts.read)
        with map_aiohttp_errors("download"):
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status in HTTP_GONE:
                    raise UrlGone(f"download: HTTP {resp.status} (the video URL is gone)",
                                  http_status=resp.status)
                if resp.status != 200:
                    raise RetryableApiError(f"download: HTTP {resp.status}",
                                            http_status=resp.status)
                if resp.content_length is not None and resp.content_length > limit:
                    raise FatalApiError(f"download: the video is {resp.content_length} bytes, "
                                        f"over the limit of {limit} (BATCHGEN_MAX_VIDEO_BYTES)")

                async def chunks() -> AsyncIterator[bytes]:
                    seen = 0
                    with map_aiohttp_errors("download"):
                        async for chunk in resp.content.iter_chunked(chunk_size):
                            seen += len(chunk)
                            if seen > limit:
                                raise FatalApiError(
                                    f"download: the video passed the limit of {limit} bytes "
                                    "(BATCHGEN_MAX_VIDEO_BYTES); stopped reading")
                            self.answers_ok += 1
                            yield chunk

                yield resp.content_length, chunks()
