"""The classroom round trip with nbgrader: course folder, student release, validation.

    python -m rlnotes.assignments build/nbgrader      (what `make assignments` runs)

Every notebook in notebooks/ that has nbgrader cells becomes an assignment of the same name:
    build/nbgrader/source/<name>/<name>.ipynb     the instructor version (the notebook as committed)
    build/nbgrader/release/<name>/<name>.ipynb    the student version: solutions replaced by stubs,
                                                  hidden tests removed
A teacher hands out release/; submitted copies go to submitted/<student>/<name>/ and
`nbgrader autograde <name>` (run inside build/nbgrader) grades them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["assignment_notebooks", "build_course", "generate", "validate", "main"]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# nbgrader executes whole notebooks: training cells need more than its 30 s default, and fast mode.
CONFIG = """\
c = get_config()
c.CourseDirectory.root = {root!r}
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


def _nbgrader(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, RLNOTES_FAST="1", MPLBACKEND="Agg")
    # The first generate_assignment runs `alembic` from PATH: put this interpreter's bin first.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def build_course(root: Path, notebooks: list[Path] | None = None) -> list[str]:
    """Lay out an nbgrader course folder under `root` with one assignment a notebook; return the names."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(CONFIG.format(root=str(root)))
    names = []
    for path in notebooks if notebooks is not None else assignment_notebooks():
        target = root / "source" / path.stem
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
        names.append(path.stem)
    return names


def generate(root: Path, name: str) -> Path:
    """nbgrader generate_assignment: returns the student release notebook."""
    root = Path(root).resolve()
    _nbgrader(["generate_assignment", name, "--force"], cwd=root)
    return root / "release" / name / f"{name}.ipynb"


def validate(notebook: Path, invert: bool = False) -> subprocess.CompletedProcess:
    """nbgrader validate (or validate --invert); the result's stdout holds nbgrader's verdict."""
    notebook = Path(notebook).resolve()
    # Run inside the course folder, so nbgrader reads its config (the longer cell timeout).
    course = next((p for p in notebook.parents if (p / "nbgrader_config.py").exists()), notebook.parent)
    args = ["validate", str(notebook)] + (["--invert"] if invert else [])
    return _nbgrader(args, cwd=course, check=False)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else "build/nbgrader")
    for name in build_course(root):
        release = generate(root, name)
        print(f"{name}: student release at {release}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
