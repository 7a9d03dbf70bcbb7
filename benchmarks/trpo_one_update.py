"""rlnotes' TRPO step and sb3-contrib's, from the same weights on the same batch, update by update.

    .venv/bin/python benchmarks/trpo_one_update.py --seed 200 --updates 6

sb3-contrib's TRPO (RL Zoo's CartPole-v1 settings) trains for `updates` updates. Before each of its
updates, this script copies its policy weights into an rlnotes `CategoricalPolicy` and runs
`rlnotes.algos.trpo.trpo_step` on sb3-contrib's own batch (observations, actions, GAE advantages
normalized as sb3-contrib does), then compares the two steps: the KL(pi_old || pi_new) each reaches on
the batch, the surrogate gain, and the cosine between the two parameter changes. Identical algorithms
give a cosine near 1 and the same KL (sb3-contrib's conjugate gradient starts from 1e-4 noise, so not
exactly 1). Any difference in steps to solve then comes from elsewhere (data, seeds), not from the step.
The critic is compared the same way: rlnotes' `fit_value` from sb3's critic weights and Adam state
on sb3's returns, against sb3's critic after its update (mean squared error on the batch). About 20 s of CPU.
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector

from rlnotes.advantages import normalize
from rlnotes.algos import trpo
from rlnotes.algos.common import freeze_distribution, policy_kl
from rlnotes.bench import ZOO

# sb3's ActorCriticPolicy parameter -> rlnotes CategoricalPolicy parameter (mlp: Linear 0, Tanh, Linear 2, Tanh, Linear 4)
VALUE_NAMES = {
    "mlp_extractor.value_net.0.weight": "net.0.weight", "mlp_extractor.value_net.0.bias": "net.0.bias",
    "mlp_extractor.value_net.2.weight": "net.2.weight", "mlp_extractor.value_net.2.bias": "net.2.bias",
    "value_net.weight": "net.4.weight", "value_net.bias": "net.4.bias",
}
NAMES = {
    "mlp_extractor.policy_net.0.weight": "logits.0.weight", "mlp_extractor.policy_net.0.bias": "logits.0.bias",
    "mlp_extractor.policy_net.2.weight": "logits.2.weight", "mlp_extractor.policy_net.2.bias": "logits.2.bias",
    "action_net.weight": "logits.4.weight", "action_net.bias": "logits.4.bias",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=200)
    parser.add_argument("--updates", type=int, default=6)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import sb3_contrib
    from stable_baselines3.common.env_util import make_vec_env

    from rlnotes.nets import make_policy

    spec = ZOO[("trpo", "CartPole-v1")]
    envs = make_vec_env("CartPole-v1", n_envs=spec["n_envs"], seed=args.seed)
    model = sb3_contrib.TRPO("MlpPolicy", envs, seed=args.seed, device="cpu", verbose=0, **spec["kwargs"])
    original_train = sb3_contrib.TRPO.train
    rows = []

    def train(self):
        buffer = self.rollout_buffer
        obs = torch.as_tensor(buffer.observations.reshape(-1, 4), dtype=torch.float32)
        actions = torch.as_tensor(buffer.actions.reshape(-1), dtype=torch.long)
        advantages = normalize(torch.as_tensor(buffer.advantages.reshape(-1), dtype=torch.float32))
        before = copy.deepcopy(self.policy.state_dict())

        # rlnotes' step from the same weights on the same batch
        policy = make_policy(envs.observation_space, envs.action_space)
        policy.load_state_dict({NAMES[k]: v for k, v in before.items() if k in NAMES})
        info = trpo.trpo_step(policy, obs, actions, advantages, max_kl=0.01, damping=spec["kwargs"]["cg_damping"],
                              cg_iterations=15, backtrack_ratio=0.8, max_backtracks=10)
        ours = info["theta_new"] - info["theta_old"]

        # rlnotes' critic fit from the same critic weights on the same returns
        from rlnotes.nets import ValueNetwork

        returns = torch.as_tensor(buffer.returns.reshape(-1), dtype=torch.float32)
        value_net = ValueNetwork(4)
        value_net.load_state_dict({VALUE_NAMES[k]: v for k, v in before.items() if k in VALUE_NAMES})
        with torch.no_grad():
            mse_before = float(((value_net(obs) - returns) ** 2).mean())
        optimizer = torch.optim.Adam(value_net.parameters(), lr=spec["kwargs"]["learning_rate"], eps=1e-5)
        # with sb3's Adam state (its moments carry over from update to update, as rlnotes' do in training)
        sb3_params, ours_params = dict(self.policy.named_parameters()), dict(value_net.named_parameters())
        for sb3_name, our_name in VALUE_NAMES.items():
            state = self.policy.optimizer.state.get(sb3_params[sb3_name])
            if state:  # rlnotes' value_loss is 0.5 * MSE, sb3's MSE: its gradients, so its moments, are scaled
                optimizer.state[ours_params[our_name]] = {
                    "step": state["step"].clone(), "exp_avg": 0.5 * state["exp_avg"], "exp_avg_sq": 0.25 * state["exp_avg_sq"]}
        generator = torch.Generator().manual_seed(len(rows))  # leaves torch's global stream to sb3
        trpo.fit_value(value_net, optimizer, obs, returns, spec["kwargs"]["n_critic_updates"], spec["kwargs"]["batch_size"],
                       generator)
        with torch.no_grad():
            mse_ours = float(((value_net(obs) - returns) ** 2).mean())

        original_train(self)  # sb3-contrib's step
        theirs_policy = make_policy(envs.observation_space, envs.action_space)
        theirs_policy.load_state_dict({NAMES[k]: v for k, v in self.policy.state_dict().items() if k in NAMES})
        theirs = parameters_to_vector(theirs_policy.parameters()).detach() - info["theta_old"]
        with torch.no_grad():
            old = freeze_distribution(make_policy_from(before, envs)(obs))
            kl_theirs = float(policy_kl(old, theirs_policy(obs)).mean())
            kl_new_old_theirs = float(policy_kl(theirs_policy(obs), old).mean())
            ratio = torch.exp(theirs_policy(obs).log_prob(actions) - old.log_prob(actions))
            gain_theirs = float((ratio * advantages).mean() - advantages.mean())
            theirs_value = ValueNetwork(4)
            theirs_value.load_state_dict({VALUE_NAMES[k]: v for k, v in self.policy.state_dict().items() if k in VALUE_NAMES})
            mse_theirs = float(((theirs_value(obs) - returns) ** 2).mean())
        accepted = [t for t in info["trials"] if t["accepted"]]
        cosine = float(ours @ theirs / (ours.norm() * theirs.norm())) if ours.norm() > 0 and theirs.norm() > 0 else None
        rows.append({
            "update": len(rows) + 1,
            "rlnotes_kl_old_new": round(info["kl"], 5), "sb3_kl_old_new": round(kl_theirs, 5),
            "sb3_kl_new_old (what it bounds)": round(kl_new_old_theirs, 5),
            "rlnotes_fraction": accepted[0]["fraction"] if accepted else 0.0,
            "rlnotes_gain": round(info["improvement"], 5), "sb3_gain": round(gain_theirs, 5),
            "step_norm_ratio": round(float(ours.norm() / theirs.norm()), 3) if theirs.norm() > 0 else None,
            "cosine": None if cosine is None else round(cosine, 4),
            "critic_mse_before": round(mse_before, 2), "rlnotes_critic_mse_after": round(mse_ours, 2),
            "sb3_critic_mse_after": round(mse_theirs, 2),
        })
        print(json.dumps(rows[-1]), flush=True)

    sb3_contrib.TRPO.train = train
    try:
        batch = spec["n_envs"] * spec["kwargs"]["n_steps"]
        model.learn(total_timesteps=args.updates * batch)
    finally:
        sb3_contrib.TRPO.train = original_train
    print("median cosine", np.median([r["cosine"] for r in rows if r["cosine"] is not None]))
    return 0


def make_policy_from(state_dict, envs):
    from rlnotes.nets import make_policy

    policy = make_policy(envs.observation_space, envs.action_space)
    policy.load_state_dict({NAMES[k]: v for k, v in state_dict.items() if k in NAMES})
    return policy


if __name__ == "__main__":
    raise SystemExit(main())
