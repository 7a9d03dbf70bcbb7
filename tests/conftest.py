"""Fixtures shared by the test files: one SFT model for the language-model tests (built once per pytest worker),
and `measured`, which every test that asserts on a trained model or a sampled run calls before it asserts.

Trained-model tests are marked `trained`. Their seeds come from `rlnotes.utils.course_seed`, so
RLNOTES_SEED_OFFSET moves them as it moves the notebooks' (`make test-seeds` runs them on offsets 1 to 4),
and `make test-cpus` runs them under torch's other CPU kernels (ATEN_CPU_CAPABILITY=default, avx2), which
round differently and so train along another trajectory, as another machine does. Each bound they assert
held on every one of those runs with a margin; the numbers measured are in benchmarks/claims.md.
"""

import fcntl
import json
import os

import pytest
import torch

from rlnotes import cache
from rlnotes.utils import course_seed

# The course's SFT model: sft.Config's 1,300 steps (about a minute on one core). Shorter runs sit on the carry
# "click" (greedy accuracy jumps from ~0.2 to ~0.9 within a few hundred steps, at a step that depends on the seed
# and on the CPU's rounding): 500 steps gave greedy 0.95 on seed 1 and 0.28 on seed 1001. A test must not depend
# on which side of it a machine lands; at 1,300 steps every seed and kernel measured is past it (0.95 to 1.0).
SFT_STEPS = 1300

# The checkpoint cache (rlnotes.cache): a fresh, empty folder for this pytest run (its xdist workers share it),
# deleted at its end, so that no test and no notebook it executes (kernels inherit os.environ) reads a checkpoint
# this run did not write.
cache.fresh_folder_for_this_run()


def pytest_configure(config):
    config.addinivalue_line("markers", "trained: asserts on a trained model or a sampled run (make test-seeds, test-cpus)")


@pytest.fixture(scope="session")
def sft_run():
    """(model, history) of `sft.train` with seed course_seed(1) and SFT_STEPS steps, trained once per test run."""
    from rlnotes.lm import sft
    from rlnotes.lm.task import AdditionTask

    torch.set_num_threads(1)
    config = sft.Config(seed=course_seed(1), steps=SFT_STEPS, eval_every=1000, progress_bar=False)
    with open(cache.directory() / "sft_run.lock", "w") as lock:  # one worker trains it, the other waits and loads it
        fcntl.flock(lock, fcntl.LOCK_EX)
        history = cache.train(sft.train, config, task=AdditionTask(), quiet=True)
    return history["model"], history


@pytest.fixture
def measured(request):
    """`measured(name, value)` returns `value`, and with RLNOTES_CLAIMS_LOG set appends it to that file as a JSON
    line (test, name, value, seed offset, torch's CPU kernels): how benchmarks/claims.md's ranges were measured."""

    def record(name: str, value):
        log = os.environ.get("RLNOTES_CLAIMS_LOG")
        if log:
            row = {"test": request.node.nodeid, "name": name, "value": float(value),
                   "offset": int(os.environ.get("RLNOTES_SEED_OFFSET", "0") or 0),
                   "kernels": os.environ.get("ATEN_CPU_CAPABILITY", "native:" + torch.backends.cpu.get_cpu_capability())}
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
        return value

    return record
