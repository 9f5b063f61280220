"""What one create sends, and the journal's "sent" mark around it.

Owns `Requests`, the one request a create sends (the add-audio step, a batch create for
a family's videos still to make, or a single create) with its s3:// URLs presigned just
before it leaves, and `SentMark`, one attempt's "sent" mark: asked for when the client is
about to send (`on_send`, awaited before a byte leaves), durable once `left`, undone
when the API refused that attempt. Deliberately not here: the loop, the retries and what
a refused or accepted create means (submit.py, accept.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from batchgen.client import AkoolClient, OnSend, TaskRecord
from batchgen.jobs import JobRow
from batchgen.scheduler.state import BATCH_FIELDS, RunState


class Requests:
    """The requests of a run's creates."""

    def __init__(self, client: AkoolClient, state: RunState,
                 sign: Callable[[str], Awaitable[str]] | None) -> None:
        self._client = client
        self._state = state
        #: presigns an s3:// URL just before a create leaves (uploads.Presigner.url)
        self._sign = sign

    def call(self, row: JobRow, audio: bool, on_send: OnSend
             ) -> Callable[[], Awaitable[list[TaskRecord]]]:
        """The one request a create sends: the add-audio step, a batch create (`count`,
        `model_name`: the family's videos still to make), or a single create."""
        req = row.request
        if audio:
            step = req["add_audio"]

            async def call() -> list[TaskRecord]:
                url = (await self.signed({"audio_url": step.get("audio_url")}))["audio_url"]
                return [await self._client.update_audio(row.task_id or "", step["audio_type"],
                                                        url, on_send)]
        elif req.get("model_name") or req.get("count"):
            batch_fields = {k: v for k, v in req.items() if k in BATCH_FIELDS}
            batch_fields["count"] = len(self._state.family(row.job_id))

            async def call() -> list[TaskRecord]:
                return await self._client.create_batch(await self.signed(batch_fields),
                                                       on_send)
        else:
            fields = {k: v for k, v in req.items() if k != "add_audio"}

            async def call() -> list[TaskRecord]:
                return [await self._client.create(await self.signed(fields), on_send)]
        return call

    async def signed(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields with s3:// image/audio URLs presigned now (uploads.py), so a URL is
        fresh for its whole lifetime when the API fetches it; the state keeps s3://.
        Presigning fails retryably, before anything is sent."""
        if self._sign is None:
            return fields
        out = dict(fields)
        for key in ("image_url", "audio_url", "last_image_url"):
            value = out.get(key)
            if isinstance(value, str) and value.startswith("s3://"):
                out[key] = await self._sign(value)
        return out


class SentMark:
    """One create attempt's "sent" mark (scheduler/journal.py writes it durably)."""

    def __init__(self, state: RunState, job_id: str) -> None:
        self._state = state
        self._job_id = job_id
        #: this attempt's mark was asked for
        self.sent = False
        #: ...and is durable: from here on the request's bytes may leave
        self.left = False

    async def _mark(self) -> None:
        await self._state.sent(self._job_id)
        self.left = True

    def on_send(self) -> Awaitable[None] | None:
        """The client's hook: the mark, awaited by the client before a byte leaves."""
        if self.sent:
            return None
        self.sent = True
        return self._mark()

    def refused(self) -> None:
        """The API refused this attempt, so nothing exists yet: if we die while waiting
        to try again, the job must come back as never sent, not unknown."""
        self.left = False
        if self.sent:
            self.sent = False
            self._state.journal.flush()  # this job's staged mark first, then its undoing
            self._state.store.mark_sent(self._job_id, False)
