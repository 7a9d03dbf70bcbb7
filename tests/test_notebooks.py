"""Every notebook executed once in fast mode, as `make test` checks it; then `make site` from those runs.

One execution a chapter serves three claims, so `make test` runs each notebook once (not once a claim):

- the notebook runs top to bottom in fast mode (`RLNOTES_FAST=1`) without an error output: every
  `assert` in it holds (a failing assert is an error output);
- the instructor version of its nbgrader exercises passes its graded tests: each graded test cell ran
  and printed no error. This is what `nbgrader validate` checks, without a second execution (the student
  release, whose stubs must fail, is checked with nbgrader itself in tests/test_assignments.py);
- `make site`, as a reader of the website sees it: the index, every chapter page, its figures.

The execution is nbval's: `make test` runs `pytest tests notebooks --nbval-lax`, one test a notebook
cell, in a fresh kernel of this Python with matplotlib inline (notebooks/conftest.py), and
notebooks/conftest.py writes each executed notebook, the widgets' state included, to docs/site/build.py's
cache, build/site/executed/, stamped with the pytest run. The tests here read those copies: they run
after every notebook cell (notebooks/conftest.py orders them so, and under `--dist loadgroup` puts the
notebooks and this file in one xdist group, on one worker). A copy from another pytest run is not used
(the cache does not know the installed packages): without a copy from this run, when this file runs
without the notebooks (`pytest tests/test_notebooks.py`), each notebook is executed here with
docs/site/build.py's `execute` (nbclient), as the site builder does. When nbval ran only some notebooks
(`pytest tests/test_notebooks.py notebooks/04_trpo.ipynb --nbval-lax`), only those are checked, and the
site is built and read for those chapters only.

The site is then built as `make site` builds it and reuses the executions, so it only renders. Chromium
(Playwright) opens build/site/index.html with every request off the machine refused (the pages must
stand without the web), follows each chapter link of the index and finds on each page its figures
(<img> elements holding PNG data that the browser decoded), the widgets' last pictures with their note,
no error output, and its formulas typeset by the KaTeX the site carries: as many as the notebook's
Markdown holds, none shown as raw LaTeX; every request the browser made (pages, scripts, stylesheets,
fonts) is a file of the site. A screenshot of a chapter's formulas: build/screenshots/site/07_grpo_math.png.
The Chinese edition (notebooks/zh/, pages in build/site/zh/) is read the same way from build/site/zh/index.html:
each Chinese chapter page is <html lang="zh-CN">, its figures and formulas are there, and its Chinese text is
drawn with a font that has the glyphs (the font Chromium used for a paragraph, asked through the DevTools
protocol, is a CJK font, and four different characters drawn on a canvas in the paragraph's font are four
different pictures, not the same empty box); the language switch of every page leads to the same page of the
other edition (the index of the other edition for a chapter not translated yet), both ways. Screenshots:
build/screenshots/site/zh_index.png and zh_NN.png (zh_03.png: chapter 03 in Chinese).
Every formula of the notebooks and of the glossary is also typeset by that KaTeX one by one, any error
an error. Needs /usr/bin/chromium for the browser tests (see tests/test_browser.py;
RLNOTES_REQUIRE_BROWSER=1 makes its absence fail).

The notebooks executed here (build.py's `execute`) load and store trained models in the fresh checkpoint
folder of this pytest run (tests/conftest.py points RLNOTES_CACHE_DIR at it; the kernels inherit it).
"""

from __future__ import annotations

import ast
import contextlib
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import nbformat
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
CELL_TIMEOUT_S = 900  # one cell in fast mode, on a loaded 2-core machine


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _site_builder():
    return _load("rlnotes_site_build", ROOT / "docs" / "site" / "build.py")


def _errors(cell) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.get("outputs", []) if o.get("output_type") == "error"]


# ---------------------------------------------------------------- every notebook, once, in fast mode


def _png_widths(cell) -> list[int]:
    """The pixel width of each PNG the cell displayed (read from the PNG header)."""
    import base64
    widths = []
    for output in cell.get("outputs", []):
        png = output.get("data", {}).get("image/png")
        if png:
            widths.append(int.from_bytes(base64.b64decode(png[:64])[16:20], "big"))
    return widths


def _run_id(config) -> str:
    """This pytest run, as notebooks/conftest.py's run_id stamps the executed copies with it."""
    return _load("rlnotes_notebooks_conftest", ROOT / "notebooks" / "conftest.py").run_id(config)


def _nbval_notebooks(session) -> list[Path]:
    """The notebooks nbval runs in this pytest run (none without `--nbval-lax notebooks/...`)."""
    return sorted({Path(item.path).resolve() for item in session.items if Path(item.path).suffix == ".ipynb"})


def _site_mode() -> bool:
    """What notebooks/conftest.py writes to the site's cache: fast mode (its default) on seed offset 0."""
    fast = os.environ.get("RLNOTES_FAST", "1") not in ("", "0", "false", "False")
    return fast and (os.environ.get("RLNOTES_SEED_OFFSET", "").strip() or "0") == "0"


def _executed_in_this_run(notebook: Path, config):
    """(path, notebook) of nbval's executed copy from this pytest run, complete or partial; None if none.

    Found by its stamp, not by its name: the name's key (docs/site/build.py's source_key) would change
    with an edit of rlnotes/ while the tests run."""
    for path in sorted((SITE / "executed").glob(f"{notebook.stem}.*.ipynb"), key=lambda p: p.name.endswith(".partial.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except (OSError, ValueError):  # removed or half-written meanwhile
            continue
        if nb.metadata.get("rlnotes", {}).get("run") == _run_id(config):
            return path, nb
    return None


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_fast_mode(notebook, request):
    ran = _nbval_notebooks(request.session)
    if ran and notebook not in ran:
        pytest.skip(f"nbval does not run {notebook.name} in this pytest run")
    found = _executed_in_this_run(notebook, request.config)
    if found is None and notebook in ran and _site_mode():
        pytest.fail(f"nbval ran {notebook.name}, but notebooks/conftest.py wrote no executed copy of it to "
                    f"{SITE / 'executed'} (see the warnings summary)", pytrace=False)
    if found is None:  # this file without the notebooks: executed here, as the site builder does
        start = time.perf_counter()
        try:
            executed, _, _ = _site_builder().execute(notebook, SITE / "executed", "fast", CELL_TIMEOUT_S, use_cache=False)
        except RuntimeError as error:  # the failing cell's traceback, from the kernel
            pytest.fail(str(error), pytrace=False)
        print(f"{notebook.stem}: executed with nbclient in {time.perf_counter() - start:.0f} s")
        found = executed, nbformat.read(executed, as_version=4)
    path, nb = found
    code = [c for c in nb.cells if c.cell_type == "code"]
    failed = {i: _errors(c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and _errors(c)}
    assert not failed, f"{notebook.name}: error outputs {failed} (executed copy: {path})"
    unrun = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and not c.get("execution_count")]
    assert code and not unrun, f"{notebook.name}: cells {unrun} did not run (executed copy: {path})"

    # Every figure fits the notebook's width: at most 12 inches at the inline backend's 100 dpi (tight
    # bounding boxes add at most half an inch of labels sticking out).
    wide = {i: w for i, c in enumerate(nb.cells) if c.cell_type == "code" for w in _png_widths(c) if w > 1250}
    assert not wide, f"{notebook.name}: figures wider than 12 inches (cell: width in px) {wide}"

    # The instructor version passes its own graded tests (what `nbgrader validate` reports as Success).
    # (tests/test_assignments.py checks that every notebook has at least two graded cells.)
    for cell in [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade")]:
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        assert cell.cell_type != "code" or (cell.get("execution_count") and not _errors(cell)), grade_id


# ---------------------------------------------------------------- the site, from those executions

GLOSSARY = ROOT / "assets" / "glossary.md"
KATEX = ROOT / "docs" / "site" / "vendor" / "katex"  # what the site typesets its formulas with
MATH_SHOT = "07_grpo"  # the chapter whose formulas are photographed: build/screenshots/site/07_grpo_math.png
ZH = ROOT / "notebooks" / "zh"  # the Chinese edition: pages in build/site/zh/
ZH_NOTEBOOKS = sorted(ZH.glob("*.ipynb"))
# Fonts that have the Chinese glyphs, as the DevTools protocol names the font a text was drawn with.
CJK_FONT = re.compile(r"CJK|Source Han|PingFang|Hiragino|YaHei|WenQuanYi|Noto Sans SC|Noto Serif SC", re.I)
CJK = re.compile(r"[\u3400-\u9fff]")

# A formula as the course's Markdown writes it, $$...$$ or $...$, counted once code (fenced, or in backticks)
# is taken out: independent of the Markdown parser that docs/site/build.py uses to find them.
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
_FORMULA = re.compile(r"\$\$.+?\$\$|\$[^$]+?\$", re.S)

# Constructs the course's formulas use, or may use next, which KaTeX must read besides the formulas there now.
_CONSTRUCTS = [
    r"\begin{aligned} \hat A_t &= \delta_t + \gamma\lambda \hat A_{t+1} \\ \delta_t &= r_t + \gamma V(s') - V(s) \end{aligned}",
    r"\operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon) = \begin{cases} 1-\epsilon & \rho < 1-\epsilon \\ \rho & \text{else}"
    r" \end{cases}",
    r"\mathbb{E}_{a \sim \pi(\cdot \mid s)}\left[\frac{\pi_\theta(a \mid s)}{\pi_{\mathrm{old}}(a \mid s)} \hat A\right]",
    r"\underbrace{\tfrac{1}{2} \lVert \theta - \theta_k \rVert^2}_{\text{trust region}} \le \delta",
]


def _markdown(path: Path) -> list[str]:
    """The Markdown texts of a notebook (its Markdown cells) or of a .md file."""
    if path.suffix != ".ipynb":
        return [path.read_text()]
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


def _formula_count(markdown: str) -> int:
    return len(_FORMULA.findall(_CODE.sub("", markdown)))


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("RLNOTES_REQUIRE_BROWSER") == "1":
            pytest.fail("RLNOTES_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")


def _has_widget(path: Path) -> bool:
    cells = json.loads(path.read_text())["cells"]
    return any(c["cell_type"] == "code" and re.search(r"\.view\(", "".join(c["source"])) for c in cells)


def test_make_site_runs_the_builder_into_build_site():
    recipe = re.search(r"^site:(.*)\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe, "no site target in the Makefile"
    assert "$(VENV)/.course" in recipe.group(1), "make site must install what it needs first"
    assert "docs/site/build.py --out build/site" in recipe.group(2)


def test_execute_runs_a_notebook_with_the_checkpoint_folder_of_this_test_run(monkeypatch, tmp_path):
    """build.py's `execute` (above, for this file without the notebooks) hands its kernel RLNOTES_CACHE_DIR as
    tests/conftest.py set it: the fresh folder of this run, not the user's cache (which `make site` uses)."""
    import platformdirs

    from rlnotes import cache

    builder, given = _site_builder(), {}

    def run(args, env=None, **kwargs):
        given.update(env)
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(builder.subprocess, "run", run)
    builder.execute(NOTEBOOKS[0], tmp_path, "fast", 60, use_cache=False)
    folder = cache.directory()
    assert given["RLNOTES_CACHE_DIR"] == str(folder) == os.environ["RLNOTES_CACHE_DIR"]
    assert folder.name.startswith("rlnotes-test-cache-") and folder.is_dir(), folder
    assert folder != Path(platformdirs.user_cache_dir("rlnotes", appauthor=False))
    assert given["RLNOTES_FAST"] == "1"


def test_the_site_carries_katex_as_published():
    """docs/site/vendor/katex/ is the npm package's files, unchanged (SHA256SUMS), of the version build.py names."""
    import hashlib

    listed = dict(reversed(line.split(maxsplit=1)) for line in (KATEX / "SHA256SUMS").read_text().splitlines() if line.strip())
    present = {p.relative_to(KATEX).as_posix() for p in KATEX.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(listed) == present, "docs/site/vendor/katex/ and its SHA256SUMS list other files"
    changed = [name for name, digest in listed.items() if hashlib.sha256((KATEX / name).read_bytes()).hexdigest() != digest]
    assert not changed, f"changed since they were copied from the npm package: {changed}"
    version = _site_builder().KATEX_VERSION
    assert f'version:"{version}"' in (KATEX / "katex.min.js").read_text()
    assert f"KaTeX {version}" in (KATEX.parent / "README.md").read_text()
    fonts = re.findall(r"url\((fonts/[^)]+\.woff2)\)", (KATEX / "katex.min.css").read_text())
    assert fonts and all((KATEX / font).is_file() for font in fonts), "a font of the stylesheet is missing"


def test_the_builder_marks_every_formula_of_the_markdown():
    """Each $...$ and $$...$$ of every Markdown cell (and of the glossary) is a formula the pages hand to KaTeX."""
    builder = _site_builder()
    missed = {}
    for path in [*NOTEBOOKS, *ZH_NOTEBOOKS, GLOSSARY]:
        for i, text in enumerate(_markdown(path)):
            found = builder.formulas(text)
            if len(found) != _formula_count(text):
                missed[f"{path.relative_to(ROOT / 'notebooks') if path.suffix == '.ipynb' else path.name} markdown {i}"] = (
                    len(found), _formula_count(text))
            page = builder.markdown_to_html(text)
            assert page.count('class="rlnotes-math') == len(found), (path.name, i)
    assert not missed, f"formulas found by the builder, and written in the Markdown: {missed}"


_TYPESET_JS = """formulas => formulas.flatMap(([latex, display]) => {
    try {
        katex.renderToString(latex, {displayMode: display, throwOnError: true, strict: 'error'});
        return [];
    } catch (error) {
        return [latex.slice(0, 200) + '  ->  ' + error.message];
    }
})"""


def test_katex_typesets_every_formula_of_the_notebooks():
    """Every formula of the notebooks (both editions) and of the glossary, typeset one by one by the site's KaTeX in
    Chromium: none is an error, nor something KaTeX reads otherwise than LaTeX would (strict: 'error')."""
    _need_chromium()
    from playwright.sync_api import sync_playwright

    builder = _site_builder()
    formulas = sorted({f for path in [*NOTEBOOKS, *ZH_NOTEBOOKS, GLOSSARY] for text in _markdown(path)
                       for f in builder.formulas(text)})
    assert len(formulas) > 100, "the notebooks' formulas were not found"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page()
        page.goto("about:blank")
        page.add_script_tag(path=str(KATEX / "katex.min.js"))
        failed = page.evaluate(_TYPESET_JS, [[latex, display] for latex, display in formulas + [(c, True) for c in _CONSTRUCTS]])
        browser.close()
    assert not failed, f"{len(failed)} formulas KaTeX cannot typeset: {failed[:5]}"
    print(f"{len(formulas)} distinct formulas and {len(_CONSTRUCTS)} constructs typeset by KaTeX {builder.KATEX_VERSION}")


def test_a_chinese_page_takes_the_outputs_of_the_english_execution_cell_by_cell():
    """build.py's with_outputs_of: a Chinese notebook whose code cells are the English ones (source, order) gets
    the English execution's outputs, execution counts and widget state; any other code cells get nothing."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    builder = _site_builder()
    code = ["print('V =', 1.0)", "import torch\ntorch.tensor([2.0])"]
    executed = new_notebook(cells=[new_markdown_cell("# 00 · Notation"), new_code_cell(code[0]),
                                   new_markdown_cell("The value $V$."), new_code_cell(code[1])],
                            metadata={"widgets": {"state": "of the English run"}})
    executed.cells[1].outputs, executed.cells[1].execution_count = [new_output("stream", name="stdout", text="V = 1.0\n")], 1
    executed.cells[3].outputs = [new_output("execute_result", data={"text/plain": "tensor([2.])"}, execution_count=2)]
    executed.cells[3].execution_count = 2
    record = {"rlnotes": {"translates": "c0", "source_sha256": "0" * 64}}
    chinese = new_notebook(cells=[new_markdown_cell("# 00 · 符号", metadata=record), new_code_cell(code[0]),
                                  new_markdown_cell("The value $V$.", metadata={"rlnotes": {"untranslated": True}}),
                                  new_code_cell(code[1])])
    assert builder.translated_cells(chinese) == (1, 1, 0)
    page = builder.with_outputs_of(chinese, executed)
    assert [c.source for c in page.cells] == [c.source for c in chinese.cells]
    assert [c.get("outputs") for c in page.cells] == [c.get("outputs") for c in executed.cells]
    assert [c.get("execution_count") for c in page.cells if c.cell_type == "code"] == [1, 2]
    assert page.metadata["widgets"] == executed.metadata["widgets"] and not chinese.cells[1].outputs  # a copy
    changed = builder.copy.deepcopy(chinese)
    changed.cells[3].source = "torch.tensor([3.0])"
    assert builder.with_outputs_of(changed, executed) is None
    changed.cells = chinese.cells[:2]
    assert builder.with_outputs_of(changed, executed) is None


def test_a_translation_of_an_older_english_cell_is_counted_stale():
    """build.py's translated_cells, given today's English notebook: a translation whose recorded source_sha256 is not
    the SHA-256 (UTF-8) of its English cell's joined source, or whose English cell is gone, is stale, not translated."""
    import hashlib

    from nbformat.v4 import new_markdown_cell, new_notebook

    builder = _site_builder()
    english = new_notebook(cells=[new_markdown_cell("# 00 · Notation", id="t"), new_markdown_cell("The value $V$.", id="v"),
                                  new_markdown_cell("A policy π.", id="p"), new_markdown_cell("Still English.", id="e")])
    english.cells[2].source = ["A policy ", "π."]  # a list of lines, as a notebook file may hold it: joined, then hashed

    def record(cell_id, text):
        return {"rlnotes": {"translates": cell_id, "source_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}}

    chinese = new_notebook(cells=[
        new_markdown_cell("# 00 · 符号", id="t", metadata=record("t", "# 00 · Notation")),
        new_markdown_cell("价值 $V$。", id="v", metadata=record("v", "The value $V$ (old).")),  # English changed since
        new_markdown_cell("策略 π。", id="p", metadata=record("p", "A policy π.")),
        new_markdown_cell("旧段落。", id="g", metadata=record("gone", "A removed cell.")),  # its English cell is gone
        new_markdown_cell("Still English.", id="e", metadata={"rlnotes": {"translates": "e", "untranslated": True}})])
    assert builder.source_sha256(english.cells[2]) == hashlib.sha256("A policy π.".encode()).hexdigest()
    assert builder.translated_cells(chinese, english) == (2, 1, 2)
    assert builder.translated_cells(chinese) == (4, 1, 0)  # without the English, nothing to compare with


def test_build_py_names_the_encoding_of_every_text_it_reads_and_writes():
    """UTF-8 (the Chinese pages, the glossary), whatever the locale's encoding: every read_text, write_text and
    open of docs/site/build.py passes encoding=, and so does every subprocess.run that decodes text."""
    tree = ast.parse((ROOT / "docs" / "site" / "build.py").read_text(encoding="utf-8"))
    missing = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        keywords = {k.arg: k.value for k in node.keywords}
        text_run = name == "run" and isinstance(keywords.get("text"), ast.Constant) and keywords["text"].value is True
        if name in ("read_text", "write_text", "open") or text_run:
            if not (isinstance(keywords.get("encoding"), ast.Constant) and keywords["encoding"].value == "utf-8"):
                missing.append(f"line {node.lineno}: {name}")
    assert not missing, f"without encoding='utf-8': {missing}"


# ---------------------------------------------------------------- build() on a small course of its own (no kernel)


_COURSE_README = """# rlnotes

A course.

## The course

| Notebook | Topic |
|---|---|
| `00_one` | one |
| `01_two` | two |
"""
_COURSE_README_ZH = """# rlnotes

一门课程。

## 课程

| 笔记本 | 主题 |
|---|---|
| `00_one` | 一 |
| `01_two` | 二 |
"""


def _synthetic_course(root: Path) -> None:
    """root/: README.md, README.zh.md, assets/glossary.md, benchmarks/lessons/00_one.md and two chapters, each with
    its Chinese notebook. zh/00_one: a current translation, a stale one (its English cell changed since), one cell
    untranslated; links to the glossary, to the other chapter and to 00_one's measurement record (which links the
    01_two one)."""
    import hashlib

    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    def record(cell_id, text):
        return {"rlnotes": {"translates": cell_id, "source_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}}

    (root / "assets").mkdir(parents=True)
    (root / "benchmarks" / "lessons").mkdir(parents=True)
    (root / "notebooks" / "zh").mkdir(parents=True)
    (root / "README.md").write_text(_COURSE_README, encoding="utf-8")
    (root / "README.zh.md").write_text(_COURSE_README_ZH, encoding="utf-8")
    (root / "assets" / "glossary.md").write_text("# Glossary\n\n| English | 中文 |\n|---|---|\n| value | 价值 |\n",
                                                 encoding="utf-8")
    (root / "benchmarks" / "lessons" / "00_one.md").write_text(
        "# 00 · measured\n\nThe value $V$ on 5 seeds; see also [01](01_two.md) and the [glossary](../../assets/glossary.md).\n",
        encoding="utf-8")
    (root / "benchmarks" / "lessons" / "01_two.md").write_text("# 01 · measured\n\nNothing yet.\n", encoding="utf-8")
    links = "the [glossary](../assets/glossary.md), [chapter 01](01_two.ipynb), [measurements](../benchmarks/lessons/00_one.md)"
    english = [new_markdown_cell("# 00 · One", id="t"), new_markdown_cell(f"See {links}.", id="l"),
               new_code_cell("print('V =', 1.0)", id="c"), new_markdown_cell("The value $V$, rewritten since.", id="v"),
               new_markdown_cell("Not translated yet.", id="u")]
    zh_links = links.replace("](../", "](../../").replace("glossary]", "术语表]")
    chinese = [new_markdown_cell("# 00 · 一", id="t", metadata=record("t", "# 00 · One")),
               new_markdown_cell(f"见 {zh_links}。", id="l", metadata=record("l", f"See {links}.")),
               new_code_cell("print('V =', 1.0)", id="c"),
               new_markdown_cell("价值 $V$（旧译文）。", id="v", metadata=record("v", "The value $V$.")),
               new_markdown_cell("Not translated yet.", id="u", metadata={"rlnotes": {"translates": "u", "untranslated": True}})]
    nbformat.write(new_notebook(cells=english), root / "notebooks" / "00_one.ipynb")
    nbformat.write(new_notebook(cells=chinese), root / "notebooks" / "zh" / "00_one.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 01 · Two", id="t"), new_code_cell("print(2)", id="c")]),
                   root / "notebooks" / "01_two.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 01 · 二", id="t", metadata=record("t", "# 01 · Two")),
                                       new_code_cell("print(2)", id="c")]),
                   root / "notebooks" / "zh" / "01_two.ipynb")


@pytest.fixture
def small_site(tmp_path, monkeypatch):
    """(builder, out, executed, failing): docs/site/build.py pointed at a course of its own (_synthetic_course), its
    `execute` replaced by one that runs no kernel: each code cell gets a stdout output; a notebook of `failing`
    (English stems) raises as a failed execution does. `executed`: the notebooks it was asked to execute."""
    builder, root = _site_builder(), tmp_path / "repo"
    _synthetic_course(root)
    monkeypatch.setattr(builder, "ROOT", root)
    monkeypatch.setattr(builder, "NOTEBOOKS", root / "notebooks")
    monkeypatch.setattr(builder, "ZH", root / "notebooks" / "zh")
    executed, failing = [], set()

    def execute(notebook, cache, mode, timeout, use_cache):
        notebook = Path(notebook)
        executed.append(notebook.relative_to(root / "notebooks").as_posix())
        if notebook.parent == root / "notebooks" and notebook.stem in failing:
            raise RuntimeError(f"{notebook.name} failed to execute (partial copy in {cache}):\nZeroDivisionError")
        nb = nbformat.read(notebook, as_version=4)
        for count, cell in enumerate([c for c in nb.cells if c.cell_type == "code"], start=1):
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"ran {notebook.stem}\n")]
            cell.execution_count = count
        target = cache / f"{builder.copy_stem(notebook)}.synthetic.ipynb"
        nbformat.write(nb, target)
        return target, 0.0, False

    monkeypatch.setattr(builder, "execute", execute)
    return builder, tmp_path / "site", executed, failing


def _unresolved(site: Path, page: Path) -> list[str]:
    """The relative href and src of a built page that name no file inside the site (its fragment and query dropped);
    links to another host, data: URLs and links within the page are not relative paths."""
    site, bad = site.resolve(), []
    for target in re.findall(r'(?<![\w-])(?:href|src)="([^"]*)"', page.read_text(encoding="utf-8")):
        target = html.unescape(target)
        if not target or target.startswith(("#", "//")) or re.match(r"[A-Za-z][\w+.-]*:", target):
            continue
        path = (page.parent / urllib.parse.unquote(re.split(r"[#?]", target)[0])).resolve()
        if not path.is_relative_to(site) or not path.is_file():
            bad.append(target)
    return bad


def test_a_chinese_page_says_how_many_translations_are_stale(small_site):
    """The banner of a Chinese chapter counts its untranslated paragraphs and, beside them, those whose translation
    is of an older version of the English cell (recorded SHA-256 other than today's)."""
    builder, out, _, _ = small_site
    builder.build(out)
    page = (out / "zh" / "00_one.html").read_text(encoding="utf-8")
    assert "本章还有 1 个段落尚未译成中文" in page
    assert re.search(r'<span class="rlnotes-stale">1 个段落的译文落后于英文', page), "no stale count on the page"
    assert "价值" in page  # the stale translation is still shown
    other = (out / "zh" / "01_two.html").read_text(encoding="utf-8")
    assert '<span class="rlnotes-stale">' not in other and '<span class="rlnotes-untranslated">' not in other
    assert '<span class="rlnotes-stale">' not in (out / "00_one.html").read_text(encoding="utf-8")


def test_a_chinese_chapter_is_not_executed_again_when_its_english_chapter_failed(small_site, capsys):
    """English 01 fails: zh/01 is reported as not built because of it, not executed in a kernel of its own, and not
    said to differ from the English; zh/00 still takes the English execution's outputs."""
    builder, out, executed, failing = small_site
    failing.add("01_two")
    with pytest.raises(SystemExit) as failed:
        builder.build(out)
    printed = capsys.readouterr().out
    assert sorted(executed) == ["00_one.ipynb", "01_two.ipynb"], f"executed: {executed}"
    assert "tools/zh.py sync" not in printed, printed
    assert re.search(r"zh/01_two\s+not built: its English chapter failed", printed), printed
    assert "zh/01_two: its English chapter failed" in str(failed.value)
    assert (out / "zh" / "00_one.html").exists() and not (out / "zh" / "01_two.html").exists()


def test_a_chinese_notebook_whose_code_differs_is_executed_on_its_own(small_site, capsys):
    """The one case a Chinese notebook is executed itself: its English chapter executed, but the code cells differ."""
    builder, out, executed, _ = small_site
    path = builder.ZH / "01_two.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source = "print(3)"
    nbformat.write(nb, path)
    builder.build(out)
    assert sorted(executed) == ["00_one.ipynb", "01_two.ipynb", "zh/01_two.ipynb"]
    assert "tools/zh.py sync" in capsys.readouterr().out
    assert "ran 01_two" in (out / "zh" / "01_two.html").read_text(encoding="utf-8")


def test_measurement_records_linked_from_the_chapters_are_pages_of_the_site(small_site):
    """A link to ../benchmarks/lessons/NN_name.md (../../ from notebooks/zh/) leads, in both editions, to that record
    rendered at <out>/benchmarks/lessons/NN_name.html (with the records it links); every relative href and src of
    every page built names a file of the site."""
    builder, out, _, _ = small_site
    builder.build(out)
    english, chinese = (out / "00_one.html").read_text(encoding="utf-8"), (out / "zh" / "00_one.html").read_text(encoding="utf-8")
    assert 'href="benchmarks/lessons/00_one.html"' in english
    assert 'href="../benchmarks/lessons/00_one.html"' in chinese
    assert "lessons/00_one.md" not in english + chinese
    lesson = (out / "benchmarks" / "lessons" / "00_one.html").read_text(encoding="utf-8")
    assert "5 seeds" in lesson and 'class="rlnotes-math">V<' in lesson and 'src="../../katex/katex.min.js"' in lesson
    assert 'href="01_two.html"' in lesson and 'href="../../glossary.html"' in lesson
    assert (out / "benchmarks" / "lessons" / "01_two.html").is_file()
    pages = sorted(out.rglob("*.html"))
    assert len(pages) == 10, [p.relative_to(out).as_posix() for p in pages]  # 2 + 2 chapters, 2 indexes, 2 glossaries, 2 records
    unresolved = {p.relative_to(out).as_posix(): _unresolved(out, p) for p in pages}
    assert not any(unresolved.values()), {k: v for k, v in unresolved.items() if v}


@pytest.fixture(scope="module")
def chapters(request) -> list[Path]:
    """The English chapters the site is built and read for: those nbval runs in this pytest run (a Chinese
    notebook, notebooks/zh/NN_name.ipynb, stands for its English chapter), else all."""
    ran = sorted({ROOT / "notebooks" / p.name for p in _nbval_notebooks(request.session)})
    return [p for p in NOTEBOOKS if p in ran] or NOTEBOOKS


def _translated(path: Path) -> bool:
    """A Chinese notebook with at least one Markdown cell translated (tools/zh.py's record in the cell's metadata)."""
    records = [c.metadata.get("rlnotes", {}) for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    return any(r.get("translates") and not r.get("untranslated") for r in records)


@pytest.fixture(scope="module")
def chinese(chapters) -> list[Path]:
    """The Chinese chapters the site has a page for: those of `chapters` with a notebooks/zh/ notebook, translated
    in part at least."""
    return [ZH / p.name for p in chapters if (ZH / p.name).exists() and _translated(ZH / p.name)]


@pytest.fixture(scope="module")
def site(chapters):
    start = time.perf_counter()
    names = [] if chapters == NOTEBOOKS else [p.stem for p in chapters]
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "site" / "build.py"), "--out", str(SITE), *names],
                          cwd=ROOT, capture_output=True, text=True)  # reuses the executions above
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout + f"site built in {time.perf_counter() - start:.0f} s")
    return SITE


def test_every_chapter_has_a_page_and_the_index_links_it(site, chapters):
    assert (site / "index.html").exists() and (site / "glossary.html").exists()
    for path in chapters:
        assert (site / f"{path.stem}.html").exists(), f"no page for {path.name}"
    index = (site / "index.html").read_text()
    linked = set(re.findall(r'<a href="([\w.-]+)\.html">', index)) - {"glossary"}
    assert linked == {p.stem for p in chapters}


def test_every_chinese_chapter_has_a_page_and_the_chinese_index_links_it(site, chapters, chinese):
    """build/site/zh/: a page for each Chinese chapter, <html lang="zh-CN">; the Chinese index links each of them,
    and each English chapter without a Chinese page to its English page."""
    assert (site / "zh" / "index.html").exists() and (site / "zh" / "glossary.html").exists()
    for path in chinese:
        page = (site / "zh" / f"{path.stem}.html").read_text()
        assert re.search(r'<html lang="zh-CN"', page), f"zh/{path.stem}.html is not marked as Chinese"
        assert '"../katex/katex.min.js"' in page and "Noto Sans CJK SC" in page
    index = (site / "zh" / "index.html").read_text()
    assert re.search(r'<html lang="zh-CN"', index)
    assert set(re.findall(r'<a href="([\w.-]+)\.html">', index)) - {"glossary"} == {p.stem for p in chinese}
    english = set(re.findall(r'<a class="rlnotes-english" href="\.\./([\w.-]+)\.html"', index))
    assert english == {p.stem for p in chapters} - {p.stem for p in chinese}


def _switch(page: str) -> str:
    """The href of a page's language switch (its one <a class="rlnotes-lang">)."""
    found = re.findall(r'<a class="rlnotes-lang" href="([^"]+)"', page)
    assert len(found) == 1, f"{len(found)} language switches"
    return found[0]


def test_every_page_switches_to_the_same_page_of_the_other_edition(site, chapters, chinese):
    """English ⇄ 中文 on every page: a chapter to the same chapter (or to the other index when it has no Chinese
    page yet), the index to the index, the glossary to the glossary."""
    translated = {p.stem for p in chinese}
    for path in chapters:
        expected = f"zh/{path.stem}.html" if path.stem in translated else "zh/index.html"
        assert _switch((site / f"{path.stem}.html").read_text()) == expected, path.stem
    for path in chinese:
        assert _switch((site / "zh" / f"{path.stem}.html").read_text()) == f"../{path.stem}.html", path.stem
    assert _switch((site / "index.html").read_text()) == "zh/index.html"
    assert _switch((site / "zh" / "index.html").read_text()) == "../index.html"
    assert _switch((site / "glossary.html").read_text()) == "zh/glossary.html"
    assert _switch((site / "zh" / "glossary.html").read_text()) == "../glossary.html"


def _pages(chapters, chinese) -> list[str]:
    """Every page of the site, as paths below build/site without .html."""
    return ([p.stem for p in chapters] + ["index", "glossary"]
            + [f"zh/{p.stem}" for p in chinese] + ["zh/index", "zh/glossary"])


def test_pages_point_nowhere_in_the_repository(site, chapters, chinese):
    """No page links a notebook or a Markdown file of the repository; every relative href and src of every page
    (the measurement records' pages, benchmarks/lessons/*.html, among them) names a file of the site. In a run
    that builds some chapters only, a link to a chapter left out (whose page a whole build writes) is not counted."""
    for name in [p.stem for p in chapters] + [f"zh/{p.stem}" for p in chinese]:
        page = (site / f"{name}.html").read_text(encoding="utf-8")
        assert ".ipynb\"" not in page and "assets/glossary.md" not in page, name
        assert not re.search(r'href="[^"]*benchmarks/lessons/[^"]*\.md[#"]', page), name
    left_out = {p.stem for p in NOTEBOOKS} - {p.stem for p in chapters}

    def left_out_chapter(target: str) -> bool:
        chapter = re.fullmatch(r"(?:\.\./|zh/)?([\w.-]+)\.html(?:#.*)?", target)
        return chapter is not None and chapter.group(1) in left_out

    pages = [site / f"{name}.html" for name in _pages(chapters, chinese)]
    unresolved = {}
    for page in pages + sorted((site / "benchmarks" / "lessons").glob("*.html")):
        bad = [target for target in _unresolved(site, page) if not left_out_chapter(target)]
        if bad:
            unresolved[page.relative_to(site).as_posix()] = bad
    assert not unresolved, f"relative links to no file of the site: {unresolved}"


def test_pages_load_nothing_from_the_web(site, chapters, chinese):
    """No script, stylesheet, image, frame, module import or CSS url() of a page names another host (the
    browser test below sees what is requested; this sees also what a page would load only in some cases)."""
    for name in _pages(chapters, chinese):
        page = (site / f"{name}.html").read_text()
        loads = (re.findall(r'<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)="([^"]*)"', page)
                 + re.findall(r"""\bimport\(\s*["']([^"']+)""", page)
                 + re.findall(r"""url\(\s*["']?([^"')\s]+)""", page))
        remote = [url for url in loads if re.match(r"(?:[a-z]+:)?//", url, flags=re.I)]
        assert not remote, f"{name}.html loads from elsewhere: {remote[:3]}"
    for path in ["katex/katex.min.js", "katex/katex.min.css", "katex/fonts/KaTeX_Main-Regular.woff2"]:
        assert (site / path).is_file(), f"the site lacks {path}"


# Figures: <img> with PNG data the browser decoded. Errors: nbconvert renders an error output, like
# stderr, with the stderr mime type; a traceback there, or a Python exception name, is an error.
# Formulas: KaTeX's .katex elements in the Markdown cells; raw LaTeX: a $ or a \command left in their
# text once the formulas and the code are taken out.
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

_MATH_JS = """selector => {
    const texts = [...document.querySelectorAll(selector)];
    const raw = texts.flatMap(element => {
        const copy = element.cloneNode(true);
        copy.querySelectorAll('.katex, code, pre').forEach(e => e.remove());
        const text = copy.textContent, at = text.search(/\\$|\\\\[A-Za-z]+/);
        return at < 0 ? [] : [text.slice(Math.max(0, at - 60), at + 60)];
    });
    return {state: document.documentElement.dataset.rlnotesMath || '',
            formulas: texts.reduce((n, e) => n + e.querySelectorAll('.katex').length, 0),
            untypeset: document.querySelectorAll('.rlnotes-math:not(:has(.katex))').length,
            errors: [...document.querySelectorAll('.katex-error')].map(e => e.textContent.slice(0, 120)),
            raw: raw};
}"""

# The Markdown cell with the largest display formulas (the most LaTeX), scrolled to the top of the window.
_SHOW_FORMULAS_JS = """() => {
    const score = c => [...c.querySelectorAll('.katex-display annotation')].reduce((n, a) => n + a.textContent.length, 0);
    const best = [...document.querySelectorAll('.jp-MarkdownCell')].reduce((a, b) => score(b) > score(a) ? b : a);
    best.scrollIntoView({block: 'start'});
    window.scrollBy(0, -10);
    return best.querySelectorAll('.katex').length;
}"""


def _read_formulas(page, selector: str) -> dict:
    """The page's formulas once KaTeX typeset them and its fonts loaded (_MATH_JS)."""
    page.wait_for_function("document.documentElement.dataset.rlnotesMath", timeout=30_000)
    page.evaluate("document.fonts.ready.then(() => true)")
    return page.evaluate(_MATH_JS, selector)


def _check_formulas(name: str, info: dict, expected: int) -> None:
    assert info["state"] == "typeset", f"{name}: KaTeX did not run ({info['state']!r})"
    assert not info["errors"] and not info["untypeset"], f"{name}: formulas KaTeX did not typeset: {info['errors'][:3]}"
    assert info["formulas"] == expected, f"{name}: {info['formulas']} formulas typeset, {expected} in its Markdown"
    assert not info["raw"], f"{name}: raw LaTeX in the text: {info['raw'][:3]}"


@contextlib.contextmanager
def _offline_page():
    """A Chromium page with every request off the machine refused -> (page, every URL requested, the refused ones).

    The URL lists are complete once the block has ended (the browser is closed on the way out)."""
    from playwright.sync_api import sync_playwright

    requested, off_machine = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.on("request", lambda request: requested.append(request.url))

        def refuse(route):
            off_machine.append(route.request.url)
            route.abort()

        page.route(re.compile(r"^(?!file:)"), refuse)  # anything but the site's own files (data: URLs are not routed)
        try:
            yield page, requested, off_machine
        finally:
            browser.close()


def _check_chapter_page(name: str, path, info: dict) -> None:
    """What a reader must find on a chapter's page (either edition): figures that load, no error output, the
    widgets' pictures with their note, every formula of the notebook's markdown typeset."""
    assert info["figures"] >= 1, f"{name}: no figure on its page"
    assert not info["broken"], f"{name}: images that do not load: {info['broken'][:3]}"
    assert not info["stderr"], f"{name}: error output on its page: {info['stderr'][:2]}"
    if _has_widget(path):
        assert info["notes"] >= 1 and info["noteAfterPicture"] >= 1, f"{name}: the widget's picture is missing"
        assert info["movesInJupyterLab"]
    _check_formulas(name, info["math"], sum(_formula_count(text) for text in _markdown(path)))


def _assert_stayed_on_the_machine(requested, off_machine):
    assert not off_machine, f"requests off the machine: {off_machine[:5]}"
    elsewhere = [url for url in requested if not url.startswith("file://")]
    assert not elsewhere, f"requests not for a file of the site: {elsewhere[:5]}"


def test_a_reader_follows_every_chapter_link(site, chapters):
    _need_chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    seen = {}
    with _offline_page() as (page, requested, off_machine):
        page.goto((site / "index.html").as_uri(), wait_until="load")
        page.screenshot(path=str(SHOTS / "index.png"))
        links = page.locator("table a")
        names = [links.nth(i).inner_text().strip() for i in range(links.count())]
        assert sorted(names) == [p.stem for p in chapters]
        for name in names:
            page.locator("table a", has_text=name).click()
            page.wait_for_url(f"**/{name}.html")
            page.wait_for_load_state("load")
            seen[name] = page.evaluate(_PAGE_JS) | {"math": _read_formulas(page, ".jp-MarkdownCell")}
            page.screenshot(path=str(SHOTS / f"{name}.png"))
            if name == MATH_SHOT:
                seen[name]["shown"] = page.evaluate(_SHOW_FORMULAS_JS)
                page.screenshot(path=str(SHOTS / f"{name}_math.png"))
            page.go_back(wait_until="load")
            page.wait_for_url("**/index.html")
        page.locator("a", has_text="glossary").first.click()
        page.wait_for_url("**/glossary.html")
        page.wait_for_load_state("load")
        glossary = _read_formulas(page, "body")
        page.screenshot(path=str(SHOTS / "glossary.png"))
    _assert_stayed_on_the_machine(requested, off_machine)
    assert any(url.endswith("/katex/katex.min.js") for url in requested)
    _check_formulas("glossary", glossary, _formula_count(GLOSSARY.read_text()))

    for path in chapters:
        info = seen[path.stem]
        assert info["h1"].startswith(path.stem[:2]), (path.stem, info["h1"])
        _check_chapter_page(path.stem, path, info)
        print(f"{path.stem}: {info['math']['formulas']} formulas typeset")
    if MATH_SHOT in seen:
        assert seen[MATH_SHOT]["shown"] >= 1
        print(f"{len(requested)} requests, every one a file of the site; formulas of {MATH_SHOT}: "
              f"{SHOTS / (MATH_SHOT + '_math.png')}")


# The Chinese text of a page as it is drawn: the first paragraph (or list item) of a Markdown cell with Chinese
# text of its own is marked for the DevTools protocol (which font drew it), and four different characters of it
# are drawn on a canvas in its font: a missing font draws each as the same empty box.
_CJK_JS = """() => {
    const cjk = /[\\u4e00-\\u9fff]/g;
    const own = e => [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('');
    const probe = [...document.querySelectorAll('.jp-RenderedMarkdown p, .jp-RenderedMarkdown li')]
        .find(e => (own(e).match(cjk) || []).length >= 4);
    if (!probe) return {found: false};
    probe.setAttribute('data-rlnotes-cjk-probe', '');
    const style = getComputedStyle(probe);
    const chars = [...new Set(own(probe).match(cjk))].slice(0, 4);
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 64;
    const context = canvas.getContext('2d', {willReadFrequently: true});
    context.font = '48px ' + style.fontFamily;
    const pictures = chars.map(c => {
        context.clearRect(0, 0, 64, 64);
        context.fillText(c, 4, 52);
        const alpha = [...context.getImageData(0, 0, 64, 64).data].filter((_, i) => i % 4 === 3);
        return {ink: alpha.filter(a => a > 0).length, picture: alpha.join(',')};
    });
    return {found: true, text: own(probe).trim().slice(0, 60), fontFamily: style.fontFamily, chars: chars.join(''),
            ink: pictures.map(p => p.ink), distinct: new Set(pictures.map(p => p.picture)).size,
            width: context.measureText(chars.join('')).width, box: probe.getBoundingClientRect().width};
}"""


def _platform_fonts(page, selector: str) -> list[dict]:
    """The fonts Chromium drew the text of `selector`'s element with (DevTools protocol, CSS.getPlatformFontsForNode)."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument")["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        return cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    finally:
        cdp.detach()


def _switch_and_back(page, there: str, back: str) -> tuple[str, str]:
    """Click the language switch, then the other page's switch: the two pages' <html lang>."""
    page.locator("a.rlnotes-lang").click()
    page.wait_for_url(there)
    page.wait_for_load_state("load")
    lang_there = page.evaluate("document.documentElement.lang")
    page.locator("a.rlnotes-lang").click()
    page.wait_for_url(back)
    page.wait_for_load_state("load")
    return lang_there, page.evaluate("document.documentElement.lang")


def test_a_chinese_reader_reads_the_chinese_edition_and_switches_language(site, chapters, chinese):
    """From build/site/zh/index.html, offline: each Chinese chapter page, its Chinese text drawn with a CJK font,
    its figures and formulas; the language switch of each page, there and back; the Chinese glossary."""
    _need_chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    seen, switched = {}, {}
    zh_index, en_index = (site / "zh" / "index.html").as_uri(), (site / "index.html").as_uri()
    with _offline_page() as (page, requested, off_machine):
        page.goto(zh_index, wait_until="load")
        page.evaluate("document.fonts.ready.then(() => true)")
        page.screenshot(path=str(SHOTS / "zh_index.png"))
        index_lang = page.evaluate("document.documentElement.lang")
        links = page.locator("table a:not(.rlnotes-english)")
        names = [links.nth(i).inner_text().strip() for i in range(links.count())]
        assert sorted(names) == [p.stem for p in chinese]
        for name in names:
            page.locator("table a:not(.rlnotes-english)", has_text=name).click()
            page.wait_for_url((site / "zh" / f"{name}.html").as_uri())
            page.wait_for_load_state("load")
            seen[name] = page.evaluate(_PAGE_JS) | {"math": _read_formulas(page, ".jp-MarkdownCell"),
                                                    "lang": page.evaluate("document.documentElement.lang"),
                                                    "cjk": page.evaluate(_CJK_JS)}
            if seen[name]["cjk"]["found"]:
                seen[name]["fonts"] = _platform_fonts(page, "[data-rlnotes-cjk-probe]")
            page.screenshot(path=str(SHOTS / f"zh_{name[:2]}.png"))
            switched[name] = _switch_and_back(page, (site / f"{name}.html").as_uri(), (site / "zh" / f"{name}.html").as_uri())
            page.goto(zh_index, wait_until="load")
        for path in [p for p in chapters if p.name not in {c.name for c in chinese}][:1]:
            # an English chapter without a Chinese page: its switch leads to the Chinese index
            page.goto((site / f"{path.stem}.html").as_uri(), wait_until="load")
            page.locator("a.rlnotes-lang").click()
            page.wait_for_url(zh_index)
            switched["untranslated " + path.stem] = ("zh-CN", page.evaluate("document.documentElement.lang"))
        page.goto(zh_index, wait_until="load")
        switched["index"] = _switch_and_back(page, en_index, zh_index)
        page.locator("a", has_text="术语表").first.click()
        page.wait_for_url((site / "zh" / "glossary.html").as_uri())
        page.wait_for_load_state("load")
        glossary = _read_formulas(page, "body")
        switched["glossary"] = _switch_and_back(page, (site / "glossary.html").as_uri(), (site / "zh" / "glossary.html").as_uri())
    _assert_stayed_on_the_machine(requested, off_machine)
    assert index_lang == "zh-CN"
    _check_formulas("zh/glossary", glossary, _formula_count(GLOSSARY.read_text()))
    for name, langs in switched.items():
        assert langs == ("en", "zh-CN") or (name.startswith("untranslated") and langs == ("zh-CN", "zh-CN")), (name, langs)

    for path in chinese:
        info = seen[path.stem]
        assert info["lang"] == "zh-CN", path.stem
        assert info["h1"].startswith(path.stem[:2]) and CJK.search(info["h1"]), (path.stem, info["h1"])
        _check_chapter_page(f"zh/{path.stem}", path, info)
        cjk = info["cjk"]
        assert cjk["found"], f"zh/{path.stem}: no paragraph of Chinese text"
        drawn_by = [f for f in info["fonts"] if CJK_FONT.search(f["familyName"]) and f["glyphCount"] > 0]
        assert drawn_by, f"zh/{path.stem}: '{cjk['text']}' is drawn with {info['fonts']}, none a CJK font"
        assert len(cjk["chars"]) == 4 and cjk["distinct"] == 4 and min(cjk["ink"]) > 0 and cjk["width"] > 0, \
            f"zh/{path.stem}: {cjk['chars']} drawn as boxes or nothing: {cjk}"
        print(f"zh/{path.stem}: {info['math']['formulas']} formulas typeset; '{cjk['text'][:20]}…' drawn with "
              f"{', '.join(sorted({f['familyName'] for f in drawn_by}))}; screenshot {SHOTS / ('zh_' + path.stem[:2] + '.png')}")
