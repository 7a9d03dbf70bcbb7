"""The lesson's reading rules (issue 24), read off the committed notebooks and the plotting code.

A markdown cell a learner reads at once holds at most 300 words and a code cell at most 35 lines; a
figure fits the notebook's width (at most 12 inches: the width in pixels of each executed figure is
checked in tests/test_notebooks.py) and no text in it is smaller than 8 points.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("[0-9][0-9]_*.ipynb"))
MAX_WORDS, MAX_LINES, MAX_WIDTH_IN, MIN_FONT_PT = 300, 35, 12, 8
NAMED_SIZES = {"xx-small": 5.8, "x-small": 6.9, "small": 8.3}  # at matplotlib's default 10 pt


def _cells(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def words(markdown: str) -> int:
    """Words as a reader counts them: whitespace-separated tokens, a display formula counted as one."""
    markdown = re.sub(r"\$\$.*?\$\$", " formula ", markdown, flags=re.S)
    return len(markdown.split())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_markdown_cells_hold_at_most_300_words(path):
    long = {i: words("".join(c["source"])) for i, c in enumerate(_cells(path)) if c["cell_type"] == "markdown"}
    assert not {i: n for i, n in long.items() if n > MAX_WORDS}, f"{path.name}: cells over {MAX_WORDS} words"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_code_cells_hold_at_most_35_lines(path):
    lines = {i: len("".join(c["source"]).splitlines()) for i, c in enumerate(_cells(path)) if c["cell_type"] == "code"}
    assert not {i: n for i, n in lines.items() if n > MAX_LINES}, f"{path.name}: cells over {MAX_LINES} lines"


def _sources():
    for path in sorted((ROOT / "rlnotes").rglob("*.py")):
        yield path.relative_to(ROOT), path.read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        for i, cell in enumerate(_cells(path)):
            if cell["cell_type"] == "code":
                yield f"{path.relative_to(ROOT)}[{i}]", "".join(cell["source"])


def _keyword_values(source: str, name: str):
    """Every literal value given to keyword `name` in a call (cells with IPython magics are skipped)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == name:
                    try:
                        yield ast.literal_eval(kw.value)
                    except ValueError:
                        continue


def test_no_text_in_a_figure_is_smaller_than_8_points():
    small = [(where, v) for where, src in _sources() for v in _keyword_values(src, "fontsize")
             if (NAMED_SIZES.get(v, 10) if isinstance(v, str) else v) < MIN_FONT_PT]
    assert not small, f"font sizes below {MIN_FONT_PT} pt: {small}"


def test_no_figure_is_wider_than_12_inches():
    wide = [(where, v) for where, src in _sources() for v in _keyword_values(src, "figsize")
            if isinstance(v, tuple) and isinstance(v[0], (int, float)) and v[0] > MAX_WIDTH_IN]
    assert not wide, f"figures wider than {MAX_WIDTH_IN} in: {wide}"


def test_the_rules_can_fail():
    """The counters see what they are meant to see (a test of the tests above)."""
    assert words("one two $$x = \\frac{a}{b} + c$$ three") == 4
    assert list(_keyword_values("plt.subplots(figsize=(13, 3))\nax.legend(fontsize='small')", "figsize")) == [(13, 3)]
    assert list(_keyword_values("ax.legend(fontsize=7)", "fontsize")) == [7]
