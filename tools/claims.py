#!/usr/bin/env python
"""Measure the claims the unit tests make about trained models, over seed offsets and torch's CPU kernels.

    python tools/claims.py run --offsets 0,1,2,3,4 --kernels native,default,avx2   # appends to the log
    python tools/claims.py table                                                     # the ranges, as markdown

`run` executes the tests marked `trained` (tests/conftest.py) once per (kernels, offset), with
RLNOTES_SEED_OFFSET=offset and ATEN_CPU_CAPABILITY=kernels (native: torch's own choice for this CPU), and
RLNOTES_CLAIMS_LOG set, so that every `measured(name, value)` in those tests lands as a JSON line in
benchmarks/claims/claims.jsonl. `table` prints, for each test and number, its minimum and maximum over the
runs and the run that gave the worst; benchmarks/claims.md holds that table beside each test's bound.
A failing test does not stop the runs: its numbers before the failing assert are in the log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "benchmarks" / "claims" / "claims.jsonl"


def run(offsets: list[int], kernels: list[str], log: Path, extra: list[str]) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    failed = []
    for cap in kernels:
        for offset in offsets:
            env = {**os.environ, "RLNOTES_SEED_OFFSET": str(offset), "RLNOTES_CLAIMS_LOG": str(log)}
            env.pop("ATEN_CPU_CAPABILITY", None)
            if cap != "native":
                env["ATEN_CPU_CAPABILITY"] = cap
            start = time.perf_counter()
            paths = [] if any(a.startswith("tests/") for a in extra) else ["tests"]
            done = subprocess.run([sys.executable, "-m", "pytest", *paths, "-m", "trained", "-q", "-p", "no:cacheprovider",
                                   *extra], cwd=ROOT, env=env, capture_output=True, text=True)
            tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
            print(f"kernels {cap:8s} offset {offset}: {tail} ({time.perf_counter() - start:.0f} s)", flush=True)
            if done.returncode != 0:
                failed.append((cap, offset))
                print(done.stdout[-4000:], flush=True)
    print("failed runs:", failed or "none")
    return 1 if failed else 0


def table(log: Path) -> str:
    values = defaultdict(list)
    for line in log.read_text().splitlines():
        row = json.loads(line)
        values[(row["test"], row["name"])].append((row["value"], row["kernels"], row["offset"]))
    lines = ["| test | number | runs | min (kernels, offset) | max (kernels, offset) |", "|---|---|---|---|---|"]
    for (test, name), rows in sorted(values.items()):
        lo, hi = min(rows), max(rows)
        lines.append(f"| `{test.split('::', 1)[1]}` | {name} | {len(rows)} | {lo[0]:.4g} ({lo[1]}, {lo[2]}) "
                     f"| {hi[0]:.4g} ({hi[1]}, {hi[2]}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the trained-model tests over offsets and kernels, logging their numbers")
    r.add_argument("--offsets", default="0,1,2,3,4")
    r.add_argument("--kernels", default="native,default,avx2")
    r.add_argument("--log", type=Path, default=LOG)
    r.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --), e.g. -n 2, or test files")
    t = sub.add_parser("table", help="the measured ranges as a markdown table")
    t.add_argument("--log", type=Path, default=LOG)
    args = parser.parse_args(argv)
    if args.command == "run":
        offsets = [int(x) for x in args.offsets.split(",")]
        return run(offsets, args.kernels.split(","), args.log, args.pytest_args)
    print(table(args.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
