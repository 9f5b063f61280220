"""Pure validation of create bodies: a message naming the bad field, or the echo fields.

Each function returns `(error, fields)`: `error` is the 1003 message (None when the body is
good) and `fields` the request-dependent part of the task record, with the documented casing
(`webhookurl` in, `webhookUrl` out). No I/O, no state: `app.py` does the charging.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchgen.sandbox.catalog import DEFAULT_BATCH_MODEL

Result = tuple[str | None, dict[str, Any]]

_MISSING = object()


def _check(body: Mapping[str, Any], name: str, kind: type, *, required: bool) -> str | None:
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        return f"Parameter error: {name} is required" if required else None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"Parameter error: {name} must be an integer"
    if not isinstance(value, kind):
        label = {str: "a string", bool: "a boolean"}.get(kind, kind.__name__)
        return f"Parameter error: {name} must be {label}"
    if isinstance(value, str) and required and not value.strip():
        return f"Parameter error: {name} cannot be empty"
    return None


def _first_error(checks: list[str | None]) -> str | None:
    return next((c for c in checks if c), None)


def file_name(prompt: str) -> str:
    """Akool names the output after the start of the prompt (akool-api.md E1 example)."""
    return f"Image2Video_{prompt[:24]}.mp4"


def single_create(
    body: Mapping[str, Any], *, resolutions: list[str], require_negative_prompt: bool,
    effect_names: Mapping[str, str],
) -> Result:
    """Validate a createBySourcePrompt body (akool-api.md E1)."""
    has_effect = bool(body.get("effect_code"))
    error = _first_error([
        _check(body, "image_url", str, required=True),
        _check(body, "effect_code", str, required=False),
        _check(body, "prompt", str, required=not has_effect),
        _check(body, "negative_prompt", str, required=require_negative_prompt),
        _check(body, "extend_prompt", bool, required=False),
        _check(body, "is_premium_model", bool, required=False),
        _check(body, "resolution", str, required=True),
        _check(body, "video_length", int, required=True),
        _check(body, "audio_type", int, required=True),
        _check(body, "audio_url", str, required=body.get("audio_type") == 2),
        _check(body, "webhookurl", str, required=False),
    ])
    if error is None and body["resolution"] not in resolutions:
        error = f"Parameter error: resolution must be one of {', '.join(resolutions)}"
    if error is None and body["video_length"] not in (5, 10):
        error = "Parameter error: video_length must be 5 or 10"
    if error is None and body["audio_type"] not in (1, 2, 3):
        error = "Parameter error: audio_type must be 1, 2 or 3"
    if error:
        return error, {}
    effect_code = body.get("effect_code") or ""
    prompt = body.get("prompt") or ""
    return None, {
        "webhookUrl": body.get("webhookurl") or "",
        "resolution": body["resolution"],
        "file_name": file_name(prompt or effect_names.get(effect_code, effect_code)),
        "effect_name": effect_names.get(effect_code, ""),
        "image_url": body["image_url"],
        "prompt": prompt,
        "negative_prompt": body.get("negative_prompt") or "",
        "extend_prompt": bool(body.get("extend_prompt", False)),
        "audio_type": body["audio_type"],
        "audio_url": body.get("audio_url") or "",
        "effect_code": effect_code,
    }


def batch_create(body: Mapping[str, Any], models: list[dict[str, Any]]) -> Result:
    """Validate a createBySourcePrompt/batch body against the model list (akool-api.md E2).

    Unknown extra fields (the official demo sends `audio_type` as a string, `effect_code`…)
    are tolerated and ignored, like the real endpoint appears to do.
    """
    error = _first_error([
        _check(body, "image_url", str, required=True),
        _check(body, "prompt", str, required=True),
        _check(body, "model_name", str, required=False),
        _check(body, "negative_prompt", str, required=False),
        _check(body, "extend_prompt", bool, required=False),
        _check(body, "resolution", str, required=True),
        _check(body, "video_length", int, required=True),
        _check(body, "last_image_url", str, required=False),
        _check(body, "generate_audio", bool, required=False),
        _check(body, "count", int, required=False),
        _check(body, "webhookurl", str, required=False),
    ])
    if error:
        return error, {}
    model_name = body.get("model_name") or DEFAULT_BATCH_MODEL
    model = next((m for m in models if m["value"] == model_name), None)
    if model is None:
        return f"Parameter error: model_name {model_name!r} is not a known model", {}
    credits = {r["value"]: r["unit_credit"] for r in model["resolutionList"]}
    if body["resolution"] not in credits:
        allowed = ", ".join(credits)
        return f"Parameter error: resolution must be one of {allowed} for {model_name}", {}
    if body["video_length"] not in model["durationList"]:
        allowed = ", ".join(str(d) for d in model["durationList"])
        return f"Parameter error: video_length must be one of {allowed} for {model_name}", {}
    count = body.get("count", 1)
    if count is None:
        count = 1
    if not 1 <= count <= model["maxCount"]:
        return f"Parameter error: count must be between 1 and {model['maxCount']}", {}
    return None, {
        "webhookUrl": body.get("webhookurl") or "",
        "resolution": body["resolution"],
        "file_name": file_name(body["prompt"]),
        "effect_name": "",
        "image_url": body["image_url"],
        "prompt": body["prompt"],
        "negative_prompt": body.get("negative_prompt") or "",
        "extend_prompt": bool(body.get("extend_prompt", False)),
        "last_image_url": body.get("last_image_url") or "",
        "model_name": model_name,
        "batch_count": count,
        # not echoed, read by the handler
        "_unit_credit": credits[body["resolution"]],
    }


def update_audio(body: Mapping[str, Any]) -> str | None:
    """Validate an updateVideoAudio body (akool-api.md E5); the source is checked later."""
    error = _first_error([
        _check(body, "pre_video_id", str, required=True),
        _check(body, "audio_type", int, required=True),
        _check(body, "audio_url", str, required=body.get("audio_type") == 2),
    ])
    if error is None and body["audio_type"] not in (1, 2):
        error = "Parameter error: audio_type must be 1 or 2"
    return error
