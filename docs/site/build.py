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
rewritten to the site's pages. The index (<out>/index.html) is the README's chapter table, each
chapter that exists a link.

Formulas are typeset in the reader's browser by KaTeX, which the site carries: nothing is fetched from
elsewhere, so a page reads the same offline. The Markdown parser nbconvert uses (mistune with its math
rules) finds each formula ($...$, $$...$$, \(...\), \[...\], \begin{env}...\end{env}); the page holds it
as LaTeX in a <span class="rlnotes-math"> (rlnotes-display for display formulas), which a few lines of
script hand to KaTeX on load (docs/site/vendor/katex/, copied to <out>/katex/; docs/site/vendor/README.md
says where it comes from). nbconvert's default template would load MathJax 2 and require.js from a CDN
at view time: the pages here load neither (require.js serves widget JavaScript, which a static page
does not run), nor any other script or stylesheet from the web.

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
WIDGET_NOTE = ("An interactive widget: on this static page it shows the last picture it drew ({values}). "
               "Its sliders move in JupyterLab: <code>make lab</code>, then run the notebook.")


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


def execute(notebook: Path, cache: Path, mode: str, timeout: int, use_cache: bool) -> tuple[Path, float, bool]:
    """The executed copy of `notebook` (from the cache when it is current); (path, seconds, reused)."""
    target = cache / f"{notebook.stem}.{source_key(notebook, mode)}.ipynb"
    if use_cache and target.exists():
        return target, 0.0, True
    for stale in cache.glob(f"{notebook.stem}.*.ipynb"):
        stale.unlink()
    env = dict(os.environ, RLNOTES_FAST="1" if mode == "fast" else "0", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("MPLBACKEND", None)  # the kernel's inline backend: figures become PNG outputs
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--execute-one", str(notebook), str(target), "--timeout", str(timeout)],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-25:])
        raise RuntimeError(f"{notebook.name} failed to execute (partial copy in {cache}):\n{tail}")
    return target, time.perf_counter() - start, False


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


def static_widget_output(output, models: dict):
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
    note = WIDGET_NOTE.format(values=values or "its default settings")
    pictures = [png for m in tree if m.get("model_name") == "ImageModel" for png in [_image_png(m)] if png]
    outputs = [nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<widget picture>"})
               for png in pictures]
    if not pictures:
        note = ("An interactive widget, which a static page cannot show. It runs in JupyterLab: "
                "<code>make lab</code>, then run the notebook.")
    outputs.append(nbformat.v4.new_output("display_data", data={
        "text/html": f'<p class="rlnotes-widget-note"><em>{note}</em></p>', "text/plain": "(widget)"}))
    return outputs


def make_static(nb):
    """Replace every widget output by its static form; drop the widget state (no widget JavaScript)."""
    nb = copy.deepcopy(nb)
    models = _models(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):
                outputs += static_widget_output(output, models)
            else:
                outputs.append(output)
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return nb


# ---------------------------------------------------------------- formulas


# In every page's <head>: KaTeX from the site's own folder, and the script that typesets each formula the
# Markdown renderer marked. A formula KaTeX cannot read is shown as its LaTeX in red (throwOnError false);
# the tests typeset every formula of the notebooks with throwOnError true. <html data-rlnotes-math> says
# when it is done ("typeset", or "missing" without KaTeX: the LaTeX then stays as the formula's text).
MATH_HEAD = """<link rel="stylesheet" href="katex/katex.min.css">
<script defer src="katex/katex.min.js"></script>
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
        "{%- block html_head_js_mathjax -%}" + MATH_HEAD + "{%- endblock html_head_js_mathjax -%}",
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
.rlnotes-widget-note { color: #555; }
</style>"""


def _rewrite_links(page: str, stems: set[str]) -> str:
    page = re.sub(r'href="(?:\.\./)?assets/glossary\.md"', 'href="glossary.html"', page)
    page = re.sub(r'href="\.\./assets/', 'href="assets/', page)

    def chapter(match):
        stem = match.group(1)
        return f'href="{stem}.html{match.group(2) or ""}"' if stem in stems else match.group(0)

    return re.sub(r'href="(?:\.\./notebooks/|notebooks/)?([\w.-]+)\.ipynb(#[^"]*)?"', chapter, page)


def render(nb, title: str, stems: set[str]) -> str:
    _, exporter_class = _math_classes()
    exporter = exporter_class(template_name="lab", template_file="rlnotes-site.html.j2", embed_images=True,
                              extra_loaders=[exporter_class.site_loader])
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title, "path": str(NOTEBOOKS)}})
    nav = ('<nav class="rlnotes-nav"><a href="index.html">rlnotes: the course</a> · this page was executed in '
           'fast mode; widgets show their last picture and move in JupyterLab (<code>make lab</code>)</nav>')
    body = body.replace("</head>", STYLE + "\n</head>", 1)
    body = re.sub(r"(<body[^>]*>)", r"\1\n" + nav.replace("\\", "\\\\"), body, count=1)
    return _rewrite_links(body, stems)


def chapter_table(readme: str) -> tuple[list[str], list[tuple[list[str], list[str]]]]:
    """The README's course table: its headers, and for each row ([notebook stems], [the other cells])."""
    section = readme.split("## The course", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    if not split:
        raise ValueError("README.md: no table under '## The course'")
    headers, rows = split[0], []
    for cells in split[1:]:
        if all(set(c) <= set("-: ") for c in cells):  # the |---|---| line
            continue
        rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1:]))
    return headers, rows


def _inline_markdown(text: str) -> str:
    escaped = html.escape(text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def index_page(readme: str, stems: set[str]) -> str:
    intro = readme.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    headers, table = chapter_table(readme)
    rows = []
    for names, others in table:
        links = " · ".join(f'<a href="{n}.html">{html.escape(n)}</a>' if n in stems else f"<code>{html.escape(n)}</code>"
                           for n in names)
        rows.append(f"<tr><td>{links}</td>" + "".join(f"<td>{_inline_markdown(c)}</td>" for c in others) + "</tr>")
    head = "".join(f"<th>{_inline_markdown(h)}</th>" for h in headers)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rlnotes: the course</title>{STYLE}</head>
<body class="rlnotes-index">
<h1>rlnotes</h1>
<p>{_inline_markdown(intro)}</p>
<p>Each chapter below is a notebook executed in fast mode (<code>RLNOTES_FAST=1</code>, shorter training runs
than a learner's) and rendered as a page. The widgets show their last picture here; their sliders move in
JupyterLab (<code>make lab</code>). Terms in Chinese and English: <a href="glossary.html">glossary</a>.</p>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</body></html>
"""


def glossary_page() -> str:
    text = (ROOT / "assets" / "glossary.md").read_text()
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>rlnotes: glossary</title>{STYLE}\n'
            f'{MATH_HEAD}</head>\n<body class="rlnotes-index"><p><a href="index.html">rlnotes: the course</a></p>\n'
            f"{markdown_to_html(text)}\n</body></html>\n")


# ---------------------------------------------------------------- main


def build(out: Path, mode: str = "fast", jobs: int = 1, timeout: int = 1800, use_cache: bool = True,
          names: list[str] | None = None) -> list[Path]:
    """Execute and render; returns the chapter pages written."""
    import nbformat

    out = Path(out)
    cache = out / "executed"
    cache.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    if names:
        notebooks = [p for p in notebooks if any(p.stem == n or p.stem.startswith(n) for n in names)]
    stems = {p.stem for p in notebooks}

    failures = []

    def one(notebook):
        try:
            executed, seconds, reused = execute(notebook, cache, mode, timeout, use_cache)
        except RuntimeError as error:
            print(f"{notebook.stem:24s} FAILED", flush=True)
            failures.append(str(error))
            return None
        print(f"{notebook.stem:24s} {'reused' if reused else f'executed in {seconds:.0f} s'}", flush=True)
        return nbformat.read(executed, as_version=4)  # now: a test run may replace the copies meanwhile

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        executed = list(pool.map(one, notebooks))

    pages = []
    for notebook, executed_nb in zip(notebooks, executed):
        if executed_nb is None:
            continue
        nb = make_static(executed_nb)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
        if errors:
            failures.append(f"{notebook.name}: error outputs {[o.get('ename') for o in errors]}")
            continue
        title = "".join(nb.cells[0].source).splitlines()[0].lstrip("# ").strip() if nb.cells else notebook.stem
        page = out / f"{notebook.stem}.html"
        page.write_text(render(nb, title, stems))
        pages.append(page)
    (out / "index.html").write_text(index_page((ROOT / "README.md").read_text(), stems))
    (out / "glossary.html").write_text(glossary_page())
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
    print(f"{len(pages)} chapter pages and index.html in {args.out} ({time.perf_counter() - start:.0f} s); "
          f"open {Path(args.out).resolve() / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
