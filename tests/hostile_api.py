"""A small, misbehaving Akool API for tests: creates, results and downloads only.

A batch create can make more videos than asked (`surplus`), and can list some of the
videos it made under an id no client can use (`unreadable_ids`).

Each create answers with a task id and whatever `deduction_credit` the test chose (NaN,
-5, "20", ...); every task is done at the first poll. Video URLs carry a version: each
resultsByIds answer issues a new one, and only the newest works once `serving` is set
(an expiring URL the API renews). Runs on 127.0.0.1, port 0, in the test's own loop.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from batchgen.sandbox.video import mp4_bytes

I2V = "/api/open/v4/image2Video"


class HostileApi:
    """Start with `await HostileApi(...).start()`; `close()` at the end."""

    def __init__(self, charge: Callable[[dict[str, Any]], Any] = lambda body: 20, *,
                 versioned_urls: bool = False, surplus: int = 0,
                 unreadable_ids: int = 0) -> None:
        #: body of a create -> the deduction_credit to answer with (any JSON value)
        self.charge = charge
        self.versioned_urls = versioned_urls
        #: a batch create makes this many videos more than its `count` asked for
        self.surplus = surplus
        #: the last this-many videos of a batch answer are listed with an unusable `_id`
        #: (made and charged all the same)
        self.unreadable_ids = unreadable_ids
        #: with versioned URLs: downloads answer 403 until this is set
        self.serving = not versioned_urls
        self.requests: Counter[str] = Counter()
        self.tasks: dict[str, Any] = {}       #: task id -> its deduction_credit
        self.created: list[dict[str, Any]] = []
        self._version: dict[str, int] = {}
        self._server: TestServer | None = None
        self._video = mp4_bytes("hostile", 1.0)  # one small real MP4 serves every task

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def start(self) -> HostileApi:
        app = web.Application()
        app.router.add_post(f"{I2V}/createBySourcePrompt", self._create)
        app.router.add_post(f"{I2V}/createBySourcePrompt/batch", self._create_batch)
        app.router.add_post(f"{I2V}/resultsByIds", self._results)
        app.router.add_get("/v/{task_id}.mp4", self._download)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server()
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    @staticmethod
    def _answer(data: Any) -> web.Response:
        # json.dumps writes NaN and Infinity as the bare words a sloppy server would send
        return web.Response(text=json.dumps({"code": 1000, "msg": "OK", "data": data}),
                            content_type="application/json")

    async def _create(self, request: web.Request) -> web.Response:
        self.requests["create"] += 1
        body = await request.json()
        task_id = f"t{len(self.tasks) + 1:04d}"
        self.tasks[task_id] = self.charge(body)
        self.created.append(body)
        return self._answer({"_id": task_id, "status": 1,
                             "deduction_credit": self.tasks[task_id]})

    async def _create_batch(self, request: web.Request) -> web.Response:
        self.requests["create_batch"] += 1
        body = await request.json()
        made = []
        n = int(body.get("count", 1)) + self.surplus
        for k in range(n):
            task_id = f"t{len(self.tasks) + 1:04d}"
            self.tasks[task_id] = self.charge(body)
            listed_id = task_id if k < n - self.unreadable_ids else f"{task_id} <unreadable>"
            made.append({"_id": listed_id, "status": 1,
                         "deduction_credit": self.tasks[task_id]})
        self.created.append(body)
        return self._answer({"successList": made, "errorList": []})

    async def _results(self, request: web.Request) -> web.Response:
        self.requests["results"] += 1
        ids = (await request.json())["_ids"].split(",")
        result = []
        for task_id in ids:
            if task_id not in self.tasks:
                continue
            version = self._version[task_id] = self._version.get(task_id, 0) + 1
            result.append({"_id": task_id, "status": 3,
                           "deduction_credit": self.tasks[task_id],
                           "video_url": f"{self.url}/v/{task_id}.mp4?v={version}"})
        return self._answer({"result": result})

    async def _download(self, request: web.Request) -> web.Response:
        self.requests["download"] += 1
        task_id = request.match_info["task_id"]
        if task_id not in self.tasks:
            raise web.HTTPNotFound()
        if self.versioned_urls:
            fresh = request.query.get("v") == str(self._version.get(task_id))
            if not (self.serving and fresh):
                raise web.HTTPForbidden(text="video URL has expired")
        return web.Response(body=self._video, content_type="video/mp4")
