"""The PostgreSQL state (--state): same semantics as SQLite, one runner per manifest, a
journal that outlives the output dir, and a URL whose password is never shown."""

from __future__ import annotations

import asyncio
import io
import signal
import threading
from dataclasses import replace

import pytest
from cli_helpers import cli_env, run_cli, start_cli, write_manifest
from pg_helpers import with_password

from batchgen.cli import main
from batchgen.errors import NoState, OutputDirLocked, StateUnavailable, UsageError
from batchgen.jobs import Job
from batchgen.pgstore import PgStore, schema_name
from batchgen.state_store import parse_state_url
from batchgen.store import JobState, Store
from batchgen.transitions import Accepted, Claimed, TaskFailed

SECRET = "Sup3r-Secret-Passw0rd"


def job(i: int, **kw) -> Job:
    return Job(id=f"j{i}", index=i, image_url=f"https://e.com/{i}.jpg", resolution="720p",
               video_length=5, audio_type=3, prompt=f"p{i}", fingerprint=f"fp{i}", **kw)


def script(store: Store) -> dict:
    """The same life on any backend: sync, claims, a lost create, a reopen, history."""
    out: dict = {}
    out["sync"] = store.sync([job(i) for i in range(5)], [(20, 0)] * 5)
    store.apply_many([(store.get(j), Claimed("2026-01-01T00:00:00Z")) for j in ("j0", "j1",
                                                                             "j2")],
                     durable=True)
    store.mark_sent("j0")
    store.mark_sent("j1")
    store.apply(store.get("j1"), Accepted("task-1", 25), durable=True)
    store.apply(store.get("j1"), TaskFailed("status 4: boom", finished_at="2026-01-01T00:01Z"))
    out["recover"] = store.recover()          # j0 sent: unknown; j2 never left: pending
    out["reopen"] = store.reopen(unknown=True, failed=True)
    out["resync"] = store.sync([replace(job(i), fingerprint=f"new{i}") for i in range(4)],
                               [(20, 0)] * 4)
    store.record_run(wall_seconds=1.5, requests={"create": 2}, budget=100, finished_at="t1")
    out["history"] = store.record_run(wall_seconds=1.0, requests={"create": 1}, budget=100,
                                      finished_at="t2")
    out["rows"] = store.rows(active_only=False)
    out["committed"] = store.rows_and_committed()[1]
    out["abandoned"] = [{k: v for k, v in a.items() if k != "abandoned_at"}
                        for a in store.abandoned()]
    # pre-flight verdicts (preflight.py) live beside the run history; a later one replaces
    store.record_asset_check("url:https://h.example/a.png", '{"verdict": "bad"}')
    store.record_asset_check("url:https://h.example/a.png", '{"verdict": "ok"}')
    store.record_asset_check("host:https://dead.example", '{"verdict": "inconclusive"}')
    out["asset_checks"] = {k: store.asset_check(k) for k in (
        "url:https://h.example/a.png", "host:https://dead.example", "url:https://h.example/b")}
    return out


def test_postgres_keeps_exactly_the_rows_sqlite_keeps(pg_url, tmp_path):
    with Store.open(tmp_path) as lite:
        expected = script(lite)
    with PgStore.open(parse_state_url(pg_url), "parity") as pg:
        got = script(pg)
    assert got == expected
    assert {r.job_id: r.state for r in got["rows"]}["j0"] is JobState.PENDING  # reopened
    assert got["asset_checks"] == {"url:https://h.example/a.png": '{"verdict": "ok"}',
                                   "host:https://dead.example": '{"verdict": "inconclusive"}',
                                   "url:https://h.example/b": None}


def test_migrations_run_once_even_when_two_hosts_start_together(pg_url):
    url = parse_state_url(pg_url)
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PgStore.open(url, "race", lock=False).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with PgStore.open(url, "race") as store:
        names = [r[0] for r in store._pg.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names[:7] == ["0001_jobs", "0002_parent", "0003_credits_prior",
                         "0004_budget_holds", "0005_report_audit", "0006_manifest_order",
                         "0007_startup_reads"]
    assert names[7:] == ["pg_0001_abandoned_order", "pg_0002_runners"]


def test_a_state_from_a_newer_batchgen_is_refused_untouched(pg_url):
    url = parse_state_url(pg_url)
    with PgStore.open(url, "newer") as store:
        store._pg.execute("INSERT INTO _migrations(name) VALUES ('9999_future')")
    with pytest.raises(Exception, match="newer batchgen"):
        PgStore.open(url, "newer")


def test_one_runner_per_manifest_and_the_lock_dies_with_its_connection(pg_url):
    url = parse_state_url(pg_url)
    first = PgStore.open(url, "m")
    with pytest.raises(OutputDirLocked, match=r"host .*, pid \d+"):
        PgStore.open(url, "m")
    PgStore.open(url, "other").close()  # another manifest shares the database freely
    PgStore.open(url, "m", lock=False).close()  # readers never need the lock
    first._pg.pg.close()  # the connection dies (as with kill -9): the server frees it
    PgStore.open(url, "m").close()


def test_manifests_sharing_a_database_keep_their_own_rows(pg_url):
    url = parse_state_url(pg_url)
    with PgStore.open(url, "a") as a, PgStore.open(url, "b") as b:
        a.sync([job(i) for i in range(3)], [(20, 0)] * 3)
        b.sync([job(7)], [(20, 0)])
        assert [r.job_id for r in a.rows()] == ["j0", "j1", "j2"]
        assert [r.job_id for r in b.rows()] == ["j7"]
    assert schema_name(url.schema, "a") != schema_name(url.schema, "b")


def test_plan_preview_changes_nothing_and_no_state_is_not_an_error(pg_url):
    url = parse_state_url(pg_url)
    with pytest.raises(NoState):
        PgStore.preview(url, "fresh")
    with PgStore.open(url, "fresh") as store:
        store.sync([job(0)], [(20, 0)])
        store.apply(store.get("j0"), Claimed("t"), durable=True)
        store.mark_sent("j0")
    with PgStore.preview(url, "fresh") as preview:
        assert preview.recover() == 1
        preview.sync([job(0), job(1)], [(20, 0)] * 2)
        assert len(preview.rows()) == 2
    with PgStore.open(url, "fresh", lock=False) as store:
        assert [(r.job_id, r.state) for r in store.rows()] == [("j0", JobState.SUBMITTING)]


def test_a_state_url_never_shows_its_password():
    url = parse_state_url(f"postgresql://bob:{SECRET}@db.example:5432/jobs?schema=x"
                          "&sslmode=require")
    assert SECRET not in str(url) and SECRET not in repr(url)
    assert str(url) == "postgresql://bob:***@db.example:5432/jobs?schema=x&sslmode=require"
    assert "schema" not in url.conninfo and url.schema == "x"
    other = parse_state_url(f"postgresql://db.example/jobs?password={SECRET}")
    assert SECRET not in str(other) and other.secrets() == [SECRET]
    for bad in (f"mysql://bob:{SECRET}@h/db", f"postgresql://bob:{SECRET}@h:99999/db"):
        with pytest.raises(UsageError) as caught:
            parse_state_url(bad)
        assert SECRET not in str(caught.value)


def test_an_unreachable_state_server_is_one_line_without_the_password(tmp_path):
    url = parse_state_url(f"postgresql://bob:{SECRET}@127.0.0.1:9/db")  # nothing listens
    with pytest.raises(StateUnavailable) as caught:
        PgStore.open(url, "m")
    assert SECRET not in str(caught.value) and "cannot connect" in str(caught.value)
    manifest = write_manifest(tmp_path, 1)
    out, err = io.StringIO(), io.StringIO()
    code = main(["status", str(manifest), "--state", str(url.conninfo)], out, err)
    assert code == 75 and SECRET not in out.getvalue() + err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1


@pytest.mark.slow
async def test_cli_with_a_password_in_the_url_never_writes_it_anywhere(pg_url, sandbox,
                                                                       tmp_path):
    sb = await sandbox()
    url = with_password(pg_url, SECRET)
    manifest = write_manifest(tmp_path, 3, base_url=sb.url)
    env = cli_env(BATCHGEN_STATE=url)
    run = await run_cli("run", str(manifest), "--no-progress", cwd=tmp_path, env=env)
    assert run.code == 0, run.err
    texts = [run.out, run.err]
    for command in (["status", str(manifest), "--state", url], ["report", str(manifest)],
                    ["plan", str(manifest), "--json"]):
        result = await run_cli(*command, cwd=tmp_path, env=env)
        assert result.code == 0, result.err
        texts += [result.out, result.err]
    assert "3 jobs" in texts[2] and "completed" in texts[2]
    assert not (tmp_path / "out" / ".batchgen" / "state.db").exists()  # the state is there
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    texts += [p.read_bytes().decode(errors="replace") for p in files]
    assert all(SECRET not in t for t in texts)
    with PgStore.open(parse_state_url(pg_url), "t", lock=False) as store:  # nor the state
        kept = [str(r) for r in store._pg.execute("SELECT * FROM meta")]
        kept += [str(r) for r in store._pg.execute("SELECT * FROM jobs")]
    assert kept and all(SECRET not in t for t in kept)


async def test_a_runner_killed_with_its_disk_resumes_elsewhere_paying_nothing_twice(
        pg_url, sandbox, tmp_path):
    """One host, ephemeral disk: kill -9 mid-run, the output dir is lost with the
    container; a run from a fresh output dir with the same --state finishes the job."""
    sb = await sandbox(processing_time=0.6)
    pg_url = f"{pg_url}&lease=1"  # the next run waits out the dead runner's lease
    n = 6
    manifest = write_manifest(tmp_path, n, base_url=sb.url, concurrency=3)
    first = await start_cli("run", str(manifest), "--no-progress", "--state", pg_url,
                            "--output", str(tmp_path / "disk1"), cwd=tmp_path)
    while sb.stats()["tasks_created"] < 3 and first.returncode is None:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # let some answers be recorded; some may still be in flight
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert first.returncode == -signal.SIGKILL
    created_before = sb.stats()["tasks_created"]
    assert created_before < n  # killed mid-run
    result = await run_cli("run", str(manifest), "--no-progress", "--state", pg_url,
                           "--output", str(tmp_path / "disk2"), cwd=tmp_path)
    stats = sb.stats()
    assert stats["duplicate_fingerprints"] == 0
    assert stats["tasks_created"] <= n
    rows = [line.split(",") for line in
            (tmp_path / "disk2" / "report.csv").read_text().splitlines()[1:]]
    statuses = [r[1] for r in rows]
    assert set(statuses) <= {"completed", "unknown"}, result.err
    # every task made before the kill was adopted (polled, downloaded), not made again
    assert statuses.count("completed") + statuses.count("unknown") == n
    assert result.code in (0, 1), result.err
    assert len(list((tmp_path / "disk2").glob("*.mp4"))) == statuses.count("completed")
