"""Mangled manifests and data files only ever raise ManifestError, never anything else."""

from __future__ import annotations

import random
from pathlib import Path

from batchgen.errors import ManifestError
from batchgen.manifest import load_manifest

EXAMPLE = (Path(__file__).parent.parent / "manifests" / "example.yaml").read_text()
EXTRA = """\
budget: {max_credits: 10, prices: {720p: {5: 3}, add_audio: {10: 2}}}
output: {dir: out, filename: "{index:04d}-{id}.mp4", report: r.csv}
jobs_file: rows.csv
"""
ROWS = ("id,image_url,prompt,video_length,add_audio.audio_type,add_audio.audio_url\n"
        "r1,https://x.com/1.jpg,\"a, b\",10,2,https://x.com/a.mp3\n"
        "r2,https://x.com/2.jpg,c,5,,\n")
SNIPPETS = ["null", "[]", "{}", "- ", ": ", "&a ", "*a ", "<<: *a", "!!int ", "'", '"', "\t",
            "\x00", "\ufeff", "5", "true", "10.0", "{5: x}", "'{foo}'", "é", "\n  ", "#"]


def mangle(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(chars))
        action = rng.random()
        if action < 0.4:
            del chars[at:at + rng.randint(1, 8)]
        elif action < 0.8:
            chars[at:at] = rng.choice(SNIPPETS)
        else:
            chars[at], chars[-1 - at] = chars[-1 - at], chars[at]
    return "".join(chars)


def test_mangled_manifests_raise_only_manifest_error(tmp_path):
    rng = random.Random(2024)
    path = tmp_path / "m.yaml"
    base = EXAMPLE.replace("# jobs_file: more-jobs.csv", "") + EXTRA
    for i in range(400):
        path.write_text(mangle(base, rng), encoding="utf-8", errors="surrogateescape")
        (tmp_path / "rows.csv").write_text(mangle(ROWS, rng) if i % 2 else ROWS)
        try:
            load_manifest(path)
        except ManifestError as exc:
            assert exc.problems and all(p.line >= 1 and "\n" not in p.what
                                        for p in exc.problems), exc


def test_random_bytes_raise_only_manifest_error(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "m.yaml"
    for _ in range(100):
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
        try:
            load_manifest(path)
        except ManifestError as exc:
            assert exc.problems
