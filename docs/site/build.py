#!/usr/bin/env python
r"""The course as a static website: every notebook executed, rendered by nbconvert, and an index page.

    python docs/site/build.py                      # what `make site` runs: build/site/index.html
    python docs/site/build.py --jobs 2 --out DIR   # two notebooks at a time, another folder

Each notebooks/*.ipynb is executed top to bottom in fast mode (RLNOTES_FAST=1; --full for a learner's
step counts) in a fresh kernel of this Python, with matplotlib's inline backend so that every figure
is kept as a PNG output, then rendered with nbconvert's HTML exporter (the JupyterLab template, images
embedded) to <out>/<notebook>.html. A widget cannot move on a static page: its output is replaced by
the last picture it drew (read from the widget state nbclient saves) and a note that its sliders move
in JupyterLab; a progress bar by its final text. Links between notebooks and to assets/glossary.md are
rewritten to the site's pages; a link to a chapter's measurement record (benchmarks/lessons/NN_name.md) to
that record rendered as the glossary is, <out>/benchmarks/lessons/NN_name.html (English only: both editions
link it). The index (<out>/index.html) is the README's chapter table, each
chapter that exists a link.

Formulas are typeset in the reader's browser by KaTeX, which the site carries: nothing is fetched from
elsewhere, so a page reads the same offline. The Markdown parser nbconvert uses (mistune with its math
rules) finds each formula ($...$, $$...$$, \(...\), \[...\], \begin{env}...\end{env}); the page holds it
as LaTeX in a <span class="rlnotes-math"> (rlnotes-display for display formulas), which a few lines of
script hand to KaTeX on load (docs/site/vendor/katex/, copied to <out>/katex/; docs/site/vendor/README.md
says where it comes from). nbconvert's default template would load MathJax 2 and require.js from a CDN
at view time: the pages here load neither (require.js serves widget JavaScript, which a static page
does not run), nor any other script or stylesheet from the web.

Two editions: the English chapters (notebooks/*.ipynb) at <out>/NN_name.html, and the Chinese ones
(notebooks/zh/NN_name.ipynb, issue 26) at <out>/zh/NN_name.html, with <out>/zh/index.html (README.zh.md's
chapter table) and <out>/zh/glossary.html. A Chinese chapter is on the site once one of its Markdown cells is
translated (a cell tools/zh.py has not translated yet keeps its English, and the page says how many do; it says
too how many translations are stale: their English cell changed since, its SHA-256 is no longer the one the
translation records). Its code cells are the English chapter's, byte for byte (tests/test_zh.py), so its page
takes the outputs of the English chapter's execution cell by cell instead of executing it again; only a Chinese
notebook whose code cells differ from today's English ones (a translation not yet synced) is executed itself, as
<out>/executed/zh.NN_name.<key>.ipynb (the name notebooks/conftest.py gives the copies of a translation). When the
English chapter failed to execute, its Chinese page is not built (its code, the same, would fail again).
The Chinese pages are <html lang="zh-CN"> with a CJK font stack (Noto Sans CJK SC, Source Han Sans, PingFang,
Microsoft YaHei, ...). Every page carries a language switch (<a class="rlnotes-lang">, English ⇄ 中文) to the
same page of the other edition: the same chapter, or the other edition's index when that chapter has no
Chinese page yet; the index and the glossary to their counterparts.

Executed notebooks are kept in <out>/executed/, named by a hash of the notebook, of the rlnotes
sources and of the mode: a second build re-executes only what changed (--no-cache: everything).
A notebook with a failing cell fails the build. Needs only what `pip install -e .` brings (nbclient and
nbconvert come with JupyterLab).

The chapters that load trained models (06, 07, 08) use the checkpoint cache (rlnotes/cache.py): a
notebook executed here uses the folder RLNOTES_CACHE_DIR names, or the user's cache folder
(~/.cache/rlnotes) when it is not set, as `make site` runs it: a run the learner's own notebooks
trained is loaded, not trained again. The kernels inherit the environment of this process, so the
tests, which point RLNOTES_CACHE_DIR at a fresh folder of their run (cache.fresh_folder_for_this_run
in tests/conftest.py), execute with that folder.
"""

from __future__ import annotations

import argparse
import base64
import copy
import functools
import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
KATEX = Path(__file__).resolve().parent / "vendor" / "katex"  # copied to <out>/katex/
KATEX_VERSION = "0.19.1"  # docs/site/vendor/README.md
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
ZH = NOTEBOOKS / "zh"  # the Chinese edition: notebooks/zh/NN_name.ipynb, pages in <out>/zh/

# What a page says in each edition ("en": the site's root folder, "zh": <out>/zh/).
TEXT = {
    "en": {
        "lang": "en", "home": "rlnotes: the course", "switch": "中文", "switch_lang": "zh-CN",
        "nav": "this page was executed in fast mode; widgets show their last picture and move in JupyterLab "
               "(<code>make lab</code>)",
        "widget": "An interactive widget: on this static page it shows the last picture it drew ({values}). "
                  "Its sliders move in JupyterLab: <code>make lab</code>, then run the notebook.",
        "widget_default": "its default settings",
        "widget_none": "An interactive widget, which a static page cannot show. It runs in JupyterLab: "
                       "<code>make lab</code>, then run the notebook.",
        "untranslated": "",
        "stale": "",
    },
    "zh": {
        "lang": "zh-CN", "home": "rlnotes：课程（中文版）", "switch": "English", "switch_lang": "en",
        "nav": "本页以快速模式执行；小部件显示它画的最后一张图，滑块在 JupyterLab 中可以拖动（<code>make lab</code>）",
        "widget": "交互小部件：静态页面上显示的是它画的最后一张图（{values}）。"
                  "它的滑块在 JupyterLab 中可以拖动：<code>make lab</code>，然后运行本笔记本。",
        "widget_default": "默认设置",
        "widget_none": "交互小部件，静态页面无法显示。它在 JupyterLab 中运行：<code>make lab</code>，然后运行本笔记本。",
        "untranslated": "本章还有 {n} 个段落尚未译成中文，暂以英文显示。",
        "stale": "{n} 个段落的译文落后于英文（英文原文已修改），暂以旧译文显示。",
    },
}
WIDGET_NOTE = TEXT["en"]["widget"]


# ---------------------------------------------------------------- execution


def source_key(notebook: Path, mode: str) -> str:
    """What an executed copy depends on: the notebook, the rlnotes package's sources, the mode."""
    digest = hashlib.sha256(notebook.read_bytes())
    for path in sorted((ROOT / "rlnotes").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    digest.update(mode.encode())
    return digest.hexdigest()[:16]


def execute_one(source: Path, target: Path, timeout: int) -> None:
    """Run in a child process (python build.py --execute-one): one notebook in a fresh kernel."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(source, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(source.parent)}})
    try:
        client.execute()
    finally:  # the executed copy, also after a failure, for reading what went wrong
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target.with_suffix(".partial.ipynb"))
    target.with_suffix(".partial.ipynb").replace(target)


def copy_stem(notebook: Path) -> str:
    """The executed copy's name: the stem, prefixed with its edition's folder for a translation ("zh.04_trpo"),
    as notebooks/conftest.py names the copies nbval writes."""
    notebook = Path(notebook).resolve()
    return notebook.stem if notebook.parent == NOTEBOOKS else f"{notebook.parent.name}.{notebook.stem}"


def execute(notebook: Path, cache: Path, mode: str, timeout: int, use_cache: bool) -> tuple[Path, float, bool]:
    """The executed copy of `notebook` (from the cache when it is current); (path, seconds, reused)."""
    stem = copy_stem(notebook)
    target = cache / f"{stem}.{source_key(notebook, mode)}.ipynb"
    if use_cache and target.exists():
        return target, 0.0, True
    for stale in cache.glob(f"{stem}.*.ipynb"):
        stale.unlink()
    env = dict(os.environ, RLNOTES_FAST="1" if mode == "fast" else "0", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("MPLBACKEND", None)  # the kernel's inline backend: figures become PNG outputs
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--execute-one", str(notebook), str(target), "--timeout", str(timeout)],
                          env=env, cwd=ROOT, capture_output=True, text=True, encoding="utf-8", errors="replace")
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-25:])
        raise RuntimeError(f"{notebook.name} failed to execute (partial copy in {cache}):\n{tail}")
    return target, time.perf_counter() - start, False


def cell_source(cell) -> str:
    """A cell's source as one text (a notebook file may hold it as a list of lines)."""
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def source_sha256(cell) -> str:
    """The SHA-256 of a cell's source, UTF-8: what tools/zh.py records as a translation's source_sha256
    (its sha256(source(cell)); mirrored here, build.py does not import tools/)."""
    return hashlib.sha256(cell_source(cell).encode("utf-8")).hexdigest()


def translated_cells(nb, english=None) -> tuple[int, int, int]:
    """(translated, untranslated, stale) Markdown cells of a Chinese notebook, as tools/zh.py records them in each
    cell's metadata ("rlnotes": {"translates": <English cell id>, "source_sha256": ...}, "untranslated": true
    until it is). Given `english`, the English notebook as it is now, a translation is stale when the English
    cell it translates is gone or its source no longer has the SHA-256 recorded (it changed since); without
    it, no translation is counted stale."""
    now = None if english is None else {c.get("id"): source_sha256(c) for c in english.cells}
    done = left = stale = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            record = cell.get("metadata", {}).get("rlnotes", {})
            if not record.get("translates") or record.get("untranslated"):
                left += 1
            elif now is not None and now.get(record["translates"]) != record.get("source_sha256"):
                stale += 1
            else:
                done += 1
    return done, left, stale


def with_outputs_of(translation, executed):
    """The translation with the outputs of `executed` (the English chapter's executed copy), code cell by code
    cell, and its widgets' state; None when the code cells are not the same (count, order, source)."""
    mine = [c for c in translation.cells if c.cell_type == "code"]
    theirs = [c for c in executed.cells if c.cell_type == "code"]
    if len(mine) != len(theirs) or any(a.source != b.source for a, b in zip(mine, theirs)):
        return None
    nb = copy.deepcopy(translation)
    for cell, source in zip([c for c in nb.cells if c.cell_type == "code"], theirs):
        cell.outputs = copy.deepcopy(source.get("outputs", []))
        cell.execution_count = source.get("execution_count")
    for key in ("widgets", "language_info"):
        if key in executed.metadata:
            nb.metadata[key] = copy.deepcopy(executed.metadata[key])
    return nb


# ---------------------------------------------------------------- widgets on a static page


def _models(nb) -> dict:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _walk(models: dict, model_id: str, seen=None):
    """The model and every model under it (children of boxes), depth first."""
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in models:
        return
    seen.add(model_id)
    yield models[model_id]
    for child in models[model_id].get("state", {}).get("children", []):
        yield from _walk(models, str(child).replace("IPY_MODEL_", ""), seen)


def _image_png(model: dict) -> str | None:
    for buffer in model.get("buffers", []):
        if buffer.get("path") == ["value"]:
            data = buffer["data"]
            return data if buffer.get("encoding", "base64") == "base64" else base64.b64encode(data.encode()).decode()
    return None


def static_widget_output(output, models: dict, lang: str = "en"):
    """A widget output as the static page shows it: outputs (nbformat nodes) replacing it."""
    import nbformat

    model_id = output["data"][WIDGET_VIEW]["model_id"]
    tree = list(_walk(models, model_id))
    names = [m.get("model_name") for m in tree]
    if "FloatProgressModel" in names or "IntProgressModel" in names:  # a tqdm progress bar: its final text
        text = " ".join(re.sub(r"<[^>]+>", "", html.unescape(m["state"].get("value", ""))).strip()
                        for m in tree if m.get("model_name") == "HTMLModel")
        return [nbformat.v4.new_output("stream", name="stdout", text=text.replace("\xa0", " ").strip() + "\n")]
    values = ", ".join(f"{m['state'].get('description', '')} = {m['state'].get('value'):.3g}" for m in tree
                       if m.get("model_name", "").endswith("SliderModel") and isinstance(m["state"].get("value"), (int, float)))
    note = TEXT[lang]["widget"].format(values=values or TEXT[lang]["widget_default"])
    pictures = [png for m in tree if m.get("model_name") == "ImageModel" for png in [_image_png(m)] if png]
    outputs = [nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<widget picture>"})
               for png in pictures]
    if not pictures:
        note = TEXT[lang]["widget_none"]
    outputs.append(nbformat.v4.new_output("display_data", data={
        "text/html": f'<p class="rlnotes-widget-note"><em>{note}</em></p>', "text/plain": "(widget)"}))
    return outputs


def make_static(nb, lang: str = "en"):
    """Replace every widget output by its static form; drop the widget state (no widget JavaScript)."""
    nb = copy.deepcopy(nb)
    models = _models(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):
                outputs += static_widget_output(output, models, lang)
            else:
                outputs.append(output)
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return nb


# ---------------------------------------------------------------- formulas


# In every page's <head> (math_head): KaTeX from the site's own folder, and the script that typesets each formula the
# Markdown renderer marked. A formula KaTeX cannot read is shown as its LaTeX in red (throwOnError false);
# the tests typeset every formula of the notebooks with throwOnError true. <html data-rlnotes-math> says
# when it is done ("typeset", or "missing" without KaTeX: the LaTeX then stays as the formula's text).
MATH_HEAD = """<link rel="stylesheet" href="{root}katex/katex.min.css">
<script defer src="{root}katex/katex.min.js"></script>
<script>
document.addEventListener("DOMContentLoaded", function () {
  var katex = window.katex;
  if (katex) {
    document.querySelectorAll(".rlnotes-math").forEach(function (element) {
      katex.render(element.textContent, element,
                   {displayMode: element.classList.contains("rlnotes-display"), throwOnError: false});
    });
  }
  document.documentElement.setAttribute("data-rlnotes-math", katex ? "typeset" : "missing");
});
</script>"""


def math_head(root: str = "") -> str:
    """MATH_HEAD for a page `root` below the site's folder ("" for the English pages, "../" for <out>/zh/)."""
    return MATH_HEAD.replace("{root}", root)


@functools.cache
def _math_classes():
    """(MathRenderer, MathExporter): nbconvert's Markdown renderer and HTML exporter, formulas marked for KaTeX."""
    from jinja2 import DictLoader, pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class MathRenderer(IPythonRenderer):
        """Each formula mistune's math rules find, as <span class="rlnotes-math">LaTeX</span> (nbconvert: $LaTeX$)."""

        found: list[tuple[str, bool]] | None = None  # (LaTeX, display) of each formula, when a list is given

        def _math(self, latex: str, display: bool) -> str:
            if self.found is not None:
                self.found.append((latex, display))
            kind = "rlnotes-math rlnotes-display" if display else "rlnotes-math"
            return f'<span class="{kind}">{html.escape(latex, quote=False)}</span>'

        def inline_math(self, body: str) -> str:
            return self._math(body, False)

        def block_math(self, body: str) -> str:
            return self._math(body, True)

        def latex_environment(self, name: str, body: str) -> str:
            return self._math(f"\\begin{{{name}}}{body}\\end{{{name}}}", True)

    class MathExporter(HTMLExporter):
        """nbconvert's lab template with MATH_HEAD where it loads MathJax, and nothing else from the web:
        no require.js (it serves widget JavaScript), no widget manager, no mermaid."""

        @pass_context
        def markdown2html(self, context, source):
            cell = context.get("cell", {})
            renderer = MathRenderer(escape=False, attachments=cell.get("attachments", {}), embed_images=self.embed_images,
                                    path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                                    anchor_link_text=self.anchor_link_text, exclude_anchor_links=self.exclude_anchor_links,
                                    **self.lexer_options)
            return MarkdownWithMath(renderer=renderer).render(source)

    template = "\n".join([
        "{%- extends 'index.html.j2' -%}",
        "{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}",
        "{% block jupyter_widgets %}{% endblock jupyter_widgets %}",
        "{%- block html_head_js_mathjax -%}" + math_head() + "{%- endblock html_head_js_mathjax -%}",
        "{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}",
    ])
    MathExporter.site_loader = DictLoader({"rlnotes-site.html.j2": template})
    return MathRenderer, MathExporter


def markdown_to_html(source: str) -> str:
    """Markdown as the chapter pages render it (nbconvert's renderer), each formula marked for KaTeX."""
    from nbconvert.filters.markdown_mistune import MarkdownWithMath

    renderer, _ = _math_classes()
    return MarkdownWithMath(renderer=renderer(escape=False)).render(source)


def formulas(source: str) -> list[tuple[str, bool]]:
    """(LaTeX, display) of every formula of a Markdown text, as the pages mark them for KaTeX."""
    from nbconvert.filters.markdown_mistune import MarkdownWithMath

    renderer = _math_classes()[0](escape=False)
    renderer.found = []
    MarkdownWithMath(renderer=renderer).render(source)
    return renderer.found


# ---------------------------------------------------------------- pages


STYLE = """<style>
body.rlnotes-index { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }
.rlnotes-index table { border-collapse: collapse; width: 100%; }
.rlnotes-index td, .rlnotes-index th { border-bottom: 1px solid #ddd; padding: .4rem .6rem; text-align: left;
  vertical-align: top; }
.rlnotes-index code { background: #f4f4f4; padding: 0 .2rem; }
.rlnotes-nav { font-family: system-ui, sans-serif; padding: .5rem 1rem; border-bottom: 1px solid #ddd; }
.rlnotes-lang { float: right; margin-left: 1rem; font-weight: bold; }
.rlnotes-untranslated, .rlnotes-stale { color: #8a5a00; }
.rlnotes-widget-note { color: #555; }
</style>"""

# The Chinese pages (<html lang="zh-CN">): fonts that cover Chinese on each system, before the generic
# families: Noto Sans CJK / Source Han Sans (Linux: Debian's fonts-noto-cjk, which .ci/run installs),
# PingFang and Hiragino (macOS), Microsoft YaHei (Windows), WenQuanYi (older Linux). Latin text keeps the
# system's UI font; JupyterLab's own variables, which the chapter pages' styles use, are set to this stack.
CJK_FONTS = ('"Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", '
             '"WenQuanYi Micro Hei", "Noto Sans SC"')
CJK_SANS = f'system-ui, -apple-system, "Segoe UI", {CJK_FONTS}, sans-serif'
STYLE_ZH = f"""<style>
:root {{
  --jp-ui-font-family: {CJK_SANS};
  --jp-content-font-family: {CJK_SANS};
  --jp-code-font-family: menlo, consolas, "DejaVu Sans Mono", "Noto Sans Mono CJK SC", {CJK_FONTS}, monospace;
}}
body.rlnotes-index, .rlnotes-nav {{ font-family: {CJK_SANS}; }}
</style>"""


def _root(lang: str) -> str:
    """The way from a page of this edition up to the site's folder."""
    return "" if lang == "en" else "../"


def _style(lang: str) -> str:
    return STYLE if lang == "en" else STYLE + "\n" + STYLE_ZH


def language_switch(lang: str, href: str) -> str:
    """The link from a page of edition `lang` to the same page of the other edition (English ⇄ 中文)."""
    other = TEXT[lang]["switch_lang"]
    return f'<a class="rlnotes-lang" href="{href}" hreflang="{other}" lang="{other}">{TEXT[lang]["switch"]}</a>'


LESSONS = "benchmarks/lessons"  # the chapters' measurement records, <out>/benchmarks/lessons/NN_name.html


def _lesson_links(page: str, root: str) -> str:
    """Links to a measurement record (../benchmarks/lessons/NN_name.md from notebooks/, ../../ from notebooks/zh/)
    made links to its page, `root` + benchmarks/lessons/NN_name.html; a record that does not exist is left alone."""
    def lesson(match):
        name, anchor = match.group(1), match.group(2) or ""
        if (ROOT / LESSONS / f"{name}.md").is_file():
            return f'href="{root}{LESSONS}/{name}.html{anchor}"'
        return match.group(0)

    return re.sub(r'href="(?:\.\./)+benchmarks/lessons/([\w.-]+)\.md(#[^"]*)?"', lesson, page)


def _rewrite_links(page: str, stems: set[str], lang: str = "en", english: set[str] | None = None) -> str:
    """Links to notebooks, assets and measurement records made links of the site. `stems`: this edition's chapter
    pages; for a Chinese page, `english`: the English ones, where a chapter without a Chinese page is read."""
    root = _root(lang)
    page = re.sub(r'href="(?:\.\./)*assets/glossary\.md"', 'href="glossary.html"', page)
    page = re.sub(r'href="(?:\.\./)+assets/', f'href="{root}assets/', page)
    page = _lesson_links(page, root)

    def chapter(match):
        stem, anchor = match.group(1), match.group(2) or ""
        if stem in stems:
            return f'href="{stem}.html{anchor}"'
        if lang != "en" and stem in (english or set()):
            return f'href="../{stem}.html{anchor}"'
        return match.group(0)

    return re.sub(r'href="(?:\.\./notebooks/|notebooks/|\.\./)?([\w.-]+)\.ipynb(#[^"]*)?"', chapter, page)


def render(nb, title: str, stems: set[str], lang: str = "en", switch: str | None = None,
           english: set[str] | None = None, untranslated: int = 0, stale: int = 0) -> str:
    """A chapter page. `switch`: the other edition's page for the language switch; `untranslated`: the
    Markdown cells of a Chinese chapter still in English, `stale`: those whose translation is of an older
    version of the English cell (the page says how many of each)."""
    _, exporter_class = _math_classes()
    exporter = exporter_class(template_name="lab", template_file="rlnotes-site.html.j2", embed_images=True,
                              extra_loaders=[exporter_class.site_loader])
    folder = NOTEBOOKS if lang == "en" else NOTEBOOKS / lang
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title, "path": str(folder)}})
    text = TEXT[lang]
    note = "".join(f' · <span class="rlnotes-{key}">{text[key].format(n=n)}</span>'
                   for key, n in (("untranslated", untranslated), ("stale", stale)) if n and text[key])
    nav = (f'<nav class="rlnotes-nav">{language_switch(lang, switch) if switch else ""}'
           f'<a href="index.html">{text["home"]}</a> · {text["nav"]}{note}</nav>')
    body = re.sub(r"<html[^>]*>", f'<html lang="{text["lang"]}">', body, count=1)
    if lang != "en":  # KaTeX is in the site's folder, one up
        body = body.replace('href="katex/', f'href="{_root(lang)}katex/').replace('src="katex/', f'src="{_root(lang)}katex/')
    body = body.replace("</head>", _style(lang) + "\n</head>", 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + "\n" + nav, body, count=1)
    return _rewrite_links(body, stems, lang, english)


def chapter_table(readme: str, heading: str = "The course") -> tuple[list[str], list[tuple[list[str], list[str]]]]:
    """The README's course table (under `## <heading>`): its headers, and for each row ([notebook stems], [the other cells])."""
    parts = re.split(rf"^## {re.escape(heading)}[ \t]*$", readme, maxsplit=1, flags=re.M)
    if len(parts) < 2:
        raise ValueError(f"README: no section '## {heading}'")
    section = parts[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    if not split:
        raise ValueError(f"README: no table under '## {heading}'")
    headers, rows = split[0], []
    for cells in split[1:]:
        if all(set(c) <= set("-: ") for c in cells):  # the |---|---| line
            continue
        rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1:]))
    return headers, rows


def _inline_markdown(text: str) -> str:
    escaped = html.escape(text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


# Each edition's index: its README, the heading of the chapter table there, and what the index says.
INDEX = {
    "en": {"readme": "README.md", "heading": "The course", "title": "rlnotes: the course",
           "about": "Each chapter below is a notebook executed in fast mode (<code>RLNOTES_FAST=1</code>, shorter "
                    "training runs than a learner's) and rendered as a page. The widgets show their last picture here; "
                    "their sliders move in JupyterLab (<code>make lab</code>). Terms in Chinese and English: "
                    '<a href="glossary.html">glossary</a>.'},
    "zh": {"readme": "README.zh.md", "heading": "课程", "title": "rlnotes：课程（中文版）",
           "about": "下面每一章都是以快速模式（<code>RLNOTES_FAST=1</code>，训练步数比学习者运行的少）执行的笔记本，"
                    "渲染成一个页面。小部件在这里显示它画的最后一张图；滑块在 JupyterLab 中可以拖动"
                    "（<code>make lab</code>）。中英术语对照：<a href=\"glossary.html\">术语表</a>。"
                    "还没有中文版的章节，链接到英文版。",
           "english": "英文版"},
}


def _intro(readme: str) -> str:
    """The README's paragraphs before its first section, less those that point to the other README (the
    language switch does that on the site)."""
    head = readme.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", head) if p.strip()]
    # A line break between two Chinese characters is no space (in HTML it would be one).
    paragraphs = [re.sub(r"(?<=[^\x00-\xff])\n(?=[^\x00-\xff])", "", p) for p in paragraphs]
    return "\n".join(f"<p>{_inline_markdown(p)}</p>" for p in paragraphs if not re.search(r"\]\(README(?:\.\w+)?\.md\)", p))


def index_page(readme: str, stems: set[str], lang: str = "en", switch: str | None = None,
               english: set[str] | None = None) -> str:
    """An edition's index: the README's chapter table, each chapter with a page a link. On the Chinese index,
    a chapter without a Chinese page links to its English page (class rlnotes-english)."""
    text = INDEX[lang]
    headers, table = chapter_table(readme, text["heading"])
    rows = []
    for names, others in table:
        def link(n):
            if n in stems:
                return f'<a href="{n}.html">{html.escape(n)}</a>'
            if lang != "en" and n in (english or set()):
                return (f'<code>{html.escape(n)}</code> <a class="rlnotes-english" href="../{n}.html" hreflang="en">'
                        f'（{text["english"]}）</a>')
            return f"<code>{html.escape(n)}</code>"

        rows.append(f"<tr><td>{' · '.join(link(n) for n in names)}</td>"
                    + "".join(f"<td>{_inline_markdown(c)}</td>" for c in others) + "</tr>")
    head = "".join(f"<th>{_inline_markdown(h)}</th>" for h in headers)
    return f"""<!DOCTYPE html>
<html lang="{TEXT[lang]['lang']}"><head><meta charset="utf-8"><title>{text['title']}</title>{_style(lang)}</head>
<body class="rlnotes-index">
{language_switch(lang, switch) if switch else ""}
<h1>rlnotes</h1>
{_intro(readme)}
<p>{text['about']}</p>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</body></html>
"""


def glossary_page(lang: str = "en", switch: str | None = None) -> str:
    """The glossary (assets/glossary.md, in both languages): one page in each edition, with that edition's links."""
    text = (ROOT / "assets" / "glossary.md").read_text(encoding="utf-8")
    title = "rlnotes: glossary" if lang == "en" else "rlnotes：术语表"
    return (f'<!DOCTYPE html>\n<html lang="{TEXT[lang]["lang"]}"><head><meta charset="utf-8"><title>{title}</title>'
            f'{_style(lang)}\n{math_head(_root(lang))}</head>\n<body class="rlnotes-index">'
            f'{language_switch(lang, switch) if switch else ""}<p><a href="index.html">{TEXT[lang]["home"]}</a></p>\n'
            f"{markdown_to_html(text)}\n</body></html>\n")


def lesson_page(name: str) -> str:
    """A chapter's measurement record, benchmarks/lessons/<name>.md (English), rendered as the glossary is, for
    <out>/benchmarks/lessons/<name>.html: both editions' chapters link it. Its own links to other records, the
    glossary, the assets and the chapters are made links of the site."""
    text = (ROOT / LESSONS / f"{name}.md").read_text(encoding="utf-8")
    root = "../" * len(Path(LESSONS).parts)
    heading = re.search(r"^#\s+(.+)$", text, flags=re.M)
    title = f"rlnotes: {heading.group(1).strip() if heading else name}"
    body = markdown_to_html(text)
    body = re.sub(r'href="(?:\.\./)*assets/glossary\.md"', f'href="{root}glossary.html"', body)
    body = re.sub(r'href="(?:\.\./)+assets/', f'href="{root}assets/', body)
    body = re.sub(r'href="([\w.-]+)\.md(#[^"]*)?"',
                  lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"' if (ROOT / LESSONS / f"{m.group(1)}.md").is_file()
                  else m.group(0), body)
    body = re.sub(r'href="(?:\.\./)+notebooks/([\w.-]+)\.ipynb(#[^"]*)?"',
                  lambda m: f'href="{root}{m.group(1)}.html{m.group(2) or ""}"', body)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'{_style("en")}\n{math_head(root)}</head>\n<body class="rlnotes-index">'
            f'<p><a href="{root}index.html">{TEXT["en"]["home"]}</a> · '
            f'<a href="{root}zh/index.html" hreflang="zh-CN" lang="zh-CN">{TEXT["zh"]["home"]}</a></p>\n'
            f"{body}\n</body></html>\n")


def write_lessons(out: Path, pages: list[str]) -> list[Path]:
    """The measurement records `pages` link (benchmarks/lessons/NN_name.html), and those they link, written."""
    wanted = {name for page in pages for name in re.findall(rf'href="(?:\.\./)*{LESSONS}/([\w.-]+)\.html', page)}
    written, folder = [], out / LESSONS
    while wanted:
        name = wanted.pop()
        if not (ROOT / LESSONS / f"{name}.md").is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        page = lesson_page(name)
        (folder / f"{name}.html").write_text(page, encoding="utf-8")
        written.append(folder / f"{name}.html")
        done = {p.stem for p in written}
        wanted |= {n for n in re.findall(r'href="([\w.-]+)\.html', page)
                   if n not in done and (ROOT / LESSONS / f"{n}.md").is_file()}
    return written


# ---------------------------------------------------------------- main


def _title(nb, default: str) -> str:
    return "".join(nb.cells[0].source).splitlines()[0].lstrip("# ").strip() if nb.cells else default


def build(out: Path, mode: str = "fast", jobs: int = 1, timeout: int = 1800, use_cache: bool = True,
          names: list[str] | None = None) -> list[Path]:
    """Execute and render both editions; returns the chapter pages written (English, then Chinese)."""
    import nbformat

    out = Path(out)
    cache = out / "executed"
    cache.mkdir(parents=True, exist_ok=True)
    course = sorted(NOTEBOOKS.glob("*.ipynb"))
    notebooks = [p for p in course if not names or any(p.stem == n or p.stem.startswith(n) for n in names)]
    # The Chinese chapters: each with at least one Markdown cell translated (current or stale); those of
    # `notebooks` are built. counts: (translated, untranslated, stale) against today's English notebook.
    translated, counts = {}, {}
    for english_path in course:
        path = ZH / english_path.name
        if not path.exists():
            continue
        nb = nbformat.read(path, as_version=4)
        done, left, stale = translated_cells(nb, nbformat.read(english_path, as_version=4))
        if done or stale:
            translated[path.stem], counts[path.stem] = nb, (done, left, stale)
    translations = {stem: nb for stem, nb in translated.items() if stem in {p.stem for p in notebooks}}

    failures = []

    def one(notebook):
        label = notebook.stem if notebook.parent == NOTEBOOKS else f"{notebook.parent.name}/{notebook.stem}"
        try:
            executed, seconds, reused = execute(notebook, cache, mode, timeout, use_cache)
        except RuntimeError as error:
            print(f"{label:24s} FAILED", flush=True)
            failures.append(str(error))
            return None
        why = " (its code cells are not today's English ones: tools/zh.py sync)" if label != notebook.stem else ""
        print(f"{label:24s} {'reused' if reused else f'executed in {seconds:.0f} s'}{why}", flush=True)
        return nbformat.read(executed, as_version=4)  # now: a test run may replace the copies meanwhile

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        executed = dict(zip([p.stem for p in notebooks], pool.map(one, notebooks)))

        # A Chinese chapter: the English execution's outputs, cell by cell, when the code cells are the same.
        chinese, own = {}, []
        for stem, nb in translations.items():
            if executed.get(stem) is None:  # not executed again: the same code cells would fail the same way
                print(f"{'zh/' + stem:24s} not built: its English chapter failed", flush=True)
                failures.append(f"zh/{stem}: its English chapter failed")
                continue
            grafted = with_outputs_of(nb, executed[stem])
            if grafted is not None:
                print(f"{'zh/' + stem:24s} outputs of {stem}'s execution", flush=True)
                chinese[stem] = grafted
            else:
                own.append(ZH / f"{stem}.ipynb")
        chinese |= dict(zip([p.stem for p in own], pool.map(one, own)))

    def static(notebook_name, nb, lang):
        if nb is None:
            return None
        nb = make_static(nb, lang)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
        if errors:
            failures.append(f"{notebook_name}: error outputs {[o.get('ename') for o in errors]}")
            return None
        return nb

    english = {stem: static(f"{stem}.ipynb", nb, "en") for stem, nb in executed.items()}
    english = {stem: nb for stem, nb in english.items() if nb is not None}
    chinese = {stem: static(f"zh/{stem}.ipynb", nb, "zh") for stem, nb in sorted(chinese.items())}
    chinese = {stem: nb for stem, nb in chinese.items() if nb is not None}
    en_stems, zh_stems = set(english), set(chinese)
    # Links between chapters: to the pages built now, and to the chapters this build left out (--names), whose
    # pages a whole build writes.
    left_out = {p.stem for p in course} - {p.stem for p in notebooks}
    en_links, zh_links = en_stems | left_out, zh_stems | (set(translated) & left_out)

    pages = []
    for stem, nb in english.items():
        page = out / f"{stem}.html"
        switch = f"zh/{stem}.html" if stem in zh_stems else "zh/index.html"
        page.write_text(render(nb, _title(nb, stem), en_links, "en", switch), encoding="utf-8")
        pages.append(page)
    (out / "zh").mkdir(exist_ok=True)
    for stem, nb in chinese.items():
        page = out / "zh" / f"{stem}.html"
        switch = f"../{stem}.html" if stem in en_stems else "../index.html"
        _, untranslated, stale = counts[stem]
        page.write_text(render(nb, _title(nb, stem), zh_links, "zh", switch, en_links, untranslated, stale),
                        encoding="utf-8")
        pages.append(page)
    write_lessons(out, [page.read_text(encoding="utf-8") for page in pages])
    (out / "index.html").write_text(
        index_page((ROOT / INDEX["en"]["readme"]).read_text(encoding="utf-8"), en_stems, "en", "zh/index.html"),
        encoding="utf-8")
    (out / "zh" / "index.html").write_text(
        index_page((ROOT / INDEX["zh"]["readme"]).read_text(encoding="utf-8"), zh_stems, "zh", "../index.html", en_stems),
        encoding="utf-8")
    (out / "glossary.html").write_text(glossary_page("en", "zh/glossary.html"), encoding="utf-8")
    (out / "zh" / "glossary.html").write_text(glossary_page("zh", "../glossary.html"), encoding="utf-8")
    shutil.rmtree(out / "katex", ignore_errors=True)  # the formulas' typesetter (MATH_HEAD)
    shutil.copytree(KATEX, out / "katex", ignore=shutil.ignore_patterns("SHA256SUMS"))
    assets = [p for p in (ROOT / "assets").iterdir() if p.is_file() and p.suffix != ".md"]
    if assets:
        (out / "assets").mkdir(exist_ok=True)
        for path in assets:
            shutil.copy(path, out / "assets" / path.name)
    if failures:  # the pages that could be built are written; the site is not complete
        raise SystemExit("make site: these chapters failed, their pages are missing:\n" + "\n\n".join(failures))
    return pages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "site"), help="the site's folder (default build/site)")
    parser.add_argument("--full", action="store_true", help="execute in full mode (default: fast mode, RLNOTES_FAST=1)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (default 1)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    parser.add_argument("--no-cache", action="store_true", help="execute every notebook again")
    parser.add_argument("--execute-one", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("names", nargs="*", help="only these notebooks (stem or prefix); default all")
    args = parser.parse_args(argv)
    if args.execute_one:
        execute_one(Path(args.execute_one[0]), Path(args.execute_one[1]), args.timeout)
        return 0
    start = time.perf_counter()
    pages = build(Path(args.out), "full" if args.full else "fast", args.jobs, args.timeout, not args.no_cache, args.names)
    chinese = sum(p.parent.name == "zh" for p in pages)
    print(f"{len(pages) - chinese} chapter pages and index.html in {args.out}, {chinese} Chinese ones and index.html in "
          f"{Path(args.out) / 'zh'} ({time.perf_counter() - start:.0f} s); open {Path(args.out).resolve() / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
