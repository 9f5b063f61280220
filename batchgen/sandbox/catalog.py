"""Static catalogues the emulator serves: effects and image-to-video models.

Shaped like the documented examples (akool-api.md E4, A2). Built by functions, not module
globals holding mutable data, so no state is shared between emulator instances.
"""

from __future__ import annotations

from typing import Any

#: (effect_code, name) pairs; the first three are the documented examples (akool-api.md E4)
_EFFECTS: tuple[tuple[str, str], ...] = (
    ("squish_89244231312", "Squish"),
    ("cakeify_24743216", "Cakeify"),
    ("samurai_99757865", "Samurai"),
    ("inflate_31415926", "Inflate"),
    ("melt_27182818", "Melt"),
    ("crush_16180339", "Crush"),
    ("levitate_14142135", "Levitate"),
    ("explode_17320508", "Explode"),
    ("zoom_22360679", "Zoom In"),
    ("spin_24494897", "Spin"),
)

DEFAULT_BATCH_MODEL = "AkoolImage2VideoFastV1"


def effect_names() -> dict[str, str]:
    """effect_code -> display name, used to fill `effect_name` in task records."""
    return dict(_EFFECTS)


def effects(created_ms: int) -> list[dict[str, Any]]:
    """The records of the effects endpoint (E4)."""
    base = "https://static.sandbox.invalid/effects"
    return [
        {
            "_id": f"67{index:022x}",
            "create_time": created_ms,
            "logo": f"{base}/{code}.png",
            "name": name,
            "video_url": f"{base}/{code}.mp4",
            "effect_code": code,
        }
        for index, (code, name) in enumerate(_EFFECTS)
    ]


def _resolution(label: str, width: int, height: int, credit: int) -> dict[str, Any]:
    return {"label": label, "value": label, "width": width, "height": height,
            "unit_credit": credit}


def models() -> list[dict[str, Any]]:
    """The i2v models of the model list (A2), highest `sort` first."""
    return [
        {
            "sort": 100,
            "group": "Akool",
            "provider": "akool",
            "type": 1501,
            "label": "Akool Image2Video Fast V1",
            "value": DEFAULT_BATCH_MODEL,
            "description": "Fast image-to-video generation",
            "resolutionList": [
                _resolution("720p", 1280, 720, 5),
                _resolution("1080p", 1920, 1080, 10),
                _resolution("4k", 3840, 2160, 20),
            ],
            "isPro": False,
            "generate_audio": None,
            "durationList": [5, 10],
            "requiresPay": False,
            "supportedLastFrame": False,
            "supportedExtendPrompt": True,
            "maxImageCount": 1,
            "maxCount": 10,
        },
        {
            "sort": 90,
            "group": "Seedance",
            "provider": "bytedance",
            "type": 1501,
            "label": "Seedance 1.0 Lite",
            "value": "seedance-1-0-lite-i2v-250428",
            "description": "Seedance lite image-to-video",
            "resolutionList": [
                _resolution("480p", 854, 480, 3),
                _resolution("720p", 1280, 720, 5),
                _resolution("1080p", 1920, 1080, 10),
            ],
            "isPro": True,
            "generate_audio": {"required": False, "type": "boolean", "default": False,
                               "extra_credit_multiplier": 2},
            "durationList": [5, 10],
            "requiresPay": True,
            "supportedLastFrame": True,
            "supportedExtendPrompt": False,
            "maxImageCount": 2,
            "maxCount": 10,
        },
    ]
