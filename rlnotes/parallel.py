"""Independent training runs at once, one process a CPU core: the same results as a loop, in less wall time.

The course's trainers run on one thread (``num_threads=1`` is fastest for its small networks), so on a
machine with two or more cores a chapter that trains several seeds can train them side by side:

    runs = parallel.train_many(qac.train, [dataclasses.replace(config, seed=s) for s in seeds])

is ``[qac.train(c) for c in configs]``, to the bit: every run seeds itself from its Config (the
trainers call ``seed_everything(config.seed)`` and ``torch.set_num_threads(config.num_threads)`` first),
so where it runs does not change what it computes (``tests/test_parallel.py`` compares the two). The
global random state the parent is left with is the last run's, as after the loop, so the cells that
follow draw the same numbers either way.

The runs go to worker processes started with ``spawn`` (a fresh interpreter: safe after torch has
started its threads, and the same in a notebook's kernel as in a script); each imports the trainer by
its module, so ``trainer`` must be a module-level function of an importable module, such as
``rlnotes.algos.qac.train``, and its Configs and results must pickle (dataclasses, tensors, dicts,
``nn.Module``). One progress bar follows all the runs: in a worker, the progress bars a trainer draws
are replaced by messages to the parent saying how far the run is. With one worker (``workers=1``, one core,
or ``RLNOTES_WORKERS=1``) it is the plain loop, in this process, with each run's own progress bar.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
import time

from rlnotes.utils import random_state, set_random_state

__all__ = ["train_many", "default_workers", "runs_with_inputs"]


def default_workers(runs: int) -> int:
    """Workers for `runs` runs: RLNOTES_WORKERS if set, else the usable cores; never more than the runs."""
    chosen = os.environ.get("RLNOTES_WORKERS", "").strip()
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            raise ValueError(f"RLNOTES_WORKERS must be a positive integer, got {chosen!r}")
        cores = int(chosen)
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, runs))


def runs_with_inputs(configs, run_inputs, inputs: dict, caller: str = "train_many") -> tuple[list, list[dict]]:
    """(the configs as a list, each run's keyword inputs: `inputs` updated by its dict of `run_inputs`).

    Raises ValueError, naming `caller`, when there is no config or run_inputs has another length.
    """
    configs = list(configs)
    if not configs:
        raise ValueError(f"{caller}: configs is empty")
    each = [{**inputs, **extra} for extra in (run_inputs or [{}] * len(configs))]
    if len(each) != len(configs):
        raise ValueError(f"{caller}: run_inputs has {len(each)} dicts for {len(configs)} configs")
    return configs, each


class _Reporter:
    """Stands in for tqdm inside a worker: tells the parent how far its run is, as a fraction of the run's bar."""

    queue, index = None, None  # set in the worker before its run

    def __init__(self, iterable=None, *args, total=None, **kwargs):
        self.iterable, self.n, self.last = iterable, 0, 0.0
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if self.total and (now - self.last > 0.5 or self.n >= self.total):  # a few messages a second at most
            self.last = now
            _Reporter.queue.put((_Reporter.index, min(1.0, self.n / self.total)))

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _run(trainer, config, index: int, progress_queue, inputs: dict):
    """In a worker: train one run, its progress bars reporting to the parent; (result, the random state it left)."""
    import tqdm.auto

    _Reporter.queue, _Reporter.index = progress_queue, index
    tqdm.auto.tqdm = _Reporter  # for modules imported from now on; then those already imported
    for module in [m for name, m in sys.modules.items() if name.startswith("rlnotes") and hasattr(m, "tqdm")]:
        module.tqdm = _Reporter
    result = trainer(config, **inputs)
    return result, random_state()


def train_many(trainer, configs, /, *, workers: int | None = None, progress_bar: bool = True, desc: str | None = None,
               run_inputs: list[dict] | None = None, **inputs) -> list:
    """``[trainer(c, **inputs) for c in configs]``, the runs spread over worker processes; the results in order.

    trainer: a module-level ``train(config, **inputs)`` (``rlnotes.algos.*.train``; the language-model
    trainers go through ``cache.train_many``), configs: a list of its Configs, workers: processes (default: ``default_workers``),
    inputs: keyword inputs given to every run (copied into each worker); run_inputs: one dict a run, added to
    them (e.g. a different reward model for each run). progress_bar: one bar for all the runs, fed by each
    run's own bars (not drawn in the workers; with one worker each run draws its own). Raises what a run raised.
    """
    configs, each = runs_with_inputs(configs, run_inputs, inputs)
    if not callable(trainer) or "." in getattr(trainer, "__qualname__", "."):
        raise ValueError(f"train_many: trainer must be a module-level function such as qac.train, got {trainer!r}")
    workers = default_workers(len(configs)) if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"train_many: workers must be a positive integer, got {workers!r}")
    if workers == 1:
        return [trainer(config, **kwargs) for config, kwargs in zip(configs, each)]

    from dataclasses import replace

    from tqdm.auto import tqdm

    quiet = [replace(c, progress_bar=False) if hasattr(c, "progress_bar") else c for c in configs]
    name = desc or f"{trainer.__module__.rpartition('.')[2]}: {len(configs)} runs, {workers} processes"
    context = multiprocessing.get_context("spawn")
    # leaving the `with` (an error, or the learner interrupting the kernel) terminates the workers
    with context.Manager() as manager, context.Pool(workers) as pool:
        reports = manager.Queue()
        pending = [pool.apply_async(_run, (trainer, config, i, reports, kwargs))
                   for i, (config, kwargs) in enumerate(zip(quiet, each))]
        done = [0.0] * len(configs)  # the share of each run done, as its bars last said
        bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}]"
        with tqdm(total=len(configs), desc=name, bar_format=bar_format, disable=not progress_bar) as bar:
            while not all(p.ready() for p in pending):
                try:
                    index, share = reports.get(timeout=0.5)
                except queue.Empty:
                    continue
                done[index] = max(done[index], share)
                bar.update(sum(done) - bar.n)
            bar.update(len(configs) - bar.n)  # runs that stopped early, when solved
        outcomes = [p.get() for p in pending]  # raises a run's exception, in order
    set_random_state(outcomes[-1][1])
    return [result for result, _ in outcomes]
