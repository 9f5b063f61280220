"""The budget holds on every path that spends, and plan says exactly what run will do.

Issue 11 (money first) and issue 17 items 3 and 5: the real CLI in a subprocess against the
emulator or a small hostile API, with assertions on what the server created and charged.
Where the emulator cannot aim a failure at one task, the state is put where a real failure
leaves it, through the store's own API (as in test_reopen.py).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from cli_helpers import run_cli, write_manifest
from hostile_api import HostileApi

from batchgen.store import JobState, Store


def rows_of(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "report.csv", newline="") as f:
        return {r["job_id"]: r for r in csv.DictReader(f)}


async def plan_json(manifest: Path, *flags: str, cwd: Path) -> dict:
    result = await run_cli("plan", str(manifest), "--json", *flags, cwd=cwd)
    assert result.code == 0, result.err
    return json.loads(result.out)


async def committed(manifest: Path, cwd: Path) -> int:
    result = await run_cli("status", str(manifest), "--json", cwd=cwd)
    return json.loads(result.out)["credits_committed"]


# -- issue 11.1: repeated add-audio steps are reserved like every create --------------------


@pytest.mark.slow
async def test_retried_add_audio_steps_are_held_back_by_the_budget(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 5, base_url=sb.url,
                              job_extra={"add_audio": {"audio_type": 1}},
                              extra={"budget": {"max_credits": 125}})
    first = await run_cli("run", str(manifest), cwd=tmp_path)
    assert first.code == 0, first.err
    assert sb.stats()["credits_charged"] == 125  # five videos of 20 and five steps of 5
    with Store.open(tmp_path / "out") as store:  # every add-audio task ended in status 4
        store.update([(f"job{i:03d}", {"state": JobState.FAILED, "error": "status 4",
                                       "video_url": None, "unknown_step": "add_audio"})
                      for i in range(5)])
    plan = await plan_json(manifest, "--retry-failed", cwd=tmp_path)
    again = await run_cli("run", str(manifest), "--retry-failed", cwd=tmp_path)
    stats = sb.stats()
    assert stats["credits_charged"] == 125  # never 150
    assert stats["requests"]["updateVideoAudio"] == 5
    assert again.code == 3, again.err
    assert "5 job(s) not submitted" in again.err and "25 more credits" in again.err
    assert plan["budget"]["jobs_within_budget"] == 0
    assert plan["to_submit"] == {"jobs": 5, "credits": 25}  # the steps, not the videos
    # a raised cap lets them go, each on its existing video
    raised = await run_cli("run", str(manifest), "--retry-failed", "--max-credits", "150",
                           cwd=tmp_path)
    assert raised.code == 0, raised.err
    stats = sb.stats()
    assert stats["credits_charged"] == 150 and stats["requests"]["createBySourcePrompt"] == 5
    assert await committed(manifest, tmp_path) == 150


# -- issue 11.2: a lost answer stays counted when it is sent again --------------------------


@pytest.mark.slow
async def test_resubmitting_a_lost_create_needs_room_for_a_second_charge(sandbox, tmp_path):
    sb = await sandbox(lost_create_rate=1.0)
    manifest = write_manifest(tmp_path, 2, base_url=sb.url, concurrency=1,
                              extra={"budget": {"max_credits": 60}})
    first = await run_cli("run", str(manifest), cwd=tmp_path)
    assert first.code == 1, first.err
    assert sb.stats()["credits_charged"] == 40  # both were made and charged; answers lost
    assert {r["status"] for r in rows_of(tmp_path / "out").values()} == {"unknown"}
    sb.config.lost_create_rate = 0.0
    plan = await plan_json(manifest, "--resubmit-unknown", cwd=tmp_path)
    again = await run_cli("run", str(manifest), "--resubmit-unknown", cwd=tmp_path)
    assert sb.stats()["credits_charged"] == 60  # not 80: the cap was not silently doubled
    assert again.code == 3, again.err
    assert await committed(manifest, tmp_path) == 60
    assert plan["budget"]["spent_credits"] == 40
    assert plan["budget"]["jobs_within_budget"] == 1


# -- issue 11.4: plan and run apply one rule --------------------------------------------------


@pytest.mark.slow
async def test_plan_says_exactly_what_run_submits_from_every_state(sandbox, tmp_path):
    sb = await sandbox()
    manifest = write_manifest(tmp_path, 3, base_url=sb.url, concurrency=3,
                              extra={"budget": {"max_credits": 60}})
    text = manifest.read_text()
    text = text.replace("  prompt: prompt 0\n", "  prompt: prompt 0\n  video_length: 10\n")
    text = text.replace("  prompt: prompt 1\n",
                        "  prompt: prompt 1\n  video_length: 10\n  resolution: 4k\n")
    manifest.write_text(text)  # jobs of 40, 60 and 20 credits
    plan = await plan_json(manifest, cwd=tmp_path)
    assert plan["budget"]["jobs_within_budget"] == 1
    first = await run_cli("run", str(manifest), cwd=tmp_path)
    assert first.code == 3, first.err
    assert sb.stats()["tasks_created"] == 1  # the 20 waits behind the 60, as planned
    for cap, made in (("100", 2), ("120", 3)):
        plan = await plan_json(manifest, "--max-credits", cap, cwd=tmp_path)
        before = sb.stats()["tasks_created"]
        result = await run_cli("run", str(manifest), "--max-credits", cap, cwd=tmp_path)
        assert sb.stats()["tasks_created"] - before == plan["budget"]["jobs_within_budget"]
        assert sb.stats()["tasks_created"] == made, result.err
    assert sb.stats()["credits_charged"] == 120


# -- issue 11.3: numbers from the API are validated ---------------------------------------

BAD_CHARGES = {"nan": math.nan, "inf": math.inf, "neg": -5, "zero": 0, "frac": 20.5,
               "huge": 1e300, "text": "20", "bool": True, "list": [20],
               # JSON integers past a float's range: `:g` or math.isfinite on them raised
               # OverflowError (exit 70 with the task id in hand: the job came back unknown)
               "bigint": 10**400, "negbigint": -10**400}


@pytest.mark.slow
async def test_unusable_charges_keep_the_estimate_and_every_task_id(tmp_path):
    api = await HostileApi(lambda body: BAD_CHARGES[body["prompt"].split()[0]]).start()
    try:
        manifest = write_manifest(tmp_path, len(BAD_CHARGES), base_url=api.url)
        text = manifest.read_text()
        for i, name in enumerate(BAD_CHARGES):
            text = text.replace(f"prompt: prompt {i}\n", f"prompt: {name} {i}\n")
        manifest.write_text(text)
        result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
        assert result.code == 0, result.err
        assert api.requests["create"] == len(BAD_CHARGES)  # no task thrown away, none resent
        rows = rows_of(tmp_path / "out")
        assert {r["status"] for r in rows.values()} == {"completed"}
        assert all(r["credits_deducted"] == "" for r in rows.values())
        assert result.err.count("deduction_credit is unusable") == 1  # one notice
        with Store.open(tmp_path / "out") as store:
            notes = {r.job_id: r.credits_note for r in store.rows()}
        assert all(note and "estimate 20 is held" in note for note in notes.values())
        assert "negative" in notes["job002"] and "not finite" in notes["job000"]
        assert await committed(manifest, tmp_path) == 20 * len(BAD_CHARGES)
        status = await run_cli("status", str(manifest), "--json", cwd=tmp_path)
        listed = {j["id"]: j for j in json.loads(status.out)["job_list"]}
        assert listed["job002"]["credits_held"] == 20
        assert "negative (-5)" in listed["job002"]["credits_note"]
        again = await run_cli("run", str(manifest), cwd=tmp_path)
        assert again.code == 0 and api.requests["create"] == len(BAD_CHARGES)
    finally:
        await api.close()


async def test_a_negative_charge_never_makes_room_in_the_budget(tmp_path):
    api = await HostileApi(lambda body: -100).start()
    try:
        manifest = write_manifest(tmp_path, 5, base_url=api.url, concurrency=1,
                                  extra={"budget": {"max_credits": 60}})
        result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
        assert result.code == 3, result.err
        assert api.requests["create"] == 3  # 3 x 20 estimated: the cap holds
    finally:
        await api.close()


# -- issue 17.3: a create refused with no task cost nothing: the job may be corrected --------


@pytest.mark.parametrize("flags", [(), ("--retry-failed",)])
async def test_a_refused_job_sends_the_corrected_request(sandbox, tmp_path, flags):
    sb = await sandbox()
    del sb.config.prices["4k"]  # this account's API offers no 4k: 1003, nothing made
    manifest = write_manifest(tmp_path, 2, base_url=sb.url)
    text = manifest.read_text()
    manifest.write_text(text.replace("  prompt: prompt 1\n",
                                     "  prompt: prompt 1\n  resolution: 4k\n"))
    first = await run_cli("run", str(manifest), cwd=tmp_path)
    assert first.code == 1, first.err
    assert "1003" in rows_of(tmp_path / "out")["job001"]["error"]
    manifest.write_text(text)  # corrected
    plan = await plan_json(manifest, *flags, cwd=tmp_path)
    again = await run_cli("run", str(manifest), *flags, cwd=tmp_path)
    assert again.code == 0, again.err
    assert "kept as sent" not in again.err
    row = rows_of(tmp_path / "out")["job001"]
    assert row["status"] == "completed" and row["manifest_changed"] == "false"
    assert sb.stats()["tasks_created"] == 2
    assert plan["to_submit"] == {"jobs": 1, "credits": 20}  # plan said so beforehand


# -- issue 17.5: an expired URL is renewed before it is fetched again ------------------------


async def test_retry_failed_download_asks_for_a_fresh_url_first(tmp_path):
    api = await HostileApi(versioned_urls=True).start()
    try:
        manifest = write_manifest(tmp_path, 2, base_url=api.url)
        first = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
        assert first.code == 1, first.err
        assert {r["status"] for r in rows_of(tmp_path / "out").values()} == {"failed"}
        api.serving = True
        downloads = api.requests["download"]
        again = await run_cli("run", str(manifest), "--retry-failed", cwd=tmp_path)
        assert again.code == 0, again.err
        assert api.requests["download"] - downloads == 2  # no expired URL fetched again
        assert api.requests["create"] == 2
    finally:
        await api.close()


async def test_videos_a_batch_create_made_beyond_its_count_are_held(tmp_path):
    api = await HostileApi(lambda body: 20, surplus=1).start()
    try:
        manifest = write_manifest(tmp_path, 2, base_url=api.url, concurrency=1,
                                  job_extra={"model_name": "AkoolImage2VideoFastV1",
                                             "count": 2},
                                  extra={"budget": {"max_credits": 80}})
        result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
        # job000 asked for 2 videos and got 3, all charged: 60 held; job001's 40 waits
        assert api.requests["create_batch"] == 1 and len(api.tasks) == 3
        assert result.code == 3, result.err
        assert "more than asked" in result.err
        assert await committed(manifest, tmp_path) == 60
        with Store.open(tmp_path / "out") as store:
            assert "t0003" in (store.get("job000").credits_note or "")
    finally:
        await api.close()


async def test_videos_a_batch_create_listed_with_unreadable_ids_are_held_and_never_resent(
        tmp_path):
    # the batch answer lists 2 videos, one under an id we cannot use: both were made and
    # charged, so the second is unknown (held at its estimate), never failed as if nothing
    # had been made: that freed its 20 credits for job001 (80 spent under a cap of 60) and
    # let --retry-failed make it a second time
    api = await HostileApi(lambda body: 20, unreadable_ids=1).start()
    try:
        manifest = write_manifest(tmp_path, 2, base_url=api.url, concurrency=1,
                                  job_extra={"model_name": "AkoolImage2VideoFastV1",
                                             "count": 2},
                                  extra={"budget": {"max_credits": 60}})
        result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
        assert api.requests["create_batch"] == 1 and len(api.tasks) == 2
        assert result.code == 3, result.err
        assert await committed(manifest, tmp_path) == 40
        with Store.open(tmp_path / "out") as store:
            states = {r.job_id: r.state for r in store.rows(active_only=False)
                      if r.job_id.startswith("job000")}
        assert sorted(states.values()) == sorted([JobState.COMPLETED, JobState.UNKNOWN])
        again = await run_cli("run", str(manifest), "--retry-failed", "--no-progress",
                              cwd=tmp_path)
        assert again.code == 3, again.err
        assert api.requests["create_batch"] == 1 and len(api.tasks) == 2
    finally:
        await api.close()


async def test_a_surplus_video_listed_with_an_unreadable_id_is_held(tmp_path):
    api = await HostileApi(lambda body: 20, surplus=1, unreadable_ids=1).start()
    try:
        manifest = write_manifest(tmp_path, 2, base_url=api.url, concurrency=1,
                                  job_extra={"model_name": "AkoolImage2VideoFastV1",
                                             "count": 2},
                                  extra={"budget": {"max_credits": 80}})
        result = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path)
        # 2 asked, 3 made (the third under an unusable id): 60 held, job001's 40 waits
        assert api.requests["create_batch"] == 1 and len(api.tasks) == 3
        assert result.code == 3, result.err
        assert await committed(manifest, tmp_path) == 60
    finally:
        await api.close()


async def test_surplus_videos_are_held_in_the_same_durable_write_as_the_family(
        tmp_path, monkeypatch):
    """A hold written after the family's accept left a crash gap: the charged surplus
    would be off the budget on the next run. Every write carrying a hold must also carry
    the batch's accepted videos."""
    from batchgen import arun
    from batchgen.transitions import FamilyAccepted, Held

    writes: list[set[type]] = []
    apply_many = Store.apply_many

    def recording(self, steps, **kw):
        writes.append({type(event) for _, event in steps})
        return apply_many(self, steps, **kw)

    monkeypatch.setattr(Store, "apply_many", recording)
    api = await HostileApi(lambda body: 20, surplus=1, unreadable_ids=1).start()
    try:
        manifest = write_manifest(tmp_path, 1, base_url=api.url, concurrency=1,
                                  job_extra={"model_name": "AkoolImage2VideoFastV1",
                                             "count": 2})
        await arun(str(manifest), api_key="test-key-1234")
    finally:
        await api.close()
    holding = [w for w in writes if Held in w]
    assert holding and all(FamilyAccepted in w for w in holding), writes


async def test_plan_never_reads_an_unreadable_state_as_nothing_spent(tmp_path):
    manifest = write_manifest(tmp_path, 2, extra={"budget": {"max_credits": 20}})
    state = tmp_path / "out" / ".batchgen"
    state.mkdir(parents=True)
    (state / "state.db").write_bytes(b"not a database, but money was spent" * 100)
    result = await run_cli("plan", str(manifest), "--json", cwd=tmp_path)
    assert result.code == 2 and "state database is damaged" in result.err
    assert result.out == ""  # no plan that would send both jobs again
