"""A validated load is remembered (manifest/memo.py): a re-load whose inputs are all
unchanged does not expand the jobs again, and any changed input — the manifest, its
jobs_file edited in place, a local image's bytes, a glob's files, batchgen itself —
means a full load that validates everything again."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from asset_hosts import png

from batchgen.cli import main
from batchgen.errors import ManifestError
from batchgen.manifest import load_manifest, memo, memo_row
from batchgen.manifest import sources as sources_module


@pytest.fixture
def expansions(monkeypatch) -> list[Path]:
    """Every data file a load walks, in order (a recalled load walks none)."""
    walked: list[Path] = []
    real = sources_module.open_rows

    def counting(path: Path, display: str, keep_extra: bool):  # type: ignore[no-untyped-def]
        walked.append(path)
        return real(path, display, keep_extra)

    monkeypatch.setattr(sources_module, "open_rows", counting)
    # the files here were all written a moment ago: trust their times (the 2 s rule has
    # its own test below)
    monkeypatch.setattr(memo, "RACY_NS", 0)
    return walked


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def age(path: Path, seconds: float) -> None:
    """Set a file's mtime `seconds` into the past (an edit made long ago)."""
    old = time.time() - seconds
    os.utime(path, (old, old))


def write(folder: Path, rows: list[dict[str, object]], *, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    age(folder / "rows.jsonl", 60)
    manifest = folder / "m.yaml"
    manifest.write_text("version: 1\nname: memo\noutput: {dir: out}\n"
                        "defaults: {resolution: 720p, video_length: 5}\n"
                        f"jobs_file: rows.jsonl\n{extra}")
    return manifest


def rows(n: int, prompt: str = "p") -> list[dict[str, object]]:
    return [{"id": f"j{i}", "prompt": f"{prompt}{i}",
             "image_url": f"https://example.com/{i}.jpg"} for i in range(n)]


def same(a, b) -> bool:  # type: ignore[no-untyped-def]
    return (len(a.jobs), a.jobs.digest, a.jobs.shapes and bytes(a.jobs.shapes.order),
            a.jobs.shapes and a.jobs.shapes.kinds, dict(a.uploads)) == \
        (len(b.jobs), b.jobs.digest, b.jobs.shapes and bytes(b.jobs.shapes.order),
         b.jobs.shapes and b.jobs.shapes.kinds, dict(b.uploads))


def test_an_unchanged_manifest_is_not_expanded_again(tmp_path, expansions):
    manifest = write(tmp_path, rows(50))
    first = load_manifest(manifest, recall=True)
    assert len(expansions) == 1 and (tmp_path / memo.MEMO_PATH).is_file()
    again = load_manifest(manifest, recall=True)
    assert len(expansions) == 1  # nothing walked: the remembered load
    assert same(first, again)
    assert [j.id for j in again.jobs] == [j.id for j in first.jobs]  # replays as before
    load_manifest(manifest)  # `validate`: always in full
    assert len(expansions) == 4  # (the comparison above replayed both lists once)
    other = write(tmp_path / "other", rows(3))
    load_manifest(other)  # and it leaves nothing beside the manifest
    assert not (other.parent / memo.MEMO_PATH).exists()


def test_a_jobs_file_edited_in_place_is_validated_again(tmp_path, expansions):
    manifest = write(tmp_path, rows(20))
    first = load_manifest(manifest, recall=True)
    data = tmp_path / "rows.jsonl"
    # the same size, one job's prompt changed; written over the same inode
    text = data.read_text()
    with open(data, "r+") as f:
        f.write(text.replace('"p7"', '"q7"'))
    age(data, 30)  # even with an mtime older than the last load's
    walked = len(expansions)
    second = load_manifest(manifest, recall=True)
    assert len(expansions) == walked + 1 and second.jobs.digest != first.jobs.digest
    # an edit that breaks a row is found and reported, never taken from the memo
    with open(data, "r+") as f:
        f.write(text.replace('"p7"', '"p7",').replace('"j0"', 'j00'))
    age(data, 20)
    with pytest.raises(ManifestError, match=r"rows\.jsonl:1"):
        load_manifest(manifest, recall=True)


def test_a_changed_manifest_or_a_replaced_jobs_file_is_loaded_in_full(tmp_path, expansions):
    manifest = write(tmp_path, rows(10))
    first = load_manifest(manifest, recall=True)
    manifest.write_text(manifest.read_text().replace("720p", "1080p"))
    assert load_manifest(manifest, recall=True).jobs.digest != first.jobs.digest
    assert len(expansions) == 2
    data = tmp_path / "rows.jsonl"
    replacement = tmp_path / "new.jsonl"
    replacement.write_text(data.read_text().replace("p3", "x3"))
    stat = data.stat()
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
    replacement.replace(data)
    load_manifest(manifest, recall=True)
    assert len(expansions) == 3  # another inode: loaded again


def test_local_images_and_globs_are_looked_at_again(tmp_path, expansions):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png(64 + i, 64))
        age(folder / f"{i}.png", 60)
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: memo\noutput: {dir: out}\n"
                        "storage: {upload: 's3://bucket/in'}\n"
                        "matrix: {image_url: ['images/*.png'], prompt: [a]}\n")
    first = load_manifest(manifest, recall=True)
    assert len(first.uploads) == 3
    assert same(first, load_manifest(manifest, recall=True))
    # an image's bytes change (same name): its object, so its job, is another
    (folder / "1.png").write_bytes(png(200, 64))
    age(folder / "1.png", 30)
    edited = load_manifest(manifest, recall=True)
    assert edited.jobs.digest != first.jobs.digest and set(edited.uploads) != set(first.uploads)
    # a new file matches the glob: one more job
    (folder / "3.png").write_bytes(png(99, 99))
    age(folder / "3.png", 30)
    assert len(load_manifest(manifest, recall=True).jobs) == 4


def test_a_file_modified_within_two_seconds_is_not_remembered(tmp_path, expansions,
                                                               monkeypatch):
    monkeypatch.setattr(memo, "RACY_NS", 2_000_000_000)
    manifest = write(tmp_path, rows(5))
    (tmp_path / "rows.jsonl").touch()  # just now: a same-size edit could keep its times
    load_manifest(manifest, recall=True)
    load_manifest(manifest, recall=True)
    assert len(expansions) == 2


def test_another_batchgen_or_a_damaged_memo_loads_in_full(tmp_path, expansions, monkeypatch):
    manifest = write(tmp_path, rows(5))
    load_manifest(manifest, recall=True)
    monkeypatch.setattr(memo, "_code_identity", lambda: "another batchgen")
    load_manifest(manifest, recall=True)
    assert len(expansions) == 2
    (tmp_path / memo.MEMO_PATH).write_bytes(b"not a database" * 100)
    assert len(load_manifest(manifest, recall=True).jobs) == 5
    assert len(expansions) == 3


def test_plan_of_an_edited_jobs_file_reports_its_problem(tmp_path, monkeypatch, expansions):
    monkeypatch.chdir(tmp_path)
    manifest = write(tmp_path, rows(5))
    assert cli("plan", str(manifest))[0] == 0
    data = tmp_path / "rows.jsonl"
    data.write_text(data.read_text().replace('"720p"', '"720p"').replace(
        "https://example.com/2.jpg", "not a url"))
    age(data, 10)
    code, _, err = cli("plan", str(manifest))
    assert code == 2 and "rows.jsonl:3" in err


@pytest.mark.parametrize("memo_kept", [True, False])
async def test_a_jobs_file_rewritten_behind_a_stale_stat_sends_the_new_requests(
        sandbox, tmp_path, monkeypatch, memo_kept):
    """On NFS (attributes cached up to acregmax=60 s; open() revalidates, stat() does not),
    sshfs or SMB, a file rewritten from another host keeps its old signature for a while,
    simulated here by serving rows.jsonl's old stat. With a state already synced from the
    remembered digest, Store.sync's key would match and the old prompts be paid for: the
    memo compares the jobs_file's bytes too. (memo_kept=False: the control, no memo.)"""
    from batchgen import arun, plan
    from batchgen.sandbox import state as sandbox_state

    monkeypatch.setattr(memo, "RACY_NS", 0)
    sb = await sandbox()
    sent: list[str] = []
    real_create = sandbox_state.SandboxState.create_task

    def spy(self, **kw):  # type: ignore[no-untyped-def]
        sent.append(kw["prompt"])
        return real_create(self, **kw)

    monkeypatch.setattr(sandbox_state.SandboxState, "create_task", spy)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(3, "cat ")))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"version: 1\nname: memo\noutput: {{dir: out}}\n"
                        f"api: {{base_url: '{sb.url}', concurrency: 1, poll_interval: 0.05}}\n"
                        "defaults: {resolution: 720p, video_length: 5}\n"
                        "jobs_file: rows.jsonl\n")
    one = plan(str(manifest)).total_credits // 3
    first = await arun(str(manifest), api_key="test-key-1234", max_credits=one)
    assert first.counts["completed"] == 1 and sent == ["cat 0"]

    cached = os.stat(data)  # what a client's attribute cache keeps serving
    with open(data, "r+") as f:  # another host fixes the prompts: same size, in place
        f.write(data.read_text().replace("cat", "dog"))
    real_stat = os.stat

    def nfs_stat(path, *a, **kw):  # type: ignore[no-untyped-def]
        return cached if os.fspath(path) == str(data) else real_stat(path, *a, **kw)

    monkeypatch.setattr(os, "stat", nfs_stat)
    if not memo_kept:
        (tmp_path / memo.MEMO_PATH).unlink()
    await arun(str(manifest), api_key="test-key-1234", max_credits=one * 10)
    assert sent[1:] == ["dog 1", "dog 2"], sent


def test_an_image_edited_in_place_with_its_mtime_restored_gets_its_new_hash(tmp_path,
                                                                            monkeypatch):
    """The memo misses such an edit (the ctime moved), and the full load that follows must
    not take the image's sha256 from file-hashes.db by (path, size, mtime): that was the old
    digest, the old object URL and expansion, remembered again under the new signature."""
    from batchgen import file_hashes
    monkeypatch.setattr(memo, "RACY_NS", 0)
    monkeypatch.setattr(file_hashes, "RACY_NS", 0)
    image = tmp_path / "a.png"
    image.write_bytes(png(64, 64))
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: memo\noutput: {dir: out}\n"
                        "storage: {upload: 's3://bucket/in'}\n"
                        "jobs: [{id: a, prompt: p, image_url: a.png, resolution: 720p, "
                        "video_length: 5}]\n")
    first = load_manifest(manifest, recall=True)
    st = image.stat()
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF  # another image, same size (the head batchgen sniffs is unchanged)
    with open(image, "r+b") as f:
        f.write(data)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored; ctime moved
    again = load_manifest(manifest, recall=True)
    assert set(again.uploads) != set(first.uploads)
    assert again.jobs.digest != first.jobs.digest


def reseal(db: sqlite3.Connection) -> None:
    """Seal the (edited) row again, as if written so: only the value checks can refuse it."""
    key, *values = db.execute("SELECT key, count, digest, shapes_kinds, shapes_order, "
                              "uploads, inputs FROM loads").fetchone()
    db.execute("UPDATE loads SET seal = ?", (memo_row.seal(key, values),))


@pytest.mark.parametrize("resealed", [False, True])
@pytest.mark.parametrize("damage", [
    "inputs = '{\"files\": [], \"contents\": {}, \"globs\": []}'",  # files: a list
    "uploads = '[]'",                                 # uploads: a list
    "shapes_kinds = '[[\"720p\", 5, null, null]]'",   # a shape of 4 fields, not 5
    "shapes_kinds = '[[[1], 5, null, null, false]]'",  # unhashable shape
    "shapes_order = x'0000'",                         # an order shorter than the count
    "count = 6",                                      # a count of another order
])
def test_a_damaged_but_parseable_memo_means_a_full_load_not_a_crash(
        tmp_path, monkeypatch, expansions, damage, resealed):
    """A row whose JSON parses but holds the wrong shapes of values crashed plan (exit 70,
    'internal error') until loads.db was deleted: any doubt is a full load."""
    monkeypatch.chdir(tmp_path)
    manifest = write(tmp_path, rows(5))
    load_manifest(manifest, recall=True)
    with sqlite3.connect(tmp_path / memo.MEMO_PATH) as db:
        db.execute(f"UPDATE loads SET {damage}")
        if resealed:
            reseal(db)
    code, _, err = cli("plan", str(manifest))
    assert code == 0, err
    assert "internal error" not in err and len(expansions) == 2


def test_the_remembered_shapes_are_not_taken_from_another_row(tmp_path, monkeypatch,
                                                              expansions):
    """Well-formed shapes that are not this load's (a damaged or foreign row) gave `plan`
    (no state yet: priced from the shapes) other prices: the row's seal refuses them."""
    monkeypatch.chdir(tmp_path)
    manifest = write(tmp_path, rows(5))
    code, honest, _ = cli("plan", "--json", str(manifest))
    assert code == 0
    with sqlite3.connect(tmp_path / memo.MEMO_PATH) as db:
        db.execute("UPDATE loads SET shapes_kinds = '[[\"1080p\", 10, null, null, false]]'")
    code, told, _ = cli("plan", "--json", str(manifest))
    assert code == 0
    assert json.loads(told)["total_credits"] == json.loads(honest)["total_credits"]


def test_a_memo_written_before_rows_were_sealed_is_replaced(tmp_path, expansions):
    manifest = write(tmp_path, rows(5))
    (tmp_path / memo.MEMO_PATH).parent.mkdir()
    with sqlite3.connect(tmp_path / memo.MEMO_PATH) as db:
        db.execute("CREATE TABLE loads (manifest TEXT PRIMARY KEY, key TEXT NOT NULL, "
                   "count INTEGER NOT NULL, digest TEXT NOT NULL, shapes_kinds TEXT NOT "
                   "NULL, shapes_order BLOB NOT NULL, uploads TEXT NOT NULL, inputs TEXT "
                   "NOT NULL)")
    load_manifest(manifest, recall=True)
    load_manifest(manifest, recall=True)
    assert len(expansions) == 1  # remembered in the new table, then recalled


def test_code_identity_sees_an_edited_rule_of_the_same_size_and_mtime(tmp_path, monkeypatch):
    """Installs whose mtimes are fixed (Nix: every file's mtime is 1; reproducible images
    with SOURCE_DATE_EPOCH) make two releases whose rules differ only in content: a load
    validated by the old rules must not be recalled by the new."""
    pkg = tmp_path / "batchgen"
    (pkg / "manifest").mkdir(parents=True)
    rule = pkg / "manifest" / "rules.py"
    rule.write_text("MAX_LENGTH = 10\n")
    (pkg / "manifest" / "memo.py").write_text("")
    for f in (rule, pkg / "manifest" / "memo.py"):
        os.utime(f, (1, 1))
    monkeypatch.setattr(memo, "__file__", str(pkg / "manifest" / "memo.py"))
    before = memo._code_identity()
    rule.write_text("MAX_LENGTH = 99\n")  # another release: the same size
    os.utime(rule, (1, 1))
    assert memo._code_identity() != before


def test_the_two_second_rule_is_judged_on_the_files_clock_not_this_hosts(tmp_path,
                                                                         monkeypatch):
    """A file's times are stamped by its file server's clock (NFS, SMB). This host running
    3 s ahead made a file written just now look 3 s old: remembered, and a second same-size
    write within the server's timestamp tick would keep the whole signature."""
    real_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + 3_000_000_000)
    manifest = write(tmp_path, rows(5))
    (tmp_path / "rows.jsonl").touch()  # written now, by the server's clock
    load_manifest(manifest, recall=True)
    assert not (tmp_path / memo.MEMO_PATH).is_file() or not sqlite3.connect(
        tmp_path / memo.MEMO_PATH).execute("SELECT count(*) FROM loads").fetchone()[0]


@pytest.mark.parametrize("spelling", ["absolute", "dotted", "symlinked folder",
                                      "symlinked manifest"])
def test_the_memo_is_recalled_however_the_manifest_path_is_spelled(tmp_path, monkeypatch,
                                                                    expansions, spelling):
    """The memo was keyed on the path as typed (and its unnormalised absolute form), since
    the expansion digest hashed it: `run m.yaml` then cron's `cd / && run /srv/x/m.yaml`
    checked a 1,000,000-row jobs_file again (8-30 s). Both now follow the manifest's own
    folder, whatever the cwd; what the user is shown keeps the path as typed."""
    folder = tmp_path / "batch"
    manifest = write(folder, rows(5))
    (folder / "nightly.yaml").symlink_to("m.yaml")
    (tmp_path / "link").symlink_to(folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(folder)
    first = load_manifest("m.yaml", recall=True)
    assert len(expansions) == 1
    assert next(iter(first.jobs)).source == "rows.jsonl:1"
    monkeypatch.chdir(elsewhere)
    typed = {"absolute": str(manifest), "dotted": "./../batch/../batch/m.yaml",
             "symlinked folder": str(tmp_path / "link" / "m.yaml"),
             "symlinked manifest": "../batch/nightly.yaml"}[spelling]
    again = load_manifest(typed, recall=True)
    assert len(expansions) == 2  # recalled: nothing walked (but `first`'s replay above)
    assert same(first, again)
    # shown to the user as typed; and a full replay checks out against the recalled digest
    shown = [j.source for j in again.jobs]
    assert shown[0] == f"{Path(typed).parent}/rows.jsonl:1"


def test_a_remembered_glob_is_matched_again_in_the_manifests_folder_not_the_cwd(
        tmp_path, monkeypatch, expansions):
    """A glob's folder was kept as typed (`.` for `run m.yaml`): recalled from another cwd,
    it was matched there, found nothing, and the load was done in full again."""
    folder = tmp_path / "batch" / "images"
    folder.mkdir(parents=True)
    for i in range(2):
        (folder / f"{i}.png").write_bytes(png(64 + i, 64))
        age(folder / f"{i}.png", 60)
    manifest = tmp_path / "batch" / "m.yaml"
    manifest.write_text("version: 1\nname: memo\noutput: {dir: out}\n"
                        "storage: {upload: 's3://bucket/in'}\n"
                        "matrix: {image_url: ['images/*.png'], prompt: [a]}\n")
    walked: list[str] = []
    real = memo.glob_files

    def matching(base: Path, pattern: str) -> list[str]:
        walked.append(str(base))
        return real(base, pattern)

    monkeypatch.setattr(memo, "glob_files", matching)
    monkeypatch.chdir(manifest.parent)
    first = load_manifest("m.yaml", recall=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = load_manifest(str(manifest), recall=True)
    assert walked == [str(manifest.parent)] * 2  # remembered, then matched in its folder
    assert same(first, again) and len(again.uploads) == 2
