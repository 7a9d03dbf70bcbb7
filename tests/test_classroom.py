"""The classroom as a teacher and three students live it, through nbgrader's own commands.

`make assignments` (python -m rlnotes.assignments) lays out the course and releases every chapter with
exercises; each release is checked to carry nothing of a solution or a hidden test (every chapter,
07_grpo and 08_rlhf included as soon as they exist). Then one chapter goes through a whole term:

    teacher   nbgrader release_assignment        (into the course's exchange folder)
    students  nbgrader fetch_assignment, edit, nbgrader submit --student <id>
    teacher   nbgrader collect, nbgrader autograde, nbgrader generate_feedback, nbgrader export

ada submits the solutions (full marks), ben a plausible mistake in one exercise (that exercise 0, the
others full), cy the untouched release (0), dee answers every exercise that the package answers by calling
the package's own function (0 on each: the hidden tests switch it off, `rlnotes.grading.shortcuts_refused`,
although dee's answers pass the visible tests) and the predict-then-run question as ada does (its point).
Marks are read from nbgrader's gradebook (its Gradebook API) and from
`nbgrader export`'s CSV; ben's feedback page names the test he failed, dee's says why the shortcut failed.

The Chinese edition is released beside the English one (zh_NN_name, once a chapter is translated in part) and
checked the same way; one Chinese chapter goes through a term of its own, the first of ZH_PLAY_ORDER (cheapest
first) that is released: ada submits the solutions (full marks), cy the untouched release (0), and ada's
feedback page is the Chinese text.

Autograde executes whole notebooks (fast mode, RLNOTES_FAST=1): the class plays the cheapest chapter in
fast mode, 04_trpo (about 12 s of CPU a run, against 14 s for 02 and 28 s for 03), four runs in all.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlnotes import assignments

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = "04_trpo"
# ben's conjugate gradient forgets the conjugation: each new direction is the residual alone, which is
# steepest descent with an exact line search (it runs, and it is wrong after the first iteration).
WRONG_EXERCISE = "conjugate_gradient"
WRONG_SOURCE = '''def my_conjugate_gradient(matrix_vector_product, b, iterations):
    x_k = torch.zeros_like(b)
    r_k = b.clone()
    p_k = b.clone()
    for _ in range(iterations):
        A_p = matrix_vector_product(p_k)
        step_k = (r_k @ r_k) / (p_k @ A_p)
        x_k = x_k + step_k * p_k
        r_k = r_k - step_k * A_p
        if r_k @ r_k < 1e-10:
            break
        p_k = r_k
    return x_k
'''
# dee answers with the package: the Fisher-vector product through the notebook's `trpo` module, conjugate
# gradient through an alias imported in the cell. Both give the package's numbers, so only a hidden test that
# switches the package's function off can tell dee from ada.
SHORTCUT_SOURCES = {
    "fisher_vector_product": '''def my_fisher_vector_product(kl, params, v):
    return trpo.fisher_vector_product(kl, params)(v)
''',
    "conjugate_gradient": '''from rlnotes.algos.trpo import conjugate_gradient as package_cg


def my_conjugate_gradient(matrix_vector_product, b, iterations):
    return package_cg(matrix_vector_product, b, iterations=iterations)
''',
    "line_search": '''def my_line_search(measure, theta_old, full_step, max_kl, backtrack_ratio=0.8, max_backtracks=10):
    theta, _ = trpo.line_search(measure, theta_old, full_step, max_kl, backtrack_ratio, max_backtracks)
    return theta
''',
}
REFUSED = ("rlnotes.algos.trpo.fisher_vector_product", "rlnotes.algos.trpo.conjugate_gradient",
           "rlnotes.algos.trpo.line_search")
SHORTCUT_TESTS = ("test_fisher_vector_product", "test_conjugate_gradient", "test_line_search")
PREDICTION = "test_predict_scaled_advantages"  # a prediction: no package function answers it
STUDENTS = ("ada", "ben", "cy", "dee")


def _chapters_with_exercises() -> list[Path]:
    """Every notebooks/*.ipynb with an nbgrader cell, found here independently of rlnotes.assignments."""
    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if any("nbgrader" in cell.get("metadata", {}) for cell in json.loads(path.read_text())["cells"]):
            found.append(path)
    return found


CHAPTERS = _chapters_with_exercises()


def _chinese_chapters_with_exercises() -> list[Path]:
    """Every notebooks/zh/*.ipynb with an nbgrader cell and a Markdown cell translated (the cell's metadata
    "rlnotes" names the English cell it translates, and is not "untranslated"): what is released as zh_NN_name."""
    found = []
    for path in sorted((ROOT / "notebooks" / "zh").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        records = [c.get("metadata", {}).get("rlnotes", {}) for c in cells if c["cell_type"] == "markdown"]
        if any("nbgrader" in c.get("metadata", {}) for c in cells) and any(
                r.get("translates") and not r.get("untranslated") for r in records):
            found.append(path)
    return found


ZH_CHAPTERS = _chinese_chapters_with_exercises()


def _name(path: Path) -> str:
    """The assignment: the chapter's stem, zh_<stem> for a Chinese chapter."""
    return path.stem if path.parent.name == "notebooks" else f"{path.parent.name}_{path.stem}"


def _cells(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _grade_id(cell: dict):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


BLOCKS = (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"),
          ("=== BEGIN MARK SCHEME ===", "=== END MARK SCHEME ==="))


def _secret_and_public_lines(path: Path) -> tuple[set[str], set[str]]:
    """Lines (stripped) inside solution, hidden-test and mark-scheme blocks, and the lines outside them."""
    secret, public = set(), set()
    for cell in _cells(path):
        rest = _source(cell)
        for begin, end in BLOCKS:
            for block in re.findall(re.escape(begin) + r"(.*?)" + re.escape(end), rest, flags=re.S):
                secret |= {line.strip() for line in block.splitlines() if line.strip()}
            rest = re.sub(re.escape(begin) + r".*?" + re.escape(end), "", rest, flags=re.S)
        public |= {line.strip() for line in rest.splitlines() if line.strip()}
    return secret, public


TIMES: list[tuple[str, float]] = []  # (nbgrader command, wall seconds): printed by pytest -s


def _run(args, cwd) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    try:
        return assignments.nbgrader(args, cwd=cwd)
    finally:
        TIMES.append((args[0], time.perf_counter() - start))
        print(f"nbgrader {args[0]}: {TIMES[-1][1]:.1f} s", flush=True)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """What `make assignments` builds (its recipe, with a temporary folder): every chapter released."""
    root = tmp_path_factory.mktemp("course")
    done = subprocess.run([sys.executable, "-m", "rlnotes.assignments", str(root)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_make_assignments_runs_the_course_builder():
    recipe = re.search(r"^assignments:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe and "-m rlnotes.assignments" in recipe.group(1)


def test_every_chapter_with_exercises_is_released(course):
    assert any(p.stem == "00_notation" for p in CHAPTERS)
    released = sorted(p.name for p in (course / "release").iterdir())
    assert released == sorted(_name(p) for p in CHAPTERS + ZH_CHAPTERS)
    for path in CHAPTERS + ZH_CHAPTERS:
        assert sorted(p.name for p in (course / "release" / _name(path)).iterdir()) == [f"{_name(path)}.ipynb"]


@pytest.mark.parametrize("chapter", CHAPTERS + ZH_CHAPTERS, ids=_name)
def test_release_carries_no_solution_and_no_hidden_test(course, chapter):
    name = _name(chapter)
    release = course / "release" / name / f"{name}.ipynb"
    chapter = course / "source" / name / f"{name}.ipynb"  # the instructor version it was built from
    cells = _cells(release)
    text = "\n".join(_source(c) for c in cells)
    for begin, end in BLOCKS:
        assert begin not in text and end not in text
    secret, public = _secret_and_public_lines(chapter)
    assert secret, f"{chapter.name} has exercises but no solution or hidden-test lines"
    # A secret line may legitimately appear in the release only where the instructor's notebook also
    # shows it outside the blocks (a `return out` in an example, say).
    leaked = sorted(line for line in secret - public if line in {row.strip() for row in text.splitlines()})
    assert not leaked, f"{chapter.name}: release shows solution or hidden-test lines: {leaked[:5]}"
    assert not any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code")

    # The exercises are still there as stubs, and every graded test cell is there, hidden part removed.
    source = {_grade_id(c): c for c in _cells(chapter) if _grade_id(c)}
    shipped = {_grade_id(c): c for c in cells if _grade_id(c)}
    assert shipped.keys() == source.keys()
    for grade_id, cell in source.items():
        meta = cell["metadata"]["nbgrader"]
        if meta.get("solution") and cell["cell_type"] == "code":
            assert "raise NotImplementedError()" in _source(shipped[grade_id])
        if meta.get("grade") and not meta.get("solution"):
            visible = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", "", _source(cell), flags=re.S)
            assert _source(shipped[grade_id]).strip() == visible.strip()


def _solved(release: Path, instructor: Path, wrong: dict[str, str]) -> dict:
    """The release with each exercise answered as the instructor did (markers dropped), or by `wrong`."""
    nb = json.loads(release.read_text())
    answers = {_grade_id(c): _source(c) for c in _cells(instructor) if _grade_id(c)}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and cell["cell_type"] == "code":
            markers = ("### BEGIN SOLUTION", "### END SOLUTION")
            cell["source"] = wrong.get(meta["grade_id"]) or "\n".join(
                line for line in answers[meta["grade_id"]].splitlines() if line.strip() not in markers)
    return nb


@pytest.fixture(scope="module")
def term(course, tmp_path_factory):
    """One chapter through a term: release, four students fetch and submit, collect, autograde, feedback."""
    exchange = course / "exchange"
    _run(["release_assignment", CHAPTER], cwd=course)
    assert (exchange / assignments.COURSE_ID / "outbound" / CHAPTER / f"{CHAPTER}.ipynb").exists()

    instructor = course / "source" / CHAPTER / f"{CHAPTER}.ipynb"
    work = {"ada": {}, "ben": {WRONG_EXERCISE: WRONG_SOURCE}, "cy": None, "dee": SHORTCUT_SOURCES}
    for student in STUDENTS:
        home = tmp_path_factory.mktemp(f"home_{student}")  # outside the course: no instructor config there
        student_args = [f"--course={assignments.COURSE_ID}", f"--Exchange.root={exchange}"]
        _run(["fetch_assignment", CHAPTER, *student_args], cwd=home)
        mine = home / CHAPTER / f"{CHAPTER}.ipynb"
        assert mine.exists()
        if work[student] is not None:
            mine.write_text(json.dumps(_solved(mine, instructor, work[student]), indent=1))
        _run(["submit", CHAPTER, f"--student={student}", *student_args], cwd=home)

    _run(["collect", CHAPTER], cwd=course)
    for student in STUDENTS:
        assert (course / "submitted" / student / CHAPTER / f"{CHAPTER}.ipynb").exists()
    graded = _run(["autograde", CHAPTER], cwd=course)
    _run(["generate_feedback", CHAPTER], cwd=course)
    exported = course / "grades.csv"
    _run(["export", f"--to={exported}"], cwd=course)
    return {"root": course, "autograde": graded, "csv": exported}


def _marks(root: Path) -> dict:
    from nbgrader.api import Gradebook

    marks = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for student in STUDENTS:
            submission = gb.find_submission_notebook(CHAPTER, CHAPTER, student)
            marks[student] = {
                "total": (submission.score, submission.max_score),
                "tests": {g.name: g.score for g in submission.grades},
            }
    return marks


def test_marks_in_the_gradebook(term):
    marks = _marks(term["root"])
    tests = {*SHORTCUT_TESTS, PREDICTION}  # one point each
    assert marks["ada"]["total"] == (4.0, 4.0), marks["ada"]
    assert marks["ada"]["tests"] == dict.fromkeys(tests, 1.0)
    assert marks["ben"]["total"] == (3.0, 4.0), marks["ben"]
    assert marks["ben"]["tests"] == {**dict.fromkeys(tests, 1.0), "test_conjugate_gradient": 0.0}
    assert marks["cy"]["total"] == (0.0, 4.0), marks["cy"]
    assert marks["cy"]["tests"] == dict.fromkeys(tests, 0.0)
    assert marks["dee"]["total"] == (1.0, 4.0), marks["dee"]
    assert marks["dee"]["tests"] == {**dict.fromkeys(SHORTCUT_TESTS, 0.0), PREDICTION: 1.0}


def test_marks_in_nbgrader_export(term):
    rows = {row["student_id"]: row for row in csv.DictReader(term["csv"].open()) if row["assignment"] == CHAPTER}
    scores = {s: (float(rows[s]["score"]), float(rows[s]["max_score"])) for s in STUDENTS}
    assert scores == {"ada": (4.0, 4.0), "ben": (3.0, 4.0), "cy": (0.0, 4.0), "dee": (1.0, 4.0)}


def _feedback(root: Path, student: str) -> str:
    path = root / "feedback" / student / CHAPTER / f"{CHAPTER}.html"
    assert path.exists(), f"no feedback for {student}"
    return path.read_text()


def test_feedback_names_the_failed_test(term):
    ben = _feedback(term["root"], "ben")
    assert "Score: 3.0 / 4.0" in ben
    # nbgrader's feedback page lists every graded cell with its points; ben's failed one with 0 and its error.
    assert re.search(r"test_conjugate_gradient.{0,300}?\(Score: 0\.0 / 1\.0\)", ben, flags=re.S), "the failed test is not named"
    assert "AssertionError" in ben and "Traceback (most recent call last)" in ben
    ada = _feedback(term["root"], "ada")
    assert "Score: 4.0 / 4.0" in ada and "Traceback (most recent call last)" not in ada
    cy = _feedback(term["root"], "cy")
    assert "Score: 0.0 / 4.0" in cy and "NotImplementedError" in cy


def test_feedback_says_why_the_package_shortcut_failed(term):
    """dee called the package: each such exercise 0, and the feedback names the refusal and the function refused."""
    dee = _feedback(term["root"], "dee")
    assert "Score: 1.0 / 4.0" in dee
    text = re.sub(r"<[^>]+>", "", dee)  # the traceback is coloured with <span>s
    for grade_id, refused in zip(SHORTCUT_TESTS, REFUSED):
        assert re.search(grade_id + r".{0,300}?\(Score: 0\.0 / 1\.0\)", dee, flags=re.S), f"{grade_id} is not named"
        assert "ShortcutRefused: this exercise asks you to write" in text and f"{refused} is switched off" in text, \
            f"dee's feedback does not say that {refused} was refused"
    assert "NotImplementedError" not in dee and "AssertionError" not in text, "dee's answers fail for the refusal only"


def test_solutions_and_hidden_tests_stay_with_the_teacher(term):
    """What the students got from the exchange is the checked release: the exchange holds no solution."""
    root = term["root"]
    outbound = root / "exchange" / assignments.COURSE_ID / "outbound" / CHAPTER / f"{CHAPTER}.ipynb"
    assert outbound.read_text() == (root / "release" / CHAPTER / f"{CHAPTER}.ipynb").read_text()


# ---------------------------------------------------------------- a Chinese chapter through a term

# The Chinese chapter the class plays: the first of these that is released (cheapest in fast mode first; 04 is
# the English term's chapter, about 11 s of CPU an autograde run).
ZH_PLAY_ORDER = ("04_trpo", "00_notation", "02_policy_gradient", "01_value_learning", "03_actor_critic", "05_ppo",
                 "06_dpo", "07_grpo", "08_rlhf")
ZH_STUDENTS = ("ada", "cy")


def _zh_chapter() -> Path | None:
    released = {p.stem: p for p in ZH_CHAPTERS}
    return next((released[stem] for stem in ZH_PLAY_ORDER if stem in released), None)


@pytest.fixture(scope="module")
def zh_term(course, tmp_path_factory):
    """The Chinese chapter through a term: release, ada (the solutions) and cy (the untouched release) fetch
    and submit, collect, autograde, feedback."""
    chapter = _zh_chapter()
    assert chapter is not None, f"no Chinese chapter with exercises is released: {[p.name for p in ZH_CHAPTERS]}"
    name, exchange = _name(chapter), course / "exchange"
    _run(["release_assignment", name], cwd=course)
    assert (exchange / assignments.COURSE_ID / "outbound" / name / f"{name}.ipynb").exists()
    instructor = course / "source" / name / f"{name}.ipynb"
    for student in ZH_STUDENTS:
        home = tmp_path_factory.mktemp(f"home_{student}_zh")
        student_args = [f"--course={assignments.COURSE_ID}", f"--Exchange.root={exchange}"]
        _run(["fetch_assignment", name, *student_args], cwd=home)
        mine = home / name / f"{name}.ipynb"
        assert mine.exists()
        if student == "ada":
            mine.write_text(json.dumps(_solved(mine, instructor, {}), indent=1, ensure_ascii=False))
        _run(["submit", name, f"--student={student}", *student_args], cwd=home)
    _run(["collect", name], cwd=course)
    _run(["autograde", name], cwd=course)
    _run(["generate_feedback", name], cwd=course)
    points = {_grade_id(c): float(c["metadata"]["nbgrader"]["points"]) for c in _cells(instructor)
              if c.get("metadata", {}).get("nbgrader", {}).get("grade")}
    return {"root": course, "name": name, "points": points}


def test_a_chinese_chapter_through_a_term(zh_term):
    """ada's solutions: every test full marks; cy's untouched release: 0; ada's feedback is the Chinese text."""
    from nbgrader.api import Gradebook

    name, points = zh_term["name"], zh_term["points"]
    assert points and name.startswith("zh_")
    with Gradebook(f"sqlite:///{zh_term['root'] / 'gradebook.db'}") as gb:
        marks = {student: gb.find_submission_notebook(name, name, student) for student in ZH_STUDENTS}
        ada = {g.name: g.score for g in marks["ada"].grades}
        totals = {student: (m.score, m.max_score) for student, m in marks.items()}
        cy = {g.name: g.score for g in marks["cy"].grades}
    full = sum(points.values())
    assert totals == {"ada": (full, full), "cy": (0.0, full)}, totals
    assert ada == points and cy == dict.fromkeys(points, 0.0), (ada, cy)
    feedback = {s: (zh_term["root"] / "feedback" / s / name / f"{name}.html").read_text() for s in ZH_STUDENTS}
    assert f"Score: {full} / {full}" in feedback["ada"] and "Traceback (most recent call last)" not in feedback["ada"]
    assert f"Score: 0.0 / {full}" in feedback["cy"] and "NotImplementedError" in feedback["cy"]
    chinese = re.findall(r"[\u4e00-\u9fff]", re.sub(r"<[^>]+>", "", feedback["ada"]))
    assert len(chinese) > 200, f"{name}: ada's feedback page is not the Chinese chapter ({len(chinese)} Chinese characters)"
    print(f"{name}: ada {totals['ada']}, cy {totals['cy']}; feedback with {len(chinese)} Chinese characters")
