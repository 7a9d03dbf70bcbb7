"""`rlnotes bench`: the course's algorithms beside Stable-Baselines3 and sb3-contrib, in one run.

    pip install -e ".[bench]"            (or `make bench`, which also runs it)
    rlnotes bench --seeds 5              markdown table on stdout, JSON + markdown in benchmarks/results/

Protocol, identical for both sides:
  * one torch thread each; the runs of one seed alternate (rlnotes first on even seeds, the reference
    first on odd seeds), so that a slower or faster phase of the machine hits both alike;
  * every 2,048 env steps, 10 deterministic episodes on evaluation seeds the training never uses
    (the same `rlnotes.algos.common.evaluate` for both); solved when their mean is >= 475;
  * wall seconds count training only: the evaluation time is measured and subtracted;
  * the reference runs RL Zoo's tuned CartPole-v1 hyperparameters (rl-baselines3-zoo,
    hyperparams/{ppo,a2c,dqn,trpo}.yml) and keeps the zoo's schedules as the zoo defines them:
    `learn(total_timesteps=n_timesteps)` with the zoo's n_timesteps, stopped early by the callback
    once solved. rlnotes runs its own defaults (its Config), with its own total_steps budget.
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
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from rlnotes.algos.common import EVAL_SEED_OFFSET, collect_rollout, crossed, evaluate
from rlnotes.envs import make_vec

__all__ = ["ZOO", "run_rlnotes", "run_reference", "throughput", "summarize", "markdown", "main"]

EVAL_EVERY = 2_048
EVAL_EPISODES = 10
SOLVED = 475.0


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
            mean = float(np.mean(evaluate(act, env_id, EVAL_EPISODES, seed + EVAL_SEED_OFFSET)))
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
    record["final_eval_mean"] = float(np.mean(evaluate(act, env_id, EVAL_EPISODES, seed + 2 * EVAL_SEED_OFFSET)))
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


# ---- summary ----------------------------------------------------------------------------------


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (algo, env): per-seed steps and seconds to solve on each side, medians, ratios.

    The ratio is rlnotes / reference of the median wall seconds (below 1: rlnotes is faster). A side
    with an unsolved seed gets its median over the solved seeds, and `solved` says how many.
    """
    rows = []
    for algo, env_id in dict.fromkeys((run["algo"], run["env"]) for run in runs):
        row = {"algo": algo, "env": env_id}
        for side in ("rlnotes", "reference"):
            mine = [run for run in runs if (run["algo"], run["env"], run["side"]) == (algo, env_id, side)]
            row[side] = {
                "seeds": [run["seed"] for run in mine],
                "solved": sum(run["solved_step"] is not None for run in mine),
                "solved_steps": [run["solved_step"] for run in mine],
                "solved_seconds": [None if run["solved_seconds"] is None else round(run["solved_seconds"], 2) for run in mine],
                "median_steps": _median_or_none([run["solved_step"] for run in mine]),
                "median_seconds": _median_or_none([run["solved_seconds"] for run in mine]),
                "final_eval_means": [run["final_eval_mean"] for run in mine],
                "steps_per_s": _median_or_none([run["env_steps"] / run["train_seconds"] for run in mine if run["train_seconds"]]),
            }
        ours, theirs = row["rlnotes"]["median_seconds"], row["reference"]["median_seconds"]
        row["time_ratio"] = ours / theirs if ours is not None and theirs else None
        ours, theirs = row["rlnotes"]["steps_per_s"], row["reference"]["steps_per_s"]
        row["throughput_ratio"] = ours / theirs if ours and theirs else None
        rows.append(row)
    return rows


def _fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(rows: list[dict], speed: dict | None = None, budget_rows: list[dict] | None = None) -> str:
    """The results as markdown tables."""
    lines = [
        "| algorithm | env | rlnotes solved | rlnotes median steps | rlnotes median s | reference solved | "
        "reference median steps | reference median s | time ratio (rlnotes / ref) | training steps/s ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours, ref = row["rlnotes"], row["reference"]
        lines.append(
            f"| {row['algo']} | {row['env']} | {ours['solved']}/{len(ours['seeds'])} | {_fmt(ours['median_steps'], 0)} | "
            f"{_fmt(ours['median_seconds'])} | {ref['solved']}/{len(ref['seeds'])} | {_fmt(ref['median_steps'], 0)} | "
            f"{_fmt(ref['median_seconds'])} | {_fmt(row['time_ratio'], 2)} | {_fmt(row['throughput_ratio'], 2)} |"
        )
    lines += ["", "Per seed (steps to solve / seconds to solve; '-' = not solved within the budget):", ""]
    for row in rows:
        for side in ("rlnotes", "reference"):
            cells = ", ".join(f"{_fmt(st, 0)} / {_fmt(sec)}" for st, sec in zip(row[side]["solved_steps"], row[side]["solved_seconds"]))
            lines.append(f"* {row['algo']} {row['env']} {side}: {cells}")
    if budget_rows:
        lines += ["", "| fixed budget | env | steps | rlnotes final mean return | reference final mean return | rlnotes s | reference s |",
                  "|---|---|---|---|---|---|---|"]
        for row in budget_rows:
            lines.append(f"| {row['algo']} | {row['env']} | {row['steps']:,} | {_fmt(row['rlnotes_mean'])} | "
                         f"{_fmt(row['reference_mean'])} | {_fmt(row['rlnotes_seconds'])} | {_fmt(row['reference_seconds'])} |")
    if speed:
        lines += ["", f"Rollout collection on {speed['env']} x {speed['num_envs']} envs: random actions "
                      f"{speed['random_steps_per_s']:,.0f} steps/s (ceiling), rlnotes collect_rollout "
                      f"{speed['rollout_steps_per_s']:,.0f} steps/s = {speed['rollout_over_random']:.2f} of the ceiling."]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rlnotes bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="ppo,a2c,dqn,trpo", help="comma-separated, run on CartPole-v1")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 1..N for every algorithm")
    parser.add_argument("--pendulum-seeds", type=int, default=3, help="seeds of the fixed-budget PPO Pendulum-v1 run (0: skip)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    runs = []
    for seed in range(1, args.seeds + 1):
        for algo in args.algos.split(","):
            order = (run_rlnotes, run_reference) if seed % 2 == 0 else (run_reference, run_rlnotes)
            for run in order:
                result = run(algo, "CartPole-v1", seed)
                runs.append(result)
                print(json.dumps({k: result[k] for k in ("side", "algo", "seed", "solved_step", "solved_seconds")}), flush=True)

    budget_rows = []
    if args.pendulum_seeds:
        budget = ZOO[("ppo", "Pendulum-v1")]["n_timesteps"]
        results = {"rlnotes": [], "reference": []}
        for seed in range(1, args.pendulum_seeds + 1):
            results["rlnotes"].append(run_rlnotes("ppo", "Pendulum-v1", seed, stop_when_solved=False, total_steps=budget))
            results["reference"].append(run_reference("ppo", "Pendulum-v1", seed, stop_when_solved=False))
        runs += results["rlnotes"] + results["reference"]
        budget_rows.append({
            "algo": "ppo", "env": "Pendulum-v1", "steps": budget,
            **{f"{side}_mean": statistics.mean(r["final_eval_mean"] for r in results[side]) for side in results},
            **{f"{side}_seconds": statistics.median(r["train_seconds"] for r in results[side]) for side in results},
        })

    speed = throughput()
    rows = summarize([run for run in runs if run["env"] == "CartPole-v1"])
    table = markdown(rows, speed, budget_rows)
    import stable_baselines3
    import sb3_contrib

    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {_cpu_model()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "torch": torch.__version__,
            "stable_baselines3": stable_baselines3.__version__, "sb3_contrib": sb3_contrib.__version__}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "budget": budget_rows,
                                                  "throughput": speed, "runs": runs}, indent=1))
    (out / "results.md").write_text(f"Run of {meta['date']} on {meta['machine']}; {json.dumps(meta)}\n\n{table}\n")
    print(table)
    return 0
