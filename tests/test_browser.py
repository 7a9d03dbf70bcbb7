"""A widget in a real browser: JupyterLab on localhost, Debian's Chromium driven by Playwright.

The test opens a notebook that shows chapter 00's gridworld widget, runs it, moves a slider the way
a learner would (typing into its readout), and checks that the figure shown changes.

Needs /usr/bin/chromium (Debian: apt-get install chromium); `.ci/run` installs it and sets
RLNOTES_REQUIRE_BROWSER=1 so that CI fails rather than skips when it is missing.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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

WIDGET_NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "execution_count": None, "id": "w0", "metadata": {}, "outputs": [],
         "source": "from rlnotes.widgets import gridworld_values\nbox = gridworld_values.view()\nbox"},
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    (root / "widget.ipynb").write_text(json.dumps(WIDGET_NOTEBOOK))
    port, token = _free_port(), "rlnotes-test"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / ".jupyter"))
    env.pop("MPLBACKEND", None)  # the kernel's default, the inline backend, draws figures as PNG
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start")
    yield f"{base}/lab/tree/widget.ipynb?token={token}"
    server.terminate()
    server.wait(timeout=30)


PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10]


def _figure(page) -> dict:
    """The widget's picture as the browser has it: its src and the bytes behind it (fetched in the page)."""
    page.locator(".jp-OutputArea-output img").first.wait_for(state="visible", timeout=120_000)
    return page.evaluate("""async () => {
        const img = document.querySelector('.jp-OutputArea-output img');
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let checksum = 0;
        for (const b of bytes) checksum = (checksum * 31 + b) % 1000000007;
        return {src: img.src, head: Array.from(bytes.slice(0, 8)), size: bytes.length, checksum: checksum};
    }""")


def test_moving_a_slider_redraws_the_figure(lab, tmp_path):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(lab, timeout=120_000)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=120_000)
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Shift+Enter")
        try:
            before = _figure(page)
        finally:
            page.screenshot(path=str(tmp_path / "after-run.png"))
        assert before["head"] == PNG_SIGNATURE and before["size"] > 1000

        readout = page.locator(".widget-slider .widget-readout").first  # the "step reward" slider's value
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("-1.00")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "src => { const img = document.querySelector('.jp-OutputArea-output img'); return img && img.src !== src; }",
            arg=before["src"], timeout=60_000,
        )
        after = _figure(page)
        page.screenshot(path=str(tmp_path / "widget.png"))
        browser.close()
    assert after["head"] == PNG_SIGNATURE
    assert after["checksum"] != before["checksum"], "the slider moved but the picture's bytes did not change"
