"""rlnotes.parallel.train_many: the same results as a loop, the parent's random state as after the loop."""

import dataclasses
import random

import numpy as np
import pytest
import torch
from torch import nn

from rlnotes import parallel
from rlnotes.algos import ppo, qac


def same(a, b, path="history") -> None:
    """Equal to the bit, key by key; clock readings (keys ending in "seconds") are skipped."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            if not key.endswith("seconds"):
                same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys(), path
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{path}.{key}"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def draws():
    return torch.rand(3), np.random.rand(3), random.random()


@pytest.mark.parametrize("trainer, config", [
    (qac.train, qac.Config(total_steps=1_024, eval_every=512, eval_episodes=2, stop_when_solved=False)),
    (ppo.train, ppo.Config(env="Pendulum-v1", total_steps=2_048, eval_every=1_024, eval_episodes=2)),
], ids=["qac-CartPole", "ppo-Pendulum"])
def test_runs_in_processes_equal_the_loop(trainer, config):
    configs = [dataclasses.replace(config, seed=s, progress_bar=False) for s in (3, 4, 5)]
    in_processes = parallel.train_many(trainer, configs, workers=2, progress_bar=False)
    after_processes = draws()
    in_loop = [trainer(c) for c in configs]
    after_loop = draws()
    assert len(in_processes) == 3
    for a, b in zip(in_processes, in_loop):
        same(a, b)
    assert in_processes[0]["eval_means"] != in_processes[1]["eval_means"]  # three different runs, not one
    same(list(after_processes), list(after_loop), "random draws after the runs")


def test_one_worker_is_the_loop_itself():
    config = qac.Config(total_steps=512, eval_every=512, eval_episodes=2, seed=7, progress_bar=False)
    same(parallel.train_many(qac.train, [config], workers=1)[0], qac.train(config))


def test_bad_arguments_are_named(monkeypatch):
    config = qac.Config(total_steps=512)
    with pytest.raises(ValueError, match="configs is empty"):
        parallel.train_many(qac.train, [])
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        parallel.train_many(qac.train, [config], workers=0)
    with pytest.raises(ValueError, match="module-level function"):
        parallel.train_many(lambda c, p=None: c, [config], workers=2)
    monkeypatch.setenv("RLNOTES_WORKERS", "two")
    with pytest.raises(ValueError, match="RLNOTES_WORKERS must be a positive integer"):
        parallel.default_workers(3)
    monkeypatch.setenv("RLNOTES_WORKERS", "1")
    assert parallel.default_workers(3) == 1
    monkeypatch.delenv("RLNOTES_WORKERS")
    assert 1 <= parallel.default_workers(3) <= 3


def test_a_failing_run_raises_its_error():
    bad = dataclasses.replace(qac.Config(total_steps=512, progress_bar=False), env="NoSuchEnv-v0")
    with pytest.raises(Exception, match="NoSuchEnv"):
        parallel.train_many(qac.train, [qac.Config(total_steps=512, progress_bar=False), bad], workers=2)


def test_a_workers_progress_bars_report_the_share_of_the_run_done():
    """In a worker, a trainer's tqdm (as an iterator, or updated by hand) tells the parent how far the run is."""
    import queue

    reports = queue.Queue()
    parallel._Reporter.queue, parallel._Reporter.index = reports, 4
    try:
        assert list(parallel._Reporter(range(10), desc="sft", disable=True)) == list(range(10))
        bar = parallel._Reporter(total=8, unit="step")
        bar.update(2)
        bar.set_postfix(eval_mean="1.0")
        bar.update(6)
        bar.close()
    finally:
        parallel._Reporter.queue = parallel._Reporter.index = None
    sent = [reports.get_nowait() for _ in range(reports.qsize())]
    assert sent[0] == (4, 0.1) and (4, 1.0) in sent  # the first step, and the end of the iterator
    assert sent[-2:] == [(4, 0.25), (4, 1.0)]  # the bar updated by hand: its first update, and its end
