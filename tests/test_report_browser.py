"""report.html in a real browser: the system's headless Chromium, driven by Playwright.

The page is opened from file://, as a user opens it. Chromium is Debian's `chromium`
package (`.ci/run` installs it), launched by path: no browser is ever downloaded. Where
there is no Chromium, or no playwright package, these tests skip and say why.
A screenshot of the example manifest's report is saved under tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env, run_cli, write_manifest

CHROMIUM = os.environ.get("BATCHGEN_CHROMIUM") or shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine: `apt-get install chromium` (Debian) to run the "
           "browser tests of report.html (.ci/run does)")
async_api = pytest.importorskip(
    "playwright.async_api", reason="the playwright package is missing: pip install -e '.[test]'")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
ROOT = Path(__file__).parent.parent


class Page:
    """A Chromium page that records every console error and uncaught exception."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    async def rows(self) -> list[tuple[str, str]]:
        """[status, prompt] of each row the job table shows now."""
        return await self.page.eval_on_selector_all(
            "#job-rows tr", "trs => trs.map(t => [t.dataset.status, "
                            "t.querySelector('td.prompt').textContent])")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_report(browser: Any, report: Path, width: int = 1200) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": 900})
    page = Page(await context.new_page())
    await page.page.goto(report.as_uri())
    await page.page.wait_for_selector("#job-rows tr")
    return page


async def loaded_posters(page: Page) -> list[int]:
    """Natural width of each gallery poster, loaded from disk as the browser does."""
    return await page.page.evaluate("""() => Promise.all(
        Array.from(document.querySelectorAll('#gallery-list video[poster]')).map(v =>
            new Promise(done => { const i = new Image(); i.onload = () => done(i.naturalWidth);
                                  i.onerror = () => done(0); i.src = v.poster; })))""")


async def test_report_page_filters_searches_and_shows_hostile_prompts_as_text(
        sandbox, browser, tmp_path):
    sb = await sandbox(fail_prompts=["explode"])
    manifest = write_manifest(tmp_path, 5, base_url=sb.url)
    text = manifest.read_text()
    for old, new in (("prompt 1", "sunset over the harbour"), ("prompt 2", "explode 2"),
                     ("prompt 3", "'<script>window.__xss = 1</script><b>bold</b>'")):
        text = text.replace(old, new)
    manifest.write_text(text)
    assert (await run_cli("run", str(manifest), cwd=tmp_path)).code == 1  # one failed
    page = await open_report(browser, tmp_path / "out" / "report.html")

    assert await loaded_posters(page) == [160] * 4  # one poster per completed job, loaded
    videos = page.page.locator("#gallery-list video")
    assert await videos.count() == 4
    assert await videos.first.get_attribute("preload") == "none"
    assert (await videos.first.get_attribute("src")).endswith(".mp4")

    assert len(await page.rows()) == 5
    await page.page.select_option("#f-status", "failed")
    assert [s for s, _ in await page.rows()] == ["failed"]
    await page.page.select_option("#f-status", "completed")
    assert [s for s, _ in await page.rows()] == ["completed"] * 4
    await page.page.select_option("#f-status", "")
    assert len(await page.rows()) == 5

    await page.page.fill("#f-text", "HARBOUR")
    await page.page.wait_for_function("document.querySelectorAll('#job-rows tr').length === 1")
    assert await page.rows() == [["completed", "sunset over the harbour"]]
    await page.page.fill("#f-text", "job004")  # ids are searched too
    await page.page.wait_for_function(
        "document.querySelector('#job-rows tr td.id').textContent === 'job004'")
    await page.page.fill("#f-text", "")
    await page.page.wait_for_function("document.querySelectorAll('#job-rows tr').length === 5")

    prompts = [p for _, p in await page.rows()]
    assert "<script>window.__xss = 1</script><b>bold</b>" in prompts  # shown as text
    assert await page.page.evaluate("window.__xss") is None  # and never run
    assert await page.page.locator("#job-rows b").count() == 0

    await page.page.click("#job-table th[data-key=chg] button")  # sort by credits charged
    charged = await page.page.eval_on_selector_all(
        "#job-rows tr td:nth-child(7)", "tds => tds.map(t => t.textContent)")
    assert charged == sorted(charged)
    assert await page.page.get_attribute("#job-table th[data-key=chg]", "aria-sort") == \
        "ascending"
    assert page.errors == []


@pytest.mark.slow
async def test_example_manifest_report_in_chromium_with_screenshot(browser, tmp_path):
    (tmp_path / "manifests").mkdir()
    shutil.copy(ROOT / "manifests" / "example.yaml", tmp_path / "manifests" / "example.yaml")
    result = await run_cli("run", "manifests/example.yaml", "--sandbox", "--no-progress",
                           cwd=tmp_path, env=cli_env(), timeout=120)
    assert result.code == 0, result.err
    report = tmp_path / "output" / "example" / "report.html"  # ../output/example from it
    page = await open_report(browser, report)
    assert await loaded_posters(page) == [160] * 6
    # the local file plays: Chromium decodes the emulator's H.264
    duration = await page.page.evaluate("""() => new Promise(done => {
        const v = document.querySelector('#gallery-list video');
        v.muted = true;
        v.addEventListener('loadedmetadata', () => done(v.duration), {once: true});
        v.addEventListener('error', () => done(-1), {once: true});
        v.load(); })""")
    assert 4.5 <= duration <= 5.5, duration
    assert await page.page.locator("#audit .ok-note").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    await page.page.reload()  # the page as a user first sees it (no video touched)
    await page.page.wait_for_selector("#job-rows tr")
    await page.page.wait_for_timeout(1000)  # the players' brief start-up spinner is gone
    await page.page.screenshot(path=str(ARTIFACTS / "report-example.png"), full_page=True)
    assert page.errors == []
    phone = await open_report(browser, report, width=390)
    overflow = await phone.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0  # no sideways scrolling of the page on a phone (tables scroll alone)
    await phone.page.screenshot(path=str(ARTIFACTS / "report-example-phone.png"))
    assert phone.errors == []
