"""The classroom round trip with nbgrader: course folder, student release, validation.

    python -m rlnotes.assignments build/nbgrader      (what `make assignments` runs)

Every notebook in notebooks/ that has nbgrader cells becomes an assignment of the same name:
    build/nbgrader/source/<name>/<name>.ipynb     the instructor version (the notebook as committed)
    build/nbgrader/release/<name>/<name>.ipynb    the student version: solutions replaced by stubs,
                                                  hidden tests removed
    build/nbgrader/nbgrader_config.py             course id `rlnotes`, the exchange folder, the longer
                                                  cell timeout that autograde needs
The Chinese edition (notebooks/zh/NN_name.ipynb, issue 26) is released beside it, each chapter as the assignment
zh_NN_name (build/nbgrader/release/zh_NN_name/zh_NN_name.ipynb): its own name, so that one course, one exchange
and one gradebook hold both editions, and a class fetches `zh_04_trpo` as it fetches `04_trpo`. A Chinese chapter
is released once one of its Markdown cells is translated (tools/zh.py records it in the cell's metadata); its code
cells, the exercises and their tests with them, are the English chapter's (tests/test_zh.py).
From there on it is nbgrader's own commands, run inside build/nbgrader (README, "For teachers"):
`nbgrader release_assignment <name>` puts the release in the exchange (build/nbgrader/exchange by
default, `--exchange /srv/nbgrader/exchange` for a shared machine), students `nbgrader fetch_assignment`
and `nbgrader submit`, then `nbgrader collect`, `nbgrader autograde`, `nbgrader generate_feedback` and
`nbgrader export`. Without an exchange, submitted copies go to submitted/<student>/<name>/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["COURSE_ID", "assignment_notebooks", "translated_notebooks", "course_notebooks", "assignment_name",
           "build_course", "generate", "generate_all", "validate", "nbgrader", "main"]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TRANSLATIONS = ("zh",)  # notebooks/<lang>/: the editions in other languages, released as <lang>_NN_name
COURSE_ID = "rlnotes"

# nbgrader executes whole notebooks: training cells need more than its 30 s default, and fast mode.
CONFIG = """\
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = {course_id!r}
c.Exchange.root = {exchange!r}
c.Execute.timeout = 900
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
"""


def assignment_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks that contain at least one nbgrader cell."""
    found = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        if any("nbgrader" in cell.get("metadata", {}) for cell in cells):
            found.append(path)
    return found


def _translated_in_part(path: Path) -> bool:
    """A translation with at least one Markdown cell translated: tools/zh.py's record in the cell's metadata,
    {"rlnotes": {"translates": <English cell id>, ...}}, without "untranslated": true."""
    for cell in json.loads(Path(path).read_text())["cells"]:
        record = cell.get("metadata", {}).get("rlnotes", {}) if cell["cell_type"] == "markdown" else {}
        if record.get("translates") and not record.get("untranslated"):
            return True
    return False


def translated_notebooks(lang: str = "zh") -> list[Path]:
    """The chapters of the edition notebooks/<lang>/ with exercises, each translated in part at least."""
    return [p for p in assignment_notebooks(NOTEBOOKS / lang) if _translated_in_part(p)]


def course_notebooks() -> list[Path]:
    """What `make assignments` releases: the English chapters with exercises, then those of each translation."""
    return assignment_notebooks() + [p for lang in TRANSLATIONS for p in translated_notebooks(lang)]


def assignment_name(path: Path) -> str:
    """The assignment of a chapter: its stem (04_trpo), or for a translation <lang>_<stem> (zh_04_trpo)."""
    path = Path(path).resolve()
    return path.stem if path.parent == NOTEBOOKS else f"{path.parent.name}_{path.stem}"


def nbgrader(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`nbgrader <args>` run in `cwd` with this interpreter, in fast mode (RLNOTES_FAST=1): what autograde
    and validate execute. Raises RuntimeError with nbgrader's output when it fails and `check` is set."""
    env = dict(os.environ, RLNOTES_FAST="1", MPLBACKEND="Agg")
    # The first generate_assignment runs `alembic` from PATH: put this interpreter's bin first.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def build_course(root: Path, notebooks: list[Path] | None = None, exchange: Path | None = None) -> list[str]:
    """Lay out an nbgrader course folder under `root` with one assignment a notebook (named by assignment_name,
    source/<name>/<name>.ipynb; default: course_notebooks()); return the names.

    exchange: nbgrader's exchange folder for release_assignment / fetch_assignment / submit / collect
    (default `root`/exchange; nbgrader's own default, for several users of one machine, is /srv/nbgrader/exchange).
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    exchange = Path(exchange).resolve() if exchange is not None else root / "exchange"
    (root / "nbgrader_config.py").write_text(CONFIG.format(root=str(root), course_id=COURSE_ID, exchange=str(exchange)))
    names = []
    for path in notebooks if notebooks is not None else course_notebooks():
        name = assignment_name(path)
        target = root / "source" / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / f"{name}.ipynb")
        names.append(name)
    return names


def generate(root: Path, name: str) -> Path:
    """nbgrader generate_assignment: returns the student release notebook."""
    root = Path(root).resolve()
    nbgrader(["generate_assignment", name, "--force"], cwd=root)
    return root / "release" / name / f"{name}.ipynb"


def generate_all(root: Path, names: list[str]) -> list[Path]:
    """generate_assignment for every name, through nbgrader's Python API (NbGraderAPI) in this process: the
    same converter as `nbgrader generate_assignment`, without paying nbgrader's start-up once an assignment.
    Reads the course's nbgrader_config.py; returns the student release notebooks."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    root = Path(root).resolve()
    # Creating the gradebook runs `alembic` from PATH: put this interpreter's bin first.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    api = NbGraderAPI(config=PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config())
    releases = []
    for name in names:
        result = api.generate_assignment(name, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{result.get('log', '')}\n{result.get('error', '')}")
        releases.append(root / "release" / name / f"{name}.ipynb")
    return releases


def validate(notebook: Path, invert: bool = False) -> subprocess.CompletedProcess:
    """nbgrader validate (or validate --invert); the result's stdout holds nbgrader's verdict."""
    notebook = Path(notebook).resolve()
    # Run inside the course folder, so nbgrader reads its config (the longer cell timeout).
    course = next((p for p in notebook.parents if (p / "nbgrader_config.py").exists()), notebook.parent)
    args = ["validate", str(notebook)] + (["--invert"] if invert else [])
    return nbgrader(args, cwd=course, check=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="nbgrader student release of every notebook with exercises (both editions)")
    parser.add_argument("root", nargs="?", default="build/nbgrader", help="the course folder (default build/nbgrader)")
    parser.add_argument("--exchange", default=None, help="nbgrader's exchange folder (default ROOT/exchange)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    root = Path(args.root)
    names = build_course(root, exchange=args.exchange)
    for name, release in zip(names, generate_all(root, names)):
        print(f"{name}: student release at {release}")
    print(f"course {COURSE_ID!r} in {root.resolve()}; next, inside it: nbgrader release_assignment <name>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
