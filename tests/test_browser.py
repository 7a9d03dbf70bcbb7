"""The chapters with widgets, as a learner uses them: JupyterLab in a real browser.

One JupyterLab on 127.0.0.1 (a free port, a token, no browser of its own, no news prompt, no update
check) serves copies of the chapter notebooks that carry a widget (every notebooks/*.ipynb with a
`.view()` cell: 00, 03, 04, 05, 07 as of writing) from a temporary folder; its kernels inherit
RLNOTES_FAST=1. Debian's Chromium, driven by Playwright, opens each chapter in turn, runs
Run > Run All Cells, waits until every code cell has an execution count and the kernel is idle, moves
every slider of every widget with the keyboard (focus the handle, arrow key) and checks that the
widget's picture (an ipywidgets Image: the bytes behind its <img>) changes each time. It then saves the
notebook and checks that no output is an error and that no stderr output on the page is a traceback.

Screenshots (each widget after each slider move, the page at the end or at a failure) go to
build/screenshots/browser/, and JupyterLab's log to build/screenshots/browser/jupyterlab.log.

Needs /usr/bin/chromium (Debian: apt-get install chromium); `.ci/run` installs it and sets
RLNOTES_REQUIRE_BROWSER=1 so that CI fails rather than skips when it is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "screenshots" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

if not Path(CHROMIUM).exists():
    if os.environ.get("RLNOTES_REQUIRE_BROWSER") == "1":
        raise RuntimeError("RLNOTES_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

# What `make lab` also sets (Makefile): no news prompt, no update check.
LAB_FLAGS = ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
LAB_OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}

RUN_ALL_TIMEOUT_S = 900  # one chapter's Run All in fast mode, on a loaded 2-core machine
TOKEN = "rlnotes-browser-test"


def _widget_chapters() -> list[Path]:
    chapters = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        if any(c["cell_type"] == "code" and re.search(r"\.view\(", "".join(c["source"])) for c in cells):
            chapters.append(path)
    return chapters


CHAPTERS = _widget_chapters()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving copies of the widget chapters; yields (base url, folder of the copies)."""
    root = tmp_path_factory.mktemp("lab")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    for path in CHAPTERS:
        shutil.copy(path, notebooks / path.name)
    settings = root / "app-settings"
    settings.mkdir()
    (settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES))
    SHOTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / ".jupyter"), JUPYTER_DATA_DIR=str(root / ".jupyter-data"),
               RLNOTES_FAST="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("MPLBACKEND", None)  # the kernel's default, the inline backend, draws figures as PNG
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    log = (SHOTS / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--ServerApp.open_browser=False",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={notebooks}",
         f"--LabApp.app_settings_dir={settings}", f"--LabApp.user_settings_dir={root / 'user-settings'}",
         f"--LabApp.workspaces_dir={root / 'workspaces'}", *LAB_FLAGS],
        cwd=notebooks, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                _api(base, "/api/status")
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab exited; see {SHOTS / 'jupyterlab.log'}")
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not start in 120 s; see {SHOTS / 'jupyterlab.log'}")
        yield base, notebooks
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


def test_the_lab_flags_are_those_of_make_lab():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lab:.*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    for flag in LAB_FLAGS:
        assert flag in recipe
    assert "overrides.json" in makefile and '"fetchNews": "false"' in makefile


PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10]

_PICTURE_JS = """async img => {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let checksum = 0;
    for (const b of bytes) checksum = (checksum * 31 + b) % 1000000007;
    return {src: img.src, head: Array.from(bytes.slice(0, 8)), size: bytes.length, checksum: checksum};
}"""

# The prompts of the notebook's code cells: "[12]:" ran, "[*]:" queued or running, "[ ]:" not run (Run All
# stops at a failing cell and clears the queue); and the tracebacks shown so far.
_PROMPTS_JS = """() => {
    const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')];
    const prompts = cells.map(c => ((c.querySelector('.jp-InputArea-prompt') || {}).textContent || '').trim());
    const tracebacks = [...document.querySelectorAll('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map(e => e.textContent).filter(t => /Traceback|\\w+Error\\b/.test(t)).map(t => t.slice(-600));
    return {prompts, tracebacks};
}"""

_STDERR_TRACEBACKS_JS = """() => [...document.querySelectorAll(
        '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => e.textContent).filter(t => /Traceback|Error:|\\w+Error\\b/.test(t)).map(t => t.slice(0, 400))"""


def _shot(target, name: str) -> None:
    try:
        target.screenshot(path=str(SHOTS / f"{name}.png"), timeout=30_000)
    except Exception as error:  # a screenshot must not hide the real failure
        print(f"screenshot {name} failed: {error}")


def _wait_for_run_all(page, chapter: Path) -> None:
    """Until every (non-empty) code cell has an execution count; fails at once when Run All stopped early."""
    name = chapter.stem
    code = [c for c in json.loads(chapter.read_text())["cells"] if c["cell_type"] == "code"]
    empty = [not "".join(c["source"]).strip() for c in code]
    deadline, started, stopped = time.monotonic() + RUN_ALL_TIMEOUT_S, False, 0
    while True:
        state = page.evaluate(_PROMPTS_JS)
        # JupyterLab attaches the cells below the viewport to the page when the browser is idle.
        assert len(state["prompts"]) <= len(code), f"{name}: more code cells on the page than in the notebook"
        attached = len(state["prompts"]) == len(code)
        prompts = [p for p, e in zip(state["prompts"], empty) if not e]
        if attached and all(re.fullmatch(r"\[\d+\]:?", p) for p in prompts):
            return
        running = any("*" in p for p in prompts)
        started = started or running
        stopped = stopped + 1 if started and attached and not running else 0
        if stopped >= 3 or state["tracebacks"]:  # idle with cells not run, or a traceback: Run All stopped
            _shot(page, f"{name}-failure")
            not_run = [i for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:?", p)]
            pytest.fail(f"{name}: Run All stopped; code cells {not_run} did not run; "
                        f"tracebacks: {state['tracebacks'][:2]}", pytrace=False)
        if time.monotonic() > deadline:
            _shot(page, f"{name}-failure")
            pytest.fail(f"{name}: Run All did not finish in {RUN_ALL_TIMEOUT_S} s: prompts {prompts} "
                        f"({len(state['prompts'])} of {len(code)} code cells on the page)", pytrace=False)
        time.sleep(2)


def _move(page, slider):
    """Focus the slider's handle and press an arrow key (towards the middle of its range); returns the key."""
    handle = slider.locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    now, high = (float(handle.get_attribute(a)) for a in ("aria-valuenow", "aria-valuemax"))
    key = "ArrowLeft" if now >= high else "ArrowRight"
    handle.focus()
    page.keyboard.press(key)
    return key


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_run_all_then_move_every_slider(lab, browser, chapter):
    base, folder = lab
    name = chapter.stem
    start = time.perf_counter()
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    try:
        # Its own workspace, so that JupyterLab restores no tab of an earlier chapter.
        page.goto(f"{base}/lab/workspaces/{name}/tree/{chapter.name}?token={TOKEN}", timeout=180_000)
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=180_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=180_000)
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        _wait_for_run_all(page, folder / chapter.name)
        page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=60_000)
        ran = time.perf_counter() - start
        _shot(page, f"{name}-after-run-all")

        cells = page.locator(".jp-CodeCell").filter(has=page.locator(".widget-slider"))
        assert cells.count() >= 1, "no widget with a slider was displayed"
        moved = 0
        for c in range(cells.count()):
            cell = cells.nth(c)
            img = cell.locator("img.widget-image").first
            img.wait_for(state="visible", timeout=60_000)
            sliders = cell.locator(".widget-slider")
            assert sliders.count() >= 1
            for s in range(sliders.count()):
                slider = sliders.nth(s)
                label = slider.locator(".widget-label").first.inner_text().strip()
                readout = slider.locator(".widget-readout")
                before, value = img.evaluate(_PICTURE_JS), readout.inner_text()
                assert before["head"] == PNG_SIGNATURE and before["size"] > 1000
                key = _move(page, slider)
                page.wait_for_function("([el, v]) => el.textContent !== v", arg=[readout.element_handle(), value],
                                       timeout=30_000)
                page.wait_for_function("([el, src]) => el.src !== src", arg=[img.element_handle(), before["src"]],
                                       timeout=120_000)
                after = img.evaluate(_PICTURE_JS)
                _shot(cell, f"{name}-widget{c}-slider{s}")
                assert after["head"] == PNG_SIGNATURE
                assert after["checksum"] != before["checksum"], (
                    f"{name}: slider {label!r} moved ({value} -> {readout.inner_text()}, {key}) "
                    "but the picture's bytes did not change")
                moved += 1

        errors_on_page = page.evaluate(_STDERR_TRACEBACKS_JS)
        assert not errors_on_page, f"{name}: a cell shows a traceback: {errors_on_page[:2]}"
        assert page.get_by_text("Error displaying widget").count() == 0
        assert page.get_by_text("Jupyter news").count() == 0, "the news prompt was shown"

        # Save (as a learner would, Ctrl+S) and read the outputs JupyterLab wrote: none is an error.
        # (JupyterLab may have autosaved a copy mid-run: wait for one in which every cell has run.)
        saved = folder / chapter.name
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        page.keyboard.press("Escape")
        page.keyboard.press("Control+s")
        for _ in range(120):
            code = [c for c in json.loads(saved.read_text())["cells"] if c["cell_type"] == "code"]
            if all(c.get("execution_count") for c in code if "".join(c["source"]).strip()):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"{name}: the saved notebook misses execution counts")
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: error outputs: {[(o['ename'], o['evalue']) for o in errors][:3]}"
        print(f"{name}: Run All {ran:.0f} s, {moved} sliders moved, {time.perf_counter() - start:.0f} s in all")
    except Exception:
        _shot(page, f"{name}-failure")
        raise
    finally:
        page.close()
        for session in _api(base, "/api/sessions") or []:  # free the kernel's memory before the next chapter
            _api(base, f"/api/sessions/{session['id']}", method="DELETE")
