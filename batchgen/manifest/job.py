"""One job entry: `defaults` merged under it, the SPEC §3 rules, its keys, its `Job`.

Owns what happens to each schema-valid job whatever its source (an inline job, a matrix
combination, a `jobs_file` row): the effective fields, the cheap rule check and, only when
it fails, the explaining one (rules.py), local files swapped for their object URLs, the
request's digest (its fingerprint and default id), the compact keys and price shape of
the first pass, and the `Job` itself when the manifest is replayed for a consumer.

This runs once per job (1,000,000 times for a large jobs_file), so the happy path does
the least work it can: messages and locations are built only for problems.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchgen.jobs import (
    BUILTIN_DEFAULTS,
    DEFAULT_NEGATIVE_PROMPT,
    ID_HEX_DIGITS,
    AddAudio,
    Job,
    request_fingerprint,
)
from batchgen.local_assets import LocalAssets, is_local
from batchgen.manifest.problems import Repeats, Reporter, meant, where
from batchgen.manifest.rules import URL_FIELDS, quick_rule_check, rule_problems
from batchgen.manifest_schema import INT_FIELDS, JOB_KEYS
from batchgen.manifest_stream import ExpansionDigest, Shapes
from batchgen.manifest_yaml import JsonPath

#: the line of one of a job's keys (an inline job's own line for each key), or None
#: when the job has only one line (a jobs_file row)
Locate = Callable[[str], int] | None


@dataclass(frozen=True, slots=True)
class Defaults:
    """The manifest's `defaults`, as merged under every job."""

    #: the section's keys (without those that broke the schema)
    given: dict[str, Any] = field(default_factory=dict)
    #: `jobs.BUILTIN_DEFAULTS` with `given` over them
    merged: dict[str, Any] = field(default_factory=lambda: dict(BUILTIN_DEFAULTS))
    #: keys left out because they broke the schema (and the fields typos there probably
    #: meant): a job missing them is not news
    dropped: frozenset[str] = frozenset()
    #: False when `defaults` is broken beyond salvage: the jobs' rules would mislead
    usable: bool = True


class JobBuilder:
    """Checks each job of one load; builds its `Job` when the load is a replay."""

    def __init__(self, defaults: Defaults, local: LocalAssets, report: Reporter,
                 repeats: Repeats, build: bool) -> None:
        self.defaults = defaults
        #: local files named by jobs, hashed once per load (shared with the replays)
        self.local = local
        self.report = report
        self.repeats = repeats
        #: build `Job`s (a replay for a consumer) instead of only checking them
        self.build = build
        self.encode = _canonical_encoder()  # == jobs.canonical_json
        self.expansion = ExpansionDigest()
        self.shapes = Shapes()
        self.log_shape = self.shapes.order.append

    def effective(self, item: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """The job with defaults merged under it (numbers made whole), and its explicit id."""
        eff = {**self.defaults.merged, **item}
        explicit = eff.pop("id", None)
        if None in eff.values():  # null drops a value inherited from defaults
            eff = {**BUILTIN_DEFAULTS, **{k: v for k, v in eff.items() if v is not None}}
        for key in INT_FIELDS:
            value = eff.get(key)
            if value.__class__ is float:
                eff[key] = int(value)
        add_audio = eff.get("add_audio")
        if add_audio is not None and add_audio["audio_type"].__class__ is float:
            eff["add_audio"] = {**add_audio, "audio_type": int(add_audio["audio_type"])}
        return eff, explicit

    def add_job(self, item: dict[str, Any], index: int, file: str, line: int,
                locate: Locate, *, matrix: bool = False,
                extra: dict[str, str] | None = None, skip: frozenset[str] = frozenset(),
                origin: str = "") -> Job | None:
        """Merge defaults under a schema-valid job, check the rules; the Job when building.

        `extra` is the user's own columns (never sent); `skip` names fields whose
        absence is already explained (a header typo). `file` is shown to the user (as
        they typed the path); `origin` is what the expansion digest names that file by
        (`ExpansionDigest.add`: "" for the manifest itself).
        """
        if not self.defaults.usable:
            return None
        eff, explicit = self.effective(item)
        bad = quick_rule_check(eff)
        if not bad and not ("://" in eff["image_url"] and "audio_url" not in eff
                            and "add_audio" not in eff):  # else: no local file, surely
            local = self.localize(eff, item, index, file, line, locate, matrix)
            if local is None:
                return None
            eff = local
        add_audio = eff.get("add_audio")
        if bad or (explicit is not None and explicit in (".", "..")):
            self.rule_failures(eff, item, explicit, index, file, line, locate, matrix,
                               skip=skip)
            return None
        model, count = eff.get("model_name"), eff.get("count")
        single = model is None and count is None
        negative = item["negative_prompt"] if "negative_prompt" in item \
            else self.defaults.given.get("negative_prompt")
        if single and negative is not None and not negative.strip():
            self.empty_negative_prompt(item, index, file, line, locate, matrix)
            return None
        # `eff` holds job fields only, none of them None: it is its own generation
        # request (jobs.generation_request) but for webhook_url, which is left out
        webhook = "webhook_url" in eff
        request = eff if not webhook else {k: v for k, v in eff.items() if k != "webhook_url"}
        digest = hashlib.sha256(self.encode(request).encode()).hexdigest()
        fingerprint = digest if not webhook else request_fingerprint(eff, add_audio)
        job_id = explicit if explicit is not None else digest[:ID_HEX_DIGITS]
        if self.build:
            self.expansion.add(origin, line, job_id, explicit is not None, fingerprint, extra)
            return self.job(eff, job_id, index, f"{file}:{line}", fingerprint, extra,
                            explicit=explicit is not None,
                            negative=DEFAULT_NEGATIVE_PROMPT if single and negative is None
                            else eff.get("negative_prompt"))
        repeats = self.repeats
        if repeats.exact is None:  # KeyLog.add, inlined: a million times
            repeats.log_request(int(digest[:15], 16) << 1 | (explicit is None))
            repeats.log_id(hash(job_id))
        elif repeats.duplicate(digest, job_id, explicit is not None, index, f"{file}:{line}",
                               file, line, item, matrix, self.report):
            return None
        self.expansion.add(origin, line, job_id, explicit is not None, fingerprint, extra)
        shape = (eff["resolution"], eff["video_length"], model, count, add_audio is not None)
        kind = self.shapes.index.get(shape)
        self.log_shape(self.shapes.new(shape) if kind is None else kind)
        return None

    @staticmethod
    def job(eff: dict[str, Any], job_id: str, index: int, source: str, fingerprint: str,
            extra: dict[str, str] | None, *, explicit: bool, negative: str | None) -> Job:
        """The `Job` of a checked effective job."""
        get = eff.get
        add_audio = get("add_audio")
        return Job(
            id=job_id, index=index, image_url=eff["image_url"], resolution=eff["resolution"],
            video_length=eff["video_length"], audio_type=eff["audio_type"],
            prompt=get("prompt"), negative_prompt=negative,
            extend_prompt=get("extend_prompt"), audio_url=get("audio_url"),
            is_premium_model=get("is_premium_model"), effect_code=get("effect_code"),
            webhook_url=get("webhook_url"), model_name=get("model_name"), count=get("count"),
            add_audio=None if add_audio is None else AddAudio(**add_audio),
            explicit_id=explicit, source=source, fingerprint=fingerprint,
            extra=tuple(extra.items()) if extra else ())

    def empty_negative_prompt(self, item: dict[str, Any], index: int, file: str, line: int,
                              locate: Locate, matrix: bool) -> None:
        at = locate("negative_prompt") if locate is not None and \
            "negative_prompt" in item else line
        self.report.job(
            file, at, where(index, item), "negative_prompt is empty, and the API's "
            "create endpoint requires one (it would answer 1003 for every such job)",
            "write what to avoid, e.g. negative_prompt: blurry; or remove the key to use "
            f"batchgen's default {DEFAULT_NEGATIVE_PROMPT!r}", index, matrix)

    def localize(self, eff: dict[str, Any], item: dict[str, Any], index: int, file: str,
                 line: int, locate: Locate, matrix: bool) -> dict[str, Any] | None:
        """The job with its local files replaced by their object URLs; None when a file is
        missing, unreadable or not an image/audio (reported, located)."""
        add_audio = eff.get("add_audio") or {}
        image, audio, extra = eff.get("image_url"), eff.get("audio_url"), \
            add_audio.get("audio_url")
        if not (is_local(image) or is_local(audio) or is_local(extra)):
            return eff  # the usual case, once per job: no list, no generator
        named = [("image_url", image), ("audio_url", audio), ("add_audio.audio_url", extra)]
        eff = dict(eff)
        ok = True
        for name, value in named:
            if not isinstance(value, str) or not is_local(value):
                continue
            url, trouble = self.local.resolve(name, value)
            if trouble is not None:
                key = name.split(".")[0]
                at = locate(key) if locate is not None and key in item else line
                self.report.job(file, at, where(index, item), *trouble, index, matrix)
                ok = False
            elif url is None:  # storage.upload is wrong: told once, not once per file
                ok = False
            elif name == "add_audio.audio_url":
                eff["add_audio"] = {**add_audio, "audio_url": url}
            else:
                eff[name] = url
        return eff if ok else None

    def rules_despite_schema(self, item: Any, paths: list[JsonPath], index: int, file: str,
                             line: int, locate: Locate,
                             skip: frozenset[str] = frozenset()) -> None:
        """Check the rules of a job that breaks the schema, without the keys that do.

        One pass then shows every error of the job: a wrong resolution no longer hides a
        missing prompt. Rules about a broken key (or the field a typo probably meant)
        are left out: the schema's message already covers them.
        """
        if not isinstance(item, dict) or not self.defaults.usable or any(not p for p in paths):
            return
        broken = {str(p[0]) for p in paths}
        broken |= meant(broken - JOB_KEYS) | skip
        clean = {k: v for k, v in item.items() if k not in broken}
        eff, explicit = self.effective(clean)
        self.rule_failures(eff, clean, explicit, index, file, line, locate, False,
                           skip=frozenset(broken))

    def rule_failures(self, eff: dict[str, Any], item: dict[str, Any], explicit: Any,
                      index: int, file: str, line: int, locate: Locate,
                      matrix: bool, skip: frozenset[str] = frozenset()) -> None:
        """Report why a job breaks the SPEC §3 rules (the slow, explaining path)."""
        at_job = where(index, item)
        given, dropped = self.defaults.given, self.defaults.dropped
        for key, what, fix in rule_problems(eff):
            if key in given and key not in item and key in URL_FIELDS:
                continue  # reported once by check_default_urls
            if key in skip or (key in dropped and key not in item):
                continue  # the schema's message about that key covers it
            at = locate(key) if locate is not None else line
            self.report.job(file, at, at_job, what, fix, index, matrix)
        if explicit is not None and explicit in (".", ".."):
            at = locate("id") if locate is not None else line
            self.report.job(file, at, at_job, f"id {explicit!r} is not a usable name",
                            "use letters or digits in the id", index, matrix)


def _canonical_encoder() -> Callable[[Any], str]:
    """`jobs.canonical_json`, with the C encoder made once (a third faster per job)."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(sort_keys=True, separators=(",", ":"),
                                ensure_ascii=False).encode
    encode = make(None, None, json.encoder.encode_basestring, None, ":", ",", True, False,
                  True)
    return lambda value: "".join(encode(value, 0))
