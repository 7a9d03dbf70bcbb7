"""`make site`, as a reader of the website sees it: the index, every chapter page, its figures.

The site is built as `make site` builds it (docs/site/build.py into build/site/): every notebook
executed in fast mode and rendered by nbconvert. Executed copies that are current (same notebook, same
rlnotes sources) are reused from build/site/executed/, so after a `make site` this test only renders;
on a fresh clone it executes every notebook once. Chromium (Playwright) then opens build/site/index.html
with every request off the machine refused (the pages must stand without the web), follows each chapter
link of the index and finds on each page its figures (<img> elements holding PNG data that the browser
decoded), the widgets' last pictures with their note, and no error output.

Needs /usr/bin/chromium (see tests/test_browser.py; RLNOTES_REQUIRE_BROWSER=1 makes its absence fail).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "build" / "site"
SHOTS = ROOT / "build" / "screenshots" / "site"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _has_widget(path: Path) -> bool:
    cells = json.loads(path.read_text())["cells"]
    return any(c["cell_type"] == "code" and re.search(r"\.view\(", "".join(c["source"])) for c in cells)


def test_make_site_runs_the_builder_into_build_site():
    recipe = re.search(r"^site:(.*)\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe, "no site target in the Makefile"
    assert "$(VENV)/.course" in recipe.group(1), "make site must install what it needs first"
    assert "docs/site/build.py --out build/site" in recipe.group(2)


@pytest.fixture(scope="module")
def site():
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "site" / "build.py"), "--out", str(SITE)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout + f"site built in {time.perf_counter() - start:.0f} s")
    return SITE


def test_every_chapter_has_a_page_and_the_index_links_it(site):
    assert (site / "index.html").exists() and (site / "glossary.html").exists()
    for path in NOTEBOOKS:
        assert (site / f"{path.stem}.html").exists(), f"no page for {path.name}"
    index = (site / "index.html").read_text()
    linked = set(re.findall(r'<a href="([\w.-]+)\.html">', index)) - {"glossary"}
    assert linked == {p.stem for p in NOTEBOOKS}


def test_pages_point_nowhere_in_the_repository(site):
    for path in NOTEBOOKS:
        page = (site / f"{path.stem}.html").read_text()
        assert ".ipynb\"" not in page and "assets/glossary.md" not in page


# Figures: <img> with PNG data the browser decoded. Errors: nbconvert renders an error output, like
# stderr, with the stderr mime type; a traceback there, or a Python exception name, is an error.
_PAGE_JS = """() => {
    const imgs = [...document.querySelectorAll('img')];
    const figures = imgs.filter(i => i.src.startsWith('data:image/png;base64,') && i.complete && i.naturalWidth > 50);
    const stderr = [...document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map(e => e.textContent).filter(t => /Traceback|\\w+Error\\b|\\w+Exception\\b/.test(t));
    const notes = [...document.querySelectorAll('.rlnotes-widget-note')];
    const noteAfterPicture = notes.filter(n => {
        const area = n.closest('.jp-OutputArea');
        return area && [...area.querySelectorAll('img')].some(i => i.src.startsWith('data:image/png'));
    }).length;
    return {title: document.title, h1: (document.querySelector('h1') || {}).textContent || '',
            figures: figures.length, broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 60)),
            stderr: stderr.map(t => t.slice(0, 300)), notes: notes.length, noteAfterPicture: noteAfterPicture,
            movesInJupyterLab: notes.every(n => n.textContent.includes('JupyterLab'))};
}"""


def test_a_reader_follows_every_chapter_link(site):
    if not Path(CHROMIUM).exists():
        if os.environ.get("RLNOTES_REQUIRE_BROWSER") == "1":
            pytest.fail("RLNOTES_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        off_machine = []

        def refuse(route):
            off_machine.append(route.request.url)
            route.abort()

        page.route(re.compile(r"^https?://"), refuse)  # MathJax and require.js from a CDN: not needed to read
        page.goto((site / "index.html").as_uri(), wait_until="load")
        page.screenshot(path=str(SHOTS / "index.png"))
        links = page.locator("table a")
        names = [links.nth(i).inner_text().strip() for i in range(links.count())]
        assert sorted(names) == [p.stem for p in NOTEBOOKS]
        for name in names:
            page.locator("table a", has_text=name).click()
            page.wait_for_url(f"**/{name}.html")
            page.wait_for_load_state("load")
            seen[name] = page.evaluate(_PAGE_JS)
            page.screenshot(path=str(SHOTS / f"{name}.png"))
            page.go_back(wait_until="load")
            page.wait_for_url("**/index.html")
        browser.close()
    assert all(url.startswith("https://cdnjs.cloudflare.com/") for url in off_machine), off_machine[:5]

    for path in NOTEBOOKS:
        info = seen[path.stem]
        assert info["h1"].startswith(path.stem[:2]), (path.stem, info["h1"])
        assert info["figures"] >= 1, f"{path.stem}: no figure on its page"
        assert not info["broken"], f"{path.stem}: images that do not load: {info['broken'][:3]}"
        assert not info["stderr"], f"{path.stem}: error output on its page: {info['stderr'][:2]}"
        if _has_widget(path):
            assert info["notes"] >= 1 and info["noteAfterPicture"] >= 1, f"{path.stem}: the widget's picture is missing"
            assert info["movesInJupyterLab"]
