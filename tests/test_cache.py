"""rlnotes.cache: a hit gives back what the run gave (weights, history, random state); anything that changes
a run changes its key; two writers at once and a half-written file leave the cache usable.

Every test uses its own empty folder (RLNOTES_CACHE_DIR = tmp_path) and runs of a few steps on the
1-digit task, so the whole file takes a few seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from rlnotes import cache, cli
from rlnotes.lm import grpo, reward_model, rlhf, sft
from rlnotes.lm.task import AdditionTask

TASK = AdditionTask(n_digits=1)  # 100 prompts: evaluations cost nothing
SFT = sft.Config(seed=3, steps=4, batch_size=16, eval_every=2, eval_samples=2, progress_bar=False)
CALLS = []


def counted_sft(config, progress=None, **inputs):
    """sft.train, counting its calls: a hit must not train."""
    CALLS.append(config)
    return sft.train(config, progress, **inputs)


@pytest.fixture(autouse=True)
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RLNOTES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RLNOTES_CACHE", raising=False)
    CALLS.clear()
    return tmp_path / "cache"


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def equal(a, b) -> bool:
    """a == b, with NaN equal to NaN (an accuracy over no pairs is NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def same_history(a: dict, b: dict, timed: bool = True) -> None:
    """Equal histories; with timed=False two runs of the same Config (their measured seconds differ)."""
    assert a.keys() == b.keys()
    for k in a:
        if not timed and "seconds" in k:
            continue
        if isinstance(a[k], torch.nn.Module):
            assert type(a[k]) is type(b[k]) and same_weights(a[k], b[k]), k
            assert [m.training for m in a[k].modules()] == [m.training for m in b[k].modules()], k
        elif dataclasses.is_dataclass(a[k]):
            assert type(a[k]) is type(b[k]) and a[k] == b[k], k
        else:
            assert equal(a[k], b[k]), k


# ---- a hit is the run ---------------------------------------------------------------------------------------


def test_a_hit_returns_the_same_weights_history_and_random_state(folder):
    fresh = cache.train(counted_sft, SFT, task=TASK)
    after_run = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)  # another global state than the run left: the hit must set the run's
    random.seed(99)
    np.random.seed(99)
    loaded = cache.train(counted_sft, SFT, task=TASK)
    after_hit = (torch.rand(3), random.random(), np.random.rand())
    assert len(CALLS) == 1, "a hit must not train"
    assert loaded["model"] is not fresh["model"] and same_weights(fresh["model"], loaded["model"])
    same_history(fresh, loaded)
    assert torch.equal(after_run[0], after_hit[0]) and after_run[1:] == after_hit[1:], "cells after it draw the same numbers"
    (entry,) = folder.glob("*.pt")
    assert entry.name.startswith("test_cache-")  # <trainer's module>-<key>.pt
    torch.load(entry, weights_only=True)  # tensors, dicts, lists, numbers and strings only


def test_the_progress_bar_is_not_in_the_key(folder):
    cache.train(counted_sft, SFT, task=TASK)
    cache.train(counted_sft, dataclasses.replace(SFT, progress_bar=True), task=TASK)
    assert len(CALLS) == 1


def test_models_given_and_models_returned_survive_a_hit(folder):
    """GRPO's policy, a reward model (its annotator holds the task given), RLHF's critic and the reward model it
    was given (handed back as the same object, left in eval mode and frozen, as the run leaves it)."""
    ref = sft.build_model(SFT, TASK)  # any model will do: an untrained one
    g = grpo.Config(seed=3, iterations=2, prompts_per_iteration=4, group_size=2, eval_every=2, eval_prompts=20,
                    probe_prompts=10, eval_samples=1, progress_bar=False)
    same_history(cache.train(grpo.train, g, ref_model=ref, task=TASK), cache.train(grpo.train, g, ref_model=ref, task=TASK))

    task = AdditionTask()  # the reward model's probe needs 2 digits
    ref = sft.build_model(SFT, task)
    r = reward_model.Config(seed=3, k=2, steps=2, train_prompts=20, eval_prompts=20, eval_every=2, progress_bar=False)
    rm_run = cache.train(reward_model.train, r, sft_model=ref, task=task)
    rm_hit = cache.train(reward_model.train, r, sft_model=ref, task=task)
    same_history(rm_run, rm_hit)
    assert rm_hit["annotator"].task is task

    rm = rm_hit["model"].train().requires_grad_(True)
    c = rlhf.Config(seed=3, iterations=2, prompts_per_iteration=4, samples_per_prompt=2, eval_every=2, eval_prompts=20,
                    probe_prompts=10, eval_samples=1, progress_bar=False)
    run = cache.train(rlhf.train, c, ref_model=ref, reward_model=rm, task=task)
    assert run["reward_net"] is rm
    rm.train().requires_grad_(True)  # as before the run: the hit must leave it as the run did
    hit = cache.train(rlhf.train, c, ref_model=ref, reward_model=rm, task=task)
    same_history(run, hit)
    assert hit["reward_net"] is rm and not rm.training and not any(p.requires_grad for p in rm.parameters())
    assert len(list(folder.glob("*.pt"))) == 3


# ---- what the key holds --------------------------------------------------------------------------------------


def test_a_changed_config_field_misses(folder):
    cache.train(counted_sft, SFT, task=TASK)
    cache.train(counted_sft, dataclasses.replace(SFT, steps=5), task=TASK)
    cache.train(counted_sft, dataclasses.replace(SFT, learning_rate=1e-3), task=TASK)
    cache.train(counted_sft, SFT, task=TASK)
    assert [c.steps for c in CALLS] == [4, 5, 4] and len(list(folder.glob("*.pt"))) == 3


def test_the_key_holds_the_task_the_inputs_the_code_and_the_trainer(monkeypatch):
    model = sft.build_model(SFT, TASK)
    base = cache.key(grpo.train, grpo.Config(), ref_model=model, task=TASK)
    assert base == cache.key(grpo.train, grpo.Config(progress_bar=False), ref_model=model, task=TASK)
    assert base == cache.key(grpo.train, grpo.Config(), ref_model=copy.deepcopy(model), task=AdditionTask(n_digits=1))
    changed = [
        cache.key(grpo.train, grpo.Config(seed=2), ref_model=model, task=TASK),
        cache.key(grpo.train, grpo.Config(), ref_model=model, task=AdditionTask(n_digits=1, split_seed=1)),
        cache.key(grpo.train, grpo.Config(), ref_model=model, task=AdditionTask(n_digits=2)),
        cache.key(rlhf.train, grpo.Config(), ref_model=model, task=TASK),
        cache.key(grpo.train, grpo.Config(), ref_model=copy.deepcopy(model).eval(), task=TASK),  # another mode
    ]
    nudged = copy.deepcopy(model)
    with torch.no_grad():
        next(nudged.parameters())[0, 0] += 1e-6  # one weight of the reference model
    changed.append(cache.key(grpo.train, grpo.Config(), ref_model=nudged, task=TASK))
    monkeypatch.setattr(cache, "source_digest", lambda: "an edited package")
    changed.append(cache.key(grpo.train, grpo.Config(), ref_model=model, task=TASK))
    assert len({base, *changed}) == 1 + len(changed)


def test_what_cannot_be_keyed_or_stored_is_refused_clearly(folder):
    with pytest.raises(TypeError, match="config must be a Config dataclass"):
        cache.key(sft.train, {"steps": 3})
    with pytest.raises(TypeError, match="cannot put task"):
        cache.key(sft.train, SFT, task=object())

    def odd(config, progress=None):
        return {"seconds": 0.0, "thing": object()}

    with pytest.warns(UserWarning, match="not stored"):
        history = cache.train(odd, SFT)
    assert "thing" in history and not list(folder.glob("*"))


# ---- files: two writers, a half-written file, where, off, emptying ---------------------------------------------

WRITER = """
import os, sys, time
from rlnotes import cache
from rlnotes.lm import sft
from rlnotes.lm.task import AdditionTask
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
cache.train(sft.train, sft.Config(seed=3, steps=4, batch_size=16, eval_every=2, eval_samples=2, progress_bar=False),
            task=AdditionTask(n_digits=1))
"""


def test_two_kernels_that_train_and_write_at_once_leave_one_whole_entry(folder, tmp_path):
    go = tmp_path / "go"
    env = dict(os.environ, RLNOTES_CACHE_DIR=str(folder))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(go)], env=env) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    assert [p.name for p in folder.iterdir() if p.suffix == ".tmp"] == []
    assert len(list(folder.glob("*.pt"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the entry is whole: no "ignoring" warning
        loaded = cache.train(sft.train, SFT, task=TASK, quiet=True)
    assert same_weights(loaded["model"], sft.train(SFT, task=TASK)["model"])


HAMMER = """
import sys, torch
from pathlib import Path
from rlnotes import cache
path, value = Path(sys.argv[1]), float(sys.argv[2])
for i in range(8):
    cache._write(path, {"format": cache.FORMAT, "key": "k", "about": {}, "weights": torch.full((250_000,), value + i)})
"""


def test_a_reader_never_sees_a_half_written_entry(folder):
    """Two processes rewrite one entry (1 MB) again and again while this one reads it: every read is whole."""
    path = folder / "sft-hammer.pt"
    cache._write(path, {"format": cache.FORMAT, "key": "k", "about": {}, "weights": torch.zeros(250_000)})
    writers = [subprocess.Popen([sys.executable, "-c", HAMMER, str(path), str(v)]) for v in (100.0, 200.0)]
    reads = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        while any(w.poll() is None for w in writers) or reads == 0:
            payload = cache._read(path, "k")
            weights = payload["weights"]
            assert bool((weights == weights[0]).all()), "a mix of two writes"
            reads += 1
    assert [w.returncode for w in writers] == [0, 0] and reads > 1
    assert [p.name for p in folder.iterdir() if p.suffix == ".tmp"] == []


def test_a_half_written_or_damaged_entry_is_ignored_and_replaced(folder):
    first = cache.train(counted_sft, SFT, task=TASK)
    (entry,) = folder.glob("*.pt")
    whole = entry.read_bytes()
    (folder / f".{entry.stem}.crash.tmp").write_bytes(whole[:1000])  # what a crash mid-write leaves
    for damaged in (whole[: len(whole) // 2], b"", b"not a checkpoint"):
        entry.write_bytes(damaged)
        with pytest.warns(UserWarning, match="ignoring"):
            again = cache.train(counted_sft, SFT, task=TASK)
        same_history(first, again, timed=False)
    assert len(CALLS) == 4
    assert entry.read_bytes() != b"not a checkpoint" and len(list(folder.glob("*.pt"))) == 1
    cache.train(counted_sft, SFT, task=TASK)
    assert len(CALLS) == 4, "the run that followed wrote a whole entry again"
    size = entry.stat().st_size
    assert cache.clear() == (2, size + 1000)  # the entry and the crash's temporary file
    assert not list(folder.iterdir())


def test_the_folder_off_switch_and_the_command_line(folder, monkeypatch, capsys):
    monkeypatch.setenv("RLNOTES_CACHE", "0")
    cache.train(counted_sft, SFT, task=TASK)
    cache.train(counted_sft, SFT, task=TASK)
    assert len(CALLS) == 2 and not folder.exists()
    monkeypatch.delenv("RLNOTES_CACHE")

    cache.train(counted_sft, SFT, task=TASK)
    assert cli.main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(folder) in out and "1 entries" in out and "test_cache.counted_sft" in out
    (folder / "notes.txt").write_text("a file of the user's")
    assert cli.main(["cache", "clear"]) == 0
    assert "deleted 1 files" in capsys.readouterr().out
    assert [p.name for p in folder.iterdir()] == ["notes.txt"], "clear deletes the cache's files only"


@pytest.mark.skipif(sys.platform != "linux", reason="platformdirs' Linux folder")
def test_the_default_folder_is_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("RLNOTES_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.directory() == tmp_path / "xdg" / "rlnotes"
    monkeypatch.setenv("RLNOTES_CACHE_DIR", "~/elsewhere")
    assert cache.directory() == cache.Path.home() / "elsewhere"


_RUN_FOLDER = """
import os, subprocess, sys
from rlnotes import cache
first = cache.fresh_folder_for_this_run()
again = cache.fresh_folder_for_this_run()  # a second conftest of the same process
child = subprocess.run([sys.executable, "-c", "from rlnotes import cache; print(cache.fresh_folder_for_this_run())"],
                       capture_output=True, text=True, check=True).stdout.strip()  # an xdist worker of this run
print(first, again, child, first.is_dir(), sep="|")
"""


def test_a_test_run_gets_a_fresh_folder_shared_by_its_workers_and_deleted_at_its_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RLNOTES_CACHE_DIR", "RLNOTES_CACHE_RUN_OWNER")}
    env["RLNOTES_CACHE_DIR"] = str(tmp_path)  # a folder the user chose: a test run must not read it
    runs = [subprocess.run([sys.executable, "-c", _RUN_FOLDER], capture_output=True, text=True, check=True, env=env)
            .stdout.strip().split("|") for _ in range(2)]
    for first, again, child, existed in runs:
        assert first == again == child and existed == "True" and first != str(tmp_path)
        assert not os.path.exists(first)  # deleted when the run's process ended
    assert runs[0][0] != runs[1][0]  # each run its own


# ---- several runs at once ---------------------------------------------------------------------------------------


GRPO = grpo.Config(iterations=2, prompts_per_iteration=4, group_size=2, eval_every=2, eval_prompts=20, probe_prompts=10,
                   eval_samples=1, progress_bar=False)


@pytest.mark.parametrize("trainer, base, model_input", [(sft.train, SFT, None), (grpo.train, GRPO, "ref_model")],
                         ids=["sft", "grpo-from-a-model"])
def test_train_many_trains_the_missing_runs_side_by_side_and_loads_them_as_the_loop_would(folder, monkeypatch, trainer,
                                                                                        base, model_input):
    """The runs a worker stored are the runs this process would have made (the same key, so the inputs copied
    into a worker, a model included, key alike; the same weights and history, in order); the one trained
    before is not trained again; the random state and the input model's modes are the loop's."""
    ref = sft.build_model(SFT, TASK)
    inputs = {"task": TASK, **({model_input: ref} if model_input else {})}
    configs = [dataclasses.replace(base, seed=s) for s in (3, 4, 5)]
    cache.train(trainer, configs[0], **inputs)  # trained before
    (before,) = folder.glob("*.pt")
    inode = before.stat().st_ino  # a run stored again is a new file (written aside, then renamed over it)

    many = cache.train_many(trainer, configs, workers=2, **inputs)
    after_many = (torch.rand(3), random.random(), np.random.rand())
    modes_many = [p.requires_grad for p in ref.parameters()], ref.training
    assert before.stat().st_ino == inode, "a run in the cache is not trained again"
    assert len(list(folder.glob("*.pt"))) == 3

    monkeypatch.setenv("RLNOTES_CACHE", "0")  # the loop, trained here, nothing read
    loop = [cache.train(trainer, c, **{**inputs, **({model_input: copy.deepcopy(ref)} if model_input else {})})
            for c in configs]
    after_loop = (torch.rand(3), random.random(), np.random.rand())
    for a, b in zip(many, loop):
        same_history(a, b, timed=False)
    if trainer is sft.train:  # (GRPO from an untrained model earns no reward: its runs stay at the start)
        assert not same_weights(many[1]["model"], many[2]["model"]), "three different runs, in order"
    assert torch.equal(after_many[0], after_loop[0]) and after_many[1:] == after_loop[1:]
    assert modes_many == ([p.requires_grad for p in ref.parameters()], ref.training)


def test_train_many_refuses_an_empty_list():
    with pytest.raises(ValueError, match="configs is empty"):
        cache.train_many(sft.train, [], task=TASK)
