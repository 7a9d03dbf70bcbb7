"""pytest with nbval over the course's notebooks: `pytest --nbval-lax notebooks/04_trpo.ipynb`.

nbval (`--nbval-lax`) runs a notebook's code cells in order in one kernel, one test a cell: a cell fails
when it raises (a failing `assert` included); outputs are compared only in cells marked NBVAL_CHECK_OUTPUT
(none are). This file sets how `make test` and a maintainer run them:

- the kernel is this Python (`--nbval-current-env`, set here unless --nbval-kernel-name is given);
- fast mode: the kernel gets RLNOTES_FAST=1 when RLNOTES_FAST is not set (`RLNOTES_FAST=0 pytest
  --nbval-lax notebooks/...` runs a learner's full mode); matplotlib's inline backend (MPLBACKEND, which
  the Makefile sets to Agg for the tests, is removed from the kernel's environment), so that figures are
  PNG outputs, as docs/site/build.py executes them;
- a cell may take 900 s (`--nbval-cell-timeout`, unless given);
- the checkpoint cache (rlnotes.cache) is a fresh folder of the run's own: no chapter loads a model that an
  earlier run trained;
- the run is kept: after a notebook's last cell, its executed copy (the notebook with the outputs nbval
  read for each cell, execution counts numbered as nbclient numbers them, and the widgets' state that
  nbclient's `store_widget_state` would have saved, gathered from the kernel's messages as nbval reads
  them) is written where docs/site/build.py keeps its executions, build/site/executed/<stem>.<source key>.ipynb,
  in fast mode on seed offset 0 (RLNOTES_SEED_OFFSET unset or 0). `make site` then renders it without
  executing it again, and tests/test_notebooks.py checks it (its metadata "rlnotes" names the pytest run).
  A notebook with a failed or skipped cell is written as <stem>.<key>.partial.ipynb, which the site builder
  ignores. Other modes go to build/notebooks/nbval/<mode>-offset<k>/<stem>.ipynb. Writing the copy never
  changes a test's outcome: a failure to write it is a warning (and tests/test_notebooks.py then fails).

With tests/test_notebooks.py in the same run (`make test`), its tests come after every notebook cell;
under pytest-xdist's `--dist loadfile` (`-n 2`) the notebooks and that file count as one file, so they run
on one worker in that order (pytest_xdist_make_scheduler below); without that file, each notebook is a
unit of its own (`make notebooks`: two at a time).
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import os
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest

from rlnotes import cache

ROOT = Path(__file__).resolve().parent.parent
SITE_CACHE = ROOT / "build" / "site" / "executed"
OTHER_RUNS = ROOT / "build" / "notebooks" / "nbval"
CHECKS = ROOT / "tests" / "test_notebooks.py"  # reads the executed copies: runs after the notebooks
GROUP = "notebooks"  # with --dist loadfile: the one unit of every notebook cell and CHECKS
CELL_TIMEOUT_S = 900  # one cell in fast mode, on a loaded 2-core machine
OUTPUT_TIMEOUT_S = 60  # a finished cell's outputs still on their way from the kernel
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# The checkpoint cache (rlnotes.cache): the notebooks' kernels inherit RLNOTES_CACHE_DIR, a fresh folder of this
# run's own (shared with tests/conftest.py in `make test`), so a chapter reuses only what this run trained.
cache.fresh_folder_for_this_run()

# The Chinese edition (notebooks/zh/, issue 26): its code cells are the English chapters' own, byte for byte
# (tests/test_zh.py), so `make test` executes one Chinese chapter to check that it runs from notebooks/zh/;
# the others are covered by that identity. Executed copies of a translation are named "<lang>.<stem>".
EXECUTED_TRANSLATIONS = ("zh/04_trpo.ipynb",)
collect_ignore_glob = [f"zh/0{d}_*.ipynb" for d in range(9) if not any(t.startswith(f"zh/0{d}_") for t in EXECUTED_TRANSLATIONS)]


def copy_stem(source: Path) -> str:
    """The executed copy's name: the notebook's stem, prefixed with its edition's folder for a translation."""
    source = Path(source).resolve()
    return source.stem if source.parent == ROOT / "notebooks" else f"{source.parent.name}.{source.stem}"


def run_id(config: pytest.Config) -> str:
    """This pytest run (shared by its xdist workers); tests/test_notebooks.py computes the same."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput:
        return workerinput["testrunuid"]
    if not hasattr(config, "_rlnotes_run_id"):
        config._rlnotes_run_id = uuid.uuid4().hex
    return config._rlnotes_run_id


def _nbval_on(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False))


def _is_cell(item) -> bool:
    return item.path.suffix == ".ipynb" and hasattr(item, "cell_num") and hasattr(item.parent, "kernel")


def _is_check(item) -> bool:
    return item.path.name == CHECKS.name and item.path.resolve() == CHECKS


def _kernel_env() -> dict[str, str | None]:
    """The variables the kernel's environment changes (None: removed)."""
    changes: dict[str, str | None] = {"MPLBACKEND": None, "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                                      "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    if "RLNOTES_FAST" not in os.environ:
        changes["RLNOTES_FAST"] = "1"
    return changes


def _mode() -> tuple[str, int]:
    """(fast or full, seed offset) of the kernel, read as rlnotes.utils reads them."""
    fast = os.environ.get("RLNOTES_FAST", "1") not in ("", "0", "false", "False")
    offset = os.environ.get("RLNOTES_SEED_OFFSET", "").strip() or "0"
    return ("fast" if fast else "full"), int(offset) if offset.isdigit() else -1


# ---------------------------------------------------------------- options, order, xdist groups


def pytest_configure(config):
    if not _nbval_on(config):
        return
    if not config.option.nbval_kernel_name:
        config.option.nbval_current_env = True
    given = " ".join(config.invocation_params.args) + " " + os.environ.get("PYTEST_ADDOPTS", "")
    if "--nbval-cell-timeout" not in given:
        config.option.nbval_cell_timeout = CELL_TIMEOUT_S


def pytest_collection_modifyitems(session, config, items):
    cells = [i for i in items if _is_cell(i)]
    for cell in cells:  # nbval waits 5 s for a finished cell's last messages: too short on a loaded machine
        cell.output_timeout = OUTPUT_TIMEOUT_S
    if cells:  # tests/test_notebooks.py, which reads the executed copies, after every notebook cell
        checks = [i for i in items if _is_check(i)]
        others = [i for i in items if not _is_cell(i) and not _is_check(i)]
        items[:] = others + cells + checks


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the notebooks and tests/test_notebooks.py as one file: one worker, in order.

    pytest-xdist's loadfile sends each file's tests, in collection order, to one worker. Here every
    notebook and tests/test_notebooks.py count as one file, the largest unit, which xdist starts first;
    when tests/test_notebooks.py is not collected, each notebook is a unit of its own.
    """
    if config.getoption("dist", default="no") != "loadfile" or not _nbval_on(config):
        return None
    from xdist.scheduler import LoadFileScheduling

    checks = CHECKS.relative_to(ROOT).as_posix()  # node ids are relative to the rootdir, ROOT

    assert hasattr(LoadFileScheduling, "_split_scope"), "pytest-xdist changed: notebooks/conftest.py needs an update"

    class NotebooksThenTheirChecks(LoadFileScheduling):
        together = None  # whether tests/test_notebooks.py is collected (known when the work is split)

        def _split_scope(self, nodeid: str) -> str:
            if self.together is None:
                self.together = any(n.split("::", 1)[0] == checks for n in self.collection or [])
            file = nodeid.split("::", 1)[0]
            return GROUP if self.together and (file.endswith(".ipynb") or file == checks) else file

    return NotebooksThenTheirChecks(config, log)


# ---------------------------------------------------------------- the kernel and what it sends


class _Recorder:
    """Watches the kernel's IOPub messages as nbval reads them and keeps the widgets' state as nbclient does."""

    def __init__(self, kernel):
        self.widget_state: dict[str, dict] = {}
        self.widget_buffers: dict[str, dict[tuple, dict]] = {}
        self.errors: list[str] = []
        self.start = time.perf_counter()
        read = kernel.get_message

        def get_message(stream, timeout=None):
            msg = read(stream, timeout=timeout)
            if stream == "iopub":
                self.see(msg)
            return msg

        kernel.get_message = get_message

    def see(self, msg) -> None:
        try:  # what nbclient's NotebookClient.handle_comm_msg keeps with store_widget_state=True
            if msg["msg_type"] not in ("comm_open", "comm_msg"):
                return
            content = msg["content"]
            data = content.get("data", {})
            if "state" not in data:
                return
            self.widget_state.setdefault(content["comm_id"], {}).update(data["state"])
            if data.get("buffer_paths"):
                buffers = self.widget_buffers.setdefault(content["comm_id"], {})
                for path, buffer in zip(data["buffer_paths"], msg["buffers"]):
                    buffers[tuple(path)] = {"data": base64.b64encode(buffer).decode("utf-8"), "encoding": "base64",
                                            "path": path}
        except Exception as error:  # never in nbval's way
            self.errors.append(repr(error))

    def metadata(self) -> dict | None:
        """nb.metadata.widgets as nbclient's set_widgets_metadata writes it (None without widgets)."""
        if not self.widget_state:
            return None
        state = {}
        for model_id, model in self.widget_state.items():
            if "_model_name" not in model:
                continue
            state[model_id] = {"model_name": model.get("_model_name"), "model_module": model.get("_model_module"),
                               "model_module_version": model.get("_model_module_version"), "state": model}
            if self.widget_buffers.get(model_id):
                state[model_id]["buffers"] = list(self.widget_buffers[model_id].values())
        return {WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """nbval starts the notebook's kernel in its first cell's setup: with the kernel's environment then."""
    if not _is_cell(item) or item.parent.kernel is not None:
        return (yield)
    saved = {name: os.environ.get(name) for name in _kernel_env()}
    for name, value in _kernel_env().items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        return (yield)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if item.parent.kernel is not None:
            item.parent._rlnotes_recorder = _Recorder(item.parent.kernel)


# ---------------------------------------------------------------- the executed copy


def _site_builder():
    spec = importlib.util.spec_from_file_location("rlnotes_site_build", ROOT / "docs" / "site" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _output(out, count: int):
    """An output nbval read (a NotebookNode from one IOPub message) as nbformat writes it."""
    import nbformat

    kind = out["output_type"]
    if kind == "stream":
        return nbformat.v4.new_output("stream", name=out["name"], text=out["text"])
    if kind == "error":
        return nbformat.v4.new_output("error", ename=out["ename"], evalue=out["evalue"], traceback=out["traceback"])
    fields = {"data": out.get("data", {}), "metadata": out.get("metadata", {})}
    if kind == "execute_result":
        fields["execution_count"] = count
    return nbformat.v4.new_output(kind, **fields)


def _language_info(kernel) -> dict | None:
    try:
        reply = kernel.kc.kernel_info(reply=True, timeout=10)
        return reply["content"]["language_info"]
    except Exception:
        return None


def write_executed_copy(item) -> Path | None:
    """The notebook of `item` (its last cell) with what nbval's run printed and drew; the path written."""
    import nbformat

    notebook = item.parent
    recorder = getattr(notebook, "_rlnotes_recorder", None)
    if recorder is None:  # the kernel did not start
        return None
    kernel = notebook.kernel
    language_info = None
    if kernel is not None and kernel.is_alive():
        try:  # IOPub messages nbval left unread (comm updates after the last cell's idle)
            while True:
                kernel.get_message("iopub", timeout=0.2)
        except Exception:
            pass
        language_info = _language_info(kernel)
    seconds = time.perf_counter() - recorder.start

    ran = {i.cell_num: i for i in item.session.items if i.parent is notebook and _is_cell(i)}
    nb = copy.deepcopy(notebook.nb)
    complete, count, number = True, 0, 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell_item, number = ran.get(number), number + 1
        outputs = None if cell_item is None else cell_item.test_outputs
        cell.outputs, cell.execution_count = [], None
        if outputs is None:  # not run (deselected, skipped, or after a kernel failure)
            complete = False
            continue
        if not cell.source.strip():  # as nbclient: an empty cell is not executed
            continue
        count += 1
        cell.execution_count = count
        cell.outputs = [_output(out, count) for out in outputs]
        complete = complete and not any(o.output_type == "error" for o in cell.outputs)
    widgets = recorder.metadata()
    if widgets:
        nb.metadata["widgets"] = widgets
    if language_info:
        nb.metadata["language_info"] = language_info
    mode, offset = _mode()
    nb.metadata["rlnotes"] = {"executed_by": "nbval", "run": run_id(item.config), "mode": mode, "seed_offset": offset,
                              "complete": complete, "seconds": round(seconds, 1)}

    source = Path(notebook.path)
    if mode == "fast" and offset == 0:
        target = SITE_CACHE / f"{copy_stem(source)}.{_site_builder().source_key(source, 'fast')}.ipynb"
        for stale in SITE_CACHE.glob(f"{copy_stem(source)}.*.ipynb"):  # as docs/site/build.py's execute
            stale.unlink(missing_ok=True)
    else:
        target = OTHER_RUNS / f"{mode}-offset{offset}" / f"{copy_stem(source)}.ipynb"
    written = target if complete else target.with_suffix(".partial.ipynb")
    written.parent.mkdir(parents=True, exist_ok=True)
    partial = written.with_name(written.name + ".writing")
    nbformat.write(nb, partial)
    partial.replace(written)
    if recorder.errors:
        warnings.warn(f"{source.name}: widget messages not understood: {recorder.errors[:3]}", stacklevel=1)
    return written


@pytest.hookimpl(tryfirst=True)  # before nbval's IPyNbFile.teardown stops the kernel
def pytest_runtest_teardown(item, nextitem):
    if not _is_cell(item) or (nextitem is not None and nextitem.parent is item.parent):
        return
    try:
        written = write_executed_copy(item)
    except Exception as error:  # never hides nbval's own result
        warnings.warn(f"{item.path.name}: its executed copy was not written: {error!r}", stacklevel=1)
        return
    if written is not None:
        item.add_report_section("teardown", "executed copy", str(written))
