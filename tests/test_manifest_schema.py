"""The schema file itself, and the fast checks that must agree with it exactly."""

from __future__ import annotations

import copy
import json
import random
from importlib import resources
from pathlib import Path

from jsonschema import Draft202012Validator

from batchgen.manifest import quick_rule_check, rule_problems
from batchgen.manifest_schema import JOB_KEYS, Validators, job_is_valid, load_schema

ROOT = Path(__file__).parent.parent


def test_schema_is_valid_draft_2020_12_and_shipped_in_the_package():
    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    link = ROOT / "batchgen" / "schemas" / "manifest.schema.json"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    packaged = resources.files("batchgen") / "schemas" / "manifest.schema.json"
    assert json.loads(packaged.read_text("utf-8")) == schema == load_schema()


def test_job_keys_match_the_schema():
    schema = load_schema()
    assert set(schema["$defs"]["jobFields"]["properties"]) | {"id"} == JOB_KEYS
    assert set(schema["$defs"]["matrix"]["properties"]) == JOB_KEYS - {"id"}


VALID = {"id": "beach", "image_url": "https://x.com/a.jpg", "prompt": "p",
         "negative_prompt": "", "extend_prompt": True, "resolution": "4k", "video_length": 10,
         "audio_type": 2, "audio_url": "https://x.com/a.mp3", "is_premium_model": False,
         "effect_code": "e", "webhook_url": "https://h.com", "model_name": "m", "count": 3,
         "add_audio": {"audio_type": 2, "audio_url": "https://x.com/b.mp3"}}
ODD_VALUES = [None, True, False, 0, 1, 2, 3, 5, 10, 11, 5.0, 2.5, -1, "", "x", "5", "720p",
              "a b", "1080p", [], ["x"], {}, {"audio_type": 1}, {"audio_type": 3},
              {"audio_type": 2, "audio_url": ""}, {"audio_type": 1, "x": 1}, "a" * 129,
              float("nan")]


def test_fast_job_check_agrees_with_the_schema():
    job_validator = Validators(load_schema()).job
    rng = random.Random(7)
    cases = [VALID, {}, [], "x", None, {"unknown": 1}, {"add_audio": None, "prompt": None}]
    for _ in range(3000):
        job = copy.deepcopy(VALID)
        for key in rng.sample(sorted(JOB_KEYS), rng.randint(0, 3)):
            job.pop(key) if rng.random() < 0.3 else job.__setitem__(key, rng.choice(ODD_VALUES))
        if rng.random() < 0.05:
            job[rng.choice(["resoluton", "Prompt", "add audio"])] = "x"
        cases.append(job)
    for job in cases:
        assert job_is_valid(job) == job_validator.is_valid(job), job


def test_quick_rule_check_agrees_with_the_rules():
    rng = random.Random(11)
    urls = ["https://x.com/a.jpg", "ftp://x.com/a", "x", None]
    for _ in range(2000):
        job = {"resolution": "720p", "video_length": 5, "audio_type": rng.choice([1, 2, 3])}
        for key in ("image_url", "audio_url", "webhook_url"):
            value = rng.choice(urls)
            if value is not None:
                job[key] = value
        for key in ("prompt", "effect_code"):
            if rng.random() < 0.6:
                job[key] = "p"
        if rng.random() < 0.5:
            add = {"audio_type": rng.choice([1, 2])}
            url = rng.choice(urls)
            if url is not None:
                add["audio_url"] = url
            job["add_audio"] = add
        assert quick_rule_check(job) == bool(list(rule_problems(job))), job
