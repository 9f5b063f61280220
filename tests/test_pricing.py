"""Prices: the published table, partial overrides, add-audio steps and count."""

from __future__ import annotations

from batchgen.jobs import AddAudio, Job
from batchgen.pricing import (
    PUBLISHED_ADD_AUDIO,
    PUBLISHED_VIDEO,
    PriceTable,
    add_audio_credits,
    is_published,
    job_credits,
    price_table,
    video_credits,
)


def job(resolution="720p", length=5, **kw) -> Job:
    return Job(id="j", index=0, image_url="https://x.com/a.jpg", resolution=resolution,
               video_length=length, audio_type=3, prompt="p", **kw)


def test_published_table_matches_akool_api_doc():
    assert PUBLISHED_VIDEO == {"720p": {5: 20, 10: 40}, "1080p": {5: 25, 10: 50},
                               "4k": {5: 30, 10: 60}}
    assert PUBLISHED_ADD_AUDIO == {5: 5, 10: 10}


def test_no_overrides_is_the_published_table():
    table = price_table(None)
    assert table.video == PUBLISHED_VIDEO and table.add_audio == PUBLISHED_ADD_AUDIO
    assert is_published(table) and price_table({}).overridden == frozenset()


def test_a_partial_override_changes_exactly_one_cell():
    table = price_table({"720p": {"5": 18}})
    assert table.video["720p"] == {5: 18, 10: 40}
    assert table.video["1080p"] == PUBLISHED_VIDEO["1080p"]
    assert table.overridden == {"720p/5"} and not is_published(table)


def test_add_audio_and_int_keys_override():
    table = price_table({"add_audio": {10: 12}, "4k": {5: 100, 10: 200}})
    assert table.add_audio == {5: 5, 10: 12}
    assert table.video["4k"] == {5: 100, 10: 200}
    assert table.overridden == {"add_audio/10", "4k/5", "4k/10"}


def test_overrides_do_not_touch_the_published_constants():
    price_table({"720p": {5: 1}, "add_audio": {5: 1}})
    assert PUBLISHED_VIDEO["720p"][5] == 20 and PUBLISHED_ADD_AUDIO[5] == 5


def test_job_credits_with_add_audio_and_count():
    table = PriceTable()
    assert job_credits(table, job("1080p", 10)) == 50
    with_audio = job("4k", 5, add_audio=AddAudio(1))
    assert (video_credits(table, with_audio), add_audio_credits(table, with_audio)) == (30, 5)
    assert job_credits(table, with_audio) == 35
    assert job_credits(table, job("720p", 10, count=3, add_audio=AddAudio(1))) == 3 * (40 + 10)
    assert add_audio_credits(table, job()) == 0
