#!/usr/bin/env python
"""The Chinese edition (issue 26): notebooks/zh/NN_name.ipynb kept cell for cell in step with notebooks/NN_name.ipynb.

    python tools/zh.py sync 04            # create or update notebooks/zh/04_trpo.ipynb from notebooks/04_trpo.ipynb
    python tools/zh.py sync --all         # every chapter
    python tools/zh.py status             # per chapter: markdown cells translated / stale / missing
    python tools/zh.py export 04          # build/zh/04_trpo.md: each markdown cell's English, a slot for its Chinese
    python tools/zh.py import 04          # the Chinese of build/zh/04_trpo.md back into notebooks/zh/04_trpo.ipynb
    python tools/zh.py mark 04 c008 12    # record that cells c008 and 12 now translate the current English
                                          # (a cell still holding the English is refused: exit 2, unless --force)
    python tools/zh.py diff 04            # for each stale cell: the English it translated (from git) against today's
    python tools/zh.py check 04           # what tests/test_zh.py checks, for one chapter (or all); exit 1 on a problem

A chapter is named by its number (04), or by its exact stem (04_trpo) or path. `check` with no chapter, as
tests/test_zh.py, checks every notebooks/zh/*.ipynb against the English notebook of exactly its file name (a
Chinese notebook without one is a problem); a chapter named to `check` without its Chinese notebook is a problem.

The Chinese notebook has the English notebook's cells, in the same order, with the same ids:
- a code (or raw) cell is a copy of the English one: source and metadata (nbgrader's included), no outputs;
- a markdown cell holds the Chinese, and records in its metadata which English cell it translates and which
  version of it, the SHA-256 of the English cell's source (UTF-8) when it was translated:

      "metadata": {"rlnotes": {"translates": "c008", "source_sha256": "3f2a..."}}

  A cell not translated yet holds the English text and `"untranslated": true` beside them. When the English
  cell changes, the hash no longer matches: the cell is stale, and the check names it until it is translated
  again and marked (`mark`, or `export` then `import`, which records the hash of the English shown in the file).
  A cell still holds the English when its prose (outside code, formulas, link targets and HTML tags) is the
  English cell's and has an ASCII word of 3+ letters: such a cell is not translated, whatever its metadata say
  (`mark` refuses it, `import` skips such a slot, the check names it); a cell with no such word (a formula, a
  code block) may stay identical to the English. `import` also leaves a stale cell stale when its slot holds
  the cell's Chinese unchanged: edit it, or `mark` it if it still holds.

`sync` copies every code cell again, keeps each translation whose English cell still exists (stale or not: the
hash says which), inserts each new English markdown cell as untranslated, puts the current English into each
untranslated cell, and keeps one cell per English cell. The Chinese it drops is saved in
build/zh/NN_name.orphans.md, and its report says so: translations of English cells that no longer exist,
markdown cells that record no English cell, a second cell translating the same English cell (the first one is
kept), and text typed into an untranslated cell (its text, links made English again, no longer has the recorded
hash). Relative links are rewritten to work from notebooks/zh/ (`../assets/glossary.md` becomes
`../../assets/glossary.md`), on `sync` and `import`; a link to another chapter (`01_value_learning.ipynb`)
stays as it is: it opens the Chinese chapter beside it.
No code cell of the course reads a path relative to its notebook's folder, so the copied code runs from
notebooks/zh/ unchanged.

The checks (`check`, tests/test_zh.py): the cells match the English ones (ids, types, order; code cells
identical, without outputs); every markdown cell is translated (it does not hold the English, above) and its
hash is the English cell's current one; display formulas ($$...$$, outside block quotes: a quoted passage of
the notes may add its own) are identical to the English cell's; every glossary term (assets/glossary.md) in
the English cell has its Chinese term in the translated cell, except the terms and cells listed below;
relative links resolve; the title keeps `# NN `; and 截断 appears only where the English says truncation.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
EN_DIR = ROOT / "notebooks"
ZH_DIR = EN_DIR / "zh"
GLOSSARY = ROOT / "assets" / "glossary.md"
WORK = ROOT / "build" / "zh"
KEY = "rlnotes"

# Glossary terms whose English form is also an everyday word the chapters use in another sense: not checked.
UNCHECKED_TERMS = {
    "return": "also the verb: an exercise 'returns a tensor'",
    "answer": "also the verb: 'the environment answers with a reward'",
}
# (chapter stem, English cell id, English term as in the glossary) -> why that cell may go without the term.
CELL_EXCEPTIONS: dict[tuple[str, str, str], str] = {}
# A Chinese term that must appear only where its English does (one concept per Chinese word).
REVERSE_CHECKED = ("截断",)


# ---------------------------------------------------------------- notebooks and hashes


def source(cell) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def write(nb, path: Path) -> None:
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def chapter_path(name: str, en_dir: Path = EN_DIR) -> Path:
    """notebooks/NN_name.ipynb from '04', '04_trpo', 'notebooks/04_trpo.ipynb' or 'notebooks/zh/04_trpo.ipynb' (only a
    bare number matches by prefix: a stem or path names the notebook of exactly that name)."""
    stem = Path(name).name.removesuffix(".ipynb")
    found = sorted(en_dir.glob(f"{stem}_*.ipynb")) if re.fullmatch(r"\d\d", stem) else [en_dir / f"{stem}.ipynb"]
    found = [p for p in found if p.exists()]
    if len(found) == 1:
        return found[0]
    raise SystemExit(f"no single English chapter matches {name!r} in {en_dir} (found {[p.name for p in found]})")


def chapters(names: list[str], en_dir: Path = EN_DIR) -> list[Path]:
    return [chapter_path(n, en_dir) for n in names] if names else sorted(en_dir.glob("[0-9][0-9]_*.ipynb"))


def record(cell) -> dict:
    return cell.get("metadata", {}).get(KEY, {}) if cell.get("cell_type") == "markdown" else {}


def holds_english(zh_text: str, en_text: str) -> bool:
    """Whether a markdown cell still holds the English cell's text: the same prose (outside code, formulas, link
    targets and HTML tags), and prose with words to translate (an ASCII word of 3+ letters)."""
    prose = plain(en_text).split()
    return plain(zh_text).split() == prose and re.search(r"[A-Za-z]{3}", " ".join(prose)) is not None


def state(zh_cell, en_cell) -> str:
    """'translated', 'stale' or 'missing' for a markdown cell of the Chinese notebook."""
    meta = record(zh_cell) if zh_cell is not None else {}
    if (not meta or meta.get("untranslated") or meta.get("translates") != en_cell.get("id")
            or holds_english(source(zh_cell), source(en_cell))):
        return "missing"
    return "translated" if meta.get("source_sha256") == sha256(source(en_cell)) else "stale"


# ---------------------------------------------------------------- links


LINK = re.compile(r"(\]\(\s*<?|(?:src|href)=\")([^)\s\">]+)")
CHAPTER_LINK = re.compile(r"^\d\d_[\w-]+\.ipynb$")


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target, flags=re.I)


def relink(text: str, en_dir: Path = EN_DIR, zh_dir: Path = ZH_DIR) -> str:
    """Relative links of an English cell made to work from zh_dir (a chapter link stays: the Chinese sibling)."""

    def fix(match):
        target = match.group(2)
        path = target.split("#", 1)[0]
        if not path or not _relative(target) or CHAPTER_LINK.match(path) or (zh_dir / path).exists():
            return match.group(0)
        if (en_dir / path).exists():
            new = Path(os.path.relpath(os.path.abspath(en_dir / path), os.path.abspath(zh_dir))).as_posix()
            return match.group(1) + new + target[len(path):]
        return match.group(0)

    return LINK.sub(fix, text)


def broken_links(text: str, en_dir: Path, zh_dir: Path) -> list[str]:
    broken = []
    for match in LINK.finditer(text):
        target = match.group(2)
        path = target.split("#", 1)[0]
        if not path or not _relative(target):
            continue
        if CHAPTER_LINK.match(path) and ((zh_dir / path).exists() or (en_dir / path).exists()):
            continue  # the Chinese chapter beside it (the English one while it is not translated yet)
        if not (zh_dir / path).exists():
            broken.append(target)
    return broken


# ---------------------------------------------------------------- formulas and the glossary


DISPLAY = re.compile(r"\$\$(.+?)\$\$", flags=re.S)


def display_formulas(text: str) -> list[str]:
    """The $$...$$ formulas outside block quotes (a quoted passage of the notes may bring its own)."""
    unquoted = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))
    return [f.strip() for f in DISPLAY.findall(unquoted)]


@dataclass(frozen=True)
class Term:
    zh: str
    english: tuple[str, ...]  # the forms, the first one canonical
    symbol: str
    chapter: str
    note: str

    @property
    def name(self) -> str:
        return self.english[0]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def glossary(path: Path = GLOSSARY) -> list[Term]:
    """The rows of the table under '## Terms' of assets/glossary.md."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "## Terms")
    header = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    if _cells(lines[header]) != ["中文", "English", "symbol", "chapter", "note"]:
        raise ValueError(f"{path}: the Terms table's header is {lines[header]!r}")
    terms = []
    for number, line in enumerate(lines[header + 2:], start=header + 3):
        if not line.startswith("|"):
            break
        cells = _cells(line)
        if len(cells) != 5:
            raise ValueError(f"{path}:{number}: {len(cells)} columns instead of 5: {line!r}")
        zh, english, symbol, chapter, note = cells
        forms = tuple(f.strip() for f in english.split(",") if f.strip())
        if not zh or not forms:
            raise ValueError(f"{path}:{number}: an empty term: {line!r}")
        terms.append(Term(zh, forms, symbol, chapter, note))
    return terms


_GREEK = [(re.compile(r"\$\\(?:var)?epsilon\$|\\(?:var)?epsilon\b|\bepsilon\b|ϵ", flags=re.I), "ε")]
_DASHES = str.maketrans({c: "-" for c in "‐‑‒–—―－−"})


def plain(markdown: str) -> str:
    """The prose of a markdown cell: code, formulas, link targets and HTML tags removed; ε spelled ε."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    for pattern, repl in _GREEK:
        text = pattern.sub(repl, text)
    text = DISPLAY.sub(" ", text)
    text = re.sub(r"\$[^$]+\$", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"<[^>]+>", " ", text)
    return text.translate(_DASHES)


def _zh_normal(text: str) -> str:
    return re.sub(r"\s+", "", plain(text))


def _form_pattern(form: str) -> str:
    words = [w for w in re.split(r"[\s-]+", form.strip()) if w]
    last = words[-1]
    if re.search(r"[^aeiou]y$", last, flags=re.I):
        last_re = re.escape(last[:-1]) + "(?:y|ies)"
    else:
        last_re = re.escape(last) + "(?:s|es)?"
    return r"(?<![A-Za-z0-9_])" + r"[\s-]*".join([re.escape(w) for w in words[:-1]] + [last_re]) + r"(?![A-Za-z0-9_])"


_PATTERNS: dict[tuple[str, ...], list[tuple[re.Pattern, Term]]] = {}


def _patterns(terms: list[Term]) -> list[tuple[re.Pattern, Term]]:
    key = tuple(f"{t.zh}={t.english}" for t in terms)
    if key not in _PATTERNS:
        forms = [(form, t) for t in terms for form in t.english]
        forms.sort(key=lambda ft: len(ft[0]), reverse=True)  # longest first: "trust region policy ..." hides "trust region"
        _PATTERNS[key] = [(re.compile(_form_pattern(form), flags=re.I), t) for form, t in forms]
    return _PATTERNS[key]


def terms_in(english_markdown: str, terms: list[Term]) -> dict[Term, str]:
    """The glossary terms an English cell uses, each with the form found (longer terms hide the words inside them)."""
    text = plain(english_markdown)
    found: dict[Term, str] = {}
    for pattern, term in _patterns(terms):
        def take(match, term=term):
            found.setdefault(term, match.group(0))
            return " | "
        text = pattern.sub(take, text)
    return found


def glossary_misses(chapter: str, cell_id: str, en_text: str, zh_text: str, terms: list[Term]) -> list[str]:
    """The messages of one translated cell: English terms without their Chinese, 截断 without truncation."""
    misses = []
    zh_plain = _zh_normal(zh_text)
    used = terms_in(en_text, terms)
    for term, form in used.items():
        if term.name in UNCHECKED_TERMS or (chapter, cell_id, term.name) in CELL_EXCEPTIONS:
            continue
        if _zh_normal(term.zh) not in zh_plain:
            misses.append(f"the English says {form!r}: glossary {term.name} = {term.zh}, which the Chinese does not use")
    for word in REVERSE_CHECKED:
        owner = next((t for t in terms if t.zh == word), None)
        if owner is not None and word in zh_plain and owner not in used:
            misses.append(f"the Chinese uses {word} ({owner.name} only), but the English has no {owner.name}: "
                          f"clip is 裁剪, and other cuts are not 截断")
    return misses


# ---------------------------------------------------------------- the check


@dataclass
class Problem:
    chapter: str
    index: int | None
    cell_id: str | None
    kind: str  # structure, code, missing, stale, formula, glossary, link, title
    message: str

    def __str__(self) -> str:
        where = "" if self.index is None else f" cell {self.index} (id {self.cell_id})"
        return f"notebooks/zh/{self.chapter}.ipynb{where}: {self.message}"


def check(en_path: Path, zh_path: Path, terms: list[Term] | None = None) -> list[Problem]:
    """Every way notebooks/zh/<chapter> differs from what its English chapter requires."""
    terms = glossary() if terms is None else terms
    en_nb, zh_nb = read(en_path), read(zh_path)
    en_dir, zh_dir = en_path.parent, zh_path.parent
    chapter, number = en_path.stem, en_path.stem[:2]
    problems: list[Problem] = []

    def add(index, cell_id, kind, message):
        problems.append(Problem(chapter, index, cell_id, kind, message))

    en_cells, zh_cells = en_nb.cells, zh_nb.cells
    en_shape = [(c.get("id"), c.cell_type) for c in en_cells]
    zh_shape = [(c.get("id"), c.cell_type) for c in zh_cells]
    if en_shape != zh_shape:
        first = next((i for i, (a, b) in enumerate(zip(en_shape, zh_shape)) if a != b), min(len(en_shape), len(zh_shape)))
        en_at = en_shape[first] if first < len(en_shape) else "(none)"
        zh_at = zh_shape[first] if first < len(zh_shape) else "(none)"
        add(None, None, "structure", f"its cells are not the English notebook's ({len(zh_cells)} cells against {len(en_cells)}; "
            f"first difference at cell {first}: English {en_at}, Chinese {zh_at}): run `python tools/zh.py sync {number}`")
    zh_by_id = {c.get("id"): c for c in zh_cells}
    for index, en_cell in enumerate(en_cells):
        cell_id = en_cell.get("id")
        zh_cell = zh_by_id.get(cell_id)
        if zh_cell is None or zh_cell.cell_type != en_cell.cell_type:
            continue  # reported as structure
        if en_cell.cell_type != "markdown":
            grade = en_cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            name = f" (nbgrader {grade})" if grade else ""
            if source(zh_cell) != source(en_cell):
                add(index, cell_id, "code", f"this {en_cell.cell_type} cell{name} differs from the English one: "
                    f"code is copied, never translated; run `python tools/zh.py sync {number}`")
            elif zh_cell.get("metadata", {}) != en_cell.get("metadata", {}):
                add(index, cell_id, "code", f"this cell's metadata{name} differs from the English one's "
                    f"(nbgrader's must be identical): run `python tools/zh.py sync {number}`")
            if zh_cell.cell_type == "code" and (zh_cell.get("outputs") or zh_cell.get("execution_count")):
                add(index, cell_id, "code", "carries outputs: the notebooks are committed without them")
            continue
        kind = state(zh_cell, en_cell)
        en_text, zh_text = source(en_cell), source(zh_cell)
        if kind == "missing":
            meta = record(zh_cell)
            if meta.get("untranslated"):
                why = "holds the English text, not translated yet"
            elif not meta.get("translates"):
                why = "does not record which English cell it translates (metadata rlnotes.translates, rlnotes.source_sha256)"
            elif meta["translates"] != cell_id:
                why = f"records that it translates English cell {meta['translates']!r}, not {cell_id!r}"
            else:
                why = "is marked translated but still holds the English text"
            add(index, cell_id, "missing", f"{why}: translate it, then `python tools/zh.py mark {number} {cell_id}`")
        elif kind == "stale":
            add(index, cell_id, "stale", f"the English cell changed after it was translated (recorded sha256 "
                f"{record(zh_cell).get('source_sha256', '')[:12]}…, English now {sha256(en_text)[:12]}…): re-translate it "
                f"(`python tools/zh.py diff {number}` shows what changed), then `python tools/zh.py mark {number} {cell_id}`")
        if kind != "missing":
            if display_formulas(en_text) != display_formulas(zh_text):
                add(index, cell_id, "formula", "its display formulas ($$...$$) are not the English cell's, in the same order: "
                    "formulas are copied, never translated (a quoted passage of the notes goes in a > block quote)")
            if kind == "translated":
                for message in glossary_misses(chapter, cell_id, en_text, zh_text, terms):
                    add(index, cell_id, "glossary", message)
        for target in broken_links(zh_text, en_dir, zh_dir):
            add(index, cell_id, "link", f"the link {target!r} does not resolve from {zh_dir.name}/ "
                f"(`python tools/zh.py sync {number}` rewrites English links)")
    if zh_cells and zh_cells[0].cell_type == "markdown" and not source(zh_cells[0]).startswith(f"# {number} "):
        add(0, zh_cells[0].get("id"), "title", f"the chapter's title must start with '# {number} ' as the English one does")
    return problems


# ---------------------------------------------------------------- sync, mark


@dataclass
class SyncReport:
    kept: int = 0
    stale: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    orphans: list[tuple[str, str, str]] = field(default_factory=list)  # (id, text, why) of the Chinese set aside


def placeholder(en_cell, en_dir: Path, zh_dir: Path):
    cell = copy.deepcopy(en_cell)
    cell.source = relink(source(en_cell), en_dir, zh_dir)
    cell.metadata[KEY] = {"translates": en_cell.get("id"), "source_sha256": sha256(source(en_cell)), "untranslated": True}
    return cell


def typed_into(cell, en_dir: Path, zh_dir: Path) -> bool:
    """Whether an untranslated cell no longer holds the English it was made from (someone typed into it, unmarked)."""
    return sha256(relink(source(cell), zh_dir, en_dir)) != record(cell).get("source_sha256")  # its links made English again


def copied(en_cell):
    cell = copy.deepcopy(en_cell)
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    return cell


def sync(en_path: Path, zh_path: Path, work: Path = WORK) -> SyncReport:
    """Create or update zh_path from en_path (see the module's docstring). Writes zh_path; dropped translations go to
    work/NN_name.orphans.md."""
    import nbformat

    en_nb = read(en_path)
    zh_nb = read(zh_path) if zh_path.exists() else None
    en_dir, zh_dir = en_path.parent, zh_path.parent
    report = SyncReport()

    def set_aside(cell, why):
        if not record(cell).get("untranslated") or typed_into(cell, en_dir, zh_dir):
            report.orphans.append((cell.get("id", "?"), source(cell), why))

    translations = {}
    for cell in zh_nb.cells if zh_nb is not None else []:
        claims = record(cell).get("translates")
        if claims and claims not in translations:
            translations[claims] = cell
        elif claims:
            set_aside(cell, f"a second cell translating English cell {claims} (cell {translations[claims].get('id')} kept)")
        elif cell.cell_type == "markdown":
            set_aside(cell, "a markdown cell that records no English cell")
    cells = []
    for en_cell in en_nb.cells:
        if en_cell.cell_type != "markdown":
            cells.append(copied(en_cell))
            continue
        old = translations.pop(en_cell.get("id"), None)
        if old is None:
            cells.append(placeholder(en_cell, en_dir, zh_dir))
            report.new.append(en_cell.get("id"))
        elif record(old).get("untranslated"):
            set_aside(old, "typed into a cell still marked untranslated, which holds the English again: "
                      "copy it back, then `mark` it")
            cells.append(placeholder(en_cell, en_dir, zh_dir))  # the English text again, as it is now
            report.new.append(en_cell.get("id"))
        else:
            cell = copy.deepcopy(old)
            cell.id = en_cell.get("id")
            meta = dict(record(old))
            cell.metadata = copy.deepcopy({k: v for k, v in en_cell.get("metadata", {}).items() if k != KEY})
            cell.metadata[KEY] = meta
            if "attachments" in en_cell:
                cell.attachments = copy.deepcopy(en_cell.attachments)
            cell.source = relink(source(cell), en_dir, zh_dir)
            cells.append(cell)
            if state(cell, en_cell) == "stale":
                report.stale.append(en_cell.get("id"))
            else:
                report.kept += 1
    for cell in translations.values():
        set_aside(cell, "its English cell no longer exists")
    nb = nbformat.v4.new_notebook()
    nb.nbformat, nb.nbformat_minor = en_nb.nbformat, en_nb.nbformat_minor
    nb.metadata = copy.deepcopy(en_nb.metadata)
    nb.cells = cells
    write(nb, zh_path)
    if report.orphans:
        save_orphans(zh_path, report.orphans, orphans_path(zh_path, work))
    return report


def orphans_path(zh_path: Path, work: Path = WORK) -> Path:
    return work / f"{zh_path.stem}.orphans.md"


def save_orphans(zh_path: Path, orphans: list[tuple[str, str, str]], target: Path | None = None) -> Path:
    target = orphans_path(zh_path) if target is None else target
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as f:
        f.write(f"\n<!-- {datetime.now().isoformat(timespec='seconds')}: Chinese of {zh_path.stem} that sync set aside -->\n")
        for cell_id, text, why in orphans:
            f.write(f"\n@@ orphan · id {cell_id} · {why}\n{text}\n")
    return target


def find_cell(nb, ref: str):
    """A cell of a notebook by id, or by 0-based index."""
    for index, cell in enumerate(nb.cells):
        if cell.get("id") == ref:
            return index, cell
    if ref.isdigit() and int(ref) < len(nb.cells):
        return int(ref), nb.cells[int(ref)]
    raise SystemExit(f"no cell {ref!r} (an id or a 0-based index)")


def mark(en_path: Path, zh_path: Path, refs: list[str], force: bool = False) -> list[str]:
    """Record that the Chinese cells `refs` translate the current English cells. Returns warnings. A cell that still
    holds the English (see holds_english) is refused (exit 2), or marked all the same with `force`."""
    en_nb, zh_nb = read(en_path), read(zh_path)
    en_by_id = {c.get("id"): c for c in en_nb.cells}
    warnings = []
    for ref in refs:
        index, cell = find_cell(zh_nb, ref)
        en_cell = en_by_id.get(cell.get("id"))
        if cell.cell_type != "markdown" or en_cell is None or en_cell.cell_type != "markdown":
            raise SystemExit(f"cell {ref} is not a markdown cell of both notebooks: run sync first")
        if holds_english(source(cell), source(en_cell)):
            if not force:
                fail(f"cell {index} (id {cell.id}) still holds the English text: translate it first (or --force; "
                     "the check names it all the same)")
            warnings.append(f"cell {index} (id {cell.id}) still holds the English text: marked all the same (--force)")
        cell.metadata[KEY] = {"translates": en_cell.id, "source_sha256": sha256(source(en_cell))}
    write(zh_nb, zh_path)
    return warnings


# ---------------------------------------------------------------- the English as it was (git)


def english_then(en_path: Path, cell_id: str, digest: str, commits: int = 200) -> str:
    """The source of English cell `cell_id` whose SHA-256 was `digest`, looked up in git history; LookupError (saying
    why) if not found."""
    import json

    def git(*args, cwd=en_path.parent):
        try:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise LookupError("git is not installed (no `git` on the PATH)") from None

    found = git("rev-parse", "--show-toplevel")
    if found.returncode:
        raise LookupError(f"{en_path.parent} is not in a git repository")
    top = Path(found.stdout.strip())
    relative = en_path.resolve().relative_to(top.resolve()).as_posix()
    log = git("log", f"-n{commits}", "--format=%H", "--", relative, cwd=top).stdout.split()
    if not log:
        raise LookupError(f"{relative} has no commit in git's history")
    for commit in log:
        shown = git("show", f"{commit}:{relative}", cwd=top)
        if shown.returncode:
            continue
        try:
            cells = json.loads(shown.stdout)["cells"]
        except (ValueError, KeyError):
            continue
        for cell in cells:
            if cell.get("id") == cell_id and sha256(source(cell)) == digest:
                return source(cell)
    raise LookupError(f"no version of cell {cell_id} in the last {len(log)} commits of {relative} has the recorded sha256")


def english_diff(en_path: Path, zh_cell, en_cell) -> str:
    try:
        before = english_then(en_path, en_cell.get("id"), record(zh_cell).get("source_sha256", ""))
    except LookupError as e:
        return f"(the English this cell translated is not found: {e}: compare by reading)\n"
    return "".join(difflib.unified_diff(before.splitlines(True), source(en_cell).splitlines(True),
                                        "English when translated", "English now")) + "\n"


def diff(en_path: Path, zh_path: Path) -> str:
    """For each stale cell: the English it translated (from git) against today's."""
    if not zh_path.exists():
        fail(f"no {zh_path.name} in {zh_path.parent}: `python tools/zh.py sync {en_path.stem[:2]}` makes it")
    en_nb, zh_nb = read(en_path), read(zh_path)
    zh_by_id = {c.get("id"): c for c in zh_nb.cells}
    out = []
    for index, en_cell in enumerate(en_nb.cells):
        zh_cell = zh_by_id.get(en_cell.get("id"))
        if en_cell.cell_type == "markdown" and zh_cell is not None and state(zh_cell, en_cell) == "stale":
            out.append(f"=== cell {index} (id {en_cell.get('id')})\n{english_diff(en_path, zh_cell, en_cell)}")
    return "\n".join(out)


# ---------------------------------------------------------------- export, import


HEADER = re.compile(r"^@@ cell (\d+) · id (\S+) · (\w+) · sha256 ([0-9a-f]{64})$")
MARK = re.compile(r"^@@ (en|en-before|zh|end)$|^@@ terms: .*$")


def export_path(zh_path: Path) -> Path:
    return WORK / f"{zh_path.stem}.md"


def export(en_path: Path, zh_path: Path, target: Path, todo_only: bool = False, terms: list[Term] | None = None) -> int:
    """Write the translator's file; returns the number of cells in it."""
    terms = glossary() if terms is None else terms
    if not zh_path.exists():
        sync(en_path, zh_path)
    en_nb, zh_nb = read(en_path), read(zh_path)
    zh_by_id = {c.get("id"): c for c in zh_nb.cells}
    number = en_path.stem[:2]
    out = [f"<!-- rlnotes · the Chinese edition of {en_path.stem} ({en_path.parent.name}/{en_path.name} -> "
           f"{zh_path.parent.parent.name}/{zh_path.parent.name}/{zh_path.name}).\n"
           "     Write each cell's Chinese between '@@ zh' and '@@ end'; nothing else is read back. An empty slot leaves\n"
           f"     the cell as it is. `python tools/zh.py import {number}` puts the Chinese into the notebook and records\n"
           "     the English version shown here (its sha256). Display formulas ($$...$$) are copied unchanged; the\n"
           "     terms line lists the glossary terms of the English cell (assets/glossary.md). -->\n"]
    count = 0
    for index, en_cell in enumerate(en_nb.cells):
        if en_cell.cell_type != "markdown":
            continue
        zh_cell = zh_by_id.get(en_cell.get("id"))
        kind = state(zh_cell, en_cell)
        if todo_only and kind == "translated":
            continue
        en_text = source(en_cell)
        for line in en_text.splitlines() + ([] if zh_cell is None else source(zh_cell).splitlines()):
            if HEADER.match(line) or MARK.match(line):
                raise SystemExit(f"cell {index} has a line {line!r} that the file format uses: export cannot hold it")
        found = [t for t in terms_in(en_text, terms) if t.name not in UNCHECKED_TERMS]
        out.append(f"\n@@ cell {index} · id {en_cell.get('id')} · {kind} · sha256 {sha256(en_text)}")
        if found:
            out.append("@@ terms: " + " · ".join(f"{t.name} → {t.zh}" for t in found))
        out.append("@@ en\n" + en_text)
        if kind == "stale":
            out.append("@@ en-before\n" + english_diff(en_path, zh_cell, en_cell).rstrip("\n"))
        chinese = "" if kind == "missing" or zh_cell is None else source(zh_cell)
        out.append("@@ zh\n" + chinese)
        out.append("@@ end")
        count += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(out) + "\n", encoding="utf-8")
    return count


@dataclass
class Block:
    index: int
    cell_id: str
    kind: str  # the cell's state when exported
    digest: str
    zh: str


def parse_export(text: str) -> list[Block]:
    blocks, current, section, lines = [], None, None, []

    def close():
        if current is not None and section == "zh":
            current.zh = "\n".join(lines).strip("\n")

    for line in text.splitlines():
        header = HEADER.match(line)
        if header:
            close()
            current = Block(int(header.group(1)), header.group(2), header.group(3), header.group(4), "")
            blocks.append(current)
            section, lines = None, []
        elif MARK.match(line):
            close()
            section, lines = (line[3:].split(":")[0].strip() if not line.startswith("@@ terms") else "terms"), []
        elif section is not None:
            lines.append(line)
    close()
    return blocks


def import_(en_path: Path, zh_path: Path, source_file: Path) -> tuple[int, list[str]]:
    """Put the Chinese of an exported file into the notebook; returns (cells changed, warnings). A slot that holds the
    English (see holds_english), or the unchanged Chinese of a stale cell, changes nothing."""
    if not source_file.exists():
        fail(f"no {source_file}: `python tools/zh.py export {en_path.stem[:2]}` writes it")
    if not zh_path.exists():
        sync(en_path, zh_path)
    en_nb, zh_nb = read(en_path), read(zh_path)
    en_by_id = {c.get("id"): c for c in en_nb.cells}
    zh_by_id = {c.get("id"): c for c in zh_nb.cells}
    changed, warnings = 0, []
    for block in parse_export(source_file.read_text(encoding="utf-8")):
        if not block.zh.strip():
            continue
        en_cell, zh_cell = en_by_id.get(block.cell_id), zh_by_id.get(block.cell_id)
        if en_cell is None or zh_cell is None or zh_cell.cell_type != "markdown":
            warnings.append(f"cell id {block.cell_id}: no such markdown cell in both notebooks (run sync): skipped")
            continue
        where = f"cell {block.index} (id {block.cell_id})"
        if holds_english(block.zh, source(en_cell)):
            warnings.append(f"{where}: its slot holds the English, which is no translation: skipped")
            continue
        text = relink(block.zh, en_path.parent, zh_path.parent)
        meta = {"translates": block.cell_id, "source_sha256": block.digest}
        if source(zh_cell) == text and record(zh_cell) == meta:
            continue
        if block.kind == "stale" and text.strip() == source(zh_cell).strip():
            warnings.append(f"{where}: stale, and its Chinese is unchanged: edit it, or `mark` it if it still holds")
            continue
        zh_cell.source = text
        zh_cell.metadata[KEY] = meta
        changed += 1
        if block.digest != sha256(source(en_cell)):
            warnings.append(f"{where}: the English changed after the export: the cell stays stale")
    write(zh_nb, zh_path)
    return changed, warnings


# ---------------------------------------------------------------- status


def counts(en_path: Path, zh_path: Path) -> dict[str, int]:
    en_nb = read(en_path)
    zh_by_id = {c.get("id"): c for c in read(zh_path).cells} if zh_path.exists() else {}
    result = {"translated": 0, "stale": 0, "missing": 0}
    for cell in en_nb.cells:
        if cell.cell_type == "markdown":
            result[state(zh_by_id.get(cell.get("id")), cell)] += 1
    return result


def zh_of(en_path: Path, zh_dir: Path = ZH_DIR) -> Path:
    return zh_dir / en_path.name


def check_chapters(names: list[str], en_dir: Path = EN_DIR, zh_dir: Path = ZH_DIR,
                   terms: list[Term] | None = None) -> tuple[list[Problem], int]:
    """(problems, chapters checked) of the named chapters, or of every Chinese notebook: a named chapter without its
    Chinese notebook is a problem, and so is a Chinese notebook without the English one of exactly its name."""
    problems, terms = [], glossary() if terms is None else terms
    pairs = [(en, zh_of(en, zh_dir)) for en in chapters(names, en_dir)] if names else [
        (en_dir / zh.name, zh) for zh in sorted(zh_dir.glob("*.ipynb"))]
    for en_path, zh_path in pairs:
        number = en_path.stem[:2]
        if not zh_path.exists():
            problems.append(Problem(en_path.stem, None, None, "structure",
                                    f"does not exist: `python tools/zh.py sync {number}` makes it"))
        elif not en_path.exists():
            problems.append(Problem(en_path.stem, None, None, "structure",
                                    f"translates no English chapter: there is no {en_dir.name}/{en_path.name}"))
        else:
            problems += check(en_path, zh_path, terms)
    return problems, len(pairs)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("sync", help="create or update the Chinese notebooks from the English ones")
    p.add_argument("chapters", nargs="*")
    p.add_argument("--all", action="store_true", help="every chapter")
    p = commands.add_parser("status", help="per chapter: markdown cells translated / stale / missing")
    p.add_argument("chapters", nargs="*")
    p = commands.add_parser("check", help="what tests/test_zh.py checks; exit 1 on a problem")
    p.add_argument("chapters", nargs="*")
    p = commands.add_parser("export", help="the translator's file: build/zh/NN_name.md")
    p.add_argument("chapter")
    p.add_argument("--out", type=Path, help="another file than build/zh/NN_name.md")
    p.add_argument("--todo", action="store_true", help="only the stale and missing cells")
    p = commands.add_parser("import", help="the Chinese of the translator's file back into the notebook")
    p.add_argument("chapter")
    p.add_argument("--from", dest="source", type=Path, help="another file than build/zh/NN_name.md")
    p = commands.add_parser("mark", help="record that these Chinese cells translate the current English cells")
    p.add_argument("chapter")
    p.add_argument("cells", nargs="+", help="cell ids or 0-based indices")
    p.add_argument("--force", action="store_true", help="mark a cell that still holds the English text all the same")
    p = commands.add_parser("diff", help="for each stale cell, the English it translated against today's")
    p.add_argument("chapter")
    args = parser.parse_args(argv)

    if args.command == "sync":
        if not args.chapters and not args.all:
            parser.error("sync: name chapters, or --all")
        for en_path in chapters(args.chapters):
            report = sync(en_path, zh_of(en_path))
            print(f"{en_path.stem}: {report.kept} translations kept, {len(report.stale)} stale {report.stale or ''}, "
                  f"{len(report.new)} to translate")
            if report.orphans:
                print(f"  {len(report.orphans)} Chinese cells set aside in {orphans_path(zh_of(en_path)).relative_to(ROOT)}:")
                for cell_id, _, why in report.orphans:
                    print(f"    id {cell_id}: {why}")
        return 0
    if args.command == "status":
        print(f"{'chapter':22} {'translated':>10} {'stale':>6} {'missing':>8}  problems")
        for en_path in chapters(args.chapters):
            zh_path = zh_of(en_path)
            c = counts(en_path, zh_path)
            if not zh_path.exists():
                note = "not started (python tools/zh.py sync " + en_path.stem[:2] + ")"
            else:
                kinds: dict[str, int] = {}
                for problem in check(en_path, zh_path):
                    kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
                note = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none"
            print(f"{en_path.stem:22} {c['translated']:>10} {c['stale']:>6} {c['missing']:>8}  {note}")
        return 0
    if args.command == "check":
        problems, n = check_chapters(args.chapters)
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problems in {n} chapters")
        return 1 if problems else 0

    en_path = chapter_path(args.chapter)
    zh_path = zh_of(en_path)
    if args.command == "export":
        target = args.out or export_path(zh_path)
        n = export(en_path, zh_path, target, todo_only=args.todo)
        print(f"{n} cells in {target}")
    elif args.command == "import":
        source_file = args.source or export_path(zh_path)
        changed, warnings = import_(en_path, zh_path, source_file)
        print(f"{changed} cells translated into {zh_path.relative_to(ROOT) if zh_path.is_relative_to(ROOT) else zh_path}")
        for warning in warnings:
            print(warning)
    elif args.command == "mark":
        for warning in mark(en_path, zh_path, args.cells, force=args.force):
            print(warning)
    elif args.command == "diff":
        print(diff(en_path, zh_path) or "no stale cell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
