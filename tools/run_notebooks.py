#!/usr/bin/env python
"""Execute the course's notebooks top to bottom, as a learner would, and time each chapter.

    python tools/run_notebooks.py --full                      # what `make test-full` runs
    python tools/run_notebooks.py --fast --offsets 1,2,3,4    # what `make test-seeds` runs
    python tools/run_notebooks.py --full 01 05                # only some chapters (name or number prefix)

Every notebooks/*.ipynb is picked up (chapters added later included). Each notebook runs in a fresh
kernel of this Python (the venv's, started as `python -m ipykernel_launcher`), with RLNOTES_FAST,
RLNOTES_SEED_OFFSET and MPLBACKEND=Agg set in the kernel's environment. The executed copies go to
build/notebooks/<mode>-offset<k>/ (outputs included, for reading what a run printed); the committed
notebooks are not touched. Prints `notebook  seconds  ok/FAILED` per chapter and a total, and exits
non-zero when any notebook failed. CPU seconds (the notebook's process and its kernel) are printed
beside wall seconds: on a shared machine they say what the chapter costs on an idle one.
--allow-errors keeps executing after a failing cell (every failing cell is then listed), which is
what measuring a claim over seeds needs.
The checkpoint cache (rlnotes.cache) starts empty: every invocation gives its kernels a fresh temporary
RLNOTES_CACHE_DIR, deleted at the end, so a chapter reuses only what an earlier chapter of the same run
trained (06 -> 07 -> 08, in order, as a learner's would) and never a checkpoint from another run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def execute_one(source: Path, target: Path, timeout: int, allow_errors: bool) -> int:
    """Run one notebook in a new kernel (this process's environment); write the executed copy. 0 if no cell failed."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(source, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(source.parent)}})
    status = 0
    try:
        client.execute()
    except CellExecutionError:  # the first failing cell (without --allow-errors): listed below
        status = 1
    except Exception as error:  # a timeout, a dead kernel
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        status = 1
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                print(f"cell {index}: {output.get('ename')}: {output.get('evalue')}", file=sys.stderr)
                status = 1
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return status


def select(names: list[str]) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not names:
        return paths
    chosen = [p for p in paths if any(p.name == n or p.stem == n or p.stem.startswith(n) for n in names)]
    missing = [n for n in names if not any(p.name == n or p.stem == n or p.stem.startswith(n) for p in paths)]
    if missing:
        sys.exit(f"no notebook matches: {', '.join(missing)}")
    return chosen


def run(path: Path, mode: str, offset: int, args) -> tuple[float, float, bool, str]:
    """Execute one notebook in a child process; (wall seconds, CPU seconds of it and its kernel, ok, failures)."""
    env = dict(os.environ, RLNOTES_FAST="1" if mode == "fast" else "0", RLNOTES_SEED_OFFSET=str(offset),
               MPLBACKEND="Agg", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    target = Path(args.out) / f"{mode}-offset{offset}" / path.name
    command = [sys.executable, __file__, "--execute-one", str(path), str(target), "--timeout", str(args.timeout)]
    if args.allow_errors:
        command.append("--allow-errors")
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # usage includes the kernel, a child that was waited for
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        err.seek(0)
        stderr = err.read()
    detail = "\n".join(line for line in stderr.splitlines() if line.startswith("cell ") or ": " in line)
    return seconds, usage.ru_utime + usage.ru_stime, child.returncode == 0, detail


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="full mode, what a learner runs")
    mode.add_argument("--fast", dest="mode", action="store_const", const="fast", help="RLNOTES_FAST=1 (the default)")
    parser.add_argument("--offsets", default="0", help="comma-separated RLNOTES_SEED_OFFSET values (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (default 1)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell (default 3600)")
    parser.add_argument("--allow-errors", action="store_true", help="keep executing after a failing cell")
    parser.add_argument("--out", default=str(ROOT / "build" / "notebooks"), help="where the executed copies go")
    parser.add_argument("--execute-one", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("names", nargs="*", help="notebooks to run (file name, stem or prefix such as 03); default all")
    args = parser.parse_args(argv)

    if args.execute_one:
        return execute_one(Path(args.execute_one[0]), Path(args.execute_one[1]), args.timeout, args.allow_errors)

    mode_name = args.mode or "fast"
    try:
        offsets = [int(x) for x in args.offsets.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--offsets must be comma-separated integers, got {args.offsets!r}")
    if not offsets or min(offsets) < 0:
        parser.error("--offsets needs non-negative integers")
    paths = select(args.names)
    jobs = [(offset, path) for offset in offsets for path in paths]
    print(f"{mode_name} mode, seed offsets {','.join(map(str, offsets))}: {len(paths)} notebooks, "
          f"{max(1, args.jobs)} at a time; executed copies in {args.out}/{mode_name}-offset<k>/", flush=True)

    results = {}
    wall = time.perf_counter()
    cache_dir = tempfile.mkdtemp(prefix="rlnotes-cache-")  # empty: what this run trains, nothing older
    os.environ["RLNOTES_CACHE_DIR"] = cache_dir

    def one(job):
        offset, path = job
        result = run(path, mode_name, offset, args)
        seconds, cpu, ok, detail = result
        print(f"offset {offset}  {path.stem:24s} {seconds:8.1f} s wall {cpu:8.1f} s CPU  {'ok' if ok else 'FAILED'}",
              flush=True)
        if detail:
            print("    " + detail.replace("\n", "\n    "), flush=True)
        results[job] = result
        return result

    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(one, jobs))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    total = time.perf_counter() - wall
    failed = [(offset, path.stem) for (offset, path), (_, _, ok, _) in results.items() if not ok]
    for column, label in ((0, "wall seconds"), (1, "CPU seconds (the notebook's process and kernel)")):
        print(f"\n{mode_name} mode, {label} per chapter" + (" and seed offset" if len(offsets) > 1 else ""))
        print(f"{'notebook':24s}" + "".join(f"{'offset ' + str(o):>12s}" for o in offsets))
        for path in paths:
            cells = [f"{results[o, path][column]:8.1f}{'   ' if results[o, path][2] else ' !!'}" for o in offsets]
            print(f"{path.stem:24s}" + "".join(f"{c:>12s}" for c in cells))
        print(f"{'total':24s}" + "".join(f"{sum(results[o, p][column] for p in paths):9.1f}   " for o in offsets))
    print(f"\nwall time {total:.1f} s; {len(jobs) - len(failed)} ok, {len(failed)} FAILED (!!)"
          + (": " + ", ".join(f"{stem} (offset {o})" for o, stem in failed) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
