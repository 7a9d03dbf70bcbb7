"""`rlnotes bench`: the course's algorithms beside Stable-Baselines3 and sb3-contrib, in one run.

    pip install -e ".[bench]"                (or `make bench`, which also runs it)
    rlnotes bench                            seeds 1000-1009 (DEFAULT_SEEDS): markdown on stdout, JSON,
                                             markdown and a plot in benchmarks/results/
    rlnotes bench --seeds 1000-1004 --algos ppo,trpo     a range, or a list: --seeds 1,2,5
    rlnotes bench --from-runs benchmarks/results/runs.jsonl   tables and plot again, no training

Seeds: by default ten a side that no default was tuned on (`TUNING_SEEDS` lists the seeds that chose
defaults; a run on any of them says so). Unseen seeds are the point: defaults chosen on seeds 1-24
and then measured on seeds 1-5 report partly the tuning's luck.

Protocol, identical for both sides:
  * one torch thread each; the runs of one seed alternate (rlnotes first on even seeds, the reference
    first on odd seeds), so that a slower or faster phase of the machine hits both alike;
  * every 2,048 env steps, 10 deterministic episodes on evaluation seeds the training never uses
    (the same `rlnotes.algos.common.eval_returns` for both); solved when their mean is >= 475;
  * wall seconds count training only: the evaluation time is measured and subtracted;
  * the reference runs RL Zoo's tuned CartPole-v1 hyperparameters (rl-baselines3-zoo,
    hyperparams/{ppo,a2c,dqn,trpo}.yml) and keeps the zoo's schedules as the zoo defines them:
    `learn(total_timesteps=n_timesteps)` with the zoo's n_timesteps, stopped early by the callback
    once solved. rlnotes runs its own defaults (its Config), with its own total_steps budget.

Statistics (`summarize`), per algorithm and side over its seeds:
  * a run that does not solve within its budget is a failure: it is counted ("solved 9/10") and
    enters every statistic CENSORED at its budget: its steps are the env steps it ran, its seconds
    the training seconds it spent. The interquartile mean drops the lowest and the highest quarter
    (2 of 10 runs a side), so with at most that many failures the IQM is the same whatever value
    stands for "not solved"; with more it is a lower bound, and the table marks it with ">=".
  * IQM (`rliable.metrics.aggregate_iqm`, the 25 % trimmed mean) of steps and of seconds to solve,
    beside the medians;
  * 95 % percentile bootstrap confidence intervals (`rliable.library.get_interval_estimates`): for
    one side's IQM, seeds resampled with replacement; for a ratio rlnotes / reference of IQMs, the
    two sides' seeds resampled independently, each side within itself (a stratified bootstrap with
    the side as the stratum: `get_interval_estimates` given a list of two arrays, i.e. rliable's
    `StratifiedIndependentBootstrap`). The two sides are independent samples: a seed number means
    nothing shared between two libraries, so runs are not paired by seed.
  * verdict: a time-ratio interval that lies below 1 says rlnotes is faster, above 1 slower; one
    that contains 1 says these seeds cannot tell the two apart.
Throughput: env steps per second of rollout collection alone (policy forward + env step, no update)
beside a random-action loop over the same vector env (the ceiling), and of whole training.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import torch

from rlnotes.algos.common import EVAL_SEED_OFFSET, collect_rollout, crossed, eval_returns
from rlnotes.envs import make_vec

__all__ = [
    "ZOO", "DEFAULT_SEEDS", "TUNING_SEEDS", "parse_seeds", "run_rlnotes", "run_reference", "throughput", "iqm",
    "bootstrap_ci", "summarize", "markdown", "plot_steps", "main",
]

EVAL_EVERY = 2_048
EVAL_EPISODES = 10
SOLVED = 475.0

# The benchmark's seeds: ten a side, none of them in TUNING_SEEDS. (They are also the seeds of the
# notebooks' `make test-seeds` offset 1, course_seed(k) = k + 1000: checks there, not tuning.)
DEFAULT_SEEDS = tuple(range(1000, 1010))

# Seeds that chose (or may choose) a default, per algorithm: the benchmark's seeds stay out of them.
#   ppo   its defaults (10 epochs, lr 3e-3, lambda 0.95) came from a 24-seed sweep (commit dc6f946,
#         ppo.py's docstring) that does not name its seeds; the benchmark then ran seeds 1-5 and the
#         course counts from 1, so 1-24 is the reading, widened to 0-24 in case it counted from 0.
#         Its Pendulum-v1 preset was checked on 3 seeds (1-3, the notebooks' seeds).
#   a2c   "tried num_steps 8 and 16, lambda 0.95, Adam and lr 1e-3 on 6 seeds" (a2c.py): 1-6 read the
#         same way, widened to 0-6; plus 200-209, the seeds of benchmarks/trpo_diagnosis.py --algo a2c.
#   trpo  RL Zoo's values, not tuned here; 200-209 are the seeds of benchmarks/trpo_diagnosis.py,
#         whose findings may change its defaults.
#   dqn   RL Zoo's values, not tuned here.
TUNING_SEEDS = {
    "ppo": tuple(range(0, 25)),
    "a2c": (*range(0, 7), *range(200, 210)),
    "trpo": tuple(range(200, 210)),
    "dqn": (),
}


def parse_seeds(text: str) -> list[int]:
    """Seeds from the command line: "1000-1009" (a range, both ends included), "1,2,5" (a list), or
    both at once ("1-3,7"). Seeds are integers >= 0, each named once; anything else is a ValueError
    that says what was wrong. A single number is one seed ("5" is seed 5, not seeds 1 to 5)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("seeds: give a range like 1000-1009 or a list like 1,2,5, got nothing")
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"seeds: empty item in {text!r} (two commas, or one at an end)")
        low, dash, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(f"seeds: {part!r} in {text!r} is neither a seed (a non-negative integer) nor a "
                             f"range like 1000-1009") from None
        if first > last:
            raise ValueError(f"seeds: the range {part!r} runs backwards; write {last}-{first}")
        seeds.extend(range(first, last + 1))
    repeated = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if repeated:
        raise ValueError(f"seeds: {text!r} names seed(s) {repeated} more than once")
    return seeds


def seeds_argument(text: str) -> list[int]:
    """`parse_seeds` for argparse: its ValueError's message becomes the usage error's."""
    try:
        return parse_seeds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _linear(start: float):
    """RL Zoo's `lin_<start>`: start * progress_remaining (1 at the first step, 0 at n_timesteps)."""
    return lambda progress_remaining: progress_remaining * start


# RL Zoo's tuned hyperparameters (rl-baselines3-zoo, hyperparams/<algo>.yml).
ZOO = {
    ("ppo", "CartPole-v1"): dict(cls="stable_baselines3.PPO", n_envs=8, n_timesteps=100_000, kwargs=dict(
        n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
        learning_rate=_linear(0.001), clip_range=_linear(0.2))),
    ("a2c", "CartPole-v1"): dict(cls="stable_baselines3.A2C", n_envs=8, n_timesteps=500_000, kwargs=dict(ent_coef=0.0)),
    ("dqn", "CartPole-v1"): dict(cls="stable_baselines3.DQN", n_envs=1, n_timesteps=50_000, kwargs=dict(
        learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
        target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
        exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]))),
    ("trpo", "CartPole-v1"): dict(cls="sb3_contrib.TRPO", n_envs=2, n_timesteps=100_000, kwargs=dict(
        n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3,
        n_critic_updates=20)),
    ("ppo", "Pendulum-v1"): dict(cls="stable_baselines3.PPO", n_envs=4, n_timesteps=100_000, kwargs=dict(
        n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10, ent_coef=0.0, learning_rate=1e-3,
        clip_range=0.2, use_sde=True, sde_sample_freq=4)),
}


# ---- one run on each side ---------------------------------------------------------------------


def run_rlnotes(algo: str, env_id: str, seed: int, stop_when_solved: bool = True, **overrides) -> dict:
    """Train `rlnotes.algos.<algo>` with its defaults (and its `PRESETS[env_id]`, if it has one);
    return steps and seconds to solve, and the evaluations."""
    module = importlib.import_module(f"rlnotes.algos.{algo}")
    preset = getattr(module, "PRESETS", {}).get(env_id, {})  # the module's own settings for this task
    settings = {**preset, "env": env_id, "seed": seed, "num_threads": 1, "progress_bar": False, "eval_every": EVAL_EVERY,
                "eval_episodes": EVAL_EPISODES, "stop_when_solved": stop_when_solved, **overrides}
    config = module.Config(**settings)
    history = module.train(config)
    return {
        "side": "rlnotes", "algo": algo, "env": env_id, "seed": seed,
        "solved_step": history["solved_step"], "solved_seconds": history["solved_seconds"],
        "env_steps": history["env_steps"], "train_seconds": history["train_seconds"],
        "eval_steps": history["eval_steps"], "eval_means": history["eval_means"],
        "final_eval_mean": history["eval_mean"],
    }


def _evaluation_callback(env_id: str, seed: int, stop_when_solved: bool, record: dict):
    from stable_baselines3.common.callbacks import BaseCallback

    class Evaluate(BaseCallback):
        """Every EVAL_EVERY env steps: 10 deterministic episodes, time excluded; stop once solved."""

        def _on_training_start(self) -> None:
            self.start, self.eval_time, self.last = time.perf_counter(), 0.0, 0

        def _on_step(self) -> bool:
            before, self.last = self.last, self.num_timesteps
            if not crossed(before, self.num_timesteps, EVAL_EVERY):
                return True
            tick = time.perf_counter()
            train_seconds = tick - self.start - self.eval_time
            act = lambda obs: torch.as_tensor(self.model.predict(obs.numpy(), deterministic=True)[0])  # noqa: E731
            mean = float(np.mean(eval_returns(act, env_id, EVAL_EPISODES, seed + EVAL_SEED_OFFSET)))
            self.eval_time += time.perf_counter() - tick
            record["eval_steps"].append(self.num_timesteps)
            record["eval_means"].append(mean)
            record.update(env_steps=self.num_timesteps, train_seconds=train_seconds)
            if mean >= SOLVED and record["solved_step"] is None:
                record.update(solved_step=self.num_timesteps, solved_seconds=train_seconds)
                return not stop_when_solved
            return True

        def _on_training_end(self) -> None:
            record.update(env_steps=self.num_timesteps, train_seconds=time.perf_counter() - self.start - self.eval_time)

    return Evaluate()


def run_reference(algo: str, env_id: str, seed: int, stop_when_solved: bool = True) -> dict:
    """Train the SB3 / sb3-contrib algorithm with RL Zoo's hyperparameters under the same protocol."""
    from stable_baselines3.common.env_util import make_vec_env

    spec = ZOO[(algo, env_id)]
    module_name, cls_name = spec["cls"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), cls_name)
    torch.set_num_threads(1)
    envs = make_vec_env(env_id, n_envs=spec["n_envs"], seed=seed)
    model = cls("MlpPolicy", envs, seed=seed, device="cpu", verbose=0, **spec["kwargs"])
    record = {"side": "reference", "algo": algo, "env": env_id, "seed": seed, "library": spec["cls"],
              "solved_step": None, "solved_seconds": None, "eval_steps": [], "eval_means": []}
    model.learn(total_timesteps=spec["n_timesteps"], callback=_evaluation_callback(env_id, seed, stop_when_solved, record))
    act = lambda obs: torch.as_tensor(model.predict(obs.numpy(), deterministic=True)[0])  # noqa: E731
    record["final_eval_mean"] = float(np.mean(eval_returns(act, env_id, EVAL_EPISODES, seed + 2 * EVAL_SEED_OFFSET)))
    envs.close()
    return record


# ---- throughput -------------------------------------------------------------------------------


def throughput(env_id: str = "CartPole-v1", num_envs: int = 8, steps: int = 4_096, rounds: int = 5, seed: int = 0) -> dict:
    """Env steps per second: random actions (the ceiling) and rlnotes' rollout collection (policy
    forward + sampling + env step + storage + the batched log-prob and value passes, no update) over
    the same synchronous vector env. The two alternate for `rounds` rounds; medians are reported."""
    from rlnotes.nets import ValueNetwork, flat_size, make_policy

    torch.set_num_threads(1)
    envs = make_vec(env_id, num_envs, seed=seed)
    obs, _ = envs.reset(seed=seed)
    policy = make_policy(envs.single_observation_space, envs.single_action_space)
    value_net = ValueNetwork(flat_size(envs.single_observation_space))
    iterations = steps // num_envs
    random_rates, rollout_rates = [], []
    for _ in range(rounds):
        tick = time.perf_counter()
        for _ in range(iterations):
            envs.step(envs.action_space.sample())
        random_rates.append(iterations * num_envs / (time.perf_counter() - tick))
        tick = time.perf_counter()
        _, obs = collect_rollout(envs, policy, value_net, obs, iterations)
        rollout_rates.append(iterations * num_envs / (time.perf_counter() - tick))
    envs.close()
    random_rate, rollout_rate = statistics.median(random_rates), statistics.median(rollout_rates)
    return {"env": env_id, "num_envs": num_envs, "random_steps_per_s": random_rate,
            "rollout_steps_per_s": rollout_rate, "rollout_over_random": rollout_rate / random_rate}


# ---- statistics: IQM and bootstrap confidence intervals (rliable) --------------------------------


def _rliable():
    """rliable's `metrics` and `library` modules.

    rliable 1.2 needs arch < 8, and arch 7.2 calls pandas' private `deprecate_kwarg(old, new)` at
    import, which pandas 3 changed to `deprecate_kwarg(warning_class, old, new)`: the import fails with
    a TypeError. While importing, and only then, old-style calls get pandas' FutureWarning class put
    in front; nothing else in pandas or arch is touched, and arch's bootstrap does not use it.
    """
    try:
        from rliable import library, metrics
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"{error}: the bench statistics need rliable: pip install -e \".[bench]\"") from None
    except TypeError:
        import sys as _sys

        import pandas.util._decorators as decorators

        original = decorators.deprecate_kwarg

        def deprecate_kwarg(*args, **kwargs):  # arch 7.2 passes (old_name, new_name)
            return original(FutureWarning, *args, **kwargs) if args and isinstance(args[0], str) else original(*args, **kwargs)

        for name in [name for name in _sys.modules if name == "arch" or name.startswith(("arch.", "rliable"))]:
            del _sys.modules[name]  # the half-imported modules of the failed attempt
        decorators.deprecate_kwarg = deprecate_kwarg
        try:
            from rliable import library, metrics
        finally:
            decorators.deprecate_kwarg = original
    return metrics, library


def iqm(values) -> float:
    """Interquartile mean (25 % trimmed mean: the middle half of the sorted values), by
    `rliable.metrics.aggregate_iqm`. With n values it drops int(n / 4) from each end (scipy's
    trim_mean): the IQM of 1..8 is the mean of 3..6, 4.5."""
    values = np.asarray(values, dtype=float).reshape(-1, 1)  # rliable: (runs, tasks)
    if values.size == 0:
        raise ValueError("iqm: no values")
    metrics, _ = _rliable()
    return float(metrics.aggregate_iqm(values))


def bootstrap_ci(values, other=None, reps: int = 5_000, size: float = 0.95, seed: int = 0):
    """(point, low, high): the IQM of `values` and its percentile bootstrap interval; given `other`,
    the ratio IQM(values) / IQM(other) and its interval, the two samples resampled independently.

    `rliable.library.get_interval_estimates` does the resampling. It draws from numpy's global random
    state (its own `random_state` argument is not used for the draws), so that state is seeded with
    `seed` here and restored afterwards: the same data give the same interval, and nothing else's
    random stream moves. Returns (None, None, None) if a side is empty or the ratio's denominator is 0.
    """
    values = np.asarray(values, dtype=float).reshape(-1, 1)
    other = None if other is None else np.asarray(other, dtype=float).reshape(-1, 1)
    if values.size == 0 or (other is not None and other.size == 0):
        return None, None, None
    metrics, library = _rliable()
    if other is None:
        data, func = values, lambda x: np.array([metrics.aggregate_iqm(x)])
    else:
        if metrics.aggregate_iqm(other) == 0:
            return None, None, None
        data = [values, other]  # a list: each array resampled on its own (StratifiedIndependentBootstrap)

        def func(x, y):
            denominator = metrics.aggregate_iqm(y)
            return np.array([metrics.aggregate_iqm(x) / denominator if denominator else np.inf])

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        points, intervals = library.get_interval_estimates({"x": data}, func, reps=reps, confidence_interval_size=size)
    finally:
        np.random.set_state(state)
    low, high = intervals["x"][:, 0]
    return float(points["x"][0]), float(low), float(high)


def verdict(low, high) -> str:
    """What a 95 % interval of the time ratio rlnotes / reference says."""
    if low is None:
        return "-"
    if high < 1:
        return "rlnotes faster"
    if low > 1:
        return "reference faster"
    return "no clear difference"


# ---- summary ----------------------------------------------------------------------------------


def censored(run: dict) -> tuple[float, float]:
    """(steps, seconds) to solve; for a run that did not solve, what it spent: its budget of env steps
    and its training seconds (a lower bound on what solving would have taken)."""
    if run["solved_step"] is not None:
        return run["solved_step"], run["solved_seconds"]
    return run["env_steps"], run["train_seconds"]


def summarize(runs: list[dict], reps: int = 5_000, seed: int = 0) -> list[dict]:
    """One row per (algo, env): per-seed steps and seconds to solve on each side, failures, medians,
    IQMs with 95 % bootstrap intervals, and the ratios rlnotes / reference (below 1: rlnotes better).

    Every statistic counts an unsolved run censored at its budget (`censored`); `solved` says how
    many solved, `iqm_lower_bound` whether more failed than the IQM trims (then the IQM is a lower
    bound). `time_ratio` is the ratio of median seconds, `time_ratio_iqm` of IQM seconds with its
    interval `time_ratio_ci`; `steps_ratio_iqm` / `steps_ratio_ci` the same for steps.
    """
    rows = []
    for algo, env_id in dict.fromkeys((run["algo"], run["env"]) for run in runs):
        row = {"algo": algo, "env": env_id}
        for side in ("rlnotes", "reference"):
            mine = [run for run in runs if (run["algo"], run["env"], run["side"]) == (algo, env_id, side)]
            steps, seconds = zip(*(censored(run) for run in mine)) if mine else ((), ())
            point, low, high = bootstrap_ci(steps, reps=reps, seed=seed)
            solved = sum(run["solved_step"] is not None for run in mine)
            row[side] = {
                "seeds": [run["seed"] for run in mine],
                "solved": solved,
                "failures": len(mine) - solved,
                "solved_steps": [run["solved_step"] for run in mine],
                "solved_seconds": [None if run["solved_seconds"] is None else round(run["solved_seconds"], 2) for run in mine],
                "censored_steps": list(steps),
                "censored_seconds": [round(value, 3) for value in seconds],
                "median_steps": statistics.median(steps) if mine else None,
                "median_seconds": statistics.median(seconds) if mine else None,
                "iqm_steps": point, "iqm_steps_ci": None if low is None else [low, high],
                "iqm_seconds": iqm(seconds) if mine else None,
                "iqm_lower_bound": len(mine) - solved > len(mine) // 4,
                "final_eval_means": [run["final_eval_mean"] for run in mine],
                "steps_per_s": statistics.median([run["env_steps"] / run["train_seconds"] for run in mine
                                                  if run["train_seconds"]] or [None]),
            }
        ours, theirs = row["rlnotes"], row["reference"]
        row["time_ratio"] = (ours["median_seconds"] / theirs["median_seconds"]
                             if ours["median_seconds"] is not None and theirs["median_seconds"] else None)
        point, low, high = bootstrap_ci(ours["censored_seconds"], theirs["censored_seconds"], reps=reps, seed=seed)
        row["time_ratio_iqm"], row["time_ratio_ci"] = point, None if low is None else [low, high]
        point, low, high = bootstrap_ci(ours["censored_steps"], theirs["censored_steps"], reps=reps, seed=seed)
        row["steps_ratio_iqm"], row["steps_ratio_ci"] = point, None if low is None else [low, high]
        row["verdict"] = verdict(*(row["time_ratio_ci"] or (None, None)))
        row["throughput_ratio"] = (ours["steps_per_s"] / theirs["steps_per_s"]
                                   if ours["steps_per_s"] and theirs["steps_per_s"] else None)
        rows.append(row)
    return rows


def _fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def _with_ci(point, ci, digits=0, lower_bound=False):
    """'10,240 [7,851, 28,955]'; '>= ' in front when the value is a lower bound."""
    if point is None:
        return "-"
    text = ">= " * lower_bound + _fmt(point, digits)
    return text if ci is None else f"{text} [{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]"


def markdown(rows: list[dict], speed: dict | None = None, budget_rows: list[dict] | None = None) -> str:
    """The results as markdown tables: steps to solve, seconds to solve, per seed, then the extras."""
    lines = [
        "Steps to solve (IQM with its 95 % bootstrap interval; an unsolved run counts at its budget):",
        "",
        "| algorithm | env | rlnotes solved | rlnotes median | rlnotes IQM [95% CI] | reference solved | "
        "reference median | reference IQM [95% CI] | steps ratio, IQMs [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours, ref = row["rlnotes"], row["reference"]
        lines.append(
            f"| {row['algo']} | {row['env']} | {ours['solved']}/{len(ours['seeds'])} | {_fmt(ours['median_steps'], 0)} | "
            f"{_with_ci(ours['iqm_steps'], ours['iqm_steps_ci'], 0, ours['iqm_lower_bound'])} | "
            f"{ref['solved']}/{len(ref['seeds'])} | {_fmt(ref['median_steps'], 0)} | "
            f"{_with_ci(ref['iqm_steps'], ref['iqm_steps_ci'], 0, ref['iqm_lower_bound'])} | "
            f"{_with_ci(row['steps_ratio_iqm'], row['steps_ratio_ci'], 2)} |"
        )
    lines += [
        "",
        "Training seconds to solve (ratio rlnotes / reference: below 1, rlnotes is faster):",
        "",
        "| algorithm | env | rlnotes median s | rlnotes IQM s | reference median s | reference IQM s | "
        "time ratio, medians | time ratio, IQMs [95% CI] | verdict | training steps/s ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours, ref = row["rlnotes"], row["reference"]
        lines.append(
            f"| {row['algo']} | {row['env']} | {_fmt(ours['median_seconds'])} | {_fmt(ours['iqm_seconds'])} | "
            f"{_fmt(ref['median_seconds'])} | {_fmt(ref['iqm_seconds'])} | {_fmt(row['time_ratio'], 2)} | "
            f"{_with_ci(row['time_ratio_iqm'], row['time_ratio_ci'], 2)} | {row['verdict']} | "
            f"{_fmt(row['throughput_ratio'], 2)} |"
        )
    lines += ["", "Per seed (env steps to solve / training seconds to solve; 'unsolved (N)': not solved in "
                  "its budget of N steps):", ""]
    for row in rows:
        for side in ("rlnotes", "reference"):
            data = row[side]
            cells = ", ".join(
                f"{seed}: {_fmt(st, 0)} / {_fmt(sec)}" if st is not None else f"{seed}: unsolved ({_fmt(budget, 0)})"
                for seed, st, sec, budget in zip(data["seeds"], data["solved_steps"], data["solved_seconds"],
                                                 data["censored_steps"]))
            lines.append(f"* {row['algo']} {row['env']} {side}: {cells}")
    if budget_rows:
        lines += ["", "| fixed budget | env | steps | rlnotes final mean return | reference final mean return | "
                      "rlnotes s | reference s |",
                  "|---|---|---|---|---|---|---|"]
        for row in budget_rows:
            lines.append(f"| {row['algo']} | {row['env']} | {row['steps']:,} | {_fmt(row['rlnotes_mean'])} | "
                         f"{_fmt(row['reference_mean'])} | {_fmt(row['rlnotes_seconds'])} | {_fmt(row['reference_seconds'])} |")
    if speed:
        lines += ["", f"Rollout collection on {speed['env']} x {speed['num_envs']} envs: random actions "
                      f"{speed['random_steps_per_s']:,.0f} steps/s (ceiling), rlnotes collect_rollout "
                      f"{speed['rollout_steps_per_s']:,.0f} steps/s = {speed['rollout_over_random']:.2f} of the ceiling."]
    return "\n".join(lines)


def plot_steps(rows: list[dict], path) -> Path:
    """Per-seed steps to solve, both sides, one panel per algorithm (log scale): a dot per seed, a cross
    for an unsolved seed (at its budget), and each side's IQM with its 95 % interval. Saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows) + 0.6, 3.9), squeeze=False)
    jitter = np.random.default_rng(0)
    for ax, row in zip(axes[0], rows):
        for x, side, color in ((0, "rlnotes", "C0"), (1, "reference", "C1")):
            data = row[side]
            solved = [s is not None for s in data["solved_steps"]]
            steps = np.asarray(data["censored_steps"], dtype=float)
            xs = x - 0.25 + 0.2 * jitter.random(len(steps))
            ax.scatter(xs[solved], steps[solved], s=18, color=color, alpha=0.8)
            unsolved = [not flag for flag in solved]
            if any(unsolved):
                ax.scatter(xs[unsolved], steps[unsolved], s=30, marker="x", color="k")
            if data["iqm_steps"] is not None:
                low, high = data["iqm_steps_ci"] or (data["iqm_steps"],) * 2
                ax.errorbar([x + 0.15], [data["iqm_steps"]], yerr=[[data["iqm_steps"] - low], [high - data["iqm_steps"]]],
                            fmt="D", color=color, capsize=4, ms=6)
        ax.set_yscale("log")
        ax.set_xticks([0, 1], ["rlnotes", "reference"])
        ax.set_xlim(-0.6, 1.6)
        ratio = _with_ci(row["time_ratio_iqm"], row["time_ratio_ci"], 2)
        ax.set_title(f"{row['algo']} {row['env']}\ntime ratio {ratio}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("env steps to solve (log scale)")
    from matplotlib.lines import Line2D

    legend = [Line2D([], [], marker="o", ls="", color="0.4", label="a seed"),
              Line2D([], [], marker="x", ls="", color="k", label="unsolved (at its budget)"),
              Line2D([], [], marker="D", ls="-", color="0.4", label="IQM, 95% CI")]
    fig.legend(handles=legend, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def _load_runs(path: Path) -> tuple[list[dict], dict]:
    """Runs from a runs.jsonl (one JSON line a run) or a results.json ({"runs": [...], "meta": ...})."""
    text = Path(path).read_text()
    if Path(path).suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()], {}
    data = json.loads(text)
    return data["runs"], data.get("meta", {})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rlnotes bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="ppo,a2c,dqn,trpo", help="comma-separated, run on CartPole-v1")
    parser.add_argument("--seeds", type=seeds_argument, default=list(DEFAULT_SEEDS),
                        help="a range (1000-1009) or a list (1,2,5) of seeds for every algorithm; "
                             f"default {DEFAULT_SEEDS[0]}-{DEFAULT_SEEDS[-1]}, seeds no default was tuned on")
    parser.add_argument("--pendulum-seeds", type=int, default=3,
                        help="how many of the seeds (the first ones) run the fixed-budget PPO Pendulum-v1 comparison (0: skip)")
    parser.add_argument("--reps", type=int, default=5_000, help="bootstrap resamples for each confidence interval")
    parser.add_argument("--out", default="benchmarks/results", help="folder for results.json, results.md, "
                        "runs.jsonl (each run as it finishes) and steps_to_solve.png")
    parser.add_argument("--from-runs", default=None, help="no training: summarize the runs of an earlier "
                        "runs.jsonl or results.json (e.g. one cut short) into tables and the plot")
    args = parser.parse_args(argv)
    algos = [algo.strip() for algo in args.algos.split(",") if algo.strip()]
    unknown = [algo for algo in algos if (algo, "CartPole-v1") not in ZOO]
    if unknown:
        parser.error(f"--algos: no reference for {', '.join(unknown)} (known: ppo, a2c, dqn, trpo)")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from importlib import metadata

    versions = {}
    for name in ("stable_baselines3", "sb3_contrib", "rliable"):
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            if not args.from_runs:  # training needs them; a summary of earlier runs does not
                raise ModuleNotFoundError(f"rlnotes bench needs {name}: pip install -e \".[bench]\"") from None
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {_cpu_model()}, {os.cpu_count()} cores",
            "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
            "python": platform.python_version(), "torch": torch.__version__, **versions,
            "seeds": args.seeds, "algos": algos, "bootstrap_reps": args.reps}
    runs, budget_rows, speed = [], [], None
    if args.from_runs:
        runs, earlier = _load_runs(Path(args.from_runs))
        del meta["load_average_at_start"]
        meta.update(seeds=sorted({run["seed"] for run in runs}), algos=list(dict.fromkeys(run["algo"] for run in runs)))
        meta = {**meta, **earlier, "summarized_from": str(args.from_runs), "bootstrap_reps": args.reps}
        budget_rows = earlier.get("budget_rows", [])
    else:
        for algo in algos:
            overlap = sorted(set(args.seeds) & set(TUNING_SEEDS.get(algo, ())))
            if overlap:
                meta.setdefault("tuned_seed_overlap", {})[algo] = overlap
                print(f"note: {algo}'s defaults were tuned on seeds {overlap} (bench.TUNING_SEEDS): its result "
                      f"on them is partly the tuning's luck", file=sys.stderr)
        log = out / "runs.jsonl"
        log.write_text("")  # this run's runs, one line each as they finish: a run cut short keeps them
        for seed in args.seeds:
            for algo in algos:
                order = (run_rlnotes, run_reference) if seed % 2 == 0 else (run_reference, run_rlnotes)
                for run in order:
                    result = run(algo, "CartPole-v1", seed)
                    runs.append(result)
                    with log.open("a") as f:
                        f.write(json.dumps(result) + "\n")
                    summary = {k: result[k] for k in ("side", "algo", "seed", "solved_step", "solved_seconds")}
                    print(json.dumps(summary), flush=True)

        if args.pendulum_seeds:
            budget = ZOO[("ppo", "Pendulum-v1")]["n_timesteps"]
            results = {"rlnotes": [], "reference": []}
            for seed in args.seeds[: args.pendulum_seeds]:
                results["rlnotes"].append(run_rlnotes("ppo", "Pendulum-v1", seed, stop_when_solved=False, total_steps=budget))
                results["reference"].append(run_reference("ppo", "Pendulum-v1", seed, stop_when_solved=False))
            runs += results["rlnotes"] + results["reference"]
            budget_rows.append({
                "algo": "ppo", "env": "Pendulum-v1", "steps": budget,
                **{f"{side}_mean": statistics.mean(r["final_eval_mean"] for r in results[side]) for side in results},
                **{f"{side}_seconds": statistics.median(r["train_seconds"] for r in results[side]) for side in results},
            })
        speed = throughput()
        meta["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]

    rows = summarize([run for run in runs if run["env"] == "CartPole-v1"], reps=args.reps)
    table = markdown(rows, speed, budget_rows)
    if rows:
        meta["plot"] = str(plot_steps(rows, out / "steps_to_solve.png"))
    (out / "results.json").write_text(json.dumps({"meta": {**meta, "budget_rows": budget_rows}, "rows": rows,
                                                  "budget": budget_rows, "throughput": speed, "runs": runs}, indent=1))
    (out / "results.md").write_text(f"Run of {meta['date']} on {meta['machine']}; {json.dumps(meta)}\n\n{table}\n")
    print(table)
    return 0
