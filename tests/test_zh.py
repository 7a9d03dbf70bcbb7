"""The Chinese edition (issue 26): the glossary, and notebooks/zh/ kept cell for cell in step with notebooks/.

For every notebooks/zh/NN_name.ipynb, against notebooks/NN_name.ipynb (tools/zh.py's `check`, which a
translator runs as `python tools/zh.py check NN`): the same cells in the same order, code cells identical;
every markdown cell translates the English cell's current version (its recorded SHA-256 matches); display
formulas identical; each glossary term of an English cell has its Chinese term in the translation; links
resolve from notebooks/zh/. These are skipped while notebooks/zh/ holds no chapter. The glossary's tests and
a test of the drift check itself (on notebooks built in a temporary folder) always run.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
ZH_NOTEBOOKS = sorted((ROOT / "notebooks" / "zh").glob("*.ipynb"))
NOTES = ROOT.parent / "shared" / "notes" / "drl-study-notes.zh.md"


def _load_tool():
    spec = importlib.util.spec_from_file_location("rlnotes_zh_tool", ROOT / "tools" / "zh.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


zh = _load_tool()
TERMS = zh.glossary()


# ---------------------------------------------------------------- the glossary


def test_glossary_parses_and_has_at_least_80_terms():
    assert len(TERMS) >= 80, f"assets/glossary.md has {len(TERMS)} terms; the course uses more"
    for term in TERMS:
        assert re.fullmatch(r"0[0-8]", term.chapter), f"{term.zh}: chapter {term.chapter!r} is not 00 to 08"


def test_no_chinese_term_stands_for_two_english_ones():
    repeated = {word: n for word, n in Counter(t.zh for t in TERMS).items() if n > 1}
    assert not repeated, f"Chinese terms on more than one row (one concept per word): {repeated}"


def test_no_english_term_has_two_chinese_ones():
    owners: dict[str, set[str]] = {}
    for term in TERMS:
        for form in term.english:
            owners.setdefault(re.sub(r"[\s-]+", " ", form.lower()), set()).add(term.zh)
    doubled = {form: words for form, words in owners.items() if len(words) > 1}
    assert not doubled, f"English terms with two Chinese ones: {doubled}"


def test_each_row_gives_one_chinese_word():
    for term in TERMS:
        assert not re.search(r"[/／、,，;；()（）]", term.zh), f"{term.zh!r}: one Chinese term per row (others go in the note)"


def test_truncation_and_clip_have_words_of_their_own():
    by_zh = {t.zh: t for t in TERMS}
    assert by_zh["截断"].name == "truncation" and "truncated" in by_zh["截断"].english
    assert by_zh["裁剪"].name == "clip" and {"clipped", "clipping"} <= set(by_zh["裁剪"].english)
    assert by_zh["置信域"].name == "trust region", "the notes' word for trust region is 置信域"
    assert not [t.zh for t in TERMS if "截断" in t.zh and t.zh != "截断"], "截断 is truncation only"


ISSUE_TERMS = ["贝尔曼方程", "价值迭代", "经验回放", "目标网络", "ε-贪心", "同策略", "异策略", "自举", "奖励黑客", "隐式奖励",
               "词元", "温度", "贪心解码", "拒绝采样", "标注者", "裁剪比例", "KL估计量", "Bradley-Terry模型", "Huber损失",
               "置信域"]
NOTES_TERMS = ["动作价值函数", "状态价值函数", "最优动作价值函数", "置信域", "线搜索", "优势", "广义优势估计", "价值模型",
               "奖励模型", "监督微调", "策略梯度", "梯度上升", "蒙特卡洛方法", "KL散度", "近端策略优化", "直接偏好优化",
               "配分函数", "最大似然估计", "人类偏好", "基于人类反馈的强化学习", "价值学习", "策略学习"]


@pytest.mark.parametrize("word", sorted(set(ISSUE_TERMS + NOTES_TERMS)))
def test_the_issue_and_the_notes_terms_are_in_the_glossary(word):
    assert word in {t.zh for t in TERMS}


def test_exceptions_name_terms_of_the_glossary():
    names = {t.name for t in TERMS}
    assert set(zh.UNCHECKED_TERMS) <= names
    assert {term for _, _, term in zh.CELL_EXCEPTIONS} <= names
    assert all(why.strip() for why in [*zh.UNCHECKED_TERMS.values(), *zh.CELL_EXCEPTIONS.values()])


def _notes_map() -> list[list[str]]:
    lines = (ROOT / "assets" / "glossary.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## The notes' sections in the chapters"))
    rows = []
    for line in lines[start:]:
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]


def test_the_notes_map_points_at_sections_that_exist():
    rows = _notes_map()
    assert len(rows) >= 20
    headings = [line.lstrip("#").strip() for line in NOTES.read_text(encoding="utf-8").splitlines()
                if line.startswith("#")] if NOTES.exists() else None
    for notes_section, _, where in rows:
        refs = re.findall(r"\b(0[0-8]) §(\d+)", where)
        assert refs, f"{notes_section}: no chapter section in {where!r}"
        for chapter, section in refs:
            (path,) = (ROOT / "notebooks").glob(f"{chapter}_*.ipynb")
            text = "\n".join(zh.source(c) for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "markdown")
            assert re.search(rf"^## {section}\. ", text, flags=re.M), f"{path.name} has no section {section} ({notes_section})"
        if headings is not None:
            for part in notes_section.split(" · "):
                assert any(h.startswith(part) for h in headings), f"the notes have no section {part!r}"


# ---------------------------------------------------------------- the Chinese chapters


@functools.lru_cache(maxsize=None)
def _problems(zh_path: Path) -> tuple:
    return tuple(zh.check(zh.chapter_path(zh_path.stem), zh_path, TERMS))


def _of(zh_path: Path, *kinds: str) -> list[str]:
    return [str(p) for p in _problems(zh_path) if p.kind in kinds]


needs_chapters = pytest.mark.skipif(not ZH_NOTEBOOKS, reason="notebooks/zh/ holds no Chinese chapter yet")
each_chapter = pytest.mark.parametrize("zh_path", ZH_NOTEBOOKS or [None], ids=lambda p: p.stem if p else "none")


@needs_chapters
@each_chapter
def test_zh_chapter_has_an_english_chapter(zh_path):
    assert (ROOT / "notebooks" / zh_path.name).exists(), f"notebooks/zh/{zh_path.name} translates no English chapter"


@needs_chapters
@each_chapter
def test_zh_code_cells_are_the_english_ones_in_the_same_order(zh_path):
    problems = _of(zh_path, "structure", "code")
    assert not problems, "\n".join(problems)


@needs_chapters
@each_chapter
def test_zh_markdown_translates_the_current_english(zh_path):
    problems = _of(zh_path, "missing", "stale")
    assert not problems, "re-translate these cells (python tools/zh.py export / import, or mark):\n" + "\n".join(problems)


@needs_chapters
@each_chapter
def test_zh_display_formulas_are_the_english_ones(zh_path):
    problems = _of(zh_path, "formula")
    assert not problems, "\n".join(problems)


@needs_chapters
@each_chapter
def test_zh_uses_the_glossary(zh_path):
    problems = _of(zh_path, "glossary")
    assert not problems, ("terms of assets/glossary.md (exceptions: tools/zh.py CELL_EXCEPTIONS):\n" + "\n".join(problems))


@needs_chapters
@each_chapter
def test_zh_links_resolve_and_title_keeps_its_number(zh_path):
    problems = _of(zh_path, "link", "title")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the tool and its drift check, in a temporary folder


GRADED = {"nbgrader": {"grade": False, "grade_id": "setup", "locked": True, "schema_version": 3, "solution": False,
                       "task": False}}
ENGLISH = {
    "t0": "# 99 · A small chapter\n\nThe terms are in the [glossary](../assets/glossary.md).",
    "t2": "The trust region bounds the step:\n\n$$\\bar{D}_{\\mathrm{KL}} \\le \\delta$$\n\nand the line search checks it.",
    "t4": "PPO clips the ratio; a truncated episode is bootstrapped.",
}
CHINESE = {
    "t0": "# 99 · 一个小章节\n\n术语见[术语表](../../assets/glossary.md)。",
    "t2": "置信域限制每一步：\n\n$$\\bar{D}_{\\mathrm{KL}} \\le \\delta$$\n\n线搜索检查它。",
    "t4": "PPO 裁剪比率；被截断的回合要自举。",
}


def _md(cell_id: str, text: str):
    cell = nbformat.v4.new_markdown_cell(text)
    cell.id = cell_id
    return cell


def _code(cell_id: str, text: str, metadata=None):
    cell = nbformat.v4.new_code_cell(text)
    cell.id, cell.metadata = cell_id, dict(metadata or {})
    return cell


@pytest.fixture
def course(tmp_path):
    """(English notebook, Chinese notebook path, work folder) in a course-shaped temporary folder."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "glossary.md").write_text("glossary\n")
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [_md("t0", ENGLISH["t0"]), _code("t1", "x = 1\nassert x == 1", GRADED), _md("t2", ENGLISH["t2"]),
                _code("t3", "y = 2"), _md("t4", ENGLISH["t4"])]
    en_path = tmp_path / "notebooks" / "99_small.ipynb"
    nbformat.write(nb, str(en_path))
    return en_path, tmp_path / "notebooks" / "zh" / en_path.name, tmp_path / "work"


def _translate(zh_path: Path, texts: dict[str, str]) -> None:
    nb = nbformat.read(str(zh_path), as_version=4)
    for cell in nb.cells:
        if cell.id in texts:
            cell.source = texts[cell.id]
    nbformat.write(nb, str(zh_path))


def _edit(path: Path, cell_id: str, text: str) -> None:
    nb = nbformat.read(str(path), as_version=4)
    next(c for c in nb.cells if c.id == cell_id).source = text
    nbformat.write(nb, str(path))


def _translated(course):
    en_path, zh_path, work = course
    zh.sync(en_path, zh_path, work)
    _translate(zh_path, CHINESE)
    zh.mark(en_path, zh_path, list(CHINESE))
    return en_path, zh_path, work


def test_sync_copies_the_code_and_marks_every_markdown_cell_to_translate(course):
    en_path, zh_path, work = course
    report = zh.sync(en_path, zh_path, work)
    assert report.new == ["t0", "t2", "t4"] and report.kept == 0
    en, cn = nbformat.read(str(en_path), as_version=4), nbformat.read(str(zh_path), as_version=4)
    assert [(c.id, c.cell_type) for c in cn.cells] == [(c.id, c.cell_type) for c in en.cells]
    assert cn.cells[1].source == en.cells[1].source and cn.cells[1].metadata == GRADED
    record = {"translates": "t0", "source_sha256": zh.sha256(ENGLISH["t0"]), "untranslated": True}
    assert cn.cells[0].metadata["rlnotes"] == record
    assert "(../../assets/glossary.md)" in cn.cells[0].source, "links are rewritten for notebooks/zh/"
    problems = zh.check(en_path, zh_path, TERMS)
    assert [(p.kind, p.cell_id) for p in problems] == [("missing", "t0"), ("missing", "t2"), ("missing", "t4")]


def test_a_translated_chapter_passes_the_check(course):
    en_path, zh_path, _ = _translated(course)
    assert zh.check(en_path, zh_path, TERMS) == []
    assert zh.counts(en_path, zh_path) == {"translated": 3, "stale": 0, "missing": 0}


def test_the_drift_check_names_the_english_cell_that_changed(course):
    """The test of the test: change one English cell, and the check fails on that cell, and only there."""
    en_path, zh_path, work = _translated(course)
    _edit(en_path, "t2", ENGLISH["t2"] + " It is measured on the old batch.")
    problems = zh.check(en_path, zh_path, TERMS)
    assert [(p.kind, p.index, p.cell_id) for p in problems] == [("stale", 2, "t2")]
    message = str(problems[0])
    assert "99_small.ipynb cell 2 (id t2)" in message and "re-translate" in message
    report = zh.sync(en_path, zh_path, work)  # sync keeps the old Chinese, still stale, until it is translated again
    assert report.stale == ["t2"] and report.kept == 2
    assert zh.source(nbformat.read(str(zh_path), as_version=4).cells[2]) == CHINESE["t2"]
    assert [p.cell_id for p in zh.check(en_path, zh_path, TERMS)] == ["t2"]
    zh.mark(en_path, zh_path, ["t2"])
    assert zh.check(en_path, zh_path, TERMS) == []


def test_sync_follows_new_and_removed_english_cells(course):
    en_path, zh_path, work = _translated(course)
    en = nbformat.read(str(en_path), as_version=4)
    en.cells.insert(3, _md("t9", "A new cell on the replay buffer."))
    en.cells = [c for c in en.cells if c.id != "t4"]  # translated: its Chinese is kept aside, not lost
    nbformat.write(en, str(en_path))
    report = zh.sync(en_path, zh_path, work)
    assert report.new == ["t9"] and [i for i, *_ in report.orphans] == ["t4"]
    assert CHINESE["t4"] in (work / "99_small.orphans.md").read_text(encoding="utf-8")
    assert [(p.kind, p.cell_id) for p in zh.check(en_path, zh_path, TERMS)] == [("missing", "t9")]


def test_code_formulas_glossary_and_links_are_checked(course):
    en_path, zh_path, _ = _translated(course)
    _edit(zh_path, "t3", "y = 3")
    _edit(zh_path, "t2", CHINESE["t2"].replace("\\le \\delta", "\\leq \\delta").replace("置信域", "信任区域"))
    _edit(zh_path, "t0", CHINESE["t0"].replace("../../assets", "../assets"))
    found = {(p.kind, p.cell_id) for p in zh.check(en_path, zh_path, TERMS)}
    assert found == {("code", "t3"), ("formula", "t2"), ("glossary", "t2"), ("link", "t0")}
    glossary_message = next(str(p) for p in zh.check(en_path, zh_path, TERMS) if p.kind == "glossary")
    assert "trust region" in glossary_message and "置信域" in glossary_message
    _edit(zh_path, "t1", "x = 1")
    assert any(p.kind == "code" and "setup" in p.message for p in zh.check(en_path, zh_path, TERMS))


def test_truncation_is_not_a_word_for_clip(course):
    en_path, zh_path, _ = _translated(course)
    _edit(en_path, "t4", "PPO clips the ratio.")
    zh.mark(en_path, zh_path, ["t4"])
    _edit(zh_path, "t4", "PPO 截断比率。")
    messages = [p.message for p in zh.check(en_path, zh_path, TERMS) if p.kind == "glossary"]
    assert any("'clips'" in m and "裁剪" in m for m in messages), messages
    assert any("截断" in m and "truncation" in m for m in messages), messages


def test_a_quoted_passage_of_the_notes_may_bring_its_own_formula(course):
    en_path, zh_path, _ = _translated(course)
    _edit(zh_path, "t2", CHINESE["t2"] + "\n\n> 笔记：置信域\n> $$\\mathcal{N}(\\theta_{\\mathrm{old}})$$")
    assert zh.check(en_path, zh_path, TERMS) == []


def test_export_and_import_round_trip(course, tmp_path):
    en_path, zh_path, work = course
    zh.sync(en_path, zh_path, work)
    file = tmp_path / "99_small.md"
    assert zh.export(en_path, zh_path, file, terms=TERMS) == 3
    text = file.read_text(encoding="utf-8")
    assert "@@ terms: trust region → 置信域 · line search → 线搜索" in text
    for cell_id, chinese in CHINESE.items():  # a translator fills the three slots
        head = text.index(f"· id {cell_id} ·")
        slot = text.index("@@ zh\n", head) + len("@@ zh\n")
        text = text[:slot] + chinese + text[slot:]
    file.write_text(text, encoding="utf-8")
    changed, warnings = zh.import_(en_path, zh_path, file)
    assert (changed, warnings) == (3, [])
    assert zh.check(en_path, zh_path, TERMS) == []
    _edit(en_path, "t4", ENGLISH["t4"] + " Twice.")
    assert zh.export(en_path, zh_path, file, todo_only=True, terms=TERMS) == 1
    assert "· id t4 · stale ·" in file.read_text(encoding="utf-8")


def _fill(file: Path, texts: dict[str, str]) -> None:
    """A translator writes `texts` into the slots of these cells of an exported file."""
    text = file.read_text(encoding="utf-8")
    for cell_id, chinese in texts.items():
        head = text.index(f"· id {cell_id} ·")
        slot = text.index("@@ zh\n", head) + len("@@ zh\n")
        end = text.index("@@ end", slot)
        text = text[:slot] + chinese + "\n" + text[end:]
    file.write_text(text, encoding="utf-8")


def test_an_unedited_stale_cell_stays_stale_through_export_and_import(course, tmp_path):
    en_path, zh_path, _ = _translated(course)
    _edit(en_path, "t2", ENGLISH["t2"] + " It is measured on the old batch.")
    file = tmp_path / "99_small.md"
    assert zh.export(en_path, zh_path, file, todo_only=True, terms=TERMS) == 1  # the slot holds the old Chinese
    changed, warnings = zh.import_(en_path, zh_path, file)
    assert changed == 0 and len(warnings) == 1 and "id t2" in warnings[0] and "unchanged" in warnings[0]
    assert [(p.kind, p.cell_id) for p in zh.check(en_path, zh_path, TERMS)] == [("stale", "t2")]
    _fill(file, {"t2": CHINESE["t2"] + "\n\n它在旧的一批数据上度量。"})
    assert zh.import_(en_path, zh_path, file) == (1, [])
    assert zh.check(en_path, zh_path, TERMS) == []


def test_sync_sets_aside_chinese_typed_into_an_untranslated_cell(course):
    en_path, zh_path, work = course
    zh.sync(en_path, zh_path, work)
    _edit(zh_path, "t2", CHINESE["t2"])  # typed in JupyterLab, not marked yet: the cell still says untranslated
    _edit(en_path, "t4", ENGLISH["t4"] + " Twice.")
    report = zh.sync(en_path, zh_path, work)
    assert [(i, text) for i, text, _ in report.orphans] == [("t2", CHINESE["t2"])], "t0 (links rewritten), t4 untouched"
    assert "typed" in report.orphans[0][2]
    assert CHINESE["t2"] in (work / "99_small.orphans.md").read_text(encoding="utf-8")
    assert zh.source(nbformat.read(str(zh_path), as_version=4).cells[2]) == ENGLISH["t2"]


def test_sync_sets_aside_a_second_cell_translating_the_same_english_cell(course):
    en_path, zh_path, work = _translated(course)
    nb = nbformat.read(str(zh_path), as_version=4)
    half = copy.deepcopy(nb.cells[2])  # t2 split in JupyterLab: both halves claim to translate t2
    half.id, half.source = "t2-half", "线搜索检查它。"
    nb.cells.insert(3, half)
    nbformat.write(nb, str(zh_path))
    report = zh.sync(en_path, zh_path, work)
    assert [i for i, *_ in report.orphans] == ["t2-half"] and "second cell" in report.orphans[0][2]
    assert "线搜索检查它。" in (work / "99_small.orphans.md").read_text(encoding="utf-8")
    assert zh.check(en_path, zh_path, TERMS) == []


def test_import_skips_the_english_pasted_into_a_slot(course, tmp_path):
    en_path, zh_path, work = course
    _edit(en_path, "t4", ENGLISH["t4"] + "\n")  # a cell ending with a newline, as 02 c009 and 05 c014
    zh.sync(en_path, zh_path, work)
    file = tmp_path / "99_small.md"
    zh.export(en_path, zh_path, file, terms=TERMS)
    _fill(file, {"t2": CHINESE["t2"], "t4": ENGLISH["t4"] + "\n"})
    changed, warnings = zh.import_(en_path, zh_path, file)
    assert changed == 1 and len(warnings) == 1 and "id t4" in warnings[0] and "English" in warnings[0]
    assert [(p.kind, p.cell_id) for p in zh.check(en_path, zh_path, TERMS)] == [("missing", "t0"), ("missing", "t4")]


def test_check_names_a_chapter_without_its_chinese_notebook_and_a_stray_one(course):
    en_path, zh_path, work = course
    en_dir, zh_dir = en_path.parent, zh_path.parent
    problems, checked = zh.check_chapters(["99"], en_dir, zh_dir, TERMS)
    assert checked == 1 and len(problems) == 1 and "sync 99" in str(problems[0])
    _translated(course)
    assert zh.check_chapters([], en_dir, zh_dir, TERMS) == ([], 1)
    en_path.rename(en_dir / "99_small_v2.ipynb")  # the English chapter renamed: zh/99_small.ipynb translates nothing
    problems, _ = zh.check_chapters([], en_dir, zh_dir, TERMS)
    assert len(problems) == 1 and "translates no English chapter" in str(problems[0])
    with pytest.raises(SystemExit):
        zh.chapter_path("99_small", en_dir)
    assert zh.chapter_path("99", en_dir).name == "99_small_v2.ipynb"


def test_mark_refuses_a_cell_that_still_holds_the_english(course, capsys):
    en_path, zh_path, work = course
    en = nbformat.read(str(en_path), as_version=4)
    en.cells.append(_md("t5", "$$\\hat{A}_t = \\delta_t + \\gamma \\lambda \\hat{A}_{t+1}$$"))  # nothing to translate
    nbformat.write(en, str(en_path))
    zh.sync(en_path, zh_path, work)
    _translate(zh_path, {"t0": CHINESE["t0"], "t2": CHINESE["t2"]})
    with pytest.raises(SystemExit) as refused:
        zh.mark(en_path, zh_path, ["t0", "t2", "t4", "t5"])
    assert refused.value.code == 2 and "id t4" in capsys.readouterr().err
    assert zh.counts(en_path, zh_path)["translated"] == 0, "a refused mark writes nothing"
    warnings = zh.mark(en_path, zh_path, ["t0", "t2", "t4", "t5"], force=True)
    assert len(warnings) == 1 and "id t4" in warnings[0]
    problems = zh.check(en_path, zh_path, TERMS)
    assert [(p.kind, p.cell_id) for p in problems] == [("missing", "t4")], "t5, a formula, may stay as it is"
    assert "still holds the English" in problems[0].message


def test_git_is_read_as_utf8_whatever_the_locale(course):
    en_path, zh_path, _ = course
    root = en_path.parent.parent
    before = "PPO clips the ratio — a truncated episode (截断) is bootstrapped."
    _edit(en_path, "t4", before)
    for command in (["init", "-q"], ["add", "notebooks"], ["commit", "-qm", "t4"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *command], cwd=root, check=True,
                       capture_output=True)
    _edit(en_path, "t4", ENGLISH["t4"])
    script = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import zh; "
              "sys.stdout.buffer.write(zh.english_then(Path(sys.argv[2]), 't4', sys.argv[3]).encode('utf-8'))")
    ascii_locale = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    done = subprocess.run([sys.executable, "-c", script, str(Path(zh.__file__).parent), str(en_path), zh.sha256(before)],
                          capture_output=True, env=ascii_locale)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    assert done.stdout.decode("utf-8") == before


def test_truncating_is_a_form_of_truncation(course):
    en_path, zh_path, _ = _translated(course)
    _edit(en_path, "t4", "PPO clips the ratio; a time limit truncating the episode leaves it to bootstrap.")
    _edit(zh_path, "t4", "PPO 裁剪比率；时间限制截断回合时，要自举。")
    zh.mark(en_path, zh_path, ["t4"])
    assert zh.check(en_path, zh_path, TERMS) == []


def test_messages_say_what_is_wrong(course, monkeypatch, capsys):
    en_path, zh_path, work = _translated(course)
    root = en_path.parent.parent
    with pytest.raises(SystemExit) as no_file:
        zh.import_(en_path, zh_path, root / "nowhere.md")
    assert no_file.value.code == 2 and "export 99" in capsys.readouterr().err
    with pytest.raises(SystemExit) as no_notebook:
        zh.diff(en_path, zh_path.with_name("98_none.ipynb"))
    assert no_notebook.value.code == 2 and "sync" in capsys.readouterr().err
    _edit(en_path, "t2", ENGLISH["t2"] + " It is measured on the old batch.")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(root))
    assert "not in a git repository" in zh.diff(en_path, zh_path)
    monkeypatch.setenv("PATH", str(root))
    assert "git is not installed" in zh.diff(en_path, zh_path)
    nb = nbformat.read(str(zh_path), as_version=4)
    nb.cells[4].metadata["rlnotes"]["translates"] = "t2"
    nbformat.write(nb, str(zh_path))
    (problem,) = [p for p in zh.check(en_path, zh_path, TERMS) if p.cell_id == "t4"]
    assert "'t2'" in problem.message and "does not record" not in problem.message


def test_a_real_chapter_syncs_with_its_code_unchanged(tmp_path):
    """The first English chapter, synced into a course-shaped temporary folder: code identical, markdown to translate."""
    en_source = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))[0]
    for folder in ("assets", "benchmarks"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    (tmp_path / "notebooks").mkdir()
    en_path = tmp_path / "notebooks" / en_source.name
    shutil.copy(en_source, en_path)
    zh_path = tmp_path / "notebooks" / "zh" / en_source.name
    zh.sync(en_path, zh_path, tmp_path / "work")
    problems = zh.check(en_path, zh_path, TERMS)
    en = nbformat.read(str(en_path), as_version=4)
    markdown = [c.id for c in en.cells if c.cell_type == "markdown"]
    assert [(p.kind, p.cell_id) for p in problems] == [("missing", i) for i in markdown]
    assert "../../assets/glossary.md" in zh.source(nbformat.read(str(zh_path), as_version=4).cells[0])


# ---------------------------------------------------------------- README.zh.md


def _chapter_rows(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\d\d_\w+)` \| (.*) \|$", text, flags=re.M)}


def test_readme_zh_has_the_two_commands_the_chapters_and_their_minutes():
    english = (ROOT / "README.md").read_text(encoding="utf-8")
    chinese = (ROOT / "README.zh.md").read_text(encoding="utf-8")
    for command in ("make lab", "make test", "notebooks/zh/", "jupyterlab-language-pack-zh-cn", "Settings → Language"):
        assert command in chinese, f"README.zh.md does not mention {command}"
    en_rows, zh_rows = _chapter_rows(english), _chapter_rows(chinese)
    assert list(zh_rows) == list(en_rows), "README.zh.md's chapter table lists other chapters than README.md's"
    for chapter, row in en_rows.items():
        minutes = re.findall(r"\d+(?:\.\d+)?", re.findall(r"\(([^()]*)\)\s*$", row)[0])
        assert sorted(minutes) == sorted(re.findall(r"\d+(?:\.\d+)?", zh_rows[chapter].rsplit("（", 1)[-1])), (
            f"{chapter}: README.zh.md's minutes differ from README.md's ({row})")
