"""Rules of the repository: clean notebooks, one dependency list, the README's commands, the CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlnotes import cli

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them (nbstripout) before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_links_the_glossary(path):
    cells = json.loads(path.read_text())["cells"]
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "assets/glossary.md" in text


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_to_pip = {"pytorch-cpu": "torch", "pytorch": "torch"}
    conda = {conda_to_pip.get(_requirement_name(d), _requirement_name(d)) for d in env["dependencies"] if isinstance(d, str)}
    conda -= {"python", "pip"}
    assert "conda-forge" in env["channels"]
    assert conda == wanted, f"only in environment.yml: {conda - wanted}; only in pyproject: {wanted - conda}"
    pip_lines = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert any(line.startswith("-e .") for line in pip_lines), "environment.yml should install the package itself"


def test_torch_is_pinned_to_the_cpu_wheel_for_the_setup():
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", constraints, flags=re.M)
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_readme_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab", "test", "assignments"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_chapters_match_the_notebooks():
    for path in NOTEBOOKS:
        assert path.stem in cli.CHAPTERS, f"{path.name} is missing from rlnotes.cli.CHAPTERS"
        title = "".join(json.loads(path.read_text())["cells"][0]["source"]).splitlines()[0]
        assert title.startswith(f"# {path.stem[:2]} "), f"{path.name} should open with '# {path.stem[:2]} · title'"


def test_console_script_help_and_chapters():
    script = Path(sys.executable).parent / "rlnotes"
    assert script.exists(), "the rlnotes console script is not installed in this environment"
    help_text = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "chapters" in help_text and "train" in help_text
    listing = subprocess.run([str(script), "chapters"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(listing) == len(cli.CHAPTERS)
    assert listing[0].startswith("00_notation") and "Q*" in listing[0]
    written = {path.stem for path in NOTEBOOKS}
    for line, stem in zip(listing, cli.CHAPTERS):
        assert line.startswith(stem)
        assert line.endswith("(planned)") == (stem not in written), line
