"""Where rlnotes' TRPO spends its steps on CartPole-v1, beside sb3-contrib's TRPO on RL Zoo's settings.

    .venv/bin/python benchmarks/trpo_diagnosis.py --seeds 200-202 --variants defaults,reference
    .venv/bin/python benchmarks/trpo_diagnosis.py --algo a2c --variants defaults,reference

Each variant is rlnotes' TRPO (or A2C) with ONE thing changed through its Config (or, for
implementation details that no Config field reaches, a patch applied inside this script only; the
module is not edited), run on a few seeds under `rlnotes bench`'s protocol (evaluation every 2,048
steps, solved = 10 deterministic episodes averaging >= 475) with a small budget. "reference" is
sb3-contrib's TRPO (SB3's A2C) with RL Zoo's settings. Printed per run: env steps to solve, policy
updates to solve, and (TRPO) per update the accepted fraction of the full step and the KL reached.

The seeds default to 200-202 (the diagnosis used 200-209): seeds that neither the benchmark's defaults (1000-1009) nor any
tuning used, so that whatever this diagnosis leads to does not tune on the benchmark's seeds.
Results go to benchmarks/results/<algo>_diagnosis.jsonl (one JSON line a run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from rlnotes import bench

BUDGET = 40_960  # CartPole TRPO solves in 4k-20k steps; a run that has not solved by then counts as "> budget"


@contextmanager
def _line_search_kl_new_old():
    """sb3-contrib's line search measures KL(pi_new || pi_old); rlnotes measures KL(pi_old || pi_new)."""
    from rlnotes.algos import common, trpo

    original = trpo.surrogate_and_kl

    def patched(policy, obs, actions, old_logp, advantages, old_dist):
        with torch.no_grad():
            dist = policy(obs)
            surrogate = -common.surrogate_loss(dist.log_prob(actions), old_logp, advantages).mean()
            kl = common.policy_kl(dist, old_dist).mean()
        return surrogate, kl

    trpo.surrogate_and_kl = patched
    try:
        yield
    finally:
        trpo.surrogate_and_kl = original


@contextmanager
def _nothing():
    yield


# name -> (Config overrides, patch); one change each against rlnotes' defaults.
TRPO_VARIANTS = {
    "defaults": ({}, _nothing),
    "kl_new_old": ({}, _line_search_kl_new_old),
    "damping_0.1": ({"damping": 0.1}, _nothing),  # sb3-contrib's own default (the zoo sets 1e-3)
    "max_kl_0.02": ({"max_kl": 0.02}, _nothing),
    "max_kl_0.05": ({"max_kl": 0.05}, _nothing),
    "lambda_0.95": ({"gae_lambda": 0.95}, _nothing),
    "batch_512": ({"num_steps": 256}, _nothing),  # 2 envs x 256
    "batch_256": ({"num_steps": 128}, _nothing),
    "value_epochs_5": ({"value_epochs": 5}, _nothing),
    "value_lr_3e-3": ({"value_learning_rate": 3e-3}, _nothing),
    "no_adv_norm": ({"normalize_advantages": False}, _nothing),
    "cg_10": ({"cg_iterations": 10}, _nothing),
}
A2C_VARIANTS = {
    "defaults": ({}, _nothing),
    # rlnotes' value_loss is 0.5 * MSE, SB3's A2C uses MSE: with the same vf_coef 0.5 the critic's gradient
    # is half of SB3's, inside one gradient-norm clip (0.5) shared with the policy. vf_coef 1.0 matches SB3.
    "vf_coef_1.0": ({"vf_coef": 1.0}, _nothing),
    "adv_norm": ({"normalize_advantages": True}, _nothing),
    "lr_1e-3": ({"learning_rate": 1e-3}, _nothing),
    "num_steps_8": ({"num_steps": 8}, _nothing),
    "lambda_0.95": ({"gae_lambda": 0.95}, _nothing),
    "adam": ({"optimizer": "adam"}, _nothing),
}


def run_variant(algo: str, name: str, seed: int, budget: int) -> dict:
    if name == "reference":
        kls, successes = [], []
        if algo == "trpo":  # record sb3-contrib's per-update KL and line-search outcome from its logger
            import sb3_contrib

            original = sb3_contrib.TRPO.train

            def train(self):
                original(self)
                kls.append(self.logger.name_to_value["train/kl_divergence_loss"])
                successes.append(self.logger.name_to_value["train/is_line_search_success"])

            sb3_contrib.TRPO.train = train
        try:
            record = bench.run_reference(algo, "CartPole-v1", seed)
        finally:
            if algo == "trpo":
                sb3_contrib.TRPO.train = original
        updates = None
        if record["solved_step"] is not None:
            spec = bench.ZOO[(algo, "CartPole-v1")]
            batch = spec["n_envs"] * spec["kwargs"].get("n_steps", 5)
            # SB3 evaluates inside the rollout: the evaluation at step S has seen S // batch - 1 updates
            # when S is a multiple of the batch (it runs before that batch's update), S // batch otherwise.
            updates = record["solved_step"] // batch - (record["solved_step"] % batch == 0)
        out = {"algo": algo, "variant": name, "seed": seed, "solved_step": record["solved_step"],
               "updates": updates, "seconds": record["solved_seconds"]}
        if kls:
            out.update(accepted=float(np.mean(successes)), mean_kl=float(np.mean(kls)),
                       first_kls=[round(float(k), 4) for k in kls[:8]])
        return out
    overrides, patch = (TRPO_VARIANTS if algo == "trpo" else A2C_VARIANTS)[name]
    module = __import__(f"rlnotes.algos.{algo}", fromlist=["Config", "train"])
    config = module.Config(seed=seed, total_steps=budget, num_threads=1, progress_bar=False,
                           eval_every=bench.EVAL_EVERY, eval_episodes=bench.EVAL_EPISODES, **overrides)
    with patch():
        history = module.train(config)
    solved = history["solved_step"]
    out = {"algo": algo, "variant": name, "seed": seed, "solved_step": solved,
           "updates": None if solved is None else sum(s <= solved for s in history["update_steps"]),
           "seconds": history["solved_seconds"]}
    if algo == "trpo":
        fractions = history["step_fraction"]
        out.update(accepted=float(np.mean(history["accepted"])), mean_fraction=float(np.mean(fractions)),
                   mean_kl=float(np.mean(history["kl"])), first_fractions=[round(f, 3) for f in fractions[:8]],
                   first_kls=[round(k, 4) for k in history["kl"][:8]])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", default="trpo", choices=("trpo", "a2c"))
    parser.add_argument("--seeds", type=bench.seeds_argument, default=bench.parse_seeds("200-202"))
    parser.add_argument("--variants", default="defaults,reference")
    parser.add_argument("--budget", type=int, default=BUDGET)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"{args.algo}_diagnosis.jsonl"
    results = []
    for name in args.variants.split(","):
        for seed in args.seeds:
            result = run_variant(args.algo, name, seed, args.budget)
            results.append(result)
            with log.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)
    print(f"\n| variant | steps to solve per seed ({', '.join(map(str, args.seeds))}) | median | updates to solve |")
    print("|---|---|---|---|")
    for name in args.variants.split(","):
        mine = [r for r in results if r["variant"] == name]
        steps = [r["solved_step"] for r in mine]
        censored = [s if s is not None else args.budget + 1 for s in steps]
        cells = ", ".join(f"{s:,}" if s is not None else f">{args.budget:,}" for s in steps)
        median = statistics.median(censored)
        median_text = f">{args.budget:,}" if median > args.budget else f"{median:,.0f}"
        updates = ", ".join("-" if r["updates"] is None else str(r["updates"]) for r in mine)
        print(f"| {name} | {cells} | {median_text} | {updates} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
