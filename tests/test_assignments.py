"""The classroom round trip: nbgrader's student release of every notebook with exercises, in both editions.

The student release must fail every graded test (its stubs raise NotImplementedError), checked with
`nbgrader validate --invert` on the release up to its last graded cell, and must not leak solutions or
hidden tests. The Chinese chapters (notebooks/zh/, released as zh_NN_name once translated in part) are
checked as the English ones are (that their exercises are the English ones is tests/test_zh.py's code
identity). That the instructor version passes its own graded tests is checked on the one fast-mode execution
of each notebook, in tests/test_notebooks.py (a second execution by `nbgrader validate` would only repeat it).
"""

import json
import re

import pytest

from rlnotes import assignments

NOTEBOOKS = assignments.course_notebooks()  # the English chapters with exercises, then the Chinese ones
CHINESE = [path for path in NOTEBOOKS if assignments.assignment_name(path).startswith("zh_")]


def _solution_lines(notebook_path):
    """The code lines between BEGIN/END SOLUTION and BEGIN/END HIDDEN TESTS markers of a notebook."""
    hidden = []
    for cell in json.loads(notebook_path.read_text())["cells"]:
        source = "".join(cell["source"])
        for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")):
            for block in re.findall(re.escape(begin) + r"(.*?)" + re.escape(end), source, flags=re.S):
                hidden += [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    return hidden


def test_there_are_assignments():
    assert any(path.stem == "00_notation" for path in NOTEBOOKS)
    assert all(assignments.assignment_name(path) == f"zh_{path.stem}" for path in CHINESE)
    assert CHINESE, "no Chinese chapter with exercises is released (notebooks/zh/, translated in part)"


# One nbgrader course folder a notebook, built on first use: each notebook's round trip stands alone.
_RELEASES = {}


def _release(notebook, tmp_path_factory):
    name = assignments.assignment_name(notebook)
    if name not in _RELEASES:
        root = tmp_path_factory.mktemp(f"nbgrader_{name}")
        assert assignments.build_course(root, [notebook]) == [name]
        _RELEASES[name] = (root, assignments.generate(root, name))
    return _RELEASES[name]


PER_NOTEBOOK = [pytest.param(path, id=assignments.assignment_name(path)) for path in NOTEBOOKS]
# A Chinese release executes the English chapter's code cells, byte for byte (tests/test_zh.py), so validating
# every one would run each chapter's exercises twice: the release of the Chinese chapter that `make test`
# executes (notebooks/conftest.py) is validated, the others are checked for leaks only.
EXECUTED_CHINESE = [path for path in CHINESE if path.stem == "04_trpo"] or CHINESE[:1]
TO_VALIDATE = [param for param in PER_NOTEBOOK if param.values[0] not in CHINESE or param.values[0] in EXECUTED_CHINESE]


def _up_to_last_graded_cell(release):
    """A copy of the release without the cells after its last graded one (training runs, figures): they
    hold no test, and `validate --invert` would spend most of its time executing them."""
    nb = json.loads(release.read_text())
    graded = [i for i, c in enumerate(nb["cells"]) if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    assert graded, f"{release.name}: no graded cell"
    nb["cells"] = nb["cells"][: graded[-1] + 1]
    copy = release.with_name(release.stem + ".graded.ipynb")
    copy.write_text(json.dumps(nb))
    return copy


@pytest.mark.parametrize("notebook", TO_VALIDATE)
def test_student_release_fails_every_test(notebook, tmp_path_factory):
    _, release = _release(notebook, tmp_path_factory)
    result = assignments.validate(_up_to_last_graded_cell(release), invert=True)
    assert "Success! The notebook does not pass any tests." in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("notebook", PER_NOTEBOOK)
def test_student_release_leaks_no_solution_or_hidden_test(notebook, tmp_path_factory):
    _, release = _release(notebook, tmp_path_factory)
    release_text = "".join("".join(c["source"]) + "\n" for c in json.loads(release.read_text())["cells"])
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in release_text
    secret = _solution_lines(notebook)
    assert secret, "the notebook should have solution and hidden-test lines"
    leaked = [line for line in secret if line in release_text]
    assert not leaked, f"solution or hidden-test lines left in the release: {leaked[:3]}"
    assert "raise NotImplementedError()" in release_text


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=assignments.assignment_name)
def test_exercises_have_solutions_and_graded_tests(notebook):
    cells = [c for c in json.loads(notebook.read_text())["cells"] if "nbgrader" in c.get("metadata", {})]
    solutions = [c for c in cells if c["metadata"]["nbgrader"].get("solution")]
    graded = [c for c in cells if c["metadata"]["nbgrader"].get("grade")]
    ids = [c["metadata"]["nbgrader"]["grade_id"] for c in cells]
    assert len(solutions) >= 2 and len(graded) >= 2, "at least two exercises a notebook"
    assert len(ids) == len(set(ids)), "grade_id must be unique"
